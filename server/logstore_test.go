package server

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"
)

// noPending is a syncedLog with nothing in flight.
type noPending struct{}

func (noPending) waitPending()                 {}
func (noPending) syncedCommit(c uint64) uint64 { return c }
func (noPending) news() <-chan struct{}        { return nil }

func newTestLogStore(t *testing.T, inner raft.LogStore, timeout time.Duration, state raft.RaftState) (*logStore, *fixedState) {
	t.Helper()
	s := newLogStore(inner, timeout, testLogger(t), newMetrics())
	s.fatal = func(err error) { t.Errorf("fatal: %v", err) }
	st := &fixedState{}
	st.s.Store(uint32(state))
	s.raft.Store(raftState(st))
	return s, st
}

// TestLogStoreLeaderWritesInParallel: the leader's StoreLogs returns before
// its write lands, and until then the entries are readable but nothing that
// would let them be counted or applied gets past: waitSynced, the commit
// index for followers, an AppendEntries answer, the next write (which fails
// after the stall timeout, so raft steps down) and a truncation.
func TestLogStoreLeaderWritesInParallel(t *testing.T) {
	gate := make(chan struct{})
	inner := &recordingLogStore{LogStore: raft.NewInmemStore(), block: map[uint64]chan struct{}{1: gate}}
	s, state := newTestLogStore(t, inner, 50*time.Millisecond, raft.Leader)

	if err := s.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Data: []byte("a")}, {Index: 2, Term: 1, Data: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	// The write is still blocked on the disk.
	var l raft.Log
	if err := s.GetLog(2, &l); err != nil || string(l.Data) != "b" {
		t.Fatalf("entry 2 while in flight: %q, %v", l.Data, err)
	}
	if n, err := s.LastIndex(); n != 2 || err != nil {
		t.Fatalf("last index while in flight: %d, %v", n, err)
	}
	if n, err := s.FirstIndex(); n != 1 || err != nil {
		t.Fatalf("first index while in flight: %d, %v", n, err)
	}
	if c := s.syncedCommit(2); c != 0 {
		t.Fatalf("followers may learn commit %d before the leader synced anything", c)
	}
	landed := func() bool {
		inner.mu.Lock()
		defer inner.mu.Unlock()
		return len(inner.ops) > 0 && inner.ops[0] == "store 1-2 a"
	}
	synced := make(chan bool, 1)
	go func() {
		s.waitSynced(2)
		synced <- landed()
	}()
	answered := make(chan bool, 1)
	go func() {
		s.waitPending()
		answered <- landed()
	}()

	// The next write cannot start while the disk holds the first: it fails
	// and writes nothing.
	if err := s.StoreLogs([]*raft.Log{{Index: 3, Term: 1, Data: []byte("c")}}); !errors.Is(err, ErrLogStoreStalled) {
		t.Fatalf("second write: %v, want ErrLogStoreStalled", err)
	}

	// Stepped down: a truncation waits for the write in flight.
	state.s.Store(uint32(raft.Follower))
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteRange(2, 2) }()

	close(gate) // the disk recovers
	if !<-synced {
		t.Fatal("waitSynced(2) returned before the write landed")
	}
	if !<-answered {
		t.Fatal("waitPending returned before the write landed")
	}
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	if c := s.syncedCommit(7); c != 7 {
		t.Fatalf("commit %d after the write landed, want 7", c)
	}
	inner.mu.Lock()
	ops := strings.Join(inner.ops, ", ")
	inner.mu.Unlock()
	if want := "store 1-2 a, delete 2-2"; ops != want {
		t.Fatalf("log store operations: %s\nwant %s", ops, want)
	}
	if n, err := s.LastIndex(); n != 1 || err != nil {
		t.Fatalf("last index after the truncation: %d, %v", n, err)
	}
}

// TestLogStoreFollowerWaits: a follower's write returns only once it is on
// disk, however long it takes.
func TestLogStoreFollowerWaits(t *testing.T) {
	gate := make(chan struct{})
	inner := &recordingLogStore{LogStore: raft.NewInmemStore(), block: map[uint64]chan struct{}{1: gate}}
	s, _ := newTestLogStore(t, inner, 20*time.Millisecond, raft.Follower)
	release := time.AfterFunc(100*time.Millisecond, func() { close(gate) })
	defer release.Stop()
	if err := s.StoreLogs([]*raft.Log{{Index: 1}}); err != nil {
		t.Fatalf("a follower's slow write failed: %v", err)
	}
	if n, _ := inner.LastIndex(); n != 1 {
		t.Fatalf("a follower's write returned before it landed: last index %d", n)
	}
	if p := s.pending.Load(); p != nil {
		t.Fatalf("a follower's write left a write in flight: %+v", p)
	}
}

type failingLogStore struct{ raft.LogStore }

func (failingLogStore) StoreLogs([]*raft.Log) error { return errors.New("no space left on device") }

// TestLogStoreLeaderWriteFails: a leader write raft already counted cannot
// be taken back, so the master ends.
func TestLogStoreLeaderWriteFails(t *testing.T) {
	s, _ := newTestLogStore(t, failingLogStore{raft.NewInmemStore()}, time.Second, raft.Leader)
	fatal := make(chan error, 1)
	s.fatal = func(err error) { fatal <- err }
	if err := s.StoreLogs([]*raft.Log{{Index: 4}, {Index: 5}}); err != nil {
		t.Fatal(err)
	}
	err := <-fatal
	if msg := err.Error(); !strings.Contains(msg, "entries 4-5") || !strings.Contains(msg, "no space left") {
		t.Fatalf("fatal error: %v", err)
	}
	if c := s.syncedCommit(5); c != 3 {
		t.Fatalf("followers may learn commit %d past a failed write", c)
	}
}

// clampLog is a syncedLog that holds AppendEntries until released and
// clamps the commit index to max.
type clampLog struct {
	max     uint64
	entered chan struct{}
	release chan struct{}
}

func (c *clampLog) waitPending() {
	select {
	case c.entered <- struct{}{}:
	default:
	}
	<-c.release
}

func (c *clampLog) syncedCommit(commit uint64) uint64 { return min(commit, c.max) }
func (c *clampLog) news() <-chan struct{}             { return nil }

// TestSerialTransportSyncsAppends: the commit index a leader sends is at
// most what it has synced, plain and pipelined; and a master hands raft an
// AppendEntries only after its own write in flight has landed.
func TestSerialTransportSyncsAppends(t *testing.T) {
	logger := newHCLog(testLogger(t), "raft-net")
	newNT := func() *raft.NetworkTransport {
		nt, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, logger)
		if err != nil {
			t.Fatal(err)
		}
		return nt
	}
	recvLog := &clampLog{max: ^uint64(0), entered: make(chan struct{}, 1), release: make(chan struct{})}
	recv := newSerialTransport(newNT(), recvLog)
	defer recv.Close()
	send := newSerialTransport(newNT(), &clampLog{max: 4})
	defer send.Close()

	req := func(commit uint64) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("m1"), Addr: []byte(send.LocalAddr())},
			Term:      3, Leader: []byte(send.LocalAddr()), PrevLogEntry: 9, PrevLogTerm: 3,
			Entries:           []*raft.Log{{Index: 10, Term: 3}},
			LeaderCommitIndex: commit,
		}
	}
	var released atomic.Bool
	errc := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		errc <- send.AppendEntries("m2", recv.LocalAddr(), req(10), &resp)
	}()
	<-recvLog.entered // the receiver waits for its write in flight
	released.Store(true)
	close(recvLog.release)
	rpc := <-recv.Consumer()
	if !released.Load() {
		t.Fatal("raft got the AppendEntries before the write in flight landed")
	}
	if got := rpc.Command.(*raft.AppendEntriesRequest).LeaderCommitIndex; got != 4 {
		t.Fatalf("commit index sent: %d, want 4 (what the leader synced)", got)
	}
	rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: true}, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	p, err := send.AppendEntriesPipeline("m2", recv.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct{ commit, want uint64 }{{3, 3}, {12, 4}} {
		if _, err := p.AppendEntries(req(tc.commit), new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
		want := tc.want
		rpc := <-recv.Consumer()
		if got := rpc.Command.(*raft.AppendEntriesRequest).LeaderCommitIndex; got != want {
			t.Errorf("pipelined commit index sent: %d, want %d", got, want)
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: true}, nil)
		if f := <-p.Consumer(); f.Error() != nil {
			t.Fatal(f.Error())
		}
	}
}

// heldStore is a log store whose writes can be held, as a slow disk would.
type heldStore struct {
	raft.LogStore
	mu   sync.Mutex
	hold chan struct{} // while non-nil, writes wait for it to close
}

func (h *heldStore) StoreLogs(logs []*raft.Log) error {
	h.mu.Lock()
	hold := h.hold
	h.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return h.LogStore.StoreLogs(logs)
}

// checkFSM records, for every entry it applies, whether the leader's copy
// was on the leader's disk at that moment.
type checkFSM struct {
	leaderDisk *atomic.Pointer[heldStore]
	applied    atomic.Uint64
	mu         sync.Mutex
	early      []string
}

func (f *checkFSM) Apply(l *raft.Log) interface{} {
	if d := f.leaderDisk.Load(); d != nil {
		if n, _ := d.LogStore.LastIndex(); n < l.Index {
			f.mu.Lock()
			f.early = append(f.early, fmt.Sprintf("entry %d applied with the leader's disk at %d", l.Index, n))
			f.mu.Unlock()
		}
	}
	f.applied.Store(l.Index)
	return nil
}

func (f *checkFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

func (f *checkFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (f *checkFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

// raftMember is one member of syncedRafts.
type raftMember struct {
	r    *raft.Raft
	disk *heldStore
	fsm  *checkFSM
	log  *logStore
}

// holdDisk makes the member's log writes wait until the returned release
// is called (it is also called when the test ends, before the members shut
// down).
func (m *raftMember) holdDisk(t *testing.T) (release func()) {
	hold := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	m.disk.mu.Lock()
	m.disk.hold = hold
	m.disk.mu.Unlock()
	return release
}

// syncedRafts starts three raft members over TCP on loopback with the
// masters' log store, transport and FSM wrapper (in-memory disks that can
// be held), and waits for a leader.
func syncedRafts(t *testing.T, stallTimeout time.Duration, leaderDisk *atomic.Pointer[heldStore]) (leader *raftMember, followers []*raftMember) {
	logger := testLogger(t)
	var members []*raftMember
	var servers []raft.Server
	for i := range 3 {
		m := &raftMember{disk: &heldStore{LogStore: raft.NewInmemStore()}, fsm: &checkFSM{leaderDisk: leaderDisk}}
		m.log = newLogStore(m.disk, stallTimeout, logger, newMetrics())
		m.log.fatal = func(err error) { t.Errorf("fatal: %v", err) }
		nt, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 3, 5*time.Second, newHCLog(logger, "raft-net"))
		if err != nil {
			t.Fatal(err)
		}
		tr := newSerialTransport(nt, m.log)
		cfg := raft.DefaultConfig()
		cfg.LocalID = raft.ServerID(fmt.Sprint("m", i))
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
		cfg.CommitTimeout = 10 * time.Millisecond
		cfg.BatchApplyCh = true
		cfg.Logger = newHCLog(logger, "raft")
		r, err := raft.NewRaft(cfg, syncedFSM{m.fsm, m.log}, m.log, raft.NewInmemStore(), raft.NewInmemSnapshotStore(), tr)
		if err != nil {
			t.Fatal(err)
		}
		m.r = r
		m.log.raft.Store(raftState(r))
		tr.raft.Store(termState(r))
		t.Cleanup(func() { _ = r.Shutdown().Error() })
		members = append(members, m)
		servers = append(servers, raft.Server{ID: cfg.LocalID, Address: nt.LocalAddr()})
	}
	if err := members[0].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	leader = waitRaftLeader(t, members, nil)
	for _, m := range members {
		if m != leader {
			followers = append(followers, m)
		}
	}
	if err := leader.r.Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	// The barrier is committed once the followers have it, and raft does not
	// pass it to the FSM (which would wait for the leader's copy): the
	// leader's own write of it may not even have started. Wait for it, so
	// that a test that holds the leader's disk next holds only the writes it
	// makes. Under load the barrier's write was held instead, the test's first
	// write found it in flight for the stall timeout, and the leader stepped
	// down before appending it (1 run in 40 with -race beside other tests).
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := leader.disk.LogStore.LastIndex(); n < leader.r.LastIndex(); n, _ = leader.disk.LogStore.LastIndex() {
		if time.Now().After(deadline) {
			t.Fatalf("the leader's disk holds entries up to %d, its log %d", n, leader.r.LastIndex())
		}
		time.Sleep(time.Millisecond)
	}
	return leader, followers
}

// waitRaftLeader waits for one of members other than not to lead.
func waitRaftLeader(t *testing.T, members []*raftMember, not *raftMember) *raftMember {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range members {
			if m != not && m.r.State() == raft.Leader {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader in 20s")
	return nil
}

// TestLeaderSyncsInParallel: with the leader's disk held, a write commits
// on the followers' copies alone, and yet no member applies it until the
// leader's copy is on its disk.
func TestLeaderSyncsInParallel(t *testing.T) {
	var leaderDisk atomic.Pointer[heldStore]
	leader, followers := syncedRafts(t, 30*time.Second, &leaderDisk)
	members := append([]*raftMember{leader}, followers...)
	deadline := time.Now().Add(20 * time.Second)

	release := leader.holdDisk(t)
	leaderDisk.Store(leader.disk)
	before := leader.r.LastIndex()
	f := leader.r.Apply([]byte("x"), 10*time.Second)
	want := before + 1
	for leader.r.LastIndex() < want {
		if time.Now().After(deadline) {
			t.Fatal("the leader never appended the entry")
		}
		time.Sleep(time.Millisecond)
	}

	// Committed on the followers' copies while the leader's disk holds it.
	for leader.r.CommitIndex() < want {
		if time.Now().After(deadline) {
			t.Fatalf("not committed without the leader's disk: commit %d, last %d", leader.r.CommitIndex(), want)
		}
		time.Sleep(time.Millisecond)
	}
	// Give every member a few commit timeouts' worth of AppendEntries in
	// which it could apply the entry too early.
	for range 5 {
		since := time.Now()
		for _, m := range followers {
			for !m.r.LastContact().After(since) {
				if time.Now().After(deadline) {
					t.Fatal("a follower lost contact with the leader")
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	for _, m := range members {
		if m.fsm.applied.Load() >= want {
			t.Fatalf("entry %d applied before the leader synced it", want)
		}
	}

	release()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, m := range followers {
		for m.fsm.applied.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("a follower never applied %d", want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, m := range members {
		m.fsm.mu.Lock()
		if len(m.fsm.early) > 0 {
			t.Errorf("applied before the leader's copy was on disk: %s", strings.Join(m.fsm.early, "; "))
		}
		m.fsm.mu.Unlock()
	}
}

// TestLeaderWithHungDiskStepsDown (hashicorp/raft issue #503): while the
// leader's write hangs, its next write fails after the stall timeout, it
// steps down, and the two healthy members go on committing; once its disk
// recovers it catches up.
func TestLeaderWithHungDiskStepsDown(t *testing.T) {
	old, healthy := syncedRafts(t, 300*time.Millisecond, new(atomic.Pointer[heldStore]))
	members := append([]*raftMember{old}, healthy...)
	release := old.holdDisk(t)
	before := old.r.LastIndex()
	first := old.r.Apply([]byte("a"), 10*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for old.r.LastIndex() <= before {
		if time.Now().After(deadline) {
			t.Fatal("the leader never appended the first write")
		}
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() { second <- old.r.Apply([]byte("b"), 10*time.Second).Error() }()
	select {
	case err := <-second:
		if !errors.Is(err, ErrLogStoreStalled) {
			t.Fatalf("the write behind a hung one: %v, want ErrLogStoreStalled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the write behind a hung one waits for the disk: the leader never steps down")
	}
	var stalls dto.Metric
	if err := old.log.metrics.logStoreStalls.Write(&stalls); err != nil || stalls.GetCounter().GetValue() != 1 {
		t.Errorf("stalls counted: %v (%v), want 1", stalls.GetCounter().GetValue(), err)
	}

	// The disk still hangs: the others elect a leader and commit without it.
	leader := waitRaftLeader(t, members, old)
	f := leader.r.Apply([]byte("c"), 10*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("the healthy members cannot commit: %v", err)
	}
	if old.r.State() == raft.Leader {
		t.Fatal("the master with the hung disk still leads")
	}

	release()
	_ = first.Error() // applied or lost with the old leadership: either is allowed
	for old.fsm.applied.Load() < f.Index() {
		if time.Now().After(deadline) {
			t.Fatalf("the recovered master applied %d, want %d", old.fsm.applied.Load(), f.Index())
		}
		time.Sleep(time.Millisecond)
	}
}
