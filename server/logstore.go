package server

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// ErrLogStoreStalled is returned by the log store when the leader's write
// waits longer than Config.LogStoreStallTimeout for the one before it.
var ErrLogStoreStalled = errors.New("raft log store stalled")

// logStore is the master's raft log store: bolt, with the leader's own
// writes synced in parallel with their replication.
//
// hashicorp/raft's leader stores its new entries and only then tells the
// replication goroutines about them, so a write waits for the leader's
// fsyncs and then for a follower's, one after the other (four fdatasyncs
// with bolt). Here the leader's StoreLogs hands the entries to a goroutine
// that writes and syncs them, and returns at once: raft replicates them
// while they are being synced. Raft then counts the leader among the
// members holding those entries before they are on its disk, which would
// not be safe by itself; three rules keep every entry that anything
// observes durable on a majority, as raft's durability argument (Raft
// thesis 10.2.1) requires:
//
//   - nothing applies an entry before it is synced here: the FSM waits for
//     waitSynced (syncedFSM), so no client is answered, no read sees it and
//     no snapshot holds it before the leader's copy is on disk, in addition
//     to the follower copies raft counted;
//   - followers learn a commit index no later than what the leader has
//     synced (serialTransport clamps LeaderCommitIndex with syncedCommit),
//     so they do not apply anything a majority could still lose either;
//   - a master answers an AppendEntries only once its own earlier writes are
//     synced (serialTransport's pump calls waitPending): a leader that steps
//     down with a write in flight must not tell the next leader it holds
//     entries that are not yet on its disk.
//
// Everything else is as synchronous as raft expects: followers (and
// candidates) write before returning, and every mutation waits for the one
// before it, so the log on disk is always a prefix of what raft believes.
// At most one write of the leader is in flight; the next waits for it, at
// most LogStoreStallTimeout (hashicorp/raft issue #503): a leader whose disk
// hangs must fail a write, on which raft steps down, or it keeps
// heartbeating and the followers never elect anyone else. A failed write
// that raft was already told had succeeded cannot be taken back: the master
// exits (as etcd does when its WAL write fails) and restarts from its disk.
type logStore struct {
	raft.LogStore
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics
	// raft (a raftState) is set once raft exists; until then, and while
	// this master does not lead, writes are synchronous.
	raft atomic.Value
	// busy holds a token while a mutation of the inner store runs,
	// including the leader's write in flight.
	busy chan struct{}
	// pending is the leader's write in flight, if any.
	pending atomic.Pointer[pendingWrite]
	// fatal ends the master after a failed write raft counted as stored
	// (tests replace it).
	fatal func(error)
	// newsCh is closed, and replaced, whenever the log or the commit index
	// may have moved (the transport's quiet pipeline waits for it).
	newsCh atomic.Pointer[chan struct{}]
}

// pendingWrite is a leader write that raft counts as stored and that is
// not yet synced.
type pendingWrite struct {
	first, last uint64
	logs        []*raft.Log
	done        chan struct{} // closed once synced
}

// raftState is the part of *raft.Raft the log store asks.
type raftState interface{ State() raft.RaftState }

func newLogStore(inner raft.LogStore, timeout time.Duration, log *slog.Logger, m *metrics) *logStore {
	s := &logStore{
		LogStore: inner, timeout: timeout, log: log, metrics: m,
		busy: make(chan struct{}, 1),
		fatal: func(err error) {
			log.Error("raft log store: exiting, the master restarts from what is on its disk", "err", err)
			os.Exit(1)
		},
	}
	ch := make(chan struct{})
	s.newsCh.Store(&ch)
	return s
}

// news returns a channel that is closed at the next ring.
func (s *logStore) news() <-chan struct{} { return *s.newsCh.Load() }

// ring wakes whoever waits for news.
func (s *logStore) ring() {
	ch := make(chan struct{})
	close(*s.newsCh.Swap(&ch))
}

func (s *logStore) leading() bool {
	r, _ := s.raft.Load().(raftState)
	return r != nil && r.State() == raft.Leader
}

// StoreLog implements raft.LogStore.
func (s *logStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: synchronous, except on the leader.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	defer s.ring()
	if s.metrics != nil {
		s.metrics.logBatch.Observe(float64(len(logs)))
	}
	if !s.leading() {
		s.busy <- struct{}{}
		defer func() { <-s.busy }()
		return s.LogStore.StoreLogs(logs)
	}
	select {
	case s.busy <- struct{}{}:
	default:
		t := time.NewTimer(s.timeout)
		defer t.Stop()
		select {
		case s.busy <- struct{}{}:
		case <-t.C:
			// Nothing was started, so raft may reuse these indexes.
			return s.stalled(logs)
		}
	}
	p := &pendingWrite{first: logs[0].Index, last: logs[len(logs)-1].Index, logs: logs, done: make(chan struct{})}
	s.pending.Store(p)
	go s.write(p)
	return nil
}

func (s *logStore) write(p *pendingWrite) {
	if err := s.LogStore.StoreLogs(p.logs); err != nil {
		// Raft counts these entries as stored; p stays pending, so nothing
		// waiting for it goes on.
		s.fatal(fmt.Errorf("the leader's write of entries %d-%d failed after raft counted them as stored: %w", p.first, p.last, err))
		return
	}
	s.pending.CompareAndSwap(p, nil)
	close(p.done)
	<-s.busy
}

// DeleteRange implements raft.LogStore; it waits for any write in flight.
func (s *logStore) DeleteRange(lo, hi uint64) error {
	s.busy <- struct{}{}
	defer func() { <-s.busy }()
	return s.LogStore.DeleteRange(lo, hi)
}

// GetLog implements raft.LogStore, including entries not yet synced.
func (s *logStore) GetLog(index uint64, out *raft.Log) error {
	if p := s.pending.Load(); p != nil && index >= p.first && index <= p.last {
		*out = *p.logs[index-p.first]
		return nil
	}
	return s.LogStore.GetLog(index, out)
}

// FirstIndex implements raft.LogStore, including entries not yet synced.
func (s *logStore) FirstIndex() (uint64, error) {
	p := s.pending.Load()
	n, err := s.LogStore.FirstIndex()
	if err == nil && n == 0 && p != nil {
		n = p.first
	}
	return n, err
}

// LastIndex implements raft.LogStore, including entries not yet synced.
func (s *logStore) LastIndex() (uint64, error) {
	p := s.pending.Load()
	n, err := s.LogStore.LastIndex()
	if err == nil && p != nil && p.last > n {
		n = p.last
	}
	return n, err
}

// waitSynced returns once every entry up to index that was written so far
// is on disk.
func (s *logStore) waitSynced(index uint64) {
	for {
		p := s.pending.Load()
		if p == nil || p.first > index {
			return
		}
		<-p.done
	}
}

// waitPending returns once the write in flight, if any, is on disk.
func (s *logStore) waitPending() {
	if p := s.pending.Load(); p != nil {
		<-p.done
	}
}

// syncedCommit is the commit index a follower may be told: commit, or less
// if the leader has not synced everything up to it yet.
func (s *logStore) syncedCommit(commit uint64) uint64 {
	if p := s.pending.Load(); p != nil && p.first <= commit {
		return p.first - 1
	}
	return commit
}

// close waits for the write in flight, so the store can be closed.
func (s *logStore) close() {
	s.busy <- struct{}{}
}

func (s *logStore) stalled(logs []*raft.Log) error {
	if s.metrics != nil {
		s.metrics.logStoreStalls.Inc()
	}
	s.log.Error("raft log store stalled: stepping down", "timeout", s.timeout, "entries", len(logs))
	return fmt.Errorf("%w: the previous write has not finished in %s", ErrLogStoreStalled, s.timeout)
}

// syncedFSM applies an entry only once the leader's copy is on disk (see
// logStore).
type syncedFSM struct {
	raft.BatchingFSM
	logs *logStore
}

// Apply implements raft.FSM. Applying follows a commit, which followers
// should hear of: it rings the log store's news.
func (f syncedFSM) Apply(l *raft.Log) interface{} {
	f.logs.waitSynced(l.Index)
	f.logs.ring()
	return f.BatchingFSM.Apply(l)
}

// ApplyBatch implements raft.BatchingFSM.
func (f syncedFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	if len(logs) > 0 {
		f.logs.waitSynced(logs[len(logs)-1].Index)
		f.logs.ring()
	}
	return f.BatchingFSM.ApplyBatch(logs)
}
