package server

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Name, good.DataDir = "m1", "/tmp/x"
	good.RaftAddr, good.APIAddr, good.GossipAddr = "127.0.0.1:1", ":2", "127.0.0.1:3"
	good.BootstrapExpect = 1
	good.Insecure = true
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		field string
		edit  func(*Config)
	}{
		{"Name", func(c *Config) { c.Name = "" }},
		{"DataDir", func(c *Config) { c.DataDir = "" }},
		{"RaftAddr", func(c *Config) { c.RaftAddr = "0.0.0.0:1" }},
		{"RaftAddr", func(c *Config) { c.RaftAddr = "nohost" }},
		{"APIAddr", func(c *Config) { c.APIAddr = "" }},
		{"GossipAddr", func(c *Config) { c.GossipAddr = ":3" }},
		{"HTTPAddr", func(c *Config) { c.HTTPAddr = "bad" }},
		{"BootstrapExpect", func(c *Config) { c.BootstrapExpect = -1 }},
		{"Join", func(c *Config) { c.BootstrapExpect = 0 }},
		{"Join[0]", func(c *Config) { c.Join = []string{"x"} }},
		{"RaftMultiplier", func(c *Config) { c.RaftMultiplier = 0 }},
		{"NoLeaderWait", func(c *Config) { c.NoLeaderWait = 0 }},
		{"MaxRecvMsgSize", func(c *Config) { c.MaxRecvMsgSize = pb.MaxObjectBytes }},
		{"Logger", func(c *Config) { c.Logger = nil }},
		{"TokenFile", func(c *Config) { c.Insecure = false }},
		{"Insecure", func(c *Config) { c.TokenFile = "/tmp/token" }},
		{"CertLifetime", func(c *Config) { c.Insecure, c.TokenFile, c.CertLifetime = false, "/tmp/token", time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), "server config: "+tt.field+":") {
				t.Fatalf("got %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

func TestRaftTimeoutsScale(t *testing.T) {
	c := DefaultConfig()
	c.Name, c.RaftMultiplier = "m1", 3
	rc := raftConfig(c)
	if rc.HeartbeatTimeout != 900*time.Millisecond || rc.ElectionTimeout != 900*time.Millisecond || rc.LeaderLeaseTimeout != 900*time.Millisecond {
		t.Fatalf("timeouts: %v %v %v", rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout)
	}
	c.RaftTimeout = 200 * time.Millisecond // over the multiplier
	if rc := raftConfig(c); rc.HeartbeatTimeout != 200*time.Millisecond || rc.ElectionTimeout != 200*time.Millisecond || rc.LeaderLeaseTimeout != 200*time.Millisecond {
		t.Fatalf("--raft-timeout: %v %v %v", rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout)
	}
	if !rc.BatchApplyCh || rc.MaxAppendEntries < 64 {
		t.Fatalf("group commit off: BatchApplyCh %v, MaxAppendEntries %d", rc.BatchApplyCh, rc.MaxAppendEntries)
	}
	if err := raft.ValidateConfig(rc); err != nil {
		t.Fatal(err)
	}
}

// TestIndexCoalescer checks that reads arriving while a confirmation runs
// share the next one, and that one confirmation serves many reads.
func TestIndexCoalescer(t *testing.T) {
	var calls atomic.Int64
	release := make(chan struct{})
	started := make(chan struct{}, 64)
	c := newIndexCoalescer(func(context.Context) (uint64, error) {
		n := calls.Add(1)
		started <- struct{}{}
		<-release
		return uint64(n * 10), nil
	})
	ctx := context.Background()
	first := make(chan uint64)
	go func() { i, _ := c.do(ctx); first <- i }()
	<-started // round 1 is running

	var wg sync.WaitGroup
	results := make(chan uint64, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i, err := c.do(ctx)
			if err != nil {
				t.Error(err)
			}
			results <- i
		}()
	}
	// Give the 20 callers time to queue behind round 1; correctness does
	// not depend on it, only how many rounds run.
	deadline := time.Now().Add(2 * time.Second)
	for {
		c.mu.Lock()
		queued := c.next != nil
		c.mu.Unlock()
		if queued || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	release <- struct{}{}
	if got := <-first; got != 10 {
		t.Fatalf("first read got index %d, want 10", got)
	}
	close(release) // every later round completes at once
	wg.Wait()
	close(results)
	for r := range results {
		// Arrived while round 1 ran: must be served by a later round.
		if r < 20 {
			t.Fatalf("a read that arrived during round 1 was served by it (index %d)", r)
		}
	}
	if n := calls.Load(); n >= 21 {
		t.Fatalf("%d confirmations for 21 reads: nothing was shared", n)
	}

	// A caller whose context ends stops waiting.
	block := make(chan struct{})
	c2 := newIndexCoalescer(func(context.Context) (uint64, error) { <-block; return 1, nil })
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := c2.do(cctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("cancelled read: %v", err)
	}
	close(block)
}

// recordingLogStore is an in-memory log store that records the order of
// its mutations; a StoreLogs whose first index is in block waits for a
// release first.
type recordingLogStore struct {
	raft.LogStore
	mu    sync.Mutex
	ops   []string
	block map[uint64]chan struct{}
}

func (r *recordingLogStore) note(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
}

func (r *recordingLogStore) StoreLogs(logs []*raft.Log) error {
	r.mu.Lock()
	gate := r.block[logs[0].Index]
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.note(fmt.Sprintf("store %d-%d %s", logs[0].Index, logs[len(logs)-1].Index, logs[0].Data))
	return r.LogStore.StoreLogs(logs)
}

func (r *recordingLogStore) DeleteRange(lo, hi uint64) error {
	r.note(fmt.Sprintf("delete %d-%d", lo, hi))
	return r.LogStore.DeleteRange(lo, hi)
}

type fixedState struct{ s atomic.Uint32 }

func (f *fixedState) State() raft.RaftState { return raft.RaftState(f.s.Load()) }

type fakeTerm struct {
	state raft.RaftState
	term  uint64
}

func (f fakeTerm) State() raft.RaftState { return f.state }
func (f fakeTerm) CurrentTerm() uint64   { return f.term }

// TestSerialTransport: only a heartbeat of the term a follower already
// follows takes the fast path; one that could change the term, or that
// reaches a leader or candidate, goes to raft's main loop through Consumer()
// (hashicorp/raft issue #695: the fast path raced the leader loop and
// diverged logs).
func TestSerialTransport(t *testing.T) {
	logger := newHCLog(testLogger(t), "raft-net")
	nt, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	recv := newSerialTransport(nt, noPending{})
	defer recv.Close()
	var handled atomic.Int32
	recv.SetHeartbeatHandler(func(rpc raft.RPC) {
		handled.Add(1)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
	})
	send, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()

	for _, tc := range []struct {
		name string
		at   fakeTerm
		fast bool
	}{
		{"newer term", fakeTerm{raft.Follower, 5}, false},
		{"leader", fakeTerm{raft.Leader, 7}, false},
		{"candidate", fakeTerm{raft.Candidate, 7}, false},
		{"follower of this term", fakeTerm{raft.Follower, 7}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv.raft.Store(termState(tc.at))
			before := handled.Load()
			heartbeat := &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("m1"), Addr: []byte(send.LocalAddr())},
				Term:      7, Leader: []byte(send.LocalAddr()),
			}
			errc := make(chan error, 1)
			go func() {
				var resp raft.AppendEntriesResponse
				errc <- send.AppendEntries("m2", recv.LocalAddr(), heartbeat, &resp)
			}()
			viaLoop := false
			select {
			case rpc := <-recv.Consumer():
				viaLoop = true
				if req, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok || req.Term != 7 || len(req.Entries) != 0 {
					t.Fatalf("consumer got %#v", rpc.Command)
				}
				rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
			case err := <-errc:
				errc <- err
			case <-time.After(10 * time.Second):
				t.Fatal("the heartbeat was not answered")
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			fast := handled.Load() > before
			if fast != tc.fast || viaLoop == tc.fast {
				t.Fatalf("fast path %v, main loop %v; want fast path %v", fast, viaLoop, tc.fast)
			}
		})
	}

	// Every other RPC reaches the consumer as before.
	errc := make(chan error, 1)
	go func() {
		var resp raft.RequestVoteResponse
		errc <- send.RequestVote("m2", recv.LocalAddr(), &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("m1"), Addr: []byte(send.LocalAddr())}, Term: 8,
		}, &resp)
	}()
	select {
	case rpc := <-recv.Consumer():
		rpc.Respond(&raft.RequestVoteResponse{Term: 8}, nil)
	case <-time.After(10 * time.Second):
		t.Fatal("a vote request never reached the consumer")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestRaftStatus(t *testing.T) {
	for _, err := range []error{raft.ErrNotLeader, raft.ErrEnqueueTimeout, raft.ErrRaftShutdown, raft.ErrLeadershipTransferInProgress} {
		if s := raftStatus(err); !pb.IsNotApplied(s) {
			t.Errorf("%v -> %v, want not applied", err, s)
		}
	}
	for _, err := range []error{raft.ErrLeadershipLost, ErrLogStoreStalled, errors.New("other")} {
		if s := raftStatus(err); status.Code(s) != codes.Unknown || !strings.Contains(s.Error(), "read the object") {
			t.Errorf("%v -> %v, want Unknown telling what to do", err, s)
		}
	}
}

func TestIDs(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if u := newUUID(); !re.MatchString(u) || u == newUUID() {
		t.Fatalf("uuid %q", u)
	}
	if s := randomSuffix(); len(s) != 5 || strings.ContainsAny(s, "aeiou013") {
		t.Fatalf("suffix %q", s)
	}
	if a := advertiseAddr("[::]:80", "10.0.0.1:7000"); a != "10.0.0.1:80" {
		t.Fatalf("advertise %s", a)
	}
	if shortMethod("/skiff.v1.Cluster/Create") != "Cluster/Create" {
		t.Fatal(shortMethod("/skiff.v1.Cluster/Create"))
	}
}
