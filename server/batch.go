package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// maxBatchEntryBytes bounds one batch's Raft entry (and the writes the gate
// joins into one): a larger batch is split into several entries, proposed
// one after another, so that one controller burst never makes an entry that
// slows replication of everything else. raft sends up to maxAppendEntries
// entries in one AppendEntries, which a follower decodes whole: 128 of
// 512 KiB is 64 MiB. Small writes are far below it (a ReplicaSet's 100 pods
// about 120 KB, 64 writers' 256-byte objects about 10 KB); a single write
// larger than it (up to --max-object-bytes) goes alone.
const maxBatchEntryBytes = 512 << 10

var _ controllers.BatchWriter = localCluster{}

// CreateBatch implements controllers.BatchWriter: the leader's controllers
// create many objects (a ReplicaSet's pods) with one Raft entry instead of
// one each.
func (c localCluster) CreateBatch(ctx context.Context, objs []*pb.Object) ([]*pb.BatchResult, error) {
	return c.s.createBatchOnLeader(ctx, objs)
}

// DeleteBatch implements controllers.BatchWriter.
func (c localCluster) DeleteBatch(ctx context.Context, ops []*pb.DeleteOp) ([]*pb.BatchResult, error) {
	return c.s.deleteBatchOnLeader(ctx, ops)
}

// createBatchOnLeader prepares every object exactly as writeOnLeader does
// (its own uid, defaults, generated name, validation, sealed secret) and
// proposes the creates as batch entries. Objects that need what only a
// single write does (a Service's IP and port allocation with its re-pick,
// a name to generate with its retry) take that path instead.
func (s *Server) createBatchOnLeader(ctx context.Context, objs []*pb.Object) ([]*pb.BatchResult, error) {
	out := make([]*pb.BatchResult, len(objs))
	var (
		cmds    []*pb.Command
		at      []int // index in objs of each command
		pending int   // bytes of cmds
	)
	flush := func() {
		if len(cmds) > 0 {
			s.proposeCreates(ctx, cmds, at, out)
		}
		cmds, at, pending = nil, nil, 0
	}
	for i, obj := range objs {
		if obj.Resource() == nil {
			out[i] = errResult(status.Errorf(codes.InvalidArgument, "objects[%d]: empty object", i))
			continue
		}
		if obj.GetService() != nil || (obj.Meta().GetName() == "" && obj.Meta().GetGenerateName() != "") {
			resp, err := s.writeOnLeader(ctx, opCreate, obj)
			out[i] = writeResult(resp, err)
			continue
		}
		cmd, err := s.prepareCreate(obj)
		if err != nil {
			out[i] = errResult(err)
			continue
		}
		size := cmd.SizeVT()
		if pending > 0 && pending+size > maxBatchEntryBytes {
			flush()
		}
		cmds, at, pending = append(cmds, cmd), append(at, i), pending+size
	}
	flush()
	return out, nil
}

// prepareCreate is the part of writeOnLeader before proposing, for a
// create that needs no allocation: the command with its own uid and time.
func (s *Server) prepareCreate(obj *pb.Object) (*pb.Command, error) {
	obj, err := s.openInput(obj) // secrets.go
	if err != nil {
		return nil, err
	}
	cmd := s.newCommand(&pb.Command{})
	o, err := s.prepare(opCreate, obj, cmd.GetUid())
	if err != nil {
		return nil, err
	}
	if err := s.sealSecret(o); err != nil { // secrets.go
		return nil, err
	}
	cmd.Op = &pb.Command_Create{Create: o}
	return cmd, nil
}

// proposeCreates proposes cmds as one batch entry and fills out[at[j]].
// A failed proposal is every create's error (each result says it: earlier
// entries of the same call may have been applied). When the outcome is
// unknown (leadership lost while it was in flight), each create is settled
// as writeOnLeader settles one: by its uid once a later leader's state is
// visible; the rest stay unknown.
func (s *Server) proposeCreates(ctx context.Context, cmds []*pb.Command, at []int, out []*pb.BatchResult) {
	res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{Commands: cmds}}}))
	if err != nil {
		unknown := status.Code(err) == codes.Unknown
		for j, cmd := range cmds {
			if unknown {
				if resp, ok := s.resolveCreate(ctx, cmd.GetCreate(), cmd.GetUid()); ok {
					out[at[j]] = writeResult(resp, nil)
					continue
				}
			}
			out[at[j]] = errResult(err)
		}
		return
	}
	fillBatch(res, at, out)
}

// deleteBatchOnLeader proposes ops as one batch entry (split by size like
// creates).
func (s *Server) deleteBatchOnLeader(ctx context.Context, ops []*pb.DeleteOp) ([]*pb.BatchResult, error) {
	out := make([]*pb.BatchResult, len(ops))
	for start := 0; start < len(ops); {
		var cmds []*pb.Command
		var at []int
		pending := 0
		for ; start < len(ops); start++ {
			if err := checkDelete(ops[start]); err != nil {
				out[start] = errResult(err)
				continue
			}
			cmd := &pb.Command{Op: &pb.Command_Delete{Delete: ops[start]}}
			size := cmd.SizeVT()
			if pending > 0 && pending+size > maxBatchEntryBytes {
				break
			}
			cmds, at, pending = append(cmds, cmd), append(at, start), pending+size
		}
		if len(cmds) == 0 {
			continue
		}
		res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{Commands: cmds}}}))
		if err != nil {
			for _, i := range at {
				out[i] = errResult(err)
			}
			continue
		}
		fillBatch(res, at, out)
	}
	return out, nil
}

// fillBatch copies a batch entry's per-command results to out[at[j]].
func fillBatch(res *fsm.Result, at []int, out []*pb.BatchResult) {
	for j, i := range at {
		switch {
		case res.Err != nil:
			out[i] = errResult(fsmStatus(res.Err))
		case j >= len(res.Batch) || res.Batch[j] == nil:
			out[i] = errResult(status.Error(codes.Internal, "the store returned no result for this write"))
		case res.Batch[j].Err != nil:
			out[i] = errResult(fsmStatus(res.Batch[j].Err))
		default:
			out[i] = &pb.BatchResult{Object: res.Batch[j].Object}
		}
	}
}

func errResult(err error) *pb.BatchResult {
	st := status.Convert(err)
	return &pb.BatchResult{Code: int32(st.Code()), Message: st.Message()}
}

func writeResult(resp *pb.WriteResponse, err error) *pb.BatchResult {
	if err != nil {
		return errResult(err)
	}
	return &pb.BatchResult{Object: resp.GetObject()}
}
