package client

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// fakePods answers Stats with err (a report when nil), counting calls.
type fakePods struct {
	pb.UnimplementedPodsServer
	err   error
	mu    sync.Mutex
	calls int
}

func (f *fakePods) Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return &pb.StatsResponse{Node: &pb.ResourceUsage{UsageNanoCores: 1}}, nil
}

func (f *fakePods) Logs(req *pb.LogsRequest, stream grpc.ServerStreamingServer[pb.LogsResponse]) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	return stream.Send(&pb.LogsResponse{Data: []byte("hello\n")})
}

func (f *fakePods) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func servePods(t *testing.T, srv pb.PodsServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterPodsServer(g, srv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// A master that cannot reach a worker says so at once: the other masters
// would relay to the same worker. A master that is itself unavailable is
// skipped as for any read.
func TestStatsRetryRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unreachable := &fakePods{err: pb.NodeUnreachableError("cannot reach the worker of node w1")}
	other := &fakePods{}
	c := newTestClient(t, servePods(t, unreachable), servePods(t, other))
	start := time.Now()
	_, err := c.Stats(ctx, &pb.StatsRequest{NodeName: "w1"})
	if !pb.IsNodeUnreachable(err) || status.Code(err) != codes.Unavailable {
		t.Fatalf("stats of an unreachable node: %v, want NodeUnreachable", err)
	}
	if unreachable.count() != 1 || other.count() != 0 || time.Since(start) > 2*time.Second {
		t.Errorf("asked %d and %d times in %v; want once, the first master only, at once", unreachable.count(), other.count(), time.Since(start))
	}
	// The master stays the one to ask first.
	if _, err := c.Stats(ctx, &pb.StatsRequest{NodeName: "w1"}); !pb.IsNodeUnreachable(err) || unreachable.count() != 2 {
		t.Errorf("second call: %v after %d calls, want the same master asked again", err, unreachable.count())
	}

	down := &fakePods{err: status.Error(codes.Unavailable, "the master is shutting down")}
	up := &fakePods{}
	c = newTestClient(t, servePods(t, down), servePods(t, up))
	resp, err := c.Stats(ctx, &pb.StatsRequest{NodeName: "w1"})
	if err != nil || resp.GetNode().GetUsageNanoCores() != 1 || up.count() != 1 {
		t.Errorf("stats with an unavailable first master: %v %v (second master asked %d times), want an answer from the second", resp, err, up.count())
	}
}

// Logs of a pod whose worker a master cannot reach fail at once, as Stats
// do: before, the client tried every master for its whole retry time.
func TestLogsRetryRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unreachable := &fakePods{err: pb.NodeUnreachableError("cannot reach the worker of node w1")}
	other := &fakePods{}
	c := newTestClient(t, servePods(t, unreachable), servePods(t, other))
	var out bytes.Buffer
	err := c.Logs(ctx, &pb.LogsRequest{Pod: "p"}, &out)
	if !pb.IsNodeUnreachable(err) || unreachable.count() != 1 || other.count() != 0 {
		t.Fatalf("logs of a pod on an unreachable node: %v, masters asked %d and %d times; want NodeUnreachable from the first only", err, unreachable.count(), other.count())
	}

	down := &fakePods{err: status.Error(codes.Unavailable, "the master is shutting down")}
	up := &fakePods{}
	c = newTestClient(t, servePods(t, down), servePods(t, up))
	out.Reset()
	if err := c.Logs(ctx, &pb.LogsRequest{Pod: "p"}, &out); err != nil || out.String() != "hello\n" || up.count() != 1 {
		t.Errorf("logs with an unavailable first master: %v %q (second master asked %d times), want the log from the second", err, out.String(), up.count())
	}
}
