package server

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// quietLog is a syncedLog whose news the test rings.
type quietLog struct {
	mu sync.Mutex
	ch chan struct{}
}

func newQuietLog() *quietLog                     { return &quietLog{ch: make(chan struct{})} }
func (q *quietLog) waitPending()                 {}
func (q *quietLog) syncedCommit(c uint64) uint64 { return c }

func (q *quietLog) news() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ch
}

func (q *quietLog) ring() {
	q.mu.Lock()
	defer q.mu.Unlock()
	close(q.ch)
	q.ch = make(chan struct{})
}

// leaderCommit is a leader's termState and commitState.
type leaderCommit struct{ commit atomic.Uint64 }

func (*leaderCommit) State() raft.RaftState { return raft.Leader }
func (*leaderCommit) CurrentTerm() uint64   { return 3 }
func (l *leaderCommit) CommitIndex() uint64 { return l.commit.Load() }

// testGate is a writeGate the test sets.
type testGate struct {
	mu       sync.Mutex
	busy     bool
	isQuiet  bool
	proposed uint64
	step     uint64 // added to proposed at every look
	ch       chan struct{}
}

func (g *testGate) activity() (bool, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.proposed += g.step
	return g.busy, g.proposed
}

func (g *testGate) quiet() (<-chan struct{}, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
	return g.ch, g.isQuiet
}

// set changes what the gate says; goQuiet closes the quiet channel (the
// gate's last batch ended), whether or not busy says a write came since.
func (g *testGate) set(busy, isQuiet, goQuiet bool, step uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy, g.isQuiet, g.step = busy, isQuiet, step
	if goQuiet && g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

// sendRecorder is an AppendPipeline that records what it sends.
type sendRecorder struct {
	sent chan *raft.AppendEntriesRequest
}

func (r *sendRecorder) AppendEntries(args *raft.AppendEntriesRequest, _ *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	r.sent <- args
	return nil, nil
}
func (r *sendRecorder) Consumer() <-chan raft.AppendFuture { return nil }
func (r *sendRecorder) Close() error                       { return nil }

// next returns the next request sent, failing the test if none comes
// within 5 s.
func (r *sendRecorder) next(t *testing.T, what string) *raft.AppendEntriesRequest {
	t.Helper()
	select {
	case got := <-r.sent:
		return got
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: nothing sent", what)
		return nil
	}
}

// none fails the test if anything is sent within d.
func (r *sendRecorder) none(t *testing.T, what string, d time.Duration) {
	t.Helper()
	select {
	case got := <-r.sent:
		t.Fatalf("%s: sent %+v", what, got)
	case <-time.After(d):
	}
}

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestPipelineHoldsIdleAppends: a pipelined AppendEntries that repeats the
// last one, with the commit index where it was, waits for the log store's
// news, the resend interval or the transport's end; anything that tells the
// follower something (entries, a commit index, a term) goes at once.
func TestPipelineHoldsIdleAppends(t *testing.T) {
	q := newQuietLog()
	rc := &leaderCommit{}
	rc.commit.Store(5)
	tr := &serialTransport{logs: q, stop: make(chan struct{})}
	tr.raft.Store(termState(rc))
	rec := &sendRecorder{sent: make(chan *raft.AppendEntriesRequest, 1)}
	p := &syncedPipeline{AppendPipeline: rec, t: tr, resend: time.Hour, done: make(chan struct{})}

	idle := func(term, commit uint64) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{Term: term, PrevLogEntry: 9, PrevLogTerm: term, LeaderCommitIndex: commit}
	}
	// start sends args from another goroutine; done is closed once
	// AppendEntries returned.
	start := func(args *raft.AppendEntriesRequest) (done chan struct{}) {
		done = make(chan struct{})
		go func() {
			defer close(done)
			_, _ = p.AppendEntries(args, new(raft.AppendEntriesResponse))
		}()
		return done
	}
	sentNow := func(what string, args *raft.AppendEntriesRequest) {
		t.Helper()
		done := start(args)
		select {
		case <-rec.sent:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not sent", what)
		}
		<-done
	}
	held := func(what string, args *raft.AppendEntriesRequest) (done chan struct{}) {
		t.Helper()
		done = start(args)
		select {
		case <-rec.sent:
			t.Fatalf("%s: sent at once, want it held", what)
		case <-time.After(100 * time.Millisecond):
		}
		return done
	}
	waitSent := func(what string, done chan struct{}) {
		t.Helper()
		select {
		case <-rec.sent:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: still held", what)
		}
		<-done
	}

	sentNow("the first request", idle(3, 5))
	done := held("a repeat", idle(3, 5))
	q.ring()
	waitSent("after news", done)

	// The leader committed more after raft built the request: not a repeat.
	rc.commit.Store(6)
	sentNow("a repeat built before a commit", idle(3, 5))
	sentNow("a new commit index", idle(3, 6))
	withEntries := idle(3, 6)
	withEntries.Entries = []*raft.Log{{Index: 10, Term: 3}}
	sentNow("entries", withEntries)
	sentNow("a new previous entry", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 6})
	sentNow("a new term", &raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 6})

	repeat := &raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 6}
	done = held("a repeat", repeat)
	q.ring()
	waitSent("after news", done)

	p.resend = 50 * time.Millisecond
	sentNow("a repeat after the resend interval", repeat)

	p.resend = time.Hour
	done = held("a repeat", repeat)
	close(tr.stop)
	waitSent("after the transport closed", done)
}

// TestPipelinePushesCommits: a commit index raft has not sent within the
// push delay goes to the follower alone, capped at the last entry sent;
// one raft sends in time is not sent again.
func TestPipelinePushesCommits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"raft is slow", time.Millisecond}, {"raft carries it", 300 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQuietLog()
			rc := &leaderCommit{}
			rc.commit.Store(9)
			tr := &serialTransport{logs: q, stop: make(chan struct{})}
			tr.raft.Store(termState(rc))
			rec := &sendRecorder{sent: make(chan *raft.AppendEntriesRequest, 1)}
			p := &syncedPipeline{AppendPipeline: rec, t: tr, resend: time.Hour, delay: tc.delay, done: make(chan struct{})}
			go p.push(q.news())
			defer p.Close()

			entries := func(prev uint64, idx ...uint64) *raft.AppendEntriesRequest {
				args := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: prev, PrevLogTerm: 3, LeaderCommitIndex: rc.commit.Load()}
				for _, i := range idx {
					args.Entries = append(args.Entries, &raft.Log{Index: i, Term: 3})
				}
				return args
			}
			send := func(args *raft.AppendEntriesRequest) {
				t.Helper()
				if _, err := p.AppendEntries(args, new(raft.AppendEntriesResponse)); err != nil {
					t.Fatal(err)
				}
				<-rec.sent
			}
			pushed := func(what string, commit uint64) {
				t.Helper()
				if got := rec.next(t, what); len(got.Entries) != 0 || got.PrevLogEntry != 10 || got.PrevLogTerm != 3 || got.Term != 3 || got.LeaderCommitIndex != commit {
					t.Fatalf("%s: pushed %+v, want commit %d after entry 10", what, got, commit)
				}
			}
			nothing := func(what string) {
				t.Helper()
				rec.none(t, what, 2*tc.delay+100*time.Millisecond)
			}

			send(entries(9, 10))
			rc.commit.Store(12) // beyond what the follower was sent
			if tc.delay > 100*time.Millisecond {
				q.ring()
				send(entries(10)) // raft's next request carries commit 10 first
				nothing("a commit raft sent")
				return
			}
			// Not while writes are in flight or waiting: their entries
			// carry the commit index.
			gate := &testGate{busy: true}
			tr.gate.Store(writeGate(gate))
			q.ring()
			nothing("writes in flight")
			gate.set(false, false, false, 1)
			q.ring()
			nothing("writes proposed meanwhile")
			gate.set(false, false, false, 0)
			q.ring()
			pushed("a commit beyond the last entry sent", 10)
			q.ring()
			nothing("no new commit")
			// A request raft built before the push does not take it back.
			if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 9}, new(raft.AppendEntriesResponse)); err != nil {
				t.Fatal(err)
			}
			if got := <-rec.sent; got.LeaderCommitIndex != 10 {
				t.Fatalf("raft's older request sent commit %d after the push of 10", got.LeaderCommitIndex)
			}
		})
	}
}

// TestPipelinePushesWhenQuiet: a commit index raft will not send goes to
// the follower once the write gate is quiet and stays so for the grace,
// long before the push delay; not while writes are in flight, nor when a
// write came as the gate went quiet or in the grace after.
func TestPipelinePushesWhenQuiet(t *testing.T) {
	q := newQuietLog()
	rc := &leaderCommit{}
	rc.commit.Store(9)
	tr := &serialTransport{logs: q, stop: make(chan struct{})}
	tr.raft.Store(termState(rc))
	gate := &testGate{busy: true}
	tr.gate.Store(writeGate(gate))
	rec := &sendRecorder{sent: make(chan *raft.AppendEntriesRequest, 1)}
	p := &syncedPipeline{AppendPipeline: rec, t: tr, resend: time.Hour, delay: time.Hour, grace: 20 * time.Millisecond, done: make(chan struct{})}
	go p.push(q.news())
	defer p.Close()

	send := func(prev, idx uint64) {
		t.Helper()
		args := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: prev, PrevLogTerm: 3, LeaderCommitIndex: rc.commit.Load(),
			Entries: []*raft.Log{{Index: idx, Term: 3}}}
		if _, err := p.AppendEntries(args, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
		<-rec.sent
	}
	pushed := func(what string, commit uint64) {
		t.Helper()
		if got := rec.next(t, what); len(got.Entries) != 0 || got.LeaderCommitIndex != commit {
			t.Fatalf("%s: sent %+v, want commit %d alone", what, got, commit)
		}
	}
	nothing := func(what string) {
		t.Helper()
		rec.none(t, what, 200*time.Millisecond)
	}
	// asked waits until push looks at the gate's quiet channel.
	asked := func() {
		t.Helper()
		eventually(t, 5*time.Second, "push waiting for the gate", func() error {
			gate.mu.Lock()
			defer gate.mu.Unlock()
			if gate.ch == nil {
				return errors.New("not yet")
			}
			return nil
		})
	}

	send(9, 10)
	rc.commit.Store(10)
	q.ring()
	asked()
	nothing("writes in flight")
	gate.set(true, false, true, 0)
	nothing("a write came as the gate went quiet")
	asked()
	gate.set(false, true, true, 1)
	nothing("writes proposed in the grace after the gate went quiet")
	gate.set(false, true, false, 0)
	pushed("the gate went quiet", 10)

	// Quiet already when the commit rings: at once.
	send(10, 11)
	rc.commit.Store(11)
	q.ring()
	pushed("a commit with the gate quiet", 11)
}

// TestLogStoreRingsNews: a log write and an applied commit wake whoever
// waits for the log store's news.
func TestLogStoreRingsNews(t *testing.T) {
	s, _ := newTestLogStore(t, raft.NewInmemStore(), time.Second, raft.Follower)
	closed := isClosed
	news := s.news()
	if closed(news) {
		t.Fatal("news before anything happened")
	}
	if err := s.StoreLogs([]*raft.Log{{Index: 1, Term: 1}}); err != nil {
		t.Fatal(err)
	}
	if !closed(news) {
		t.Error("a log write rang no news")
	}
	fsm := syncedFSM{&checkFSM{leaderDisk: &atomic.Pointer[heldStore]{}}, s}
	news = s.news()
	fsm.ApplyBatch([]*raft.Log{{Index: 1, Term: 1}})
	if !closed(news) {
		t.Error("an applied batch rang no news")
	}
	news = s.news()
	fsm.Apply(&raft.Log{Index: 2, Term: 1})
	if !closed(news) {
		t.Error("an applied entry rang no news")
	}
}
