package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// fakeCluster serves scripted watch streams: each Watch call takes the next
// script, checks the requested resourceVersion, sends the events and then
// ends the stream with an error (a master going away).
type fakeCluster struct {
	pb.UnimplementedClusterServer
	mu      sync.Mutex
	scripts []watchScript
	froms   []uint64
	writes  int
	writeFn func(n int) error
}

type watchScript struct {
	events []*pb.WatchEvent
	end    error
}

func (f *fakeCluster) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchEvent]) error {
	f.mu.Lock()
	f.froms = append(f.froms, req.GetResourceVersion())
	if len(f.scripts) == 0 {
		f.mu.Unlock()
		<-stream.Context().Done()
		return nil
	}
	sc := f.scripts[0]
	f.scripts = f.scripts[1:]
	f.mu.Unlock()
	for _, ev := range sc.events {
		if ev.GetResourceVersion() <= req.GetResourceVersion() {
			continue
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	return sc.end
}

func (f *fakeCluster) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	f.mu.Lock()
	f.writes++
	n := f.writes
	f.mu.Unlock()
	if err := f.writeFn(n); err != nil {
		return nil, err
	}
	return &pb.WriteResponse{Object: req.GetObject(), Action: "created"}, nil
}

func (f *fakeCluster) Apply(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return f.Create(ctx, req)
}

func serve(t *testing.T, srv pb.ClusterServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterClusterServer(g, srv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

func newTestClient(t *testing.T, addrs ...string) *Client {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Servers = addrs
	cfg.RetryFor = 5 * time.Second
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ev(typ, name string, rv uint64) *pb.WatchEvent {
	return &pb.WatchEvent{Type: typ, ResourceVersion: rv, Object: pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"}})}
}

// A stream that breaks in the middle of several events sharing one index
// (one Raft batch) resumes without losing or repeating any of them.
func TestWatchResumesInsideABatch(t *testing.T) {
	batch := []*pb.WatchEvent{ev("ADDED", "a", 5), ev("MODIFIED", "b", 7), ev("MODIFIED", "c", 7), ev("MODIFIED", "d", 7), ev("ADDED", "e", 9)}
	broken := status.Error(codes.Unavailable, "master going away")
	f := &fakeCluster{scripts: []watchScript{
		{events: batch[:3], end: broken}, // breaks after a and the first two of index 7
		{events: batch, end: broken},     // the resumed stream replays from index 6
	}}
	c := newTestClient(t, serve(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, "ConfigMap", WatchOptions{ResourceVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var got []string
	for range 5 {
		e, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, fmt.Sprintf("%s@%d", e.GetObject().Meta().GetName(), e.GetResourceVersion()))
	}
	want := "[a@5 b@7 c@7 d@7 e@9]"
	if fmt.Sprint(got) != want {
		t.Errorf("events %v, want %s", got, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.froms) < 2 || f.froms[0] != 1 || f.froms[1] != 6 {
		t.Errorf("watch requested from %v, want [1 6 ...]", f.froms)
	}
}

// An expired watch is reported as ErrExpired so the caller relists.
func TestWatchExpired(t *testing.T) {
	f := &fakeCluster{scripts: []watchScript{{end: status.Error(codes.OutOfRange, "resourceVersion 3 expired")}}}
	c := newTestClient(t, serve(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, "ConfigMap", WatchOptions{ResourceVersion: 3})
	if err == nil {
		_, err = w.Next(ctx)
		w.Close()
	}
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
}

// Writes the server marks as not applied are retried on another master;
// a write whose connection broke is reported as Unknown, not retried.
func TestWriteRetryRules(t *testing.T) {
	down := &fakeCluster{writeFn: func(int) error { return pb.NotAppliedError("no leader") }}
	up := &fakeCluster{writeFn: func(int) error { return nil }}
	c := newTestClient(t, serve(t, down), serve(t, up))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cm := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "x", Namespace: "default"}})
	if _, err := c.Create(ctx, cm); err != nil {
		t.Fatalf("create with a not-applied first master: %v", err)
	}
	if down.writes != 1 || up.writes != 1 {
		t.Errorf("writes: first master %d, second %d; want 1 and 1", down.writes, up.writes)
	}

	broken := &fakeCluster{writeFn: func(int) error { return status.Error(codes.Unavailable, "transport is closing") }}
	other := &fakeCluster{writeFn: func(int) error { return nil }}
	c = newTestClient(t, serve(t, broken), serve(t, other))
	_, err := c.Create(ctx, cm)
	if status.Code(err) != codes.Unknown {
		t.Errorf("create over a broken connection: %v, want Unknown", err)
	}
	if other.writes != 0 {
		t.Errorf("a write with an unknown outcome was retried elsewhere")
	}
	// Apply is idempotent: retried.
	if _, err := c.Apply(ctx, cm, false); err != nil {
		t.Errorf("apply should be retried on the other master: %v", err)
	}
	if other.writes != 1 {
		t.Errorf("apply reached the second master %d times, want 1", other.writes)
	}
}

// A master that is down is skipped without doubt: nothing was sent to it.
func TestSkipsMasterThatIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	up := &fakeCluster{writeFn: func(int) error { return nil }}
	c := newTestClient(t, dead, serve(t, up))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Create(ctx, pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "x", Namespace: "default"}})); err != nil {
		t.Fatalf("create with the first master down: %v", err)
	}
}

// A write that failed while dialing never left the client: it is retried
// on another master rather than reported as unknown.
func TestDialFailureIsRetried(t *testing.T) {
	dial := &fakeCluster{writeFn: func(int) error {
		return status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)
	}}
	up := &fakeCluster{writeFn: func(int) error { return nil }}
	c := newTestClient(t, serve(t, dial), serve(t, up))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Create(ctx, pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "x", Namespace: "default"}})); err != nil {
		t.Fatalf("create after a dial failure: %v, want it retried on the other master", err)
	}
}
