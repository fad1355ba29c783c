package server

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// recordingRaft is an applier whose futures complete when the test says.
type recordingRaft struct {
	mu      sync.Mutex
	applied []string
	futures map[string]*heldFuture
}

type heldFuture struct {
	raft.ApplyFuture
	done chan struct{}
}

func (f *heldFuture) Error() error { <-f.done; return nil }

func (r *recordingRaft) Apply(cmd []byte, _ time.Duration) raft.ApplyFuture {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := &heldFuture{done: make(chan struct{})}
	r.applied = append(r.applied, string(cmd))
	if r.futures == nil {
		r.futures = map[string]*heldFuture{}
	}
	r.futures[string(cmd)] = f
	return f
}

func (r *recordingRaft) proposed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.applied)
}

// complete ends the write of cmd as raft would, and tells g.
func (r *recordingRaft) complete(t *testing.T, g *inflightBatches, cmd string, b *batch) {
	t.Helper()
	r.mu.Lock()
	f := r.futures[cmd]
	r.mu.Unlock()
	if f == nil {
		t.Fatalf("%s was never proposed", cmd)
	}
	close(f.done)
	g.done(b)
}

type started struct {
	cmd string
	b   *batch
	ok  bool
}

// propose starts cmd on its own goroutine and waits until it is either
// proposed or queued behind the batches in flight.
func propose(t *testing.T, ctx context.Context, g *inflightBatches, r *recordingRaft, cmd string) <-chan started {
	t.Helper()
	g.mu.Lock()
	queued := len(g.waiting)
	g.mu.Unlock()
	out := make(chan started, 1)
	go func() {
		_, b, ok := g.apply(ctx, []byte(cmd), time.Second)
		out <- started{cmd, b, ok}
	}()
	eventually(t, 5*time.Second, cmd+" proposed or queued", func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.waiting) > queued || slices.Contains(r.proposed(), cmd) {
			return nil
		}
		return errors.New("neither")
	})
	return out
}

func receive(t *testing.T, ch <-chan started) started {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("a write was never released")
		return started{}
	}
}

func TestInflightBatchesOneAtATime(t *testing.T) {
	r := &recordingRaft{}
	g := newInflightBatches(r, 1)
	ctx := context.Background()

	a := receive(t, propose(t, ctx, g, r, "a"))
	if !a.ok {
		t.Fatal("the first write waited with nothing in flight")
	}
	b := propose(t, ctx, g, r, "b")
	c := propose(t, ctx, g, r, "c")
	d := propose(t, ctx, g, r, "d")
	if got := r.proposed(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("proposed %v while a was in flight, want only a", got)
	}

	r.complete(t, g, "a", a.b)
	sb, sc, sd := receive(t, b), receive(t, c), receive(t, d)
	if got := r.proposed(); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("proposed %v, want a then b, c, d in arrival order", got)
	}
	if sb.b != sc.b || sc.b != sd.b || sb.b == a.b {
		t.Fatal("b, c and d were not released as one new batch")
	}

	// e waits for the whole batch b, c, d, not for its first write.
	e := propose(t, ctx, g, r, "e")
	r.complete(t, g, "b", sb.b)
	r.complete(t, g, "c", sc.b)
	if got := r.proposed(); len(got) != 4 {
		t.Fatalf("proposed %v before the batch in flight completed", got)
	}
	r.complete(t, g, "d", sd.b)
	se := receive(t, e)
	if got := r.proposed(); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("proposed %v, want e last", got)
	}
	r.complete(t, g, "e", se.b)
	// Nothing in flight: the next write goes at once.
	if f := receive(t, propose(t, ctx, g, r, "f")); f.b == nil {
		t.Fatal("f has no batch")
	}
	if got := r.proposed(); got[len(got)-1] != "f" {
		t.Fatalf("f waited with nothing in flight: proposed %v", got)
	}
}

func TestInflightBatchesWithdrawn(t *testing.T) {
	r := &recordingRaft{}
	g := newInflightBatches(r, 1)
	a := receive(t, propose(t, context.Background(), g, r, "a"))

	ctx, cancel := context.WithCancel(context.Background())
	b := propose(t, ctx, g, r, "b")
	c := propose(t, context.Background(), g, r, "c")
	cancel()
	if sb := receive(t, b); sb.ok {
		t.Fatal("a write whose caller gave up while waiting was reported proposed")
	}
	r.complete(t, g, "a", a.b)
	sc := receive(t, c)
	if got := r.proposed(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("proposed %v, want a and c: b was withdrawn", got)
	}
	// c's batch holds only c: completing it frees the way.
	r.complete(t, g, "c", sc.b)
	receive(t, propose(t, context.Background(), g, r, "d"))
	if got := r.proposed(); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Fatalf("proposed %v, want d at once", got)
	}
}

func TestInflightBatchesLimit(t *testing.T) {
	for _, tc := range []struct {
		max, immediate int
	}{{0, 5}, {2, 2}} {
		r := &recordingRaft{}
		g := newInflightBatches(r, tc.max)
		for _, cmd := range []string{"a", "b", "c", "d", "e"} {
			propose(t, context.Background(), g, r, cmd)
		}
		if got := len(r.proposed()); got != tc.immediate {
			t.Errorf("max %d: %d of 5 writes proposed with none completed, want %d", tc.max, got, tc.immediate)
		}
	}
}
