package controllers

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// ErrExpired is what Watch.Next (or Cluster.Watch) returns, wrapped, when
// the history needed to resume a watch is gone: list again and watch from
// the list's resourceVersion. A gRPC codes.OutOfRange status means the same;
// use IsExpired to test for either.
var ErrExpired = errors.New("watch expired")

// Cluster is the part of skiff's API that controllers use. The leader's
// in-process server and the gRPC client (for a controller run out of
// process) both satisfy it through a thin adapter; NewGRPCCluster is one
// over a plain pb.ClusterClient.
//
// Contract:
//
//   - Errors are gRPC status errors: codes.NotFound, AlreadyExists, Aborted
//     (a resourceVersion or UID precondition failed: Kubernetes' Conflict),
//     InvalidArgument, FailedPrecondition (for example the namespace is
//     terminating), Unavailable (not applied; safe to retry), Unknown (the
//     write may or may not have been applied). Context errors may be returned
//     as they are.
//   - A write returns only after it is committed and applied, with the object
//     as stored (its new resourceVersion).
//   - Update replaces metadata (labels, annotations, ownerReferences,
//     finalizers) and spec; UpdateStatus replaces status. For both, a
//     non-zero metadata.resourceVersion is a precondition.
//   - List returns the items and the store's index at the time of the list;
//     a Watch from that index delivers every later change of the kind, in
//     order, each event carrying its resourceVersion. Bookmark events may be
//     delivered and carry only a resourceVersion.
//   - Bind sets spec.nodeName of unbound pods, each op with its own
//     preconditions; it returns one result per op in order, and an error
//     only when the batch as a whole failed.
//   - Implementations are safe for concurrent use.
type Cluster interface {
	List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error)
	Watch(ctx context.Context, req *pb.WatchRequest) (Watch, error)
	Create(ctx context.Context, obj *pb.Object) (*pb.Object, error)
	Update(ctx context.Context, obj *pb.Object) (*pb.Object, error)
	UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.Object, error)
	Delete(ctx context.Context, op *pb.DeleteOp) error
	Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error)
}

// Watch is an open watch. Next blocks until the next event, ctx ends (it
// returns ctx's error) or the watch fails; after an error the watch is
// finished and the caller closes it. Close may be called more than once and
// from any goroutine.
type Watch interface {
	Next(ctx context.Context) (*pb.WatchEvent, error)
	Close()
}

// Watch event types, as in proto/api.proto.
const (
	EventAdded    = "ADDED"
	EventModified = "MODIFIED"
	EventDeleted  = "DELETED"
	EventBookmark = "BOOKMARK"
)

// IsExpired reports whether err says a watch's history is gone.
func IsExpired(err error) bool {
	return errors.Is(err, ErrExpired) || status.Code(err) == codes.OutOfRange
}

// IsNotFound reports whether err is a gRPC NotFound.
func IsNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// IsAlreadyExists reports whether err is a gRPC AlreadyExists.
func IsAlreadyExists(err error) bool { return status.Code(err) == codes.AlreadyExists }

// IsConflict reports whether err is a failed precondition on
// resourceVersion or UID (gRPC Aborted): the cache was stale, retry.
func IsConflict(err error) bool { return status.Code(err) == codes.Aborted }
