package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// inflightBatches groups proposals into Raft batches and keeps at most max
// of those batches between raft.Apply and applied; 0 means no limit.
//
// Every batch raft writes costs each master a bolt commit: two fdatasyncs
// (data pages, then the meta page), each of which, on virtualised disks,
// also costs CPU (about 170 us each on the benchmark machine). raft
// replicates a new batch as soon as the leader loop is free, so under load
// it keeps several small batches in flight, each paying those syncs on
// every master. With one batch in flight, the writes that arrive meanwhile
// wait and then go together as the next batch: at 16 concurrent writers
// batches grew from 4.3 to 7.4 entries, the servers' CPU per write fell by
// 17 % and writes/s rose (docs/performance-history.md, twelfth session). The cost
// is latency at low concurrency where syncs are cheap and the masters far
// apart: a write that arrives while another is in flight waits for it.
//
// The proposals released together are joined into as few raft entries as
// they allow (see propose), handed to raft one after another from one
// goroutine, so raft's leader loop finds them queued together and writes
// them as one batch (BatchApplyCh).
//
// With one batch in flight, closed-loop writers settle into groups that
// take turns: at 16 writers, two groups of about eight, each batch paying
// the per-batch costs (a bolt commit on every master) for half of them.
// So when a batch ends, the gate lingers (a group-commit delay, like
// PostgreSQL's commit_delay with commit_siblings): it holds the writes
// waiting until the ended batch's writers are back too (as many writes
// as the ended batch and the waiting ones together), or until linger
// passes, but never longer than half the ended batch's time in raft, and
// not when lingerBatch writes are already waiting (the per-batch costs
// are spread well enough then, and a CPU-bound leader must not idle).
// Writers that do not come back make a linger time out; after a time-out
// that saw fewer than half of them come back, the next lingerSkip batches
// go at once, so that open-loop traffic pays little. Measured at 16 writers: batches of 11.0-11.3 instead of
// 7.3-7.4 entries, 511-611 instead of 601-668 us of the servers' CPU per
// write; at 4 writers 3.6 instead of 1.9 entries; 1 and 64 writers
// unchanged (docs/performance-history.md, thirteenth session).
//
// Writes nobody waits on, the nodes' lease renewals, may be held: a write
// proposed with a hold waits up to that long for company when nothing is in
// flight, and goes with the next batch released, whatever releases it (its
// hold running out, another write arriving, a batch ending). A thousand
// nodes renew a hundred leases a second, 10 ms apart, and each would
// otherwise be a raft round of its own, with a bolt commit on every master.
type inflightBatches struct {
	raft   applier
	max    int
	linger time.Duration
	now    func() time.Time // tests replace it
	// entries, if set, is told how many writes each entry proposed holds.
	entries func(writes int)

	mu       sync.Mutex
	inflight int             // batches in flight
	waiting  []*waitingWrite // FIFO
	// lingering is set while no batch is in flight and the writes waiting
	// are held until want of them have arrived or the linger numbered gen
	// times out.
	lingering bool
	want      int
	gen       uint64
	timer     *time.Timer
	// base is how many writes were waiting when the linger started, back
	// how many writers it waits for (the ended batch's).
	base, back int
	skip       int    // batches to release at once, after a linger timed out
	proposed   uint64 // writes given to apply, ever
	// holding is set while held writes wait, with nothing in flight, for
	// company or for hold timer holdGen.
	holding   bool
	holdGen   uint64
	holdTimer *time.Timer
	// quietCh, once asked for, is closed when the gate next goes quiet:
	// its last batch ended with no write waiting, held or lingered for.
	quietCh chan struct{}
}

const (
	// lingerBatch is the batch size from which the gate does not linger.
	lingerBatch = 16
	// lingerSkip is how many batches go at once after a linger timed out
	// with fewer than half its writers back.
	lingerSkip = 1
)

// applier is the part of *raft.Raft that proposes.
type applier interface {
	Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture
}

// batch is one group of proposals released together.
type batch struct {
	pending, size int
	released      time.Time
}

// waitingWrite is a proposal waiting for the batch in flight.
type waitingWrite struct {
	data []byte
	// key names the object the write changes (joinKey): writes of
	// different objects may share an entry; "" goes alone.
	key     string
	timeout time.Duration
	// taken is set, under mu, when the write is released; a waiter whose
	// context ends before that withdraws it instead.
	taken, withdrawn bool
	started          chan startedWrite
}

type startedWrite struct {
	f raft.ApplyFuture
	b *batch
}

// newInflightBatches keeps max batches in flight (0: no limit) and, with
// max 1, lingers up to linger before releasing a small batch (0: never).
func newInflightBatches(r applier, max int, linger time.Duration) *inflightBatches {
	return &inflightBatches{raft: r, max: max, linger: linger, now: time.Now}
}

// activity reports whether writes are in flight or waiting to be
// proposed, and how many have been proposed so far: while writes come,
// raft sends followers entries, and the latest commit index with them.
func (g *inflightBatches) activity() (busy bool, proposed uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight > 0 || len(g.waiting) > 0, g.proposed
}

// quiet reports whether the gate is quiet now (no batch in flight, no
// write waiting, held or lingered for) and returns a channel closed when
// it next goes quiet: when its last batch ends, or a linger or hold runs
// out, with nothing left to propose. A commit the leader makes then
// travels with no entry after it, so the transport sends it to the
// followers alone (syncedPipeline.push) once the gate has stayed quiet for a
// short grace, instead of a longer delay. A gate that keeps no count of
// batches (max 0) is never quiet: nil, false.
func (g *inflightBatches) quiet() (<-chan struct{}, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.max <= 0 {
		return nil, false
	}
	if g.quietCh == nil {
		g.quietCh = make(chan struct{})
	}
	return g.quietCh, g.inflight == 0 && len(g.waiting) == 0 && !g.lingering
}

// apply proposes data, an encoded command changing the object key names
// ("" if none or several), after the batches in flight if there are max of
// them, and returns its future and its batch, which the caller passes to
// done once the future has completed. ok is false when ctx ended before the
// write was proposed: it never entered the log. With hold, a write that
// would go at once waits up to hold for others to go with.
func (g *inflightBatches) apply(ctx context.Context, data []byte, key string, timeout, hold time.Duration) (f raft.ApplyFuture, b *batch, ok bool) {
	g.mu.Lock()
	g.proposed++
	if g.max <= 0 {
		g.mu.Unlock()
		g.counted(1)
		return g.raft.Apply(data, timeout), nil, true
	}
	free := g.inflight < g.max && !g.lingering
	if free && !g.holding && hold <= 0 {
		g.inflight++
		g.mu.Unlock()
		g.counted(1)
		return g.raft.Apply(data, timeout), &batch{pending: 1, size: 1, released: g.now()}, true
	}
	w := &waitingWrite{data: data, key: key, timeout: timeout, started: make(chan startedWrite, 1)}
	g.waiting = append(g.waiting, w)
	switch {
	case free && g.holding && hold <= 0:
		// A write that does not wait takes the held ones along.
		next, nb := g.take()
		g.mu.Unlock()
		g.propose(next, nb)
	case free && !g.holding:
		g.holding = true
		g.holdGen++
		gen := g.holdGen
		g.holdTimer = time.AfterFunc(hold, func() { g.holdTimedOut(gen) })
		g.mu.Unlock()
	case g.lingering && len(g.waiting) >= g.want:
		// The writers the linger waited for are here.
		g.lingering = false
		g.timer.Stop()
		next, nb := g.take()
		g.mu.Unlock()
		g.propose(next, nb)
	default:
		g.mu.Unlock()
	}
	select {
	case s := <-w.started:
		return s.f, s.b, true
	case <-ctx.Done():
	}
	g.mu.Lock()
	if !w.taken {
		w.withdrawn = true
		g.mu.Unlock()
		return nil, nil, false
	}
	g.mu.Unlock()
	// Released meanwhile: it is being proposed.
	s := <-w.started
	return s.f, s.b, true
}

// done records that one write of b has completed (applied or failed); when
// it is the batch's last, the writes waiting go as the next batch, at once
// or after a linger.
func (g *inflightBatches) done(b *batch) {
	if b == nil {
		return
	}
	g.mu.Lock()
	if b.pending--; b.pending > 0 {
		g.mu.Unlock()
		return
	}
	g.inflight--
	if g.startLinger(b) {
		g.mu.Unlock()
		return
	}
	next, nb := g.take()
	g.mu.Unlock()
	g.propose(next, nb)
}

// startLinger starts holding the waiting writes after ended, if that is
// worth it. g.mu is held.
func (g *inflightBatches) startLinger(ended *batch) bool {
	if g.linger <= 0 || g.max != 1 || len(g.waiting) >= lingerBatch {
		return false
	}
	if g.skip > 0 {
		g.skip--
		return false
	}
	want := min(ended.size+len(g.waiting), lingerBatch)
	d := min(g.linger, g.now().Sub(ended.released)/2)
	if len(g.waiting) >= want || d <= 0 {
		return false
	}
	g.gen++
	gen := g.gen
	g.lingering, g.want = true, want
	g.base, g.back = len(g.waiting), ended.size
	g.timer = time.AfterFunc(d, func() { g.lingerTimedOut(gen) })
	return true
}

// lingerTimedOut releases the writes held by linger gen, if it still holds
// them.
func (g *inflightBatches) lingerTimedOut(gen uint64) {
	g.mu.Lock()
	if !g.lingering || g.gen != gen {
		g.mu.Unlock()
		return
	}
	g.lingering = false
	if 2*(len(g.waiting)-g.base) < g.back {
		// Fewer than half the writers came back: not closed-loop
		// traffic, which this would only delay.
		g.skip = lingerSkip
	}
	next, nb := g.take()
	g.mu.Unlock()
	g.propose(next, nb)
}

// holdTimedOut releases the writes held by hold timer gen, if they still
// wait for it.
func (g *inflightBatches) holdTimedOut(gen uint64) {
	g.mu.Lock()
	if !g.holding || g.holdGen != gen {
		g.mu.Unlock()
		return
	}
	next, nb := g.take()
	g.mu.Unlock()
	g.propose(next, nb)
}

// releaseHeld sends held writes on at once (a leadership transfer waits
// for the writes in flight).
func (g *inflightBatches) releaseHeld() {
	g.mu.Lock()
	if !g.holding {
		g.mu.Unlock()
		return
	}
	next, nb := g.take()
	g.mu.Unlock()
	g.propose(next, nb)
}

// take makes the writes waiting (but withdrawn ones) the next batch, in
// flight, and ends any hold; with nothing to take and nothing in flight the
// gate has gone quiet. g.mu is held.
func (g *inflightBatches) take() ([]*waitingWrite, *batch) {
	if g.holding {
		g.holding = false
		g.holdTimer.Stop()
	}
	var next []*waitingWrite
	for _, w := range g.waiting {
		if !w.withdrawn {
			w.taken = true
			next = append(next, w)
		}
	}
	g.waiting = nil
	if len(next) == 0 {
		if g.inflight == 0 && !g.lingering && g.quietCh != nil {
			close(g.quietCh)
			g.quietCh = nil
		}
		return nil, nil
	}
	g.inflight++
	return next, &batch{pending: len(next), size: len(next), released: g.now()}
}

// propose hands a released batch to raft, in order, from this goroutine.
//
// Consecutive writes of different objects go as one entry, a Batch command
// (fsm.JoinCommands), up to maxBatchEntryBytes: raft, raft-boltdb and the
// store pay for every entry on every master (its msgpack encodings, its
// future, its bolt key, its decoding and transaction), so one entry of
// many writes costs the masters far less than as many entries. Each write
// keeps its own result, exactly as alone; they share the entry's index, so
// their objects share one resourceVersion, as a controller's batch of
// creates does (watches resume inside an index: client.Watcher). Two
// writes of one object never share an entry, so no two states of an
// object carry the same resourceVersion.
func (g *inflightBatches) propose(next []*waitingWrite, nb *batch) {
	var group []*waitingWrite
	var keys map[string]bool
	size := 0
	flush := func() {
		g.proposeJoined(group, nb)
		group, size = group[:0], 0
		clear(keys)
	}
	for _, w := range next {
		if len(group) > 0 && (w.key == "" || keys[w.key] || size+len(w.data) > maxBatchEntryBytes) {
			flush()
		}
		group, size = append(group, w), size+len(w.data)
		if w.key == "" {
			flush()
			continue
		}
		if keys == nil {
			keys = make(map[string]bool, len(next))
		}
		keys[w.key] = true
	}
	if len(group) > 0 {
		flush()
	}
}

// proposeJoined proposes group as one entry (one write: as it is).
func (g *inflightBatches) proposeJoined(group []*waitingWrite, nb *batch) {
	if len(group) > 1 {
		entries := make([][]byte, len(group))
		for i, w := range group {
			entries[i] = w.data
		}
		if data, err := fsm.JoinCommands(entries); err == nil {
			g.counted(len(group))
			e := &joinedEntry{f: g.raft.Apply(data, group[0].timeout)}
			for i, w := range group {
				w.started <- startedWrite{f: joinedFuture{e: e, i: i}, b: nb}
			}
			return
		}
		// Not encoded commands (tests): one entry each.
	}
	for _, w := range group {
		g.counted(1)
		w.started <- startedWrite{f: g.raft.Apply(w.data, w.timeout), b: nb}
	}
}

func (g *inflightBatches) counted(writes int) {
	if g.entries != nil {
		g.entries(writes)
	}
}

// joinedEntry is the future of an entry of joined writes, which each of
// them waits for: raft's future answers only one waiter.
type joinedEntry struct {
	f    raft.ApplyFuture
	once sync.Once
	err  error
}

func (e *joinedEntry) wait() error {
	e.once.Do(func() { e.err = e.f.Error() })
	return e.err
}

// joinedFuture is one write's view of the entry it was joined into: the
// entry's outcome, and its own result within the entry's.
type joinedFuture struct {
	e *joinedEntry
	i int
}

// Error implements raft.ApplyFuture.
func (f joinedFuture) Error() error { return f.e.wait() }

// Index implements raft.ApplyFuture.
func (f joinedFuture) Index() uint64 { return f.e.f.Index() }

// Response implements raft.ApplyFuture; call it after Error.
func (f joinedFuture) Response() any {
	resp := f.e.f.Response()
	res, ok := resp.(*fsm.Result)
	if !ok {
		return resp
	}
	if f.i < len(res.Batch) {
		return res.Batch[f.i]
	}
	err := res.Err
	if err == nil {
		err = fmt.Errorf("%w: the entry has %d results, none for write %d", fsm.ErrInvalid, len(res.Batch), f.i)
	}
	return &fsm.Result{Index: res.Index, Err: err}
}

// joinKey names the object cmd changes, for the gate to tell which writes
// may share an entry; "" for a command that must go alone (a batch).
func joinKey(cmd *pb.Command) string {
	var kind, ns, name string
	var obj *pb.Object
	switch op := cmd.GetOp().(type) {
	case *pb.Command_Create:
		obj = op.Create
	case *pb.Command_Update:
		obj = op.Update
	case *pb.Command_UpdateStatus:
		obj = op.UpdateStatus
	case *pb.Command_Apply:
		obj = op.Apply
	case *pb.Command_Delete:
		kind, ns, name = op.Delete.GetKind(), op.Delete.GetNamespace(), op.Delete.GetName()
	case *pb.Command_Bind:
		kind, ns, name = "Pod", op.Bind.GetNamespace(), op.Bind.GetName()
	default:
		return ""
	}
	if obj != nil {
		m := obj.Meta()
		kind, ns, name = obj.KindName(), m.GetNamespace(), m.GetName()
	}
	k, ok := pb.LookupKind(kind)
	if !ok || name == "" {
		return ""
	}
	if !k.Namespaced {
		ns = ""
	}
	return k.Kind + "\x00" + ns + "\x00" + name
}
