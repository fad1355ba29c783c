package client

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/skiff-sh/skiff/proto"
)

// namingMaster answers every write and names a leader in pb.LeaderHeader,
// as a master does (the leader itself, or a follower that forwarded).
type namingMaster struct {
	pb.UnimplementedClusterServer
	mu     sync.Mutex
	leader string
	writes int
}

func (m *namingMaster) name(addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leader = addr
}

func (m *namingMaster) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

func (m *namingMaster) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	m.mu.Lock()
	m.writes++
	leader := m.leader
	m.mu.Unlock()
	if leader != "" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(pb.LeaderHeader, leader))
	}
	return &pb.WriteResponse{Object: req.GetObject(), Action: "created"}, nil
}

func (m *namingMaster) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	return &pb.GetResponse{Object: configMapNamed(req.GetName())}, nil
}

func configMapNamed(name string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"}})
}

// TestWritesGoToTheNamedLeader: after a master names the leader, writes go
// to it directly (no forwarding hop); a name that is not one of the
// configured masters moves nothing, and reads are not steered.
func TestWritesGoToTheNamedLeader(t *testing.T) {
	follower, leader, other := &namingMaster{}, &namingMaster{}, &namingMaster{}
	fAddr, lAddr, oAddr := serve(t, follower), serve(t, leader), serve(t, other)
	follower.name(lAddr)
	leader.name(lAddr)
	other.name("10.9.9.9:7101") // not configured: ignored
	c := newTestClient(t, oAddr, fAddr, lAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	create := func() {
		t.Helper()
		if _, err := c.Create(ctx, configMapNamed("x")); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(o, f, l int) {
		t.Helper()
		if got := [3]int{other.count(), follower.count(), leader.count()}; got != [3]int{o, f, l} {
			t.Fatalf("writes on (other, follower, leader) = %v, want %v", got, [3]int{o, f, l})
		}
	}
	create() // the first configured master answers; its name is unknown
	counts(1, 0, 0)
	create() // still no leader known: the master that answered last
	counts(2, 0, 0)

	// The first master now forwards for the real leader and says so.
	other.name(lAddr)
	create()
	counts(3, 0, 0)
	for range 3 {
		create()
	}
	counts(3, 0, 3)

	// A read is not a write: it goes where the client last got an answer,
	// which is the leader now; a new client reads from its first master.
	c2 := newTestClient(t, fAddr, lAddr)
	if _, err := c2.Get(ctx, "ConfigMap", "default", "x", ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Create(ctx, configMapNamed("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Create(ctx, configMapNamed("z")); err != nil {
		t.Fatal(err)
	}
	counts(3, 1, 4)
}

// refusingMaster answers writes "not applied, no leader" until elected,
// then as the leader.
type refusingMaster struct {
	namingMaster
	elected atomic.Bool
}

func (m *refusingMaster) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	if !m.elected.Load() {
		return nil, pb.NotAppliedError("no leader: not applied, safe to retry")
	}
	return m.namingMaster.Create(ctx, req)
}

// TestWritesLeaveADeadLeader: once the leader the client learned is gone,
// writes with a short per-request timeout (as the failover benchmark's
// 250 ms) reach the master that took over, instead of each spending its
// whole time waiting for the dead one's connection.
func TestWritesLeaveADeadLeader(t *testing.T) {
	follower, leader := &refusingMaster{}, &namingMaster{}
	fAddr := serve(t, follower)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterClusterServer(g, leader)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	lAddr := ln.Addr().String()
	leader.name(lAddr)
	follower.name(lAddr)
	c := newTestClient(t, lAddr, fAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if _, err := c.Create(ctx, configMapNamed("x")); err != nil {
			t.Fatal(err)
		}
	}
	if leader.count() != 3 {
		t.Fatalf("%d writes on the leader, want 3", leader.count())
	}

	// The leader dies; until an election ends the other master refuses.
	g.Stop()
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = c.Create(wctx, configMapNamed("during-election"))
	wcancel()
	if err == nil {
		t.Fatal("a write succeeded with no leader")
	}
	follower.elected.Store(true)
	follower.name(fAddr)
	for i := range 5 {
		wctx, wcancel := context.WithTimeout(ctx, 250*time.Millisecond)
		_, err := c.Create(wctx, configMapNamed("after"))
		wcancel()
		if err != nil {
			t.Fatalf("write %d after the election: %v", i, err)
		}
	}
	if follower.count() != 5 {
		t.Fatalf("%d writes on the new leader, want 5", follower.count())
	}
}

// hangingMaster takes writes and never answers them, as a leader cut off
// from the other masters holds a write while it looks for a leader.
type hangingMaster struct{ namingMaster }

func (m *hangingMaster) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	m.mu.Lock()
	m.writes++
	m.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestWritesLeaveACutOffLeader: a write to the leader the client learned
// that times out (the leader was cut off from the other masters, and the
// client's connection to it still works) makes the next write start at
// another master, which answers for the new leader.
func TestWritesLeaveACutOffLeader(t *testing.T) {
	old, next := &namingMaster{}, &namingMaster{}
	oldSrv := grpc.NewServer()
	hang := &hangingMaster{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	oAddr := ln.Addr().String()
	// The first master answers as leader until it is cut off, then hangs.
	var cut atomic.Bool
	pb.RegisterClusterServer(oldSrv, switchingMaster{a: old, b: hang, useB: &cut})
	go oldSrv.Serve(ln)
	t.Cleanup(oldSrv.Stop)
	nAddr := serve(t, next)
	old.name(oAddr)
	next.name(nAddr)
	c := newTestClient(t, oAddr, nAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Create(ctx, configMapNamed("x")); err != nil {
		t.Fatal(err)
	}

	cut.Store(true)
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := c.Create(wctx, configMapNamed("timed-out")); err == nil {
		t.Fatal("a write to the cut-off leader succeeded")
	}
	wcancel()
	for i := range 3 {
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := c.Create(wctx, configMapNamed("after"))
		wcancel()
		if err != nil {
			t.Fatalf("write %d after the cut: %v", i, err)
		}
	}
	if n := next.count(); n != 3 {
		t.Fatalf("%d writes on the new leader, want 3", n)
	}
	if n := hang.count(); n != 1 {
		t.Fatalf("%d writes went to the cut-off leader, want 1", n)
	}
}

// switchingMaster serves as a until useB is set, then as b.
type switchingMaster struct {
	pb.UnimplementedClusterServer
	a, b pb.ClusterServer
	useB *atomic.Bool
}

func (s switchingMaster) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	if s.useB.Load() {
		return s.b.Create(ctx, req)
	}
	return s.a.Create(ctx, req)
}
