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

// BatchWriter is implemented by a Cluster that can write many objects as
// one Raft entry. Use it through CreateMany and DeleteMany, which fall back
// to one write per object for a Cluster without it.
//
// Contract: each object or op succeeds or fails alone (exactly as the
// single Create or Delete would, with the same defaulting, naming,
// validation and admission), and the result for it is at the same index;
// an error means the batch as a whole failed, with the same codes as a
// single write (Unavailable: nothing was applied; Unknown: some or all may
// have been). A successful result's Object is the object as stored.
type BatchWriter interface {
	CreateBatch(ctx context.Context, objs []*pb.Object) ([]*pb.BatchResult, error)
	DeleteBatch(ctx context.Context, ops []*pb.DeleteOp) ([]*pb.BatchResult, error)
}

// CreateMany creates objs, in one write when c is a BatchWriter, and
// returns per object, in order, the stored object or the error (a gRPC
// status error, as Create returns).
func CreateMany(ctx context.Context, c Writer, objs []*pb.Object) ([]*pb.Object, []error) {
	stored := make([]*pb.Object, len(objs))
	errs := make([]error, len(objs))
	if len(objs) == 0 {
		return stored, errs
	}
	if bw, ok := c.(BatchWriter); ok {
		results, err := bw.CreateBatch(ctx, objs)
		for i := range objs {
			stored[i], errs[i] = batchOutcome(results, i, err)
		}
		return stored, errs
	}
	for i, o := range objs {
		stored[i], errs[i] = c.Create(ctx, o)
	}
	return stored, errs
}

// DeleteMany deletes what ops name, in one write when c is a BatchWriter,
// and returns per op, in order, nil or the error (as Delete returns).
func DeleteMany(ctx context.Context, c Cluster, ops []*pb.DeleteOp) []error {
	errs := make([]error, len(ops))
	if len(ops) == 0 {
		return errs
	}
	if bw, ok := c.(BatchWriter); ok {
		results, err := bw.DeleteBatch(ctx, ops)
		for i := range ops {
			_, errs[i] = batchOutcome(results, i, err)
		}
		return errs
	}
	for i, op := range ops {
		errs[i] = c.Delete(ctx, op)
	}
	return errs
}

// batchOutcome turns result i of a batch (or the batch's own error) into
// what the single write would have returned.
func batchOutcome(results []*pb.BatchResult, i int, err error) (*pb.Object, error) {
	switch {
	case err != nil:
		return nil, err
	case i >= len(results) || results[i] == nil:
		return nil, status.Error(codes.Internal, "the batch returned no result for this write: the outcome is unknown, read the object")
	case codes.Code(results[i].GetCode()) != codes.OK:
		return nil, status.Error(codes.Code(results[i].GetCode()), results[i].GetMessage())
	}
	return results[i].GetObject(), nil
}

// CreateBatch passes batch creates through the fence (see fencedCluster in
// manager.go), writing one object at a time when the Cluster under it
// cannot batch.
func (f fencedCluster) CreateBatch(ctx context.Context, objs []*pb.Object) ([]*pb.BatchResult, error) {
	if err := f.fenced(); err != nil {
		return nil, err
	}
	if bw, ok := f.Cluster.(BatchWriter); ok {
		return bw.CreateBatch(ctx, objs)
	}
	stored, errs := CreateMany(ctx, f.Cluster, objs)
	return toBatchResults(stored, errs), nil
}

// DeleteBatch is CreateBatch's counterpart for deletes.
func (f fencedCluster) DeleteBatch(ctx context.Context, ops []*pb.DeleteOp) ([]*pb.BatchResult, error) {
	if err := f.fenced(); err != nil {
		return nil, err
	}
	if bw, ok := f.Cluster.(BatchWriter); ok {
		return bw.DeleteBatch(ctx, ops)
	}
	return toBatchResults(nil, DeleteMany(ctx, f.Cluster, ops)), nil
}

func toBatchResults(stored []*pb.Object, errs []error) []*pb.BatchResult {
	out := make([]*pb.BatchResult, len(errs))
	for i, err := range errs {
		r := &pb.BatchResult{}
		if err != nil {
			st := status.Convert(err)
			r.Code, r.Message = int32(st.Code()), st.Message()
		} else if i < len(stored) {
			r.Object = stored[i]
		}
		out[i] = r
	}
	return out
}
