package main

import (
	"slices"
	"testing"
)

// TestAllGroup: all is the whole suite as root, and without root the
// benchmarks that need it are left out, not run to fail.
func TestAllGroup(t *testing.T) {
	root := allGroup(true)
	for _, b := range append([]string{"micro", "raft", "writes", "failover", "scale"}, groups["cluster"]...) {
		if !slices.Contains(root, b) {
			t.Errorf("all as root lacks %s: %v", b, root)
		}
	}
	user := allGroup(false)
	if len(user) != 5 || slices.ContainsFunc(user, func(b string) bool { return slices.Contains(groups["cluster"], b) }) {
		t.Errorf("all without root = %v, want the five that need no root", user)
	}
	if len(groups["all"]) != 8 {
		t.Errorf("allGroup(false) changed groups[all]: %v", groups["all"])
	}
}
