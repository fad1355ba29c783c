package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// localCluster is the controllers' view of the cluster on this master.
// Reads and watches come from this master's store, which is current while
// it leads (the leader's store has applied everything it committed). Writes
// are proposed to Raft directly and never forwarded: if this master is no
// longer the leader, raft refuses them (Unavailable, not applied), so a
// deposed leader's controllers cannot change anything.
type localCluster struct{ s *Server }

var _ controllers.Cluster = localCluster{}

func (c localCluster) query(kind, ns, labels, fields string) (fsm.Query, error) {
	k, err := canonicalKind(kind)
	if err != nil {
		return fsm.Query{}, err
	}
	return fsm.Query{Kind: k.Kind, Namespace: ns, LabelSelector: labels, FieldSelector: fields}, nil
}

func (c localCluster) List(_ context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	q, err := c.query(req.GetKind(), req.GetNamespace(), req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return nil, err
	}
	items, idx, err := c.s.fsm.List(q)
	if err != nil {
		return nil, fsmStatus(err)
	}
	return &pb.ListResponse{Items: items, ResourceVersion: idx}, nil
}

// ListMetadata lists the objects req selects reduced to their metadata,
// encoded, for the controllers' metadata informers: from the stored
// encodings, decoding nothing. A new leader's garbage collector lists every
// object of the cluster this way; with 150,000 ConfigMaps decoding them in
// full took it seconds of CPU at every leadership change. It gives up when
// ctx ends, as when leadership is lost.
func (c localCluster) ListMetadata(ctx context.Context, req *pb.ListRequest) ([][]byte, uint64, error) {
	q, err := c.query(req.GetKind(), req.GetNamespace(), req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return nil, 0, err
	}
	var out [][]byte
	if q.Namespace == "" && q.LabelSelector == "" && q.FieldSelector == "" {
		// The whole kind, what informers list: counting first costs a walk
		// of the index and saves growing a slice of 100,000s of items.
		if n, err := c.s.fsm.Count(q.Kind); err == nil {
			out = make([][]byte, 0, n)
		}
	}
	idx, err := c.s.fsm.EachEncoded(q, func(raw []byte) error {
		if len(out)%1024 == 1023 && ctx.Err() != nil {
			return ctx.Err()
		}
		md, err := pb.AppendMetadata(nil, raw)
		if err != nil {
			return status.Errorf(codes.Internal, "list %s metadata: %v", req.GetKind(), err)
		}
		out = append(out, md)
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if _, ok := status.FromError(err); ok {
			return nil, 0, err
		}
		return nil, 0, fsmStatus(err)
	}
	return out, idx, nil
}

func (c localCluster) Watch(ctx context.Context, req *pb.WatchRequest) (controllers.Watch, error) {
	q, err := c.query(req.GetKind(), req.GetNamespace(), req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := c.s.fsm.Watch(ctx, q, req.GetResourceVersion())
	if err != nil {
		cancel()
		return nil, watchStatus(err, req.GetResourceVersion())
	}
	return &localWatch{w: w, cancel: cancel, from: req.GetResourceVersion()}, nil
}

type localWatch struct {
	w      *fsm.Watcher
	cancel context.CancelFunc
	from   uint64
}

func (w *localWatch) Next(ctx context.Context) (*pb.WatchEvent, error) {
	ev, err := w.w.Next(ctx)
	if err != nil {
		if errors.Is(err, fsm.ErrExpired) {
			return nil, status.Errorf(codes.OutOfRange, "%v: %v", controllers.ErrExpired, err)
		}
		return nil, err
	}
	return &pb.WatchEvent{Type: ev.Type, Object: ev.Object, ResourceVersion: ev.Index}, nil
}

func (w *localWatch) Close() { w.cancel() }

func (c localCluster) write(ctx context.Context, op writeOp, obj *pb.Object) (*pb.Object, error) {
	resp, err := c.s.writeOnLeader(ctx, op, obj)
	if err != nil {
		return nil, err
	}
	return resp.GetObject(), nil
}

func (c localCluster) Create(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	return c.write(ctx, opCreate, obj)
}

func (c localCluster) Update(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	return c.write(ctx, opUpdate, obj)
}

func (c localCluster) UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	return c.write(ctx, opUpdateStatus, obj)
}

func (c localCluster) Delete(ctx context.Context, op *pb.DeleteOp) error {
	if err := checkDelete(op); err != nil {
		return err
	}
	_, err := c.s.deleteOnLeader(ctx, op)
	return err
}

func (c localCluster) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	resp, err := c.s.bindOnLeader(ctx, binds)
	if err != nil {
		return nil, err
	}
	return resp.GetResults(), nil
}
