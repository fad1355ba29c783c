package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapLoop forms a new cluster (bootstrap-expect) and publishes in
// gossip when this master has Raft state.
//
// A master without state waits until it sees exactly BootstrapExpect alive
// masters with the same setting, none of them with state; then each of them
// calls BootstrapCluster with the identical configuration (IDs are names,
// sorted), so whichever wins the first election, every voter agrees on the
// first log entry. If any master already has state, the cluster exists: this
// one waits for the leader to add it (see reconcile).
func (s *Server) bootstrapLoop(ctx context.Context) {
	if s.hasState.Load() {
		s.gossip.setHasState()
		return
	}
	lastLog := time.Time{}
	bootstrapping := s.cfg.BootstrapExpect > 0
	for {
		wake := s.changed.wait()
		if s.raft.LastIndex() > 0 {
			// A leader replicated to us, or we bootstrapped.
			s.markHasState()
			return
		}
		if bootstrapping {
			done, why := s.tryBootstrap()
			switch {
			case done:
				bootstrapping = false
			case why != "" && time.Since(lastLog) > 5*time.Second:
				s.log.Info("waiting to bootstrap", "reason", why)
				lastLog = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tryBootstrap bootstraps when the conditions hold. It reports done when
// no bootstrap will ever be needed, and otherwise why it is still waiting.
func (s *Server) tryBootstrap() (done bool, why string) {
	expect := s.cfg.BootstrapExpect
	var peers []Member
	for _, m := range s.gossip.servers() {
		if m.HasState {
			s.log.Info("found a master that already has raft state: not bootstrapping; waiting for the leader to add this master",
				"member", m.Name)
			return true, ""
		}
		switch m.Expect {
		case expect:
			peers = append(peers, m)
		case 0:
			// A master started to join an existing cluster; the leader
			// adds it once there is one.
		default:
			return false, fmt.Sprintf("master %s has BootstrapExpect=%d but this one has %d: every master of a new cluster must use the same value",
				m.Name, m.Expect, expect)
		}
	}
	if len(peers) < expect {
		return false, fmt.Sprintf("%d of %d masters visible in gossip", len(peers), expect)
	}
	if len(peers) > expect {
		// Different masters could pick different subsets; bootstrapping
		// inconsistent configurations would split the cluster.
		return false, fmt.Sprintf("%d masters with BootstrapExpect=%d visible, more than expected: fix BootstrapExpect", len(peers), expect)
	}
	var conf raft.Configuration
	for _, m := range peers {
		if m.RaftAddr == "" {
			return false, fmt.Sprintf("master %s has not published its raft address", m.Name)
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.RaftAddr)})
	}
	sort.Slice(conf.Servers, func(i, j int) bool { return conf.Servers[i].ID < conf.Servers[j].ID })
	s.log.Info("bootstrapping the cluster", "servers", fmt.Sprint(conf.Servers))
	if err := s.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return false, fmt.Sprintf("bootstrap failed: %v", err)
	}
	if len(conf.Servers)%2 == 0 {
		s.log.Warn("the cluster has an even number of voters: it tolerates no more failures than one master fewer would",
			"voters", len(conf.Servers))
	}
	s.markHasState()
	return true, ""
}

func (s *Server) markHasState() {
	s.hasState.Store(true)
	s.gossip.setHasState()
}

// reconcile runs on the leader: it adds every alive master that is not in
// the Raft configuration (or whose Raft address changed) as a voter. Masters
// are never removed automatically; a master that is gone for good is removed
// with RemovePeer.
func (s *Server) reconcile() error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	known := make(map[raft.ServerID]raft.ServerAddress)
	for _, srv := range f.Configuration().Servers {
		known[srv.ID] = srv.Address
	}
	var errs []error
	added := false
	for _, m := range s.gossip.servers() {
		id, addr := raft.ServerID(m.Name), raft.ServerAddress(m.RaftAddr)
		if addr == "" {
			continue
		}
		if have, ok := known[id]; ok && have == addr {
			continue
		}
		s.log.Info("adding master to the raft configuration", "member", m.Name, "raft", m.RaftAddr)
		if err := s.raft.AddVoter(id, addr, 0, s.cfg.ApplyTimeout).Error(); err != nil {
			errs = append(errs, fmt.Errorf("add voter %s at %s: %w", m.Name, m.RaftAddr, err))
			continue
		}
		added = true
	}
	if added {
		if voters := s.voterCount(); voters%2 == 0 {
			s.log.Warn("the cluster has an even number of voters: it tolerates no more failures than one master fewer would; add or remove a master",
				"voters", voters)
		}
	}
	return errors.Join(errs...)
}

func (s *Server) voterCount() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}
