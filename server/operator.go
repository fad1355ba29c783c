package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// operatorAPI serves the Operator service.
type operatorAPI struct {
	pb.UnimplementedOperatorServer
	s *Server
}

// Status reports the cluster as this master sees it, asking every other
// master for its own state and applied index.
func (o *operatorAPI) Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := o.s
	resp := &pb.StatusResponse{
		Leader:      s.Leader(),
		Term:        s.raft.CurrentTerm(),
		CommitIndex: s.raft.CommitIndex(),
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "read raft configuration: %v", err)
	}
	conf := f.Configuration()
	voter := func(id raft.ServerID) bool {
		for _, srv := range conf.Servers {
			if srv.ID == id {
				return srv.Suffrage == raft.Voter
			}
		}
		return false
	}
	self := &pb.ServerStatus{
		Name: s.cfg.Name, Id: s.cfg.Name, RaftAddress: s.RaftAddr(), ApiAddress: s.apiAddr,
		State: s.raft.State().String(), Voter: voter(raft.ServerID(s.cfg.Name)),
		AppliedIndex: s.fsm.AppliedIndex(), LastIndex: s.raft.LastIndex(), Version: s.cfg.Version,
	}
	if req.GetLocal() {
		resp.Servers = []*pb.ServerStatus{self}
		return resp, nil
	}

	resp.Servers = make([]*pb.ServerStatus, len(conf.Servers))
	var wg sync.WaitGroup
	for i, srv := range conf.Servers {
		if string(srv.ID) == s.cfg.Name {
			self.RaftAddress = string(srv.Address)
			resp.Servers[i] = self
			continue
		}
		st := &pb.ServerStatus{
			Name: string(srv.ID), Id: string(srv.ID), RaftAddress: string(srv.Address),
			State: "Unreachable", Voter: srv.Suffrage == raft.Voter,
		}
		resp.Servers[i] = st
		m, ok := s.gossip.member(string(srv.ID))
		if !ok || m.APIAddr == "" {
			continue
		}
		st.ApiAddress, st.Version = m.APIAddr, m.Version
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PeerStatusTimeout)
			defer cancel()
			conn, err := s.peers.get(m.APIAddr)
			if err != nil {
				return
			}
			pr, err := pb.NewOperatorClient(conn).Status(pctx, &pb.StatusRequest{Local: true})
			if err != nil || len(pr.GetServers()) != 1 {
				return
			}
			own := pr.GetServers()[0]
			st.State, st.AppliedIndex, st.LastIndex, st.Version = own.GetState(), own.GetAppliedIndex(), own.GetLastIndex(), own.GetVersion()
		}()
	}
	wg.Wait()
	sort.Slice(resp.Servers, func(i, j int) bool { return resp.Servers[i].Name < resp.Servers[j].Name })

	var warnings []string
	voters := 0
	for _, srv := range conf.Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters%2 == 0 && voters > 0 {
		warnings = append(warnings, fmt.Sprintf("%d voters: an even number tolerates no more failures than %d would; add or remove a master", voters, voters-1))
	}
	if resp.Leader == "" {
		warnings = append(warnings, "no leader: the masters may have lost quorum")
	}
	for i, w := range warnings {
		if i > 0 {
			resp.Warning += "; "
		}
		resp.Warning += w
	}
	for _, m := range s.gossip.members() {
		resp.Members = append(resp.Members, &pb.MemberStatus{Name: m.Name, Address: m.Addr, Role: m.Role, Status: m.Status, Version: m.Version})
	}
	return resp, nil
}

// TransferLeadership hands leadership to the named master, or to the most
// up-to-date follower, and returns the new leader.
func (o *operatorAPI) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	s := o.s
	return routeCall(s, ctx, "TransferLeadership", false,
		func(ctx context.Context) (*pb.TransferLeadershipResponse, error) {
			if req.GetTo() == s.cfg.Name {
				return &pb.TransferLeadershipResponse{Leader: s.cfg.Name}, nil
			}
			resume := s.drainProposals(time.Second)
			defer resume()
			var fut raft.Future
			if req.GetTo() == "" {
				fut = s.raft.LeadershipTransfer()
			} else {
				srv, err := s.configServer(req.GetTo())
				if err != nil {
					return nil, err
				}
				if srv.Suffrage != raft.Voter {
					return nil, status.Errorf(codes.FailedPrecondition, "master %s is not a voter and cannot lead", req.GetTo())
				}
				fut = s.raft.LeadershipTransferToServer(srv.ID, srv.Address)
			}
			if err := fut.Error(); err != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "leadership transfer failed: %v; run `skiff cluster status` to check the target is up to date", err)
			}
			for {
				wake := s.changed.wait()
				if l := s.Leader(); l != "" && l != s.cfg.Name {
					return &pb.TransferLeadershipResponse{Leader: l}, nil
				}
				select {
				case <-wake:
				case <-time.After(50 * time.Millisecond):
				case <-ctx.Done():
					return nil, status.Errorf(codes.DeadlineExceeded, "leadership was handed off but no new leader is known yet: run `skiff cluster status`")
				}
			}
		},
		func(ctx context.Context, c *grpc.ClientConn) (*pb.TransferLeadershipResponse, error) {
			return pb.NewOperatorClient(c).TransferLeadership(ctx, req)
		})
}

// RemovePeer removes a master that is gone for good from the Raft
// configuration.
func (o *operatorAPI) RemovePeer(ctx context.Context, req *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	s := o.s
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name: required")
	}
	return routeCall(s, ctx, "RemovePeer", false,
		func(ctx context.Context) (*pb.RemovePeerResponse, error) {
			srv, err := s.configServer(req.GetName())
			if err != nil {
				return nil, err
			}
			if srv.Suffrage == raft.Voter && s.voterCount() <= 1 {
				return nil, status.Errorf(codes.FailedPrecondition, "refusing to remove %s: it is the last voter and the cluster would be lost", req.GetName())
			}
			if m, ok := s.gossip.member(req.GetName()); ok && m.Role == RoleServer && m.Status == "alive" {
				return nil, status.Errorf(codes.FailedPrecondition,
					"master %s is still alive in gossip, so the leader would add it back: stop it first (a stopped master leaves gossip), then remove it", req.GetName())
			}
			if err := s.raft.RemoveServer(srv.ID, 0, s.cfg.ApplyTimeout).Error(); err != nil {
				return nil, raftStatus(err)
			}
			s.log.Info("removed master from the raft configuration", "member", req.GetName())
			return &pb.RemovePeerResponse{}, nil
		},
		func(ctx context.Context, c *grpc.ClientConn) (*pb.RemovePeerResponse, error) {
			return pb.NewOperatorClient(c).RemovePeer(ctx, req)
		})
}

// configServer finds a master in the Raft configuration by name.
func (s *Server) configServer(name string) (raft.Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Server{}, status.Errorf(codes.Unavailable, "read raft configuration: %v", err)
	}
	var names []string
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == name {
			return srv, nil
		}
		names = append(names, string(srv.ID))
	}
	return raft.Server{}, status.Errorf(codes.NotFound, "no master named %q in the raft configuration (masters: %v)", name, names)
}

func (o *operatorAPI) ReadIndex(ctx context.Context, _ *pb.ReadIndexRequest) (*pb.ReadIndexResponse, error) {
	s := o.s
	if s.raft.State() != raft.Leader {
		return nil, pb.NotAppliedError(fmt.Sprintf("master %s is not the leader", s.cfg.Name))
	}
	idx, err := s.leaderIndex.do(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.ReadIndexResponse{Index: idx}, nil
}

// Snapshot stream format, as SnapshotSave sends and SnapshotRestore expects
// it: the 8-byte magic snapshotMagic, a 4-byte big-endian length, that many
// bytes of JSON raft.SnapshotMeta, then exactly meta.Size bytes of store
// data. raft verifies the size on restore.
const (
	snapshotMagic     = "SKFSNAP1"
	snapshotChunk     = 256 << 10
	maxSnapshotHeader = 1 << 20
)

// SnapshotSave streams a snapshot of the store that includes every write
// acknowledged before the call.
func (o *operatorAPI) SnapshotSave(_ *pb.SnapshotSaveRequest, stream grpc.ServerStreamingServer[pb.SnapshotChunk]) error {
	s := o.s
	ctx := stream.Context()
	if err := s.linearize(ctx); err != nil {
		return err
	}
	meta, rc, err := s.openSnapshot()
	if err != nil {
		return err
	}
	defer rc.Close()
	hdr, err := json.Marshal(meta)
	if err != nil {
		return status.Errorf(codes.Internal, "encode snapshot header: %v", err)
	}
	first := make([]byte, 0, len(snapshotMagic)+4+len(hdr))
	first = append(first, snapshotMagic...)
	first = binary.BigEndian.AppendUint32(first, uint32(len(hdr)))
	first = append(first, hdr...)
	if err := stream.Send(&pb.SnapshotChunk{Data: first}); err != nil {
		return err
	}
	buf := make([]byte, snapshotChunk)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if err := stream.Send(&pb.SnapshotChunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "read snapshot: %v", err)
		}
	}
}

// openSnapshot takes a snapshot now, or opens the latest one if nothing was
// applied since.
func (s *Server) openSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	f := s.raft.Snapshot()
	err := f.Error()
	if err == nil {
		meta, rc, err := f.Open()
		if err != nil {
			return nil, nil, status.Errorf(codes.Internal, "open snapshot: %v", err)
		}
		return meta, rc, nil
	}
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil, nil, status.Errorf(codes.Unavailable, "take snapshot: %v; retry", err)
	}
	list, err := s.stores.snaps.List()
	if err != nil || len(list) == 0 {
		return nil, nil, status.Errorf(codes.Internal, "no snapshot to open: %v", err)
	}
	meta, rc, err := s.stores.snaps.Open(list[0].ID)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "open snapshot %s: %v", list[0].ID, err)
	}
	return meta, rc, nil
}

// SnapshotRestore replaces the whole cluster state with a saved snapshot
// (disaster recovery onto a fresh cluster). The stream is spooled to the
// data dir first, so that it can be checked and then restored on the leader
// or forwarded to it.
func (o *operatorAPI) SnapshotRestore(stream grpc.ClientStreamingServer[pb.SnapshotChunk, pb.SnapshotRestoreResponse]) error {
	s := o.s
	ctx := stream.Context()
	tmp, err := os.CreateTemp(s.cfg.DataDir, "restore-*.snap")
	if err != nil {
		return status.Errorf(codes.Internal, "spool snapshot: %v", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	w := bufio.NewWriter(tmp)
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return status.Errorf(codes.Internal, "spool snapshot: %v", err)
		}
	}
	if err := w.Flush(); err != nil {
		return status.Errorf(codes.Internal, "spool snapshot: %v", err)
	}
	if _, err := readSnapshotHeader(tmp); err != nil {
		return err
	}
	resp, err := routeCall(s, ctx, "SnapshotRestore", false,
		func(ctx context.Context) (*pb.SnapshotRestoreResponse, error) { return s.restoreSnapshot(tmp) },
		func(ctx context.Context, c *grpc.ClientConn) (*pb.SnapshotRestoreResponse, error) {
			return forwardSnapshot(ctx, c, tmp)
		})
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// readSnapshotHeader checks the stream header from the start of f and
// leaves f positioned at the store data.
func readSnapshotHeader(f *os.File) (*raft.SnapshotMeta, error) {
	bad := func(format string, args ...any) error {
		return status.Errorf(codes.InvalidArgument, "not a skiff snapshot (as written by SnapshotSave): "+format, args...)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, status.Errorf(codes.Internal, "read spooled snapshot: %v", err)
	}
	var fixed [len(snapshotMagic) + 4]byte
	if _, err := io.ReadFull(f, fixed[:]); err != nil {
		return nil, bad("%v", err)
	}
	if string(fixed[:len(snapshotMagic)]) != snapshotMagic {
		return nil, bad("bad magic %q", fixed[:len(snapshotMagic)])
	}
	n := binary.BigEndian.Uint32(fixed[len(snapshotMagic):])
	if n > maxSnapshotHeader {
		return nil, bad("header of %d bytes", n)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, bad("header: %v", err)
	}
	var meta raft.SnapshotMeta
	if err := json.Unmarshal(hdr, &meta); err != nil {
		return nil, bad("header: %v", err)
	}
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read spooled snapshot: %v", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read spooled snapshot: %v", err)
	}
	if got := fi.Size() - pos; got != meta.Size {
		return nil, bad("the header says %d bytes of data but the stream has %d: it was truncated or altered", meta.Size, got)
	}
	return &meta, nil
}

func (s *Server) restoreSnapshot(f *os.File) (*pb.SnapshotRestoreResponse, error) {
	meta, err := readSnapshotHeader(f)
	if err != nil {
		return nil, err
	}
	s.log.Warn("restoring the cluster state from a snapshot", "snapshot_index", meta.Index, "bytes", meta.Size)
	if err := s.raft.Restore(meta, bufio.NewReaderSize(f, snapshotChunk), s.cfg.ApplyTimeout); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, raftStatus(err)
		}
		return nil, status.Errorf(codes.Internal, "restore snapshot: %v", err)
	}
	// Restore ends with a LogNoop, which the store never sees; without a
	// store barrier reads would wait for the next write (see storeBarrier).
	ctx, cancel := context.WithTimeout(s.stoppingCtx, s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.storeBarrier(ctx); err != nil {
		s.log.Warn("store barrier after restore", "err", err)
	}
	idx := s.fsm.AppliedIndex()
	s.log.Warn("restored the cluster state from a snapshot", "index", idx)
	return &pb.SnapshotRestoreResponse{Index: idx}, nil
}

func forwardSnapshot(ctx context.Context, c *grpc.ClientConn, f *os.File) (*pb.SnapshotRestoreResponse, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, status.Errorf(codes.Internal, "read spooled snapshot: %v", err)
	}
	out, err := pb.NewOperatorClient(c).SnapshotRestore(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, snapshotChunk)
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if err := out.Send(&pb.SnapshotChunk{Data: buf[:n]}); err != nil {
				// The real error comes from CloseAndRecv.
				break
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, status.Errorf(codes.Internal, "read spooled snapshot: %v", rerr)
		}
	}
	return out.CloseAndRecv()
}
