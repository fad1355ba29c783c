package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// recordingRaft is an applier whose futures complete when the test says.
type recordingRaft struct {
	mu      sync.Mutex
	applied []string
	futures map[string]*heldFuture
}

type heldFuture struct {
	raft.ApplyFuture
	done  chan struct{}
	resp  any          // what Response returns, set before done is closed
	waits atomic.Int32 // Error calls: raft's future answers only one
}

func (f *heldFuture) Error() error  { f.waits.Add(1); <-f.done; return nil }
func (f *heldFuture) Response() any { return f.resp }

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
	f   raft.ApplyFuture
}

// propose starts cmd on its own goroutine and waits until it is either
// proposed or queued behind the batches in flight.
func propose(t *testing.T, ctx context.Context, g *inflightBatches, r *recordingRaft, cmd string) <-chan started {
	t.Helper()
	return proposeHeld(t, ctx, g, r, cmd, 0)
}

// proposeHeld is propose for a write that may wait hold for company.
func proposeHeld(t *testing.T, ctx context.Context, g *inflightBatches, r *recordingRaft, cmd string, hold time.Duration) <-chan started {
	t.Helper()
	return proposeKeyed(t, ctx, g, r, cmd, "", hold)
}

// proposeKeyed is proposeHeld for a write of the object key names.
func proposeKeyed(t *testing.T, ctx context.Context, g *inflightBatches, r *recordingRaft, cmd, key string, hold time.Duration) <-chan started {
	t.Helper()
	g.mu.Lock()
	queued := len(g.waiting)
	g.mu.Unlock()
	out := make(chan started, 1)
	go func() {
		f, b, ok := g.apply(ctx, []byte(cmd), key, time.Second, hold)
		out <- started{cmd, b, ok, f}
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
	g := newInflightBatches(r, 1, 0)
	ctx := context.Background()
	if busy, n := g.activity(); busy || n != 0 {
		t.Fatalf("activity %v, %d with nothing proposed", busy, n)
	}

	a := receive(t, propose(t, ctx, g, r, "a"))
	if !a.ok {
		t.Fatal("the first write waited with nothing in flight")
	}
	if busy, n := g.activity(); !busy || n != 1 {
		t.Fatalf("activity %v, %d with a in flight, want true, 1", busy, n)
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
	if busy, n := g.activity(); busy || n != 5 {
		t.Fatalf("activity %v, %d after a to e completed, want false, 5", busy, n)
	}
	// Nothing in flight: the next write goes at once.
	if f := receive(t, propose(t, ctx, g, r, "f")); f.b == nil {
		t.Fatal("f has no batch")
	}
	if got := r.proposed(); got[len(got)-1] != "f" {
		t.Fatalf("f waited with nothing in flight: proposed %v", got)
	}
}

// TestInflightBatchesQuiet: the gate is quiet when no batch is in flight
// and nothing waits or is lingered for, and its quiet channel closes when
// it gets there: after its last batch, or after a linger that timed out
// with nothing to propose; never while a linger still waits.
func TestInflightBatchesQuiet(t *testing.T) {
	closed := isClosed
	ctx := context.Background()

	r := &recordingRaft{}
	g := newInflightBatches(r, 1, 0)
	if _, now := g.quiet(); !now {
		t.Fatal("not quiet with nothing proposed")
	}
	a := receive(t, propose(t, ctx, g, r, "a"))
	quiet, now := g.quiet()
	if now {
		t.Fatal("quiet with a in flight")
	}
	b := propose(t, ctx, g, r, "b")
	r.complete(t, g, "a", a.b)
	sb := receive(t, b)
	if closed(quiet) {
		t.Fatal("quiet while b, released when a ended, is in flight")
	}
	r.complete(t, g, "b", sb.b)
	if !closed(quiet) {
		t.Fatal("not quiet once the last batch ended")
	}
	if _, now := g.quiet(); !now {
		t.Fatal("quiet channel closed, but quiet() says not now")
	}

	// A linger that times out with nobody back ends quiet; while it
	// waits, the gate is not quiet.
	r, g, clock := lingeringGate(300 * time.Millisecond)
	a = receive(t, propose(t, ctx, g, r, "a"))
	quiet, _ = g.quiet()
	clock.advance(time.Second)
	r.complete(t, g, "a", a.b)
	if _, now := g.quiet(); now || closed(quiet) {
		t.Fatal("quiet while lingering for a's writer")
	}
	select {
	case <-quiet:
	case <-time.After(5 * time.Second):
		t.Fatal("not quiet after the linger timed out with nothing to propose")
	}

	// A gate with no limit keeps no count of batches: never quiet.
	if ch, now := newInflightBatches(r, 0, 0).quiet(); ch != nil || now {
		t.Fatal("a gate without a limit says it can tell when it is quiet")
	}
}

// Held writes (lease renewals) wait for company with nothing in flight,
// and go with the next batch released, whatever releases it.
func TestInflightBatchesHold(t *testing.T) {
	r := &recordingRaft{}
	g := newInflightBatches(r, 1, 0)
	ctx := context.Background()

	// Two held writes wait (an hour each); a write that does not wait takes
	// them along, in arrival order, as one batch.
	h1 := proposeHeld(t, ctx, g, r, "h1", time.Hour)
	h2 := proposeHeld(t, ctx, g, r, "h2", time.Hour)
	if got := r.proposed(); len(got) != 0 {
		t.Fatalf("proposed %v; want the held writes waiting", got)
	}
	if busy, _ := g.activity(); !busy {
		t.Error("activity not busy with held writes waiting")
	}
	n := receive(t, propose(t, ctx, g, r, "n"))
	s1, s2 := receive(t, h1), receive(t, h2)
	if got := r.proposed(); !slices.Equal(got, []string{"h1", "h2", "n"}) {
		t.Fatalf("proposed %v, want h1, h2, n", got)
	}
	if s1.b != s2.b || s2.b != n.b || n.b.size != 3 {
		t.Fatal("h1, h2 and n were not released as one batch")
	}

	// With a batch in flight a held write waits for it like any other.
	h3 := proposeHeld(t, ctx, g, r, "h3", time.Hour)
	for _, c := range []string{"h1", "h2", "n"} {
		r.complete(t, g, c, n.b)
	}
	s3 := receive(t, h3)
	if got := r.proposed(); got[len(got)-1] != "h3" {
		t.Fatalf("proposed %v, want h3 when the batch before ended", got)
	}
	r.complete(t, g, "h3", s3.b)

	// Alone, it goes when its hold runs out.
	start := time.Now()
	s4 := receive(t, proposeHeld(t, ctx, g, r, "h4", 100*time.Millisecond))
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("h4 went after %v, before its hold of 100ms", waited)
	}
	r.complete(t, g, "h4", s4.b)

	// A leadership transfer sends held writes on at once.
	h6 := proposeHeld(t, ctx, g, r, "h6", time.Hour)
	g.releaseHeld()
	s6 := receive(t, h6)
	r.complete(t, g, "h6", s6.b)
	g.releaseHeld() // nothing held: nothing happens

	// A held write whose caller gives up is withdrawn, and the next write
	// goes at once, alone.
	cctx, cancel := context.WithCancel(ctx)
	h5 := proposeHeld(t, cctx, g, r, "h5", time.Hour)
	cancel()
	if s := receive(t, h5); s.ok {
		t.Fatal("a cancelled held write was proposed")
	}
	if f := receive(t, propose(t, ctx, g, r, "f")); f.b == nil || f.b.size != 1 {
		t.Fatal("f did not go alone")
	}
	if got := r.proposed(); slices.Contains(got, "h5") || got[len(got)-1] != "f" {
		t.Fatalf("proposed %v, want f and never h5", got)
	}
}

func TestInflightBatchesWithdrawn(t *testing.T) {
	r := &recordingRaft{}
	g := newInflightBatches(r, 1, 0)
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
		g := newInflightBatches(r, tc.max, 0)
		for _, cmd := range []string{"a", "b", "c", "d", "e"} {
			propose(t, context.Background(), g, r, cmd)
		}
		if got := len(r.proposed()); got != tc.immediate {
			t.Errorf("max %d: %d of 5 writes proposed with none completed, want %d", tc.max, got, tc.immediate)
		}
	}
}

// fakeClock is a settable clock for the gate's linger.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// lingeringGate is a gate of one batch with linger, on a fake clock.
func lingeringGate(linger time.Duration) (*recordingRaft, *inflightBatches, *fakeClock) {
	r := &recordingRaft{}
	g := newInflightBatches(r, 1, linger)
	clock := &fakeClock{t: time.Unix(0, 0)}
	g.now = clock.now
	return r, g, clock
}

func TestInflightBatchesLinger(t *testing.T) {
	r, g, clock := lingeringGate(time.Hour)
	ctx := context.Background()

	// A batch of three is in flight and one write waits.
	a := receive(t, propose(t, ctx, g, r, "a"))
	bcd := []<-chan started{propose(t, ctx, g, r, "b"), propose(t, ctx, g, r, "c"), propose(t, ctx, g, r, "d")}
	r.complete(t, g, "a", a.b)
	var batch3 []started
	for _, ch := range bcd {
		batch3 = append(batch3, receive(t, ch))
	}
	e := propose(t, ctx, g, r, "e")
	// The batch took two hours in raft: the linger may last its hour.
	clock.advance(2 * time.Hour)
	for i, s := range batch3 {
		r.complete(t, g, string(rune('b'+i)), s.b)
	}
	// Four writers were seen (b, c, d and e): e waits for three more.
	f := propose(t, ctx, g, r, "f")
	gg := propose(t, ctx, g, r, "g")
	if got := r.proposed(); len(got) != 4 {
		t.Fatalf("proposed %v while lingering for the batch's writers", got)
	}
	h := propose(t, ctx, g, r, "h")
	se, sf, sg, sh := receive(t, e), receive(t, f), receive(t, gg), receive(t, h)
	if got := r.proposed(); !slices.Equal(got, []string{"a", "b", "c", "d", "e", "f", "g", "h"}) {
		t.Fatalf("proposed %v, want e, f, g, h in arrival order once h arrived", got)
	}
	if se.b != sf.b || sf.b != sg.b || sg.b != sh.b {
		t.Fatal("e, f, g and h were not released as one batch")
	}
}

func TestInflightBatchesLingerTimesOut(t *testing.T) {
	r, g, clock := lingeringGate(300 * time.Millisecond)
	ctx := context.Background()

	a := receive(t, propose(t, ctx, g, r, "a"))
	b := propose(t, ctx, g, r, "b")
	clock.advance(time.Second) // a's time in raft does not bound the linger
	r.complete(t, g, "a", a.b)
	// Two writers seen, one came back: b waits for the other, then goes
	// alone when the linger times out.
	if got := r.proposed(); len(got) != 1 {
		t.Fatalf("proposed %v at once; want b held", got)
	}
	sb := receive(t, b)
	if got := r.proposed(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("proposed %v, want b after the linger", got)
	}
	// After a time-out the next lingerSkip batches go at once.
	for i := range lingerSkip {
		cmd := fmt.Sprint("skip", i)
		ch := propose(t, ctx, g, r, cmd)
		clock.advance(time.Second)
		r.complete(t, g, r.proposed()[len(r.proposed())-1], sb.b)
		if got := r.proposed(); got[len(got)-1] != cmd {
			t.Fatalf("batch %d after a time-out: proposed %v, want %s at once", i, got, cmd)
		}
		sb = receive(t, ch)
	}
}

func TestInflightBatchesNoLinger(t *testing.T) {
	for _, tc := range []struct {
		name         string
		linger, took time.Duration
		waiting      int
	}{
		{"no linger configured", 0, time.Hour, 1},
		{"a batch that was fast", time.Hour, 0, 1},
		{"enough waiting", time.Hour, time.Hour, lingerBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, g, clock := lingeringGate(tc.linger)
			ctx := context.Background()
			a := receive(t, propose(t, ctx, g, r, "a"))
			var chans []<-chan started
			for i := range tc.waiting {
				chans = append(chans, propose(t, ctx, g, r, fmt.Sprint("w", i)))
			}
			clock.advance(tc.took)
			r.complete(t, g, "a", a.b)
			for _, ch := range chans {
				receive(t, ch)
			}
			if got := len(r.proposed()); got != 1+tc.waiting {
				t.Fatalf("proposed %d writes, want all %d", got, 1+tc.waiting)
			}
		})
	}
}

// TestInflightBatchesLingerSkip: a linger that times out with fewer than
// half the writers back lets the next batch go at once; one with half of
// them back does not.
func TestInflightBatchesLingerSkip(t *testing.T) {
	r, g, clock := lingeringGate(300 * time.Millisecond)
	ctx := context.Background()
	completeAll := func(ss ...started) {
		t.Helper()
		clock.advance(time.Second)
		for _, s := range ss {
			g.done(s.b)
		}
	}
	held := func(cmd string) {
		t.Helper()
		if slices.Contains(r.proposed(), cmd) {
			t.Fatalf("%s went at once; want it held by a linger", cmd)
		}
	}

	a := receive(t, propose(t, ctx, g, r, "a"))
	b, c := propose(t, ctx, g, r, "b"), propose(t, ctx, g, r, "c")
	completeAll(a)
	held("b")
	sb, sc := receive(t, b), receive(t, c) // timed out, none of a's writer back
	d := propose(t, ctx, g, r, "d")
	completeAll(sb, sc)
	sd := receive(t, d) // the skip: at once
	e := propose(t, ctx, g, r, "e")
	completeAll(sd)
	held("e")
	f := propose(t, ctx, g, r, "f") // d's writer is back: e and f go
	se, sf := receive(t, e), receive(t, f)
	gw := propose(t, ctx, g, r, "g")
	completeAll(se, sf)
	held("g")
	h := propose(t, ctx, g, r, "h") // one of e's and f's two writers back
	sg, sh := receive(t, gw), receive(t, h)
	i := propose(t, ctx, g, r, "i")
	completeAll(sg, sh)
	held("i") // half were back: no skip
	receive(t, i)
	if got := r.proposed(); !slices.Equal(got, []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}) {
		t.Fatalf("proposed %v", got)
	}
}

// TestInflightBatchesJoin: writes released together go as one entry per
// run of writes to different objects, in arrival order; a write of an
// object already in the entry, or one that must go alone, starts a new one.
// Each joined write's future answers with its own result in the entry's.
func TestInflightBatchesJoin(t *testing.T) {
	r := &recordingRaft{}
	g := newInflightBatches(r, 1, 0)
	var mu sync.Mutex
	var counts []int
	g.entries = func(n int) { mu.Lock(); counts = append(counts, n); mu.Unlock() }
	ctx := context.Background()
	enc := func(name string) string {
		data, err := fsm.EncodeCommand(&pb.Command{Op: &pb.Command_Delete{Delete: &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: name}}})
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	a := receive(t, proposeKeyed(t, ctx, g, r, enc("a"), "a", 0))
	var queued []<-chan started
	for _, w := range []struct{ cmd, key string }{
		{enc("b"), "b"}, {enc("c"), "c"}, {enc("b2"), "b"}, {enc("alone"), ""}, {enc("d"), "d"}, {enc("e"), "e"},
	} {
		queued = append(queued, proposeKeyed(t, ctx, g, r, w.cmd, w.key, 0))
	}
	r.complete(t, g, enc("a"), a.b)
	var got []started
	for _, ch := range queued {
		got = append(got, receive(t, ch))
	}
	join := func(names ...string) string {
		var entries [][]byte
		for _, n := range names {
			entries = append(entries, []byte(enc(n)))
		}
		data, err := fsm.JoinCommands(entries)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	want := []string{enc("a"), join("b", "c"), enc("b2"), enc("alone"), join("d", "e")}
	if p := r.proposed(); !slices.Equal(p, want) {
		t.Fatalf("proposed %d entries, want a; b+c; b2 (b again); alone; d+e", len(p))
	}
	mu.Lock()
	if !slices.Equal(counts, []int{1, 2, 1, 1, 2}) {
		t.Fatalf("writes per entry counted %v, want 1, 2, 1, 1, 2", counts)
	}
	mu.Unlock()
	for _, s := range got {
		if s.b != got[0].b || s.b.size != 6 {
			t.Fatal("the six writes were not one batch of six")
		}
	}

	// The entry's result, split: each joined write gets its own.
	bc := r.futures[join("b", "c")]
	rb, rc := &fsm.Result{Index: 7, Action: "deleted"}, &fsm.Result{Index: 7, Err: fsm.ErrNotFound}
	bc.resp = &fsm.Result{Index: 7, Batch: []*fsm.Result{rb, rc}}
	if got[0].f.Response() != rb || got[1].f.Response() != rc {
		t.Fatal("b and c did not get their own results from the joined entry")
	}
	// An entry refused as a whole is each write's refusal.
	de := r.futures[join("d", "e")]
	de.resp = &fsm.Result{Index: 9, Err: fsm.ErrInvalid}
	for _, s := range got[4:] {
		res, ok := s.f.Response().(*fsm.Result)
		if !ok || res.Index != 9 || !errors.Is(res.Err, fsm.ErrInvalid) {
			t.Fatalf("a write of a refused entry got %v, want the entry's error", s.f.Response())
		}
	}
	for _, c := range want[1:] {
		close(r.futures[c].done)
	}
	var wg sync.WaitGroup
	for _, s := range got {
		wg.Go(func() {
			if err := s.f.Error(); err != nil {
				t.Errorf("%v", err)
			}
			g.done(s.b)
		})
	}
	wg.Wait()
	for _, c := range want[1:] {
		if n := r.futures[c].waits.Load(); n != 1 {
			t.Fatalf("an entry's future was waited on %d times, want once (raft's answers one waiter)", n)
		}
	}
	if busy, _ := g.activity(); busy {
		t.Fatal("the gate is still busy after every write completed")
	}
}

func TestJoinKey(t *testing.T) {
	cm := func(ns, name string) *pb.Object {
		return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Namespace: ns, Name: name}})
	}
	node := pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Namespace: "ignored", Name: "n1"}})
	for _, c := range []struct {
		cmd  *pb.Command
		want string
	}{
		{&pb.Command{Op: &pb.Command_Create{Create: cm("default", "a")}}, "ConfigMap\x00default\x00a"},
		{&pb.Command{Op: &pb.Command_Update{Update: cm("default", "a")}}, "ConfigMap\x00default\x00a"},
		{&pb.Command{Op: &pb.Command_UpdateStatus{UpdateStatus: node}}, "Node\x00\x00n1"},
		{&pb.Command{Op: &pb.Command_Apply{Apply: cm("other", "a")}}, "ConfigMap\x00other\x00a"},
		{&pb.Command{Op: &pb.Command_Delete{Delete: &pb.DeleteOp{Kind: "configmaps", Namespace: "default", Name: "a"}}}, "ConfigMap\x00default\x00a"},
		{&pb.Command{Op: &pb.Command_Delete{Delete: &pb.DeleteOp{Kind: "Node", Namespace: "x", Name: "n1"}}}, "Node\x00\x00n1"},
		{&pb.Command{Op: &pb.Command_Bind{Bind: &pb.BindOp{Namespace: "default", Name: "web", NodeName: "n1"}}}, "Pod\x00default\x00web"},
		{&pb.Command{Op: &pb.Command_Create{Create: cm("default", "")}}, ""},
		{&pb.Command{Op: &pb.Command_Delete{Delete: &pb.DeleteOp{Kind: "Nope", Name: "a"}}}, ""},
		{&pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{}}}, ""},
		{&pb.Command{}, ""},
	} {
		if got := joinKey(c.cmd); got != c.want {
			t.Errorf("joinKey(%v) = %q, want %q", c.cmd, got, c.want)
		}
	}
}
