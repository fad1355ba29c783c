// Package server is a skiff master: one member of the Raft group whose
// replicated state machine (package fsm) is the cluster store, plus the gRPC
// API in front of it.
//
// A master wires hashicorp/raft (raft-boltdb/v2 log and stable store with
// fsync, file snapshots, TCP transport) to the store, forms new clusters with
// bootstrap-expect over memberlist gossip, serves the Cluster and Operator
// gRPC services, forwards writes from followers to the leader, serves
// linearizable reads on every master (coalesced leader verification plus
// read index), and runs LeaderTasks (the controllers) only while it leads.
//
// Files are split by concern: config.go (Config), raft.go (storage and raft
// settings), gossip.go (membership), bootstrap.go (forming the cluster and
// adding masters), leader.go (the leadership loop), api.go (writes),
// forward.go (reaching the leader), reads.go (reads and watches),
// operator.go (cluster operations), http.go and metrics.go (observability).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/builtin"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// Server is one master. Create it with New and run it with Run.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	// inflight counts proposals waiting for raft; handingOff refuses new
	// ones while leadership is handed over (drainProposals).
	inflight   atomic.Int64
	handingOff atomic.Bool
	// leaderTasks are Config.LeaderTasks plus the controller manager.
	leaderTasks []LeaderTask

	fsm    *fsm.FSM
	stores *raftStores
	raft   *raft.Raft
	gossip *gossip
	// batches keeps Config.MaxInflightBatches batches of writes in raft.
	batches *inflightBatches

	apiLn   net.Listener
	apiAddr string // advertised API address
	// leaderHeader names apiAddr in pb.LeaderHeader, as the leader answers
	// every write (built once; gRPC copies it into each response).
	leaderHeader metadata.MD
	grpc         *grpc.Server
	httpLn       net.Listener
	http         *http.Server

	// tls is the master's key material, nil with Config.Insecure.
	tls *serverTLS

	// secrets encrypts Secret data at rest, audit logs mutating requests
	// (nil when off), limits holds per-client limits.
	secrets *secretBox
	audit   *auditLog
	limits  *limiter

	peers     *peerPool
	readIndex *indexCoalescer
	// leaderIndex serves Operator.ReadIndex: rounds on a ready leader only,
	// never forwarded, so a ReadIndex request never waits behind a round
	// that is itself waiting on another master.
	leaderIndex *indexCoalescer

	// agents are connections to workers' NodeAgent services (registration,
	// logs and exec relays).
	agents *peerPool

	// readyTerm is the term in which this master, as leader, committed its
	// barrier and made sure the system namespaces exist. Writes and
	// linearizable reads are served locally only while the current term
	// equals it and raft still says Leader, so a leader that lost and
	// regained leadership never serves from a stale commit index.
	readyTerm atomic.Uint64
	// changed is broadcast whenever something that decides where a request
	// goes changes: raft leader, readiness, gossip membership.
	changed *notifier

	hasState atomic.Bool
	started  atomic.Bool
	// stopping is closed when shutdown begins: waiting requests give up
	// with Unavailable and watches end.
	stopping     chan struct{}
	stopOnce     sync.Once
	stoppingCtx  context.Context
	cancelStopCx context.CancelFunc
}

// New validates cfg, opens the data dir and binds every listener, so that
// configuration and port errors surface before Run. Nothing is served until
// Run.
func New(cfg Config) (_ *Server, retErr error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("server", cfg.Name)
	cfg.Logger = log
	s := &Server{
		cfg:      cfg,
		log:      log,
		metrics:  newMetrics(),
		stopping: make(chan struct{}),
		changed:  newNotifier(),
	}
	s.stoppingCtx, s.cancelStopCx = context.WithCancel(context.Background())
	defer func() {
		if retErr != nil {
			s.closeAll()
		}
	}()

	var err error
	if s.secrets, err = loadSecretBox(cfg.EncryptionKeyFile); err != nil {
		return nil, fmt.Errorf("server config: EncryptionKeyFile: %w", err)
	}
	s.warnSecretsAtRest()
	if cfg.AuditLogFile != "" {
		if s.audit, err = openAuditLog(cfg.AuditLogFile, cfg.AuditLogMaxBytes, log.With("component", "audit"), s.metrics.reg); err != nil {
			return nil, fmt.Errorf("server config: AuditLogFile: %w", err)
		}
	}
	s.limits = newLimiter(limitsConfig{
		rps: cfg.MaxRequestsPerSecond, burst: cfg.MaxRequestBurst,
		watchesPerClient: cfg.MaxWatchesPerClient, watches: cfg.MaxWatches,
	}, s.metrics.reg)

	fcfg := fsm.DefaultConfig()
	fcfg.Logger, fcfg.EventWindow = log.With("component", "fsm"), cfg.EventWindow
	s.fsm, err = fsm.New(fcfg)
	if err != nil {
		return nil, fmt.Errorf("create store: %w", err)
	}
	if s.tls, err = newServerTLS(cfg); err != nil {
		return nil, err
	}
	s.stores, err = openRaftStores(cfg, s.metrics, s.tls)
	if err != nil {
		return nil, err
	}
	has, err := s.stores.hasState()
	if err != nil {
		return nil, err
	}
	s.hasState.Store(has)

	s.apiLn, err = net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.APIAddr, err)
	}
	s.apiAddr = advertiseAddr(s.apiLn.Addr().String(), cfg.RaftAddr)
	s.leaderHeader = metadata.Pairs(pb.LeaderHeader, s.apiAddr)
	if cfg.HTTPAddr != "" {
		s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
		}
	}

	s.raft, err = raft.NewRaft(raftConfig(cfg), syncedFSM{s.fsm, s.stores.own}, s.stores.logs, s.stores.bolt, s.stores.snaps, s.stores.trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s.batches = newInflightBatches(s.raft, cfg.MaxInflightBatches, cfg.BatchLinger)
	s.batches.entries = func(n int) { s.metrics.entryWrites.Observe(float64(n)) }
	s.stores.trans.gate.Store(writeGate(s.batches))
	s.stores.own.raft.Store(raftState(s.raft))
	s.stores.trans.raft.Store(termState(s.raft))
	s.metrics.registerState(s.raft, s.fsm, s.stores.logs, &s.stores.trans.pushes)

	s.gossip, err = newGossip(s)
	if err != nil {
		return nil, err
	}

	s.leaderTasks = append([]LeaderTask(nil), cfg.LeaderTasks...)
	if len(cfg.Controllers) > 0 {
		mcfg := controllers.DefaultConfig()
		mcfg.Cluster = localCluster{s}
		mcfg.Logger = log.With("component", "controllers")
		mcfg.Registerer = s.metrics.reg
		mcfg.Registrations = builtin.Registrations(cfg.ControllerConfig)
		mcfg.Controllers = cfg.Controllers
		mcfg.Host = cfg.Name
		m, err := controllers.NewManager(mcfg)
		if err != nil {
			return nil, fmt.Errorf("server config: Controllers: %w", err)
		}
		s.leaderTasks = append(s.leaderTasks, m)
	}

	s.leaderTasks = append(s.leaderTasks, newNodeLifecycle(s))
	// Answers from other masters and workers may be larger than one object
	// (a log chunk, a response with an object near the limit plus its
	// metadata), as the server's own responses may.
	var peerCreds, agentCreds credentials.TransportCredentials = insecure.NewCredentials(), insecure.NewCredentials()
	opts := append(s.interceptors(), pb.GRPCServerWindows()...) // interceptors: limits.go
	if s.tls != nil {
		peerCreds, agentCreds = s.tls.peerCredentials(), s.tls.agentCredentials()
		opts = append(opts, s.tls.apiCredentials())
	}
	s.peers = newPeerPool(maxResponseBytes, peerCreds)
	s.agents = newPeerPool(maxResponseBytes, agentCreds)
	s.readIndex = newIndexCoalescer(s.readIndexRound)
	s.leaderIndex = newIndexCoalescer(s.readyLeaderReadIndex)
	s.grpc = grpc.NewServer(append(opts,
		// Requests carry at most one object: a little more than its limit,
		// so an object just over it gets the error naming that limit.
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		// Responses (a List of every pod) may be far larger than one
		// object; the client accepts up to 256 MiB.
		grpc.MaxSendMsgSize(maxResponseBytes),
		// Clients (and other masters) may ping as often as every 5s to keep
		// watches alive through NATs; the server pings idle connections to
		// drop dead clients' watch streams.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Stop waits for handlers, so raft is never shut down under a
		// handler that is waiting for a commit.
		grpc.WaitForHandlers(true),
		// Requests run on long-lived goroutines whose stacks have already
		// grown to what a write needs (interceptors, protobuf, raft): a new
		// goroutine per request spent about 8 % of the leader's CPU under
		// write load copying its stack as it grew. When all are busy (long
		// watches hold theirs) a request gets a new goroutine, as before.
		grpc.NumStreamWorkers(streamWorkers),
		// Skiff's messages in and out through their generated
		// (vtprotobuf) code, not protobuf's reflection: see pb.GRPCCodec.
		grpc.ForceServerCodecV2(pb.GRPCCodec()),
	)...)
	pb.RegisterClusterServer(s.grpc, &clusterAPI{s: s})
	pb.RegisterOperatorServer(s.grpc, &operatorAPI{s: s})
	pb.RegisterPodsServer(s.grpc, &podsProxy{s: s})
	if s.httpLn != nil {
		s.http = s.newHTTPServer()
	}
	return s, nil
}

// streamWorkers is how many goroutines serve requests before gRPC starts
// one per request: well above the clients a master serves at once.
const streamWorkers = 256

// advertiseAddr replaces a wildcard host in a bound address with the host
// the other masters reach us on (from RaftAddr, which must be concrete).
func advertiseAddr(bound, raftAddr string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return bound
	}
	rhost, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return bound
	}
	return net.JoinHostPort(rhost, port)
}

// Run serves until ctx ends, then shuts down gracefully: a leader first
// hands leadership to another master, then the master leaves gossip, drains
// API calls and stops raft. It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("server: Run called twice")
	}
	s.log.Info("starting master", "raft", s.stores.trans.LocalAddr(), "api", s.apiAddr,
		"gossip", s.gossip.addr(), "bootstrap_expect", s.cfg.BootstrapExpect, "has_state", s.hasState.Load(),
		"version", s.cfg.Version)

	bg, cancelBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	goBG := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(bg) }()
	}
	fatal := make(chan error, 2)

	goBG(s.watchRaftLeader)
	goBG(s.joinLoop)
	goBG(s.bootstrapLoop)
	goBG(s.leaderLoop)
	goBG(s.renewCertificate)

	var serveWG sync.WaitGroup
	serveWG.Add(1)
	go func() {
		defer serveWG.Done()
		if err := s.grpc.Serve(s.apiLn); err != nil {
			fatal <- fmt.Errorf("serve API on %s: %w", s.apiAddr, err)
		}
	}()
	if s.http != nil {
		serveWG.Add(1)
		go func() {
			defer serveWG.Done()
			if err := s.serveHTTP(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fatal <- fmt.Errorf("serve HTTP on %s: %w", s.httpLn.Addr(), err)
			}
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-fatal:
		s.log.Error("stopping after a fatal error", "err", runErr)
	}
	s.shutdown(cancelBG, &wg)
	serveWG.Wait()
	s.log.Info("master stopped")
	return runErr
}

// shutdown runs the graceful stop sequence. Each step is bounded so that a
// dead peer cannot hold the process.
func (s *Server) shutdown(cancelBG context.CancelFunc, bg *sync.WaitGroup) {
	s.log.Info("shutting down")
	s.stopOnce.Do(func() { close(s.stopping); s.cancelStopCx() })

	if s.raft.State() == raft.Leader && s.voterCount() > 1 {
		s.handOffLeadership()
	}
	// Leader tasks, reconcile, bootstrap and join loops end here; the
	// leader loop waits for every LeaderTask to return.
	cancelBG()
	bg.Wait()

	s.leaveGossip()

	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.Warn("API calls still running after the shutdown timeout: cancelling them", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}
	if s.http != nil {
		hctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		if err := s.http.Shutdown(hctx); err != nil {
			s.log.Warn("stop HTTP server", "err", err)
			_ = s.http.Close()
		}
		cancel()
	}
	s.closeAll()
}

// leaveGossip announces that this master leaves and waits until the
// announcement has gone out, or until no other member is alive to receive
// it. memberlist's Leave only ends when the broadcast has been sent or the
// timeout passes, and it sends only to live members: when every member
// stops at once (skiff dev, or all masters stopped together) the others may
// all leave before this one's broadcast goes out, and Leave would wait the
// whole ShutdownTimeout for nobody. The abandoned Leave returns by itself
// at that timeout; Shutdown (closeAll) does not wait for it.
func (s *Server) leaveGossip() {
	if s.gossip.down.Load() {
		return
	}
	done := make(chan error, 1)
	go func() { done <- s.gossip.leave(s.cfg.ShutdownTimeout) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				s.log.Warn("leave gossip", "err", err)
			}
			return
		case <-tick.C:
			// Once Leave has marked this member left, NumMembers counts
			// only the others that are alive or suspect, the members
			// memberlist would gossip the broadcast to.
			if s.gossip.ml.NumMembers() == 0 {
				s.log.Debug("left gossip: no other member is alive to tell")
				return
			}
		}
	}
}

// handOffLeadership transfers leadership so the cluster does not wait a
// full election timeout to notice this master is gone.
func (s *Server) handOffLeadership() {
	s.log.Info("transferring leadership before shutdown")
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	// No resume: this master is stopping.
	s.drainProposals(min(2*time.Second, s.cfg.ShutdownTimeout/2))
	targets := s.transferTargets()
	for attempt := 1; ; attempt++ {
		var target *raft.Server
		if len(targets) > 0 {
			target = &targets[(attempt-1)%len(targets)]
		}
		done := make(chan error, 1)
		go func() {
			if target == nil {
				done <- s.raft.LeadershipTransfer().Error()
				return
			}
			done <- s.raft.LeadershipTransferToServer(target.ID, target.Address).Error()
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Until(deadline)):
			s.log.Warn("leadership transfer timed out", "timeout", s.cfg.ShutdownTimeout)
			return
		}
		if err == nil {
			break
		}
		// A first attempt can hit a pooled raft connection to a peer that
		// restarted since (EOF); raft drops it, so try again.
		if attempt >= max(3, len(targets)) || time.Now().After(deadline) || s.raft.State() != raft.Leader {
			s.log.Warn("leadership transfer failed; the others will elect a leader after the election timeout", "err", err)
			return
		}
		s.log.Info("leadership transfer failed; retrying", "err", err, "attempt", attempt)
	}
	// The transfer completes when the target wins; wait until we know who,
	// so that forwarded requests in flight find the new leader.
	for time.Now().Before(deadline) {
		wake := s.changed.wait()
		if _, id := s.raft.LeaderWithID(); id != "" && string(id) != s.cfg.Name {
			s.log.Info("leadership transferred", "leader", id)
			return
		}
		select {
		case <-wake:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// transferTargets lists the other voters that gossip says are alive: raft
// on its own picks the most up-to-date follower even if it is down.
func (s *Server) transferTargets() []raft.Server {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []raft.Server
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter || string(srv.ID) == s.cfg.Name {
			continue
		}
		if m, ok := s.gossip.member(string(srv.ID)); ok && m.Status == "alive" {
			out = append(out, srv)
		}
	}
	return out
}

// closeAll releases everything New created; it is safe on a partly built
// Server.
func (s *Server) closeAll() {
	if s.gossip != nil {
		s.gossip.shutdown()
	}
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			s.log.Warn("raft shutdown", "err", err)
		}
	}
	if s.peers != nil {
		s.peers.close()
	}
	if s.agents != nil {
		s.agents.close()
	}
	if s.stores != nil {
		if err := s.stores.close(); err != nil {
			s.log.Warn("close raft stores", "err", err)
		}
	}
	if s.apiLn != nil {
		_ = s.apiLn.Close()
	}
	if s.httpLn != nil {
		_ = s.httpLn.Close()
	}
	if s.cancelStopCx != nil {
		s.cancelStopCx()
	}
	if s.audit != nil {
		if err := s.audit.close(); err != nil {
			s.log.Warn("close audit log", "err", err)
		}
	}
}

// FSM returns the local store. Reads from it are this master's view, which
// may lag the leader's.
func (s *Server) FSM() *fsm.FSM { return s.fsm }

// IsLeader reports whether this master is the Raft leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Name returns the master's name (its Raft server ID).
func (s *Server) Name() string { return s.cfg.Name }

// APIAddr returns the address the gRPC API is bound to, as advertised to
// the other masters.
func (s *Server) APIAddr() string { return s.apiAddr }

// RaftAddr returns the address of the Raft transport.
func (s *Server) RaftAddr() string { return string(s.stores.trans.LocalAddr()) }

// GossipAddr returns the address memberlist is bound to.
func (s *Server) GossipAddr() string { return s.gossip.addr() }

// HTTPAddr returns the address /metrics and the health checks are served
// on, or "" when disabled.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Leader returns the name of the current leader as this master knows it,
// or "" if there is none.
func (s *Server) Leader() string {
	_, id := s.raft.LeaderWithID()
	return string(id)
}

// isReady reports whether this master is a leader that may serve writes and
// linearizable reads locally.
func (s *Server) isReady() bool {
	if s.raft.State() != raft.Leader {
		return false
	}
	t := s.readyTerm.Load()
	return t != 0 && t == s.raft.CurrentTerm()
}

// setReady records that this master is ready as leader of term, or, with
// 0, that it is not. A term's readiness never replaces a later term's: the
// term before may still be finishing when this one starts (leaderLoop).
func (s *Server) setReady(term uint64) {
	for {
		old := s.readyTerm.Load()
		if term != 0 && term < old {
			return
		}
		if s.readyTerm.CompareAndSwap(old, term) {
			break
		}
	}
	s.changed.notify()
}

// watchRaftLeader turns raft's leader observations into broadcasts on
// s.changed, so requests waiting for a leader wake as soon as there is one.
func (s *Server) watchRaftLeader(ctx context.Context) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			s.changed.notify()
		}
	}
}

// notifier is a broadcast: wait returns a channel that is closed at the next
// notify.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
