package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// leaderLoop follows raft's leadership signal. Each time this master wins,
// it starts one leadership term (lead) with its own context; when it loses,
// it cancels that context at once. The leader tasks of two terms never
// overlap: a term starts its tasks only once everything started under the
// terms before it has returned. Serving writes does not wait for that: a
// master that regains leadership while its last term's tasks are still
// stopping (an informer in the middle of listing every object, say) commits
// its barrier and serves at once; the stopping tasks' writes are refused
// (their context is cancelled, controllers' fencedCluster). Losing
// leadership never stops the process.
func (s *Server) leaderLoop(ctx context.Context) {
	var cur *leadership
	// stopped is closed once every term started so far has returned.
	stopped := make(chan struct{})
	close(stopped)
	defer func() {
		if cur != nil {
			s.setReady(0)
			cur.cancel()
		}
		<-stopped
	}()
	leaderCh := s.raft.LeaderCh()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-leaderCh:
			// LeaderCh keeps only the latest value: true while a term is
			// running means we lost and regained leadership in between.
			if cur != nil {
				s.log.Info("leadership lost: stopping leader tasks")
				s.setReady(0)
				cur.cancel()
				cur = nil
			}
			if isLeader {
				cur = s.startLeadership(stopped)
				stopped = cur.done
			}
		}
	}
}

// leadership is one running term.
type leadership struct {
	cancel context.CancelFunc
	done   chan struct{} // closed once it and every term before it returned
}

func (s *Server) startLeadership(before <-chan struct{}) *leadership {
	ctx, cancel := context.WithCancel(context.Background())
	l := &leadership{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer func() {
			<-before
			close(l.done)
		}()
		s.lead(ctx, before)
	}()
	return l
}

// lead is one leadership term: make the store current, make sure the
// system namespaces exist, declare readiness, then, once the terms before
// (before) have returned, run the leader tasks and keep the Raft
// configuration in step with gossip until ctx ends.
func (s *Server) lead(ctx context.Context, before <-chan struct{}) {
	s.metrics.leaderChanges.Inc()
	term := s.raft.CurrentTerm()
	s.log.Info("became leader", "term", term)

	// The barrier commits an entry of this term, which commits (and makes us
	// apply) everything earlier leaders committed: until then our commit
	// index may be behind what clients were already told.
	if !retry(ctx, s, "commit a barrier", func() error { return s.storeBarrier(ctx) }) {
		return
	}
	if !retry(ctx, s, "create the system namespaces", func() error { return s.ensureSystemNamespaces(ctx) }) {
		return
	}
	if s.raft.CurrentTerm() != term {
		// Lost and regained in between; the loop starts a fresh term.
		return
	}
	s.setReady(term)
	s.log.Info("leader ready", "term", term, "applied_index", s.fsm.AppliedIndex())

	select {
	case <-before:
	case <-ctx.Done():
		return
	}
	var wg sync.WaitGroup
	for _, t := range s.leaderTasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runLeaderTask(ctx, t)
		}()
	}
	s.reconcileLoop(ctx)
	wg.Wait()
}

// retry runs f until it succeeds or ctx ends, reporting whether it
// succeeded. Failures here are mostly leadership being lost, which cancels
// ctx shortly.
func retry(ctx context.Context, s *Server, what string, f func() error) bool {
	backoff := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn("leader setup step failed; retrying", "step", what, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// storeBarrier commits and applies an empty command batch, a no-op for the
// store. raft.Barrier would commit as well, but raft hands neither its
// LogBarrier entries nor the LogNoop each new leader appends to the FSM, so
// the store's applied index would stay below the commit index until the next
// write, and read-index waits (which compare the two) would stall. An
// entry the store applies leaves the log's tail always visible to it.
func (s *Server) storeBarrier(ctx context.Context) error {
	res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{}}}))
	if err != nil {
		return err
	}
	return res.Err
}

// ensureSystemNamespaces creates the namespaces the masters keep
// (pb.SystemNamespaces) that do not exist yet: default, and
// kube-node-lease for the nodes' heartbeat Leases.
func (s *Server) ensureSystemNamespaces(ctx context.Context) error {
	for _, name := range pb.SystemNamespaces {
		_, err := s.fsm.Get("Namespace", "", name)
		if err == nil {
			continue
		}
		if !errors.Is(err, fsm.ErrNotFound) {
			return err
		}
		obj := pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: name}})
		pb.SetDefaults(obj)
		res, err := s.propose(ctx, s.newCommand(&pb.Command{Op: &pb.Command_Create{Create: obj}}))
		if err != nil {
			return err
		}
		if res.Err != nil && !errors.Is(res.Err, fsm.ErrAlreadyExists) {
			return res.Err
		}
		s.log.Info("created a system namespace", "namespace", name)
	}
	return nil
}

// runLeaderTask runs t until ctx ends, restarting it with backoff if it
// returns early.
func (s *Server) runLeaderTask(ctx context.Context, t LeaderTask) {
	backoff := time.Second
	for {
		started := time.Now()
		err := t.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		s.log.Error("leader task stopped early; restarting", "task", t.Name(), "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// reconcileLoop adds masters to the Raft configuration on every gossip
// change and every ReconcileInterval.
func (s *Server) reconcileLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		wake := s.changed.wait()
		if err := s.reconcile(); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile raft configuration with gossip", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}
