package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// Linearizable reads use the read-index method (Raft thesis §6.4): the
// leader confirms it still leads, after the read arrived, at an index that
// covers every write acknowledged before; the serving master then waits
// until its store has applied that index. The confirmation is the commit of
// an empty command batch (a store barrier), not raft's VerifyLeader: that
// counts any successful AppendEntries or heartbeat answer that arrives after
// it starts, including answers to requests sent before it, so a leader
// resumed from a pause longer than an election could count its followers'
// answers from before the pause and serve a stale read (the leader-pause
// chaos scenario caught one). A commit needs a quorum to store an entry
// that did not exist before the read. Only one confirmation is in flight
// per master; every read that arrives while it runs waits for the next one,
// which then serves them all, so a burst of reads costs two entries, not
// one each, and under write load they share the writes' group commits.

// indexCoalescer shares one run of fn among all callers that arrived
// before that run started.
type indexCoalescer struct {
	fn      func(context.Context) (uint64, error)
	mu      sync.Mutex
	next    *indexRound // collects callers for the next run
	running bool
}

type indexRound struct {
	done  chan struct{}
	index uint64
	err   error
}

func newIndexCoalescer(fn func(context.Context) (uint64, error)) *indexCoalescer {
	return &indexCoalescer{fn: fn}
}

func (c *indexCoalescer) do(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if c.next == nil {
		c.next = &indexRound{done: make(chan struct{})}
	}
	r := c.next
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, status.FromContextError(ctx.Err()).Err()
	}
}

func (c *indexCoalescer) run() {
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		r.index, r.err = c.fn(context.Background())
		close(r.done)
	}
}

// readIndexRound is one shared read-index confirmation: on the leader
// directly, on a follower through the leader's Operator.ReadIndex.
func (s *Server) readIndexRound(ctx context.Context) (uint64, error) {
	// Callers stop waiting at their own deadline; this bounds the round
	// itself so a stuck round cannot block later reads forever. (Shutdown
	// ends it through routeCall, with a retryable error.)
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.NoLeaderWait)
	defer cancel()
	return routeCall(s, ctx, "ReadIndex", true,
		s.leaderReadIndex,
		func(ctx context.Context, c *grpc.ClientConn) (uint64, error) {
			resp, err := pb.NewOperatorClient(c).ReadIndex(ctx, &pb.ReadIndexRequest{})
			return resp.GetIndex(), err
		})
}

// leaderReadIndex commits a store barrier (see the top of this file) and
// returns its index. Reads are always safe to retry, so every failure is
// reported as not applied, except the caller's own deadline.
func (s *Server) leaderReadIndex(ctx context.Context) (uint64, error) {
	res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{}}}))
	if err == nil {
		err = res.Err
	}
	if err != nil {
		switch st := status.Convert(err); st.Code() {
		case codes.DeadlineExceeded, codes.Canceled:
			return 0, err
		default:
			return 0, pb.NotAppliedError(fmt.Sprintf("could not confirm leadership: %s", st.Message()))
		}
	}
	return res.Index, nil
}

// readyLeaderReadIndex is leaderReadIndex for Operator.ReadIndex: only on a
// leader that has committed an entry of its term (isReady), whose commit
// index therefore covers everything acknowledged before; never forwarded.
func (s *Server) readyLeaderReadIndex(ctx context.Context) (uint64, error) {
	if !s.isReady() {
		return 0, pb.NotAppliedError(fmt.Sprintf("master %s is not a leader ready to serve", s.cfg.Name))
	}
	return s.leaderReadIndex(ctx)
}

// linearize returns once this master's store reflects every write
// acknowledged before linearize was called.
func (s *Server) linearize(ctx context.Context) error {
	idx, err := s.readIndex.do(ctx)
	if err != nil {
		return err
	}
	if err := s.fsm.WaitForIndex(ctx, idx); err != nil {
		return status.Errorf(status.FromContextError(err).Code(),
			"this master's store is behind the leader (applied %d, need %d): %v; retry, or read with stale=true",
			s.fsm.AppliedIndex(), idx, err)
	}
	return nil
}

func canonicalKind(kind string) (pb.KindInfo, error) {
	k, ok := pb.LookupKind(kind)
	if !ok {
		return k, status.Errorf(codes.InvalidArgument, "kind: unknown kind %q: use one of %s", kind, kindNames())
	}
	return k, nil
}

func (a *clusterAPI) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	k, err := canonicalKind(req.GetKind())
	if err != nil {
		return nil, err
	}
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name: required (use List to read many objects)")
	}
	if !req.GetStale() {
		if err := a.s.linearize(ctx); err != nil {
			return nil, err
		}
	}
	obj, err := a.s.fsm.Get(k.Kind, req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, fsmStatus(err)
	}
	if obj, err = a.s.secrets.open(obj); err != nil { // secrets.go
		return nil, err
	}
	return &pb.GetResponse{Object: obj}, nil
}

// listChunkBytes bounds the items of one List message (see Cluster.List in
// api.proto): far below every message limit, clients' default 4 MiB
// included, and large enough that a list of 10,000 pods is ten messages,
// not thousands. One object (at most Config.MaxObjectBytes) always goes out
// alone, whatever its size.
const listChunkBytes = 1 << 20

// List streams one snapshot of the store in chunks. The snapshot is taken
// once, so every chunk belongs to the same resourceVersion; a client that
// loses the stream part way lists again.
func (a *clusterAPI) List(req *pb.ListRequest, stream grpc.ServerStreamingServer[pb.ListResponse]) error {
	ctx := stream.Context()
	k, err := canonicalKind(req.GetKind())
	if err != nil {
		return err
	}
	if !req.GetStale() {
		if err := a.s.linearize(ctx); err != nil {
			return err
		}
	}
	q := fsm.Query{
		Kind: k.Kind, Namespace: req.GetNamespace(),
		LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
	}
	if k.Kind != "Secret" {
		// The store's bytes go out as they are: nothing is decoded and
		// encoded again. (Secrets are decrypted on the way out.)
		items, idx, err := a.s.fsm.ListEncoded(q)
		if err != nil {
			return fsmStatus(err)
		}
		for _, chunk := range listChunks(items, func(b []byte) int { return len(b) }, listChunkBytes) {
			if err := stream.SendMsg(&pb.EncodedListResponse{Items: chunk, ResourceVersion: idx}); err != nil {
				return err
			}
		}
		return nil
	}
	items, idx, err := a.s.fsm.List(q)
	if err != nil {
		return fsmStatus(err)
	}
	if err := a.s.secrets.openAll(items); err != nil {
		return err
	}
	for _, chunk := range listChunks(items, (*pb.Object).SizeVT, listChunkBytes) {
		if err := stream.Send(&pb.ListResponse{Items: chunk, ResourceVersion: idx}); err != nil {
			return err
		}
	}
	return nil
}

// listChunks splits items into runs whose encoded size in a ListResponse
// stays within limit, each run holding at least one item. No items is one
// empty run: the answer still needs a message carrying its
// resourceVersion.
func listChunks[T any](items []T, sizeOf func(T) int, limit int) [][]T {
	chunks := [][]T{}
	start, size := 0, 0
	for i, o := range items {
		// What the item adds to the message: its field tag, its length
		// and its bytes.
		n := sizeOf(o)
		n += protowire.SizeTag(1) + protowire.SizeVarint(uint64(n))
		if i > start && size+n > limit {
			chunks = append(chunks, items[start:i:i])
			start, size = i, 0
		}
		size += n
	}
	return append(chunks, items[start:])
}

// Watch streams from this master's own store: every master has the same
// event log, so watches need not touch the leader. The stream ends cleanly
// when the client goes away or the master shuts down; the client resumes
// from the last resourceVersion it saw.
func (a *clusterAPI) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchEvent]) error {
	s := a.s
	k, err := canonicalKind(req.GetKind())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.stoppingCtx, cancel)
	defer stop()

	from := req.GetResourceVersion()
	if from > s.fsm.AppliedIndex() {
		// The client saw this index on another master (a list or a watch
		// there); events up to it must not be sent again, so wait until
		// this master's store has caught up.
		wctx, wcancel := context.WithTimeout(ctx, s.cfg.NoLeaderWait)
		err := s.fsm.WaitForIndex(wctx, from)
		wcancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return pb.NotAppliedError(fmt.Sprintf("resourceVersion %d is ahead of this master's store (applied %d): retry, or watch on the leader",
				from, s.fsm.AppliedIndex()))
		}
	}
	w, err := s.fsm.Watch(ctx, fsm.Query{
		Kind: k.Kind, Namespace: req.GetNamespace(),
		LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
	}, from)
	if err != nil {
		return watchStatus(err, from)
	}
	s.metrics.watchers.Inc()
	defer s.metrics.watchers.Dec()
	// Headers tell the client the watch is accepted before any event, and a
	// watch "from now" learns at once the index it can resume from.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	if from == 0 {
		if p := w.Progress(); p > 0 {
			from = p
			if err := stream.Send(&pb.WatchEvent{Type: "BOOKMARK", ResourceVersion: p}); err != nil {
				return err
			}
		}
	}

	bookmark := time.Duration(req.GetBookmarkSeconds()) * time.Second
	last := from
	for {
		nctx, ncancel := ctx, context.CancelFunc(func() {})
		if bookmark > 0 {
			nctx, ncancel = context.WithTimeout(ctx, bookmark)
		}
		ev, err := w.Next(nctx)
		ncancel()
		switch {
		case err == nil && ev.Index <= from:
			// Already seen by the client (see the wait above).
		case err == nil && ev.Encoded != nil && ev.Object.GetSecret() == nil:
			// The store's bytes of the object, encoded once for every
			// watcher. (Secrets are decrypted on the way out.)
			last = ev.Index
			if err := stream.SendMsg(&pb.EncodedWatchEvent{Type: ev.Type, Object: ev.Encoded, ResourceVersion: ev.Index}); err != nil {
				return err
			}
		case err == nil:
			last = ev.Index
			obj, err := s.secrets.open(ev.Object)
			if err != nil {
				return err
			}
			if err := stream.Send(&pb.WatchEvent{Type: ev.Type, Object: obj, ResourceVersion: ev.Index}); err != nil {
				return err
			}
		case ctx.Err() != nil:
			return nil
		case bookmark > 0 && errors.Is(err, context.DeadlineExceeded):
			// Progress is an index a new watch can resume from without
			// missing anything this one has not sent.
			p := w.Progress()
			if p == 0 {
				continue // expired: the next Next reports it
			}
			last = max(last, p)
			if err := stream.Send(&pb.WatchEvent{Type: "BOOKMARK", ResourceVersion: last}); err != nil {
				return err
			}
		default:
			return watchStatus(err, last)
		}
	}
}

func watchStatus(err error, from uint64) error {
	if errors.Is(err, fsm.ErrExpired) {
		return status.Errorf(codes.OutOfRange,
			"resourceVersion %d expired: list again and watch from the list's resourceVersion", from)
	}
	return fsmStatus(err)
}
