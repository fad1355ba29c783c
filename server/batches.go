package server

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
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
// 17 % and writes/s rose (docs/performance.md, twelfth session). The cost
// is latency at low concurrency where syncs are cheap and the masters far
// apart: a write that arrives while another is in flight waits for it.
//
// The proposals released together are handed to raft one after another
// from one goroutine, so raft's leader loop finds them queued together and
// writes them as one batch (BatchApplyCh).
type inflightBatches struct {
	raft applier
	max  int

	mu       sync.Mutex
	inflight int             // batches in flight
	waiting  []*waitingWrite // FIFO
}

// applier is the part of *raft.Raft that proposes.
type applier interface {
	Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture
}

// batch is one group of proposals released together.
type batch struct{ pending int }

// waitingWrite is a proposal waiting for the batch in flight.
type waitingWrite struct {
	data    []byte
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

func newInflightBatches(r applier, max int) *inflightBatches {
	return &inflightBatches{raft: r, max: max}
}

// apply proposes data, after the batches in flight if there are max of
// them, and returns its future and its batch, which the caller passes to
// done once the future has completed. ok is false when ctx ended before the
// write was proposed: it never entered the log.
func (g *inflightBatches) apply(ctx context.Context, data []byte, timeout time.Duration) (f raft.ApplyFuture, b *batch, ok bool) {
	if g.max <= 0 {
		return g.raft.Apply(data, timeout), nil, true
	}
	g.mu.Lock()
	if g.inflight < g.max {
		g.inflight++
		g.mu.Unlock()
		return g.raft.Apply(data, timeout), &batch{pending: 1}, true
	}
	w := &waitingWrite{data: data, timeout: timeout, started: make(chan startedWrite, 1)}
	g.waiting = append(g.waiting, w)
	g.mu.Unlock()
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
// it is the batch's last, the writes waiting go as the next batch.
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
	var next []*waitingWrite
	for _, w := range g.waiting {
		if !w.withdrawn {
			w.taken = true
			next = append(next, w)
		}
	}
	g.waiting = nil
	nb := &batch{pending: len(next)}
	if len(next) > 0 {
		g.inflight++
	}
	g.mu.Unlock()
	for _, w := range next {
		w.started <- startedWrite{f: g.raft.Apply(w.data, w.timeout), b: nb}
	}
}
