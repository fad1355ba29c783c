package server

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// commitState is the part of *raft.Raft the pipeline asks.
type commitState interface{ CommitIndex() uint64 }

// writeGate is the part of the leader's write gate (inflightBatches) the
// pipeline asks.
type writeGate interface {
	// activity reports whether writes are in flight or waiting, and how
	// many were ever proposed.
	activity() (busy bool, proposed uint64)
	// quiet reports whether nothing is in flight or waiting, and returns
	// a channel closed when that is next so.
	quiet() (ch <-chan struct{}, now bool)
}

const (
	// idleResend is how long the pipeline holds back an AppendEntries
	// that tells a follower nothing new.
	idleResend = 100 * time.Millisecond
	// pushDelay is how long a new commit index waits for raft to carry it
	// to a follower before the pipeline sends it alone.
	pushDelay = 5 * time.Millisecond
	// pushGrace is how long a commit index waits once the write gate is
	// quiet: a closed-loop writer answered at that moment is usually back
	// by then, and its entry carries the commit.
	pushGrace = time.Millisecond
)

// AppendEntriesPipeline implements raft.Transport.
func (t *serialTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	inner, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	p := &syncedPipeline{AppendPipeline: inner, t: t, resend: idleResend, delay: pushDelay, grace: pushGrace, done: make(chan struct{})}
	go p.push(t.logs.news())
	return p, nil
}

// syncedPipeline is raft's pipeline to one follower, with three changes:
//
//   - the commit index sent is at most what this master has synced (see
//     logStore);
//   - an AppendEntries that would tell the follower nothing new waits.
//     raft's replication loop sends one every CommitTimeout (10-20 ms)
//     so that followers learn new commit indexes; without writes each
//     repeats the last. Such a request is held until the log store rings
//     its news (a log write, or the leader applying a commit), at most
//     resend. An idle cluster of three masters went from 12 % of a core to
//     5.4 % (the leader 7.8 -> 3.6 %, each follower 2.1 -> 0.9 %);
//   - a new commit index that raft does not send reaches the follower
//     alone: once the write gate has gone quiet (its last batch ended and
//     nothing is left to propose, so no entry will carry it) and no write
//     came in the grace after, or else within delay if no write was in
//     flight, waiting or proposed meanwhile (writes that keep coming carry
//     it in their entries). Pushing at every commit would not do: at 16
//     clients half of raft's sends got a push besides (the write gate's
//     linger holds the next batch for the writers to come back), and
//     writes/s fell 5-7 %. Without the grace, a single closed-loop writer
//     got a push for 40 % of its writes, as the gate went quiet just
//     before the writer came back. Before the push, a follower learned the
//     commit of the last write of a burst only at the next CommitTimeout,
//     so its watchers saw that write 15 ms (median) after the leader's
//     answer, and reads served by followers waited as long; with the
//     delay alone 7.3 ms, with the quiet gate 6.6 (medians of the scale
//     benchmark's fan-out; docs/performance-history.md, twenty-ninth
//     session).
//
// The commit index pushed is at most the last entry sent on the pipeline,
// which the follower holds (or refuses, like the request before it) by the
// time it reads it: the same commit index raft would send next. raft reads
// the answer as that of any request of its own without entries.
// Heartbeats, which keep the lease and followers' election timers, are
// not touched.
type syncedPipeline struct {
	raft.AppendPipeline
	t                    *serialTransport
	resend, delay, grace time.Duration
	timer                *time.Timer // raft's goroutine's, for hold
	done                 chan struct{}
	closeOnce            sync.Once

	// mu orders sends (raft's and push's) and guards what they said.
	mu     sync.Mutex
	closed bool
	sent   bool
	// The last request sent.
	hdr                raft.RPCHeader
	leader             []byte
	term, prev, commit uint64
	// The last entry sent (or the previous entry of a request without).
	last, lastTerm uint64
}

// AppendEntries implements raft.AppendPipeline.
func (p *syncedPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	news := p.t.logs.news() // before the commit index is read
	args.LeaderCommitIndex = p.t.logs.syncedCommit(args.LeaderCommitIndex)
	if p.tellsNothing(args) {
		p.hold(news)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// push may have sent a later commit index meanwhile.
	args.LeaderCommitIndex = max(args.LeaderCommitIndex, p.commit)
	f, err := p.AppendPipeline.AppendEntries(args, resp)
	if err == nil {
		p.record(args)
	}
	return f, err
}

// record notes what args said; p.mu is held.
func (p *syncedPipeline) record(args *raft.AppendEntriesRequest) {
	p.sent = true
	p.hdr, p.leader = args.RPCHeader, args.Leader
	p.term, p.prev, p.commit = args.Term, args.PrevLogEntry, args.LeaderCommitIndex
	p.last, p.lastTerm = args.PrevLogEntry, args.PrevLogTerm
	if n := len(args.Entries); n > 0 {
		p.last, p.lastTerm = args.Entries[n-1].Index, args.Entries[n-1].Term
	}
}

// tellsNothing reports whether args repeats the last request sent and the
// commit index has not moved since.
func (p *syncedPipeline) tellsNothing(args *raft.AppendEntriesRequest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.sent || len(args.Entries) > 0 || args.Term != p.term || args.PrevLogEntry != p.prev || args.LeaderCommitIndex != p.commit {
		return false
	}
	return p.commitIndex() == p.commit
}

// commitIndex is the commit index the follower may learn now: synced
// here, and at most the last entry sent to it.
func (p *syncedPipeline) commitIndex() uint64 {
	r, ok := p.t.raft.Load().(commitState)
	if !ok {
		return 0
	}
	return min(p.t.logs.syncedCommit(r.CommitIndex()), p.last)
}

func (p *syncedPipeline) hold(news <-chan struct{}) {
	if p.timer == nil {
		p.timer = time.NewTimer(p.resend)
	} else {
		p.timer.Reset(p.resend)
	}
	defer p.timer.Stop()
	select {
	case <-news:
	case <-p.timer.C:
	case <-p.done:
	case <-p.t.stop:
	}
}

// push sends a new commit index that raft will not send, from the first
// ring of news on: once the write gate is quiet, or after delay.
func (p *syncedPipeline) push(news <-chan struct{}) {
	timer := time.NewTimer(p.delay)
	timer.Stop()
	for {
		select {
		case <-news:
		case <-p.done:
			return
		case <-p.t.stop:
			return
		}
		// Taken before the wait: what rings meantime (the commit of a
		// write still in flight at the check below) wakes the next round.
		news = p.t.logs.news()
		if !p.await(timer) {
			return
		}
		p.mu.Lock()
		if c := p.commitIndex(); !p.closed && p.sent && c > p.commit {
			args := &raft.AppendEntriesRequest{
				RPCHeader: p.hdr, Term: p.term, Leader: p.leader,
				PrevLogEntry: p.last, PrevLogTerm: p.lastTerm, LeaderCommitIndex: c,
			}
			if _, err := p.AppendPipeline.AppendEntries(args, new(raft.AppendEntriesResponse)); err == nil {
				p.record(args)
				p.t.pushes.Add(1)
			}
		}
		p.mu.Unlock()
	}
}

// await waits until no write will carry the commit index: the write gate
// is quiet (now or within delay) and no write came in the grace after, or
// the delay passed with no write in flight, waiting or proposed meanwhile.
// It reports false once the pipeline closes, and otherwise returns with
// the timer stopped; a write that comes while it waits makes it start
// again.
func (p *syncedPipeline) await(timer *time.Timer) bool {
	for {
		gate, _ := p.t.gate.Load().(writeGate)
		if gate == nil {
			return p.sleep(timer, p.delay)
		}
		quiet, now := gate.quiet()
		if !now {
			_, before := gate.activity()
			timer.Reset(p.delay)
			select {
			case <-quiet:
				timer.Stop()
			case <-timer.C:
				if busy, after := gate.activity(); busy || after != before {
					// Writes keep coming: raft sends their entries,
					// and the commit index with them; the gate's next
					// quiet moment tells when that stops.
					continue
				}
				return true
			case <-p.done:
				timer.Stop()
				return false
			case <-p.t.stop:
				timer.Stop()
				return false
			}
		}
		busy, at := gate.activity()
		if busy {
			continue // a write came at once: its entry carries the commit
		}
		if !p.sleep(timer, p.grace) {
			return false
		}
		if busy, after := gate.activity(); !busy && after == at {
			return true
		}
	}
}

// sleep waits d, and reports false if the pipeline closes first.
func (p *syncedPipeline) sleep(timer *time.Timer, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-p.done:
	case <-p.t.stop:
	}
	timer.Stop()
	return false
}

// Close implements raft.AppendPipeline. The inner pipeline closes first:
// that ends a send blocked on a full pipeline, which holds mu.
func (p *syncedPipeline) Close() error {
	p.closeOnce.Do(func() { close(p.done) })
	err := p.AppendPipeline.Close()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return err
}
