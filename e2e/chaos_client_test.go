package e2e

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// fakeMaster answers writes at once. A holding one holds reads until the
// caller goes away and allows one stream per connection, so a second call
// on its connection waits in the client for stream quota, before it is
// sent; the other answers reads with NotFound.
type fakeMaster struct {
	pb.UnimplementedClusterServer
	addr      string
	srv       *grpc.Server
	hold      bool
	getHeld   chan struct{}
	writesGot atomic.Int32
}

func startFakeMaster(t *testing.T, hold bool) *fakeMaster {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if hold {
		opts = append(opts, grpc.MaxConcurrentStreams(1))
	}
	f := &fakeMaster{addr: ln.Addr().String(), hold: hold, getHeld: make(chan struct{}, 16), srv: grpc.NewServer(opts...)}
	pb.RegisterClusterServer(f.srv, f)
	go f.srv.Serve(ln)
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeMaster) write(req *pb.WriteRequest) (*pb.WriteResponse, error) {
	f.writesGot.Add(1)
	obj := req.GetObject().Clone()
	obj.Meta().ResourceVersion = 42
	return &pb.WriteResponse{Object: obj, Action: "configured"}, nil
}

func (f *fakeMaster) Create(_ context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return f.write(req)
}

func (f *fakeMaster) Update(_ context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return f.write(req)
}

func (f *fakeMaster) Get(ctx context.Context, _ *pb.GetRequest) (*pb.GetResponse, error) {
	if !f.hold {
		return nil, status.Error(codes.NotFound, "not found")
	}
	f.getHeld <- struct{}{}
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// TestChaosClientRetriesUnsentWrites: a write that a master never received
// must be retried on another master, not reported as "outcome unknown".
//
// It fails today. client.(*Client).do checks that the connection is Ready,
// then sends. When the master goes away in between (here: while the call
// waits for stream quota; in the rolling-restart scenario: a master that
// shuts down gracefully between the check and the send), gRPC fails the
// call before any stream exists, with Unavailable "connection error: ...
// Error while dialing ... connection refused". classify (client/client.go)
// turns every Unavailable that is not marked NotApplied into Unknown ("the
// connection broke after the request was sent"), though this request was
// never sent, so nothing retries it and the caller sees a failure.
func TestChaosClientRetriesUnsentWrites(t *testing.T) {
	a, b := startFakeMaster(t, true), startFakeMaster(t, false)
	cfg := client.DefaultConfig()
	cfg.Servers = []string{a.addr, b.addr}
	cfg.RetryFor = 5 * time.Second
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The client now talks to a, over a Ready connection.
	if _, err := cl.Create(ctx, configMapWith("warm", "v", 0)); err != nil || a.writesGot.Load() != 1 {
		t.Fatalf("first write: %v (a got %d writes)", err, a.writesGot.Load())
	}
	// A read takes a's only stream...
	go cl.Get(ctx, "ConfigMap", chaosNS, "x", client.ReadOptions{})
	select {
	case <-a.getHeld:
	case <-ctx.Done():
		t.Fatal("the read did not reach a")
	}
	// ... so the write waits in the client for stream quota: not sent.
	done := make(chan error, 1)
	go func() {
		_, err := cl.Update(ctx, configMapWith("warm", "w", 42))
		done <- err
	}()
	err = poll(5*time.Second, func() error {
		buf := make([]byte, 1<<20)
		if s := string(buf[:runtime.Stack(buf, true)]); !strings.Contains(s, "(*http2Client).NewStream") {
			return fmt.Errorf("the write is not waiting for a stream yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// a goes away before the write was ever sent to it.
	a.srv.Stop()
	err = <-done
	if err != nil {
		t.Fatalf("a write that was never sent failed with %v: %v (want it retried on the other master)", status.Code(err), err)
	}
	if n := b.writesGot.Load(); n != 1 {
		t.Fatalf("b got %d writes, want the retried one", n)
	}
}
