package worker

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/memberlist"
)

func aliveNode(t *testing.T, name, role string) *memberlist.Node {
	t.Helper()
	b, err := json.Marshal(gossipMeta{Role: role, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return &memberlist.Node{Name: name, Meta: b}
}

// A hollow member keeps only masters and itself as peers, and a member
// whose metadata changes is judged again, not by what it said before.
func TestMastersOnlyPeers(t *testing.T) {
	m := &mastersOnly{self: "hollow-1", seen: make(map[string]aliveVerdict)}
	for _, tc := range []struct {
		node *memberlist.Node
		peer bool
	}{
		{aliveNode(t, "hollow-1", roleWorker), true}, // itself
		{aliveNode(t, "m1", roleServer), true},
		{aliveNode(t, "hollow-2", roleWorker), false},
		{aliveNode(t, "hollow-2", roleWorker), false}, // again, from the verdict kept
		{aliveNode(t, "hollow-2", roleServer), true},  // its metadata changed
		{aliveNode(t, "m1", roleWorker), false},
		{&memberlist.Node{Name: "garbled", Meta: []byte("{")}, false},
	} {
		err := m.NotifyAlive(tc.node)
		if (err == nil) != tc.peer {
			t.Errorf("NotifyAlive(%s, %s) = %v, want peer=%v", tc.node.Name, tc.node.Meta, err, tc.peer)
		}
	}
	// Deciding again from a kept verdict decodes nothing.
	n := aliveNode(t, "hollow-3", roleWorker)
	_ = m.NotifyAlive(n)
	if allocs := testing.AllocsPerRun(100, func() { _ = m.NotifyAlive(n) }); allocs != 0 {
		t.Errorf("a repeated alive message allocates %.0f times, want 0", allocs)
	}
}
