package client

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// chunkedList serves a List of n ConfigMaps at resourceVersion rv, one per
// message; with breakAfter > 0 it sends that many and then fails, as a
// master going away mid-stream.
type chunkedList struct {
	pb.UnimplementedClusterServer
	n, breakAfter int
	rv            uint64
	calls         atomic.Int32
}

func (f *chunkedList) List(req *pb.ListRequest, stream grpc.ServerStreamingServer[pb.ListResponse]) error {
	f.calls.Add(1)
	if f.n == 0 {
		return stream.Send(&pb.ListResponse{ResourceVersion: f.rv})
	}
	for i := range f.n {
		if f.breakAfter > 0 && i == f.breakAfter {
			return status.Error(codes.Unavailable, "master going away")
		}
		o := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("cm-%d", i), Namespace: "default"}})
		if err := stream.Send(&pb.ListResponse{Items: []*pb.Object{o}, ResourceVersion: f.rv}); err != nil {
			return err
		}
	}
	return nil
}

// List assembles the chunks of one answer; a stream that breaks part way is
// listed again from the start on another master, never half-used.
func TestListAssemblesChunks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	broken := &chunkedList{n: 5, breakAfter: 2, rv: 40}
	whole := &chunkedList{n: 5, rv: 41}
	c := newTestClient(t, serve(t, broken), serve(t, whole))

	items, rv, err := c.List(ctx, "ConfigMap", ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rv != 41 || len(items) != 5 {
		t.Fatalf("List = %d items at %d, want 5 at 41 (the whole answer of the second master)", len(items), rv)
	}
	for i, o := range items {
		if name := o.Meta().GetName(); name != fmt.Sprintf("cm-%d", i) {
			t.Fatalf("item %d is %s", i, name)
		}
	}
	if broken.calls.Load() != 1 || whole.calls.Load() != 1 {
		t.Fatalf("calls: broken master %d, whole master %d; want one each", broken.calls.Load(), whole.calls.Load())
	}

	// An empty answer still has its resourceVersion.
	empty := newTestClient(t, serve(t, &chunkedList{rv: 7}))
	items, rv, err = empty.List(ctx, "ConfigMap", ListOptions{})
	if err != nil || len(items) != 0 || rv != 7 {
		t.Fatalf("empty List = %d items at %d, %v; want none at 7", len(items), rv, err)
	}
}
