package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// clientCluster adapts the API client to controllers.Cluster, so the
// framework's informers, queues and recorder work out of process exactly as
// they do on the leader. The client follows the leader across masters and
// retries what is safe to retry; a write whose outcome is unknown comes back
// as codes.Unknown, which a Loop retries like any other error (the next
// reconcile reads the state again, so nothing is done twice by mistake).
type clientCluster struct{ c *client.Client }

var _ controllers.Cluster = clientCluster{}

func (a clientCluster) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	items, rv, err := a.c.List(ctx, req.GetKind(), client.ListOptions{
		Namespace: req.GetNamespace(), LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(), Stale: req.GetStale(),
	})
	if err != nil {
		return nil, err
	}
	return &pb.ListResponse{Items: items, ResourceVersion: rv}, nil
}

func (a clientCluster) Watch(ctx context.Context, req *pb.WatchRequest) (controllers.Watch, error) {
	w, err := a.c.Watch(ctx, req.GetKind(), client.WatchOptions{
		Namespace: req.GetNamespace(), LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
		ResourceVersion: req.GetResourceVersion(), BookmarkSeconds: req.GetBookmarkSeconds(),
	})
	if err != nil {
		return nil, expired(err)
	}
	return clientWatch{w}, nil
}

type clientWatch struct{ w *client.Watcher }

func (w clientWatch) Next(ctx context.Context) (*pb.WatchEvent, error) {
	ev, err := w.w.Next(ctx)
	return ev, expired(err)
}

func (w clientWatch) Close() { w.w.Close() }

// expired translates the client's "history is gone" into the framework's,
// so informers list again.
func expired(err error) error {
	if errors.Is(err, client.ErrExpired) {
		return fmt.Errorf("%w: %v", controllers.ErrExpired, err)
	}
	return err
}

func (a clientCluster) Create(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	resp, err := a.c.Create(ctx, obj)
	return resp.GetObject(), err
}

func (a clientCluster) Update(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	resp, err := a.c.Update(ctx, obj)
	return resp.GetObject(), err
}

func (a clientCluster) UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	resp, err := a.c.UpdateStatus(ctx, obj)
	return resp.GetObject(), err
}

func (a clientCluster) Delete(ctx context.Context, op *pb.DeleteOp) error {
	_, err := a.c.Delete(ctx, op)
	return err
}

func (a clientCluster) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	return a.c.Bind(ctx, binds)
}
