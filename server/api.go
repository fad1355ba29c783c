package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// clusterAPI serves the Cluster service.
type clusterAPI struct {
	pb.UnimplementedClusterServer
	s *Server
}

// writeOp is one of the object writes.
type writeOp int

const (
	opCreate writeOp = iota
	opUpdate
	opUpdateStatus
	opApply
)

func (op writeOp) String() string {
	return [...]string{"Create", "Update", "UpdateStatus", "Apply"}[op]
}

func (a *clusterAPI) Create(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return a.s.write(ctx, opCreate, req)
}

func (a *clusterAPI) Update(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return a.s.write(ctx, opUpdate, req)
}

func (a *clusterAPI) UpdateStatus(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return a.s.write(ctx, opUpdateStatus, req)
}

func (a *clusterAPI) Apply(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	return a.s.write(ctx, opApply, req)
}

func (a *clusterAPI) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.WriteResponse, error) {
	s := a.s
	op := req.GetDelete()
	if err := checkDelete(op); err != nil {
		return nil, err
	}
	return routeCall(s, ctx, "Delete", false,
		func(ctx context.Context) (*pb.WriteResponse, error) { return s.openWrite(s.deleteOnLeader(ctx, op)) },
		func(ctx context.Context, c *grpc.ClientConn) (*pb.WriteResponse, error) {
			return pb.NewClusterClient(c).Delete(ctx, req)
		})
}

func (a *clusterAPI) Bind(ctx context.Context, req *pb.BindRequest) (*pb.BatchResponse, error) {
	s := a.s
	if len(req.GetBinds()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "binds: at least one bind is required")
	}
	for i, b := range req.GetBinds() {
		if b.GetNamespace() == "" || b.GetName() == "" || b.GetNodeName() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "binds[%d]: namespace, name and nodeName are required", i)
		}
	}
	return routeCall(s, ctx, "Bind", false,
		func(ctx context.Context) (*pb.BatchResponse, error) { return s.bindOnLeader(ctx, req.GetBinds()) },
		func(ctx context.Context, c *grpc.ClientConn) (*pb.BatchResponse, error) {
			return pb.NewClusterClient(c).Bind(ctx, req)
		})
}

// deleteOnLeader proposes one deletion.
func (s *Server) deleteOnLeader(ctx context.Context, op *pb.DeleteOp) (*pb.WriteResponse, error) {
	res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Delete{Delete: op}}))
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, fsmStatus(res.Err)
	}
	return &pb.WriteResponse{Object: res.Object, Action: res.Action}, nil
}

// bindOnLeader proposes many binds as one batch entry.
func (s *Server) bindOnLeader(ctx context.Context, binds []*pb.BindOp) (*pb.BatchResponse, error) {
	// One proposal for the whole batch: the scheduler binds many
	// pods per cycle and each still succeeds or fails alone.
	batch := &pb.CommandBatch{}
	for _, b := range binds {
		batch.Commands = append(batch.Commands, &pb.Command{Op: &pb.Command_Bind{Bind: b}})
	}
	res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Batch{Batch: batch}}))
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, fsmStatus(res.Err)
	}
	out := &pb.BatchResponse{}
	for i := range binds {
		r := &pb.BatchResult{}
		switch {
		case i >= len(res.Batch) || res.Batch[i] == nil:
			r.Code, r.Message = int32(codes.Internal), "the store returned no result for this bind"
		case res.Batch[i].Err != nil:
			st := status.Convert(fsmStatus(res.Batch[i].Err))
			r.Code, r.Message = int32(st.Code()), st.Message()
		default:
			r.Object = res.Batch[i].Object
		}
		out.Results = append(out.Results, r)
	}
	return out, nil
}

// write handles the four object writes: check, then run on the leader.
func (s *Server) write(ctx context.Context, op writeOp, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	obj := req.GetObject()
	if obj.Resource() == nil {
		return nil, status.Errorf(codes.InvalidArgument, "object: required: send one object (e.g. a Pod) in the request")
	}
	if size := obj.SizeVT(); size > s.cfg.MaxObjectBytes {
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s %q is %d bytes, over the limit of %d bytes (the masters' --max-object-bytes): keep large data out of objects or split it",
			obj.KindName(), obj.Meta().GetName(), size, s.cfg.MaxObjectBytes)
	}
	if req.GetDryRun() {
		return s.dryRun(op, obj)
	}
	// A follower checks too, so a bad object is rejected without a round
	// trip; the leader checks (once) in writeOnLeader, on what it proposes.
	if !s.IsLeader() {
		if _, err := s.prepare(op, obj, ""); err != nil {
			return nil, err
		}
	}
	return routeCall(s, ctx, op.String(), false,
		func(ctx context.Context) (*pb.WriteResponse, error) {
			return s.openWrite(s.writeOnLeader(ctx, op, obj))
		},
		func(ctx context.Context, c *grpc.ClientConn) (*pb.WriteResponse, error) {
			cl := pb.NewClusterClient(c)
			switch op {
			case opCreate:
				return cl.Create(ctx, req)
			case opUpdate:
				return cl.Update(ctx, req)
			case opUpdateStatus:
				return cl.UpdateStatus(ctx, req)
			default:
				return cl.Apply(ctx, req)
			}
		})
}

// prepare returns a defaulted, validated copy of obj. For a create with
// generateName it picks a name so that validation sees a complete object.
// A non-empty uid is set first: some defaults derive from it (a Job's
// generated selector).
func (s *Server) prepare(op writeOp, obj *pb.Object, uid string) (*pb.Object, error) {
	o := obj.Clone()
	if uid != "" {
		o.Meta().Uid = uid
	}
	pb.SetDefaults(o)
	if m := o.Meta(); op == opCreate && m.GetName() == "" && m.GetGenerateName() != "" {
		m.Name = m.GetGenerateName() + randomSuffix()
	}
	// The limit is this master's, so that a cluster started with another
	// --max-object-bytes stores what it accepted above (defaults add bytes).
	if op == opUpdateStatus {
		return o, s.checkStatusUpdate(o)
	}
	if err := pb.ValidateWithLimit(o, s.cfg.MaxObjectBytes); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return o, nil
}

// checkStatusUpdate checks a status write, o, by the size the stored
// object will have with o's status: only the status is written, so a
// status-only object is fine. The stored object is not decoded for it
// (pb.SizeWithStatus). If this master does not have the object (yet), the
// leader's store decides.
func (s *Server) checkStatusUpdate(o *pb.Object) error {
	m := o.Meta()
	raw, err := s.fsm.GetEncoded(o.KindName(), m.GetNamespace(), m.GetName())
	if err != nil {
		return nil
	}
	src := o.Resource().ProtoReflect()
	statusSize := -1
	if fd := src.Descriptor().Fields().ByName("status"); fd != nil && src.Has(fd) {
		statusSize = gproto.Size(src.Get(fd).Message().Interface())
	}
	size, ok, err := pb.SizeWithStatus(raw, statusSize)
	switch {
	case err != nil:
		return status.Errorf(codes.Internal, "the stored %s is unreadable: %v", m.Key(), err)
	case !ok:
		size = o.SizeVT() // a kind without status: check what was sent
	}
	if err := pb.ValidateStatusUpdate(o, size, s.cfg.MaxObjectBytes); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// writeOnLeader proposes one write. A create with generateName retries
// a few times if the random name is taken, and a Service write if an IP or
// node port the leader picked for it was taken meanwhile.
func (s *Server) writeOnLeader(ctx context.Context, op writeOp, obj *pb.Object) (*pb.WriteResponse, error) {
	generated := op == opCreate && obj.Meta().GetName() == "" && obj.Meta().GetGenerateName() != ""
	for attempt := 0; ; attempt++ {
		cmd, alloc, err := s.writeCommand(op, obj)
		if err != nil {
			return nil, err
		}
		res, err := s.proposeHeld(ctx, cmd, s.holdFor(op, obj))
		if err != nil {
			if op == opCreate && status.Code(err) == codes.Unknown {
				if resp, ok := s.resolveCreate(ctx, cmd.GetCreate(), cmd.GetUid()); ok {
					return resp, nil
				}
			}
			return nil, err
		}
		if res.Err != nil {
			if generated && attempt < 3 && errors.Is(res.Err, fsm.ErrAlreadyExists) {
				continue
			}
			if alloc.repick(res.Err) && attempt < maxAllocAttempts {
				continue // a concurrent write took an IP or port picked here
			}
			return nil, fsmStatus(res.Err)
		}
		return &pb.WriteResponse{Object: res.Object, Action: res.Action}, nil
	}
}

// holdFor is how long a write may wait for company in its raft batch:
// HeartbeatBatchDelay for a node's lease renewal, which nobody waits on and
// which comes every few seconds from every node; 0 for everything else.
func (s *Server) holdFor(op writeOp, obj *pb.Object) time.Duration {
	if op == opUpdate && obj.GetLease() != nil && obj.Meta().GetNamespace() == pb.NamespaceNodeLease {
		return s.cfg.HeartbeatBatchDelay
	}
	return 0
}

// resolveCreate settles the outcome of a create that leadership loss left
// unknown: once a leader of a later term has confirmed its commit index and
// this master's store has caught up, a committed entry is visible, and the
// uid chosen for this command proves the object is ours. Anything else
// (not found, another uid) stays unknown: the object could have been
// created and deleted or replaced meanwhile.
func (s *Server) resolveCreate(ctx context.Context, o *pb.Object, uid string) (*pb.WriteResponse, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.NoLeaderWait)
	defer cancel()
	if err := s.linearize(ctx); err != nil {
		return nil, false
	}
	m := o.Meta()
	cur, err := s.fsm.Get(o.KindName(), m.GetNamespace(), m.GetName())
	if err != nil || cur.Meta().GetUid() != uid {
		return nil, false
	}
	// Answer with the object as this create made it: others may have
	// changed it since, and a create's reply that showed their changes
	// would not be the create's result. If that state has left the event
	// window, the outcome is known but not the reply: stay unknown.
	created, ok := s.fsm.Created(o.KindName(), m.GetNamespace(), m.GetName(), uid)
	if !ok {
		return nil, false
	}
	s.log.Info("create outcome confirmed after leadership loss", "kind", o.KindName(), "name", m.Key())
	return &pb.WriteResponse{Object: created, Action: fsm.ActionCreated}, true
}

// uidFor returns the uid the object will have if this write creates it, so
// defaults derived from it are right: the command's uid for a create, and
// for an apply the existing object's uid (the leader's store is current) or
// else the command's. Other writes keep the caller's uid, a precondition.
func (s *Server) uidFor(op writeOp, obj *pb.Object, cmdUID string) string {
	switch op {
	case opCreate:
		return cmdUID
	case opApply:
		m := obj.Meta()
		if cur, err := s.fsm.Get(obj.KindName(), m.GetNamespace(), m.GetName()); err == nil {
			return cur.Meta().GetUid()
		}
		return cmdUID
	}
	return ""
}

// dryRun answers a write with DryRun set as the write would be answered,
// storing nothing. It builds the command writeOnLeader would propose (the
// uid, defaults, Service allocation, Secret sealing) and runs it in this
// master's store without keeping anything (fsm.DryRun), so every check of
// the store runs: a missing or terminating namespace, a clusterIP or node
// port another Service holds, an immutable field, a uid or resourceVersion
// precondition. Refusals go through fsmStatus like the real write's, so
// they have its code and message. Any master answers from its own store
// (a follower's may be a little behind): nothing is forwarded.
func (s *Server) dryRun(op writeOp, obj *pb.Object) (*pb.WriteResponse, error) {
	cmd, _, err := s.writeCommand(op, obj)
	if err != nil {
		return nil, err
	}
	res := s.fsm.DryRun(cmd)
	if res.Err != nil {
		return nil, fsmStatus(res.Err)
	}
	return s.openWrite(&pb.WriteResponse{Object: res.Object, Action: res.Action}, nil)
}

// writeCommand builds the command for one object write, as proposed by
// writeOnLeader and tried by dryRun, with the values picked for a Service.
func (s *Server) writeCommand(op writeOp, obj *pb.Object) (*pb.Command, *serviceAlloc, error) {
	obj, err := s.openInput(obj) // secrets.go
	if err != nil {
		return nil, nil, err
	}
	cmd := s.newCommand(&pb.Command{})
	o, err := s.prepare(op, obj, s.uidFor(op, obj, cmd.GetUid()))
	if err != nil {
		return nil, nil, err
	}
	alloc, err := s.allocateService(op, o) // services.go
	if err != nil {
		return nil, nil, err
	}
	// Last, so the log, the stores and snapshots never see plaintext.
	if err := s.sealSecret(o); err != nil { // secrets.go
		return nil, nil, err
	}
	switch op {
	case opCreate:
		cmd.Op = &pb.Command_Create{Create: o}
	case opUpdate:
		cmd.Op = &pb.Command_Update{Update: o}
	case opUpdateStatus:
		cmd.Op = &pb.Command_UpdateStatus{UpdateStatus: o}
	case opApply:
		cmd.Op = &pb.Command_Apply{Apply: o}
	}
	return cmd, alloc, nil
}

func checkDelete(op *pb.DeleteOp) error {
	if op == nil {
		return status.Error(codes.InvalidArgument, "delete: required")
	}
	if _, ok := pb.LookupKind(op.GetKind()); !ok {
		return status.Errorf(codes.InvalidArgument, "delete.kind: unknown kind %q: use one of %s", op.GetKind(), kindNames())
	}
	if op.GetName() == "" {
		return status.Error(codes.InvalidArgument, "delete.name: required")
	}
	switch op.GetPropagationPolicy() {
	case "", "Orphan", "Background", "Foreground":
	default:
		return status.Errorf(codes.InvalidArgument, "delete.propagationPolicy: %q is not Orphan, Background or Foreground", op.GetPropagationPolicy())
	}
	return nil
}

func kindNames() string {
	var out string
	for i, k := range pb.Kinds() {
		if i > 0 {
			out += ", "
		}
		out += k.Kind
	}
	return out
}

// newCommand fills in what the leader decides for a command before it is
// proposed: the time (seconds, like Kubernetes' metadata times) and a UID.
func (s *Server) newCommand(cmd *pb.Command) *pb.Command {
	cmd.Time = timestamppb.New(time.Now().Truncate(time.Second))
	cmd.Uid = newUUID()
	return cmd
}

// propose replicates cmd and returns the store's result. The returned error
// is a gRPC status describing what the client may do: Unavailable (marked
// not applied) when the command never entered the log, Unknown when it may
// have been committed.
func (s *Server) propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	return s.proposeHeld(ctx, cmd, 0)
}

// proposeHeld is propose for a write that may wait up to hold for others
// to share its raft batch (inflightBatches).
func (s *Server) proposeHeld(ctx context.Context, cmd *pb.Command, hold time.Duration) (*fsm.Result, error) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if s.handingOff.Load() {
		return nil, pb.NotAppliedError("not applied (leadership transfer in progress): safe to retry")
	}
	if err := ctx.Err(); err != nil {
		// The caller gave up, or is a leader task of a term that ended.
		return nil, pb.NotAppliedError(fmt.Sprintf("not applied (%v before it was proposed): safe to retry", err))
	}
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode command: %v", err)
	}
	start := time.Now()
	f, b, ok := s.batches.apply(ctx, data, joinKey(cmd), s.cfg.ApplyTimeout, hold)
	if !ok {
		return nil, pb.NotAppliedError(fmt.Sprintf("not applied (%v while waiting for the writes before it): safe to retry", ctx.Err()))
	}
	done := make(chan error, 1)
	go func() {
		err := f.Error()
		s.batches.done(b)
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		return nil, status.Errorf(status.FromContextError(ctx.Err()).Code(),
			"%v while waiting for the write to commit: the outcome is unknown; read the object to find out", ctx.Err())
	}
	if err != nil {
		return nil, raftStatus(err)
	}
	s.metrics.applySeconds.Observe(time.Since(start).Seconds())
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, status.Errorf(codes.Internal, "the store returned %T, not a result", f.Response())
	}
	return res, nil
}

// raftStatus maps an Apply failure to a status that tells the client
// whether retrying is safe.
func raftStatus(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// raft refuses these before appending anything.
		return pb.NotAppliedError(fmt.Sprintf("not applied (%v): safe to retry", err))
	case errors.Is(err, raft.ErrRaftShutdown):
		// gRPC handlers finish before raft shuts down (grpc.WaitForHandlers),
		// so this only means the command never reached the log.
		return pb.NotAppliedError("not applied: the master is shutting down; retry on another master")
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore), errors.Is(err, ErrLogStoreStalled):
		return status.Errorf(codes.Unknown,
			"outcome unknown: %v before the write was confirmed; it may or may not have been applied: read the object to find out", err)
	default:
		return status.Errorf(codes.Unknown, "outcome unknown: %v: read the object to find out", err)
	}
}

// fsmStatus maps a store error to its gRPC code.
func fsmStatus(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, fsm.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, fsm.ErrConflict):
		code = codes.Aborted
	case errors.Is(err, fsm.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, fsm.ErrFailedPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, fsm.ErrExpired):
		code = codes.OutOfRange
	}
	return status.Error(code, err.Error())
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// randomSuffix returns 5 characters from Kubernetes' generateName alphabet
// (no vowels, no look-alike digits).
func randomSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	for i := range b {
		b[i] = alphabet[mrand.IntN(len(alphabet))]
	}
	return string(b)
}

// drainProposals stops new proposals (they get "not applied", safe to
// retry) and waits, at most timeout, for those in flight to finish, so a
// leadership transfer that follows leaves no acknowledged-or-not write
// behind: raft fails every future still in flight when leadership moves,
// even one the new leader commits, and such a write's outcome would be
// unknown. The returned func lets proposals through again.
func (s *Server) drainProposals(timeout time.Duration) (resume func()) {
	s.handingOff.Store(true)
	s.batches.releaseHeld()
	deadline := time.Now().Add(timeout)
	for s.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if n := s.inflight.Load(); n > 0 {
		s.log.Warn("leadership transfer with writes still in flight: their outcome may be unknown", "writes", n)
	}
	return func() { s.handingOff.Store(false) }
}
