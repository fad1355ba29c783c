package worker

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// TestMasterSetKeepsClientWhenGossipLosesAMaster: a master that gossip
// drops and brings back within the grace period does not replace the
// worker's client (which would reopen every watch); one gone for the whole
// grace period is dropped, and a new master replaces the client at once.
func TestMasterSetKeepsClientWhenGossipLosesAMaster(t *testing.T) {
	m := newMasterSet(slog.New(slog.DiscardHandler), nil)
	m.lostGrace = 300 * time.Millisecond
	t.Cleanup(m.close)
	all := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	m.update([]string{"127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"})
	first := m.current()
	if first == nil {
		t.Fatal("no client after the first update")
	}
	addrs := func() []string {
		m.mu.Lock()
		defer m.mu.Unlock()
		return slices.Clone(m.addrs)
	}
	for _, a := range [][]string{
		{"127.0.0.1:1", "127.0.0.1:2"}, // m3 suspected dead
		{"127.0.0.1:1"},
		{},
		{"127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:3"}, // all back
	} {
		m.update(a)
		if m.current() != first {
			t.Fatalf("update(%q) replaced the client", a)
		}
	}
	// Back before the grace ran out: nothing is left to prune.
	m.mu.Lock()
	pending := m.prune != nil
	m.mu.Unlock()
	if pending {
		t.Fatal("every master came back but the lost one is still to be pruned")
	}
	if got := addrs(); !slices.Equal(got, all) {
		t.Fatalf("addrs %q, want %q", got, all)
	}

	// m3 lost for good: dropped once the grace period has passed.
	m.update([]string{"127.0.0.1:1", "127.0.0.1:2"})
	if m.current() != first {
		t.Fatal("a lost master replaced the client at once")
	}
	want := []string{"127.0.0.1:1", "127.0.0.1:2"}
	eventually(t, 10*time.Second, "the lost master dropped", func() error {
		if got := addrs(); !slices.Equal(got, want) {
			return fmt.Errorf("addrs %q, want %q", got, want)
		}
		return nil
	})
	second := m.current()
	if second == first {
		t.Fatal("pruning did not make a new client")
	}

	// A new master (m4): a new client at once.
	m.update([]string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:4"})
	if m.current() == second {
		t.Fatal("a new master did not replace the client")
	}
	if want := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:4"}; !slices.Equal(addrs(), want) {
		t.Fatalf("addrs %q, want %q", addrs(), want)
	}
}
