package controllers

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// NewGRPCCluster adapts a generated gRPC client (one connection) to
// Cluster. It does no retrying and does not follow the leader; the client
// package's Client does both and is the better choice out of process, but
// this adapter is enough for a connection to the leader or for tests.
func NewGRPCCluster(c pb.ClusterClient) Cluster { return grpcCluster{c} }

type grpcCluster struct{ c pb.ClusterClient }

// List assembles the chunks the master streams into one answer.
func (g grpcCluster) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	return pb.CollectList(g.c.List(ctx, req))
}

func (g grpcCluster) Watch(ctx context.Context, req *pb.WatchRequest) (Watch, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := g.c.Watch(sctx, req)
	w := &grpcWatch{stream: stream, cancel: cancel}
	if err == nil {
		// A server stream reports a refusal on the first receive; the
		// header tells that the server accepted the watch. No header and
		// no error means a trailers-only response: the refusal itself.
		var md map[string][]string
		if md, err = stream.Header(); err == nil && md == nil {
			w.first, err = stream.Recv()
		}
	}
	if err != nil {
		cancel()
		return nil, watchErr(err)
	}
	return w, nil
}

func (g grpcCluster) Create(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	resp, err := g.c.Create(ctx, &pb.WriteRequest{Object: obj})
	return resp.GetObject(), err
}

func (g grpcCluster) Update(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	resp, err := g.c.Update(ctx, &pb.WriteRequest{Object: obj})
	return resp.GetObject(), err
}

func (g grpcCluster) UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	resp, err := g.c.UpdateStatus(ctx, &pb.WriteRequest{Object: obj})
	return resp.GetObject(), err
}

func (g grpcCluster) Delete(ctx context.Context, op *pb.DeleteOp) error {
	_, err := g.c.Delete(ctx, &pb.DeleteRequest{Delete: op})
	return err
}

func (g grpcCluster) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	resp, err := g.c.Bind(ctx, &pb.BindRequest{Binds: binds})
	return resp.GetResults(), err
}

type grpcWatch struct {
	stream grpc.ServerStreamingClient[pb.WatchEvent]
	first  *pb.WatchEvent // received while opening
	once   sync.Once
	cancel context.CancelFunc
}

func (w *grpcWatch) Next(ctx context.Context) (*pb.WatchEvent, error) {
	if ev := w.first; ev != nil {
		w.first = nil
		return ev, nil
	}
	// Recv does not take a context: end the stream when ctx ends.
	stop := context.AfterFunc(ctx, w.Close)
	defer stop()
	ev, err := w.stream.Recv()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, watchErr(err)
	}
	return ev, nil
}

func (w *grpcWatch) Close() { w.once.Do(w.cancel) }

func watchErr(err error) error {
	if status.Code(err) == codes.OutOfRange {
		return fmt.Errorf("%w: %s", ErrExpired, status.Convert(err).Message())
	}
	return err
}
