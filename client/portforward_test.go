package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// echoPods answers PortForward as a pod that reads until the caller's half
// close, then sends what it read in upper case and closes; or fails with
// err, counting calls.
type echoPods struct {
	pb.UnimplementedPodsServer
	err   error
	mu    sync.Mutex
	calls int
	start *pb.PortForwardStart
}

func (e *echoPods) PortForward(stream grpc.BidiStreamingServer[pb.PortForwardRequest, pb.PortForwardResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.calls++
	e.start = first.GetStart()
	e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	var got []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		got = append(got, m.GetData()...)
	}
	return stream.Send(&pb.PortForwardResponse{Data: bytes.ToUpper(got)})
}

// conn is a local connection: it reads in, then end of file, and collects
// what is written.
type conn struct {
	in  io.Reader
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *conn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

// A forwarded connection's bytes reach the pod, its end of file is a half
// close the pod sees, and the pod's answer comes back before the stream
// ends.
func TestPortForwardCopiesBothWays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := &echoPods{}
	c := newTestClient(t, servePods(t, pods))
	local := &conn{in: strings.NewReader("hello pod")}
	start := &pb.PortForwardStart{Namespace: "default", Pod: "web", Port: 8080}
	if err := c.PortForward(ctx, start, local); err != nil {
		t.Fatalf("port-forward: %v", err)
	}
	if got := local.out.String(); got != "HELLO POD" {
		t.Errorf("the local connection read %q, want %q", got, "HELLO POD")
	}
	if pods.start.GetPod() != "web" || pods.start.GetPort() != 8080 {
		t.Errorf("the master got start %v", pods.start)
	}
}

// A stream that reached a master is not tried again on another: bytes may
// have reached the pod.
func TestPortForwardNotRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused := &echoPods{err: status.Error(codes.Unavailable, "connect to pod default/web port 8080: connection refused")}
	other := &echoPods{}
	c := newTestClient(t, servePods(t, refused), servePods(t, other))
	err := c.PortForward(ctx, &pb.PortForwardStart{Pod: "web", Port: 8080}, &conn{in: strings.NewReader("x")})
	if !strings.Contains(status.Convert(err).Message(), "connection refused") {
		t.Errorf("port-forward to a closed port: %v, want the worker's error", err)
	}
	if refused.calls != 1 || other.calls != 0 {
		t.Errorf("masters asked %d and %d times, want the first once", refused.calls, other.calls)
	}
}
