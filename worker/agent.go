package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// Agent is one worker node: gossip member, Node heartbeats, pod sync loop
// and NodeAgent service. Create it with New and run it with Run.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	rt     Runtime
	images Images
	prober prober
	state  stateStore
	api    *masterSet
	tls    *workerTLS
	srv    *Server
	ownSrv bool
	gossip *gossip
	desc   nodeDescription
	pods   *podManager
	net    *podNetwork
	// cpu keeps earlier reads of the CPU counters for Stats (nil on
	// hollow nodes).
	cpu *cpuHistory

	// cgroupParent is the runtime's cgroup parent when the agent built the
	// runtime itself.
	cgroupParent string
	// stateTmpfs is the runtime's StateDir when Config.StateTmpfs is set:
	// stopping for good unmounts the tmpfs mounted there.
	stateTmpfs string

	backoff backoffPolicy
	// starts holds a token per container being started (MaxParallelStarts;
	// nil: no bound).
	starts     chan struct{}
	registered atomic.Bool
	started    atomic.Bool
}

// New validates cfg, opens the worker's state and runtime, and binds the
// NodeAgent listener and gossip, so configuration and port errors surface
// before Run.
func New(cfg Config) (_ *Agent, retErr error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.Name)
	a := &Agent{cfg: cfg, log: log, backoff: backoffPolicy{base: cfg.BackoffBase, max: cfg.BackoffMax, reset: cfg.BackoffReset},
		net: newPodNetwork()}
	if cfg.MaxParallelStarts > 0 && !cfg.Hollow {
		a.starts = make(chan struct{}, cfg.MaxParallelStarts)
	}
	var closers []func()
	defer func() {
		if retErr != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	nodeIP := cfg.NodeIP
	if nodeIP == "" {
		ip, err := routeIP(cfg.Join[0])
		if err != nil {
			return nil, err
		}
		nodeIP = ip
	}

	switch {
	case cfg.Hollow:
		a.state = newMemState()
		a.rt, a.images, a.prober = cfg.Runtime, cfg.Images, hollowProber{}
		if a.rt == nil {
			h := NewHollowRuntime()
			a.rt, a.images = h, h
		}
		if a.images == nil {
			a.images = NewHollowRuntime()
		}
	default:
		if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		st, err := openBoltState(filepath.Join(cfg.DataDir, "worker.db"))
		if err != nil {
			return nil, err
		}
		a.state = st
		closers = append(closers, func() { st.close() })
		a.rt, a.images = cfg.Runtime, cfg.Images
		if a.images == nil {
			icfg := image.DefaultConfig()
			icfg.DataDir = filepath.Join(cfg.DataDir, "images")
			icfg.InsecureRegistries = cfg.InsecureRegistries
			icfg.CAFiles = cfg.RegistryCAFiles
			icfg.Logger = log
			store, err := image.Open(icfg)
			if err != nil {
				return nil, err
			}
			a.images = store
		}
		if a.rt == nil {
			rcfg := wrt.DefaultConfig()
			rcfg.DataDir = filepath.Join(cfg.DataDir, "runtime")
			rcfg.StateDir = cfg.StateDir
			if rcfg.StateDir == "" {
				rcfg.StateDir = filepath.Join(cfg.DataDir, "state")
			}
			if cfg.StateTmpfs {
				if err := a.stateOnTmpfs(rcfg.StateDir); err != nil {
					return nil, err
				}
				closers = append(closers, func() { _ = wrt.UnmountStateTmpfs(a.stateTmpfs) })
			}
			rcfg.CgroupParent = cfg.CgroupParent
			if rcfg.CgroupParent == "" {
				rcfg.CgroupParent = "/skiff/" + cfg.Name
			}
			a.cgroupParent = rcfg.CgroupParent
			rcfg.Logger = log
			rt, err := wrt.New(rcfg)
			if err != nil {
				return nil, err
			}
			a.rt = rt
			logShim(log, rcfg.ShimCommand)
		}
		a.prober = runtimeProber{rt: a.rt}
	}
	if cfg.testProber != nil {
		a.prober = cfg.testProber
	}

	var err error
	if a.tls, err = newWorkerTLS(cfg, log); err != nil {
		return nil, err
	}
	var serverTLS, clientTLS *tls.Config
	if a.tls != nil {
		serverTLS, clientTLS = a.tls.serverConfig(), a.tls.clientConfig()
	}
	a.srv = cfg.Server
	if a.srv == nil {
		srv, err := NewServer(cfg.ListenAddr, log, serverTLS)
		if err != nil {
			return nil, err
		}
		a.srv, a.ownSrv = srv, true
		closers = append(closers, srv.Stop)
	}
	agentAddr := advertise(a.srv.Addr(), nodeIP)
	_, portStr, _ := net.SplitHostPort(agentAddr)
	port, _ := strconv.Atoi(portStr)
	a.desc = newNodeDescription(cfg, detectHost(cfg.Version), nodeIP, port)

	a.api = cfg.api
	if a.api == nil {
		a.api = newMasterSet(log.With("component", "api"), clientTLS)
		if a.tls != nil && a.tls.cert.Current() == nil {
			a.api.holdUntilOpen()
		}
		closers = append(closers, a.api.close)
	}
	// Without a configured gossip address the worker picks a free port
	// once and keeps it across restarts: masters refuse a member that
	// comes back under its old name on another address until the old one
	// has been dead for a while.
	bolt, _ := a.state.(*boltState)
	gossipAddr := cfg.GossipAddr
	remembered := ""
	if gossipAddr == "" {
		gossipAddr = net.JoinHostPort(nodeIP, "0")
		if bolt != nil {
			if prev := bolt.getMeta("gossip-addr"); prev != "" {
				if host, _, err := net.SplitHostPort(prev); err == nil && host == nodeIP {
					gossipAddr, remembered = prev, prev
				}
			}
		}
	}
	opts := gossipOptions{
		name: cfg.Name, bindAddr: gossipAddr, light: cfg.Hollow, log: log,
		meta:      gossipMeta{Role: roleWorker, Name: cfg.Name, AgentAddr: agentAddr, Version: cfg.Version},
		onMasters: a.api.update,
	}
	if a.tls != nil {
		opts.secretKey = a.tls.token.GossipKey()
	}
	g, err := newGossip(opts)
	if err != nil && remembered != "" {
		log.Warn("the gossip address of the last run is taken; picking another", "addr", remembered, "err", err)
		opts.bindAddr = net.JoinHostPort(nodeIP, "0")
		g, err = newGossip(opts)
	}
	if err != nil {
		return nil, err
	}
	a.gossip = g
	closers = append(closers, g.shutdown)
	if bolt != nil && cfg.GossipAddr == "" {
		if err := bolt.putMeta("gossip-addr", g.addr()); err != nil {
			return nil, fmt.Errorf("save the gossip address: %w", err)
		}
	}
	a.pods = newPodManager(a)
	if _, ok := a.rt.(usageRuntime); ok && !cfg.Hollow {
		a.cpu = newCPUHistory(statsMinWindow)
	}
	return a, nil
}

// advertise replaces a wildcard host in a bound address with the node IP.
func advertise(bound, nodeIP string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return net.JoinHostPort(nodeIP, port)
	}
	return bound
}

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.Name }

// NodeIP is the node's InternalIP.
func (a *Agent) NodeIP() string { return a.desc.hostIP() }

// AgentAddr is the address of the NodeAgent service.
func (a *Agent) AgentAddr() string { return advertise(a.srv.Addr(), a.desc.hostIP()) }

// GossipAddr is the address memberlist is bound to.
func (a *Agent) GossipAddr() string { return a.gossip.addr() }

// Registered reports whether the node's status has been posted (the leader
// registered it).
func (a *Agent) Registered() bool { return a.registered.Load() }

// Run joins the cluster and runs the node until ctx ends. Then it leaves
// gossip (the leader marks the node not ready at once) and returns; pods
// keep running (a restarted worker re-adopts them) unless StopPodsOnExit is
// set.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	a.log.Info("starting worker", "agent", a.AgentAddr(), "gossip", a.gossip.addr(), "node_ip", a.desc.hostIP(),
		"hollow", a.cfg.Hollow, "join", a.cfg.Join)
	defer a.closeAll()
	if err := a.pods.gather(); err != nil {
		a.gossip.shutdown()
		return fmt.Errorf("read the state of earlier runs: %w", err)
	}
	a.srv.add(a)
	defer a.srv.remove(a)

	var wg sync.WaitGroup
	fatal := make(chan error, 1)
	if a.ownSrv {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.srv.Serve(); err != nil {
				select {
				case fatal <- fmt.Errorf("serve the node agent: %w", err):
				default:
				}
			}
		}()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	bg := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(runCtx) }()
	}
	bg(func(ctx context.Context) { a.gossip.joinLoop(ctx, a.cfg.Join, a.cfg.JoinRetryInterval) })
	bg(func(ctx context.Context) {
		a.gossip.rejoinLoop(ctx, a.cfg.Join, max(a.cfg.JoinRetryInterval, 5*time.Second))
	})
	if a.tls != nil {
		bg(a.certificateLoop)
	}
	bg(a.heartbeatLoop)
	bg(a.pods.run)
	bg(a.statsLoop)
	switch {
	case a.podNetworkOn() && a.cfg.Hollow:
		bg(a.hollowCIDRLoop)
	case a.podNetworkOn():
		bg(a.netLoop)
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-fatal:
		a.log.Error("stopping after a fatal error", "err", err)
	}
	a.log.Info("stopping worker")
	cancel()
	if err := a.gossip.leave(a.cfg.ShutdownTimeout); err != nil {
		a.log.Warn("leave gossip", "err", err)
	}
	if a.ownSrv {
		a.srv.Stop()
	}
	wg.Wait()
	if a.cfg.StopPodsOnExit {
		a.stopEverything()
	}
	a.log.Info("worker stopped")
	return err
}

// stopEverything stops and removes every container and sandbox (pods stay
// bound: a restarted agent starts them again).
func (a *Agent) stopEverything() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, _ := a.rt.List()
	var wg sync.WaitGroup
	for _, c := range cs {
		if c.State == wrt.StateExited {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = a.rt.Stop(ctx, c.ID, 2*time.Second)
		}()
	}
	wg.Wait()
	sbs, _ := a.rt.ListSandboxes()
	for _, sb := range sbs {
		if err := a.rt.RemoveSandbox(ctx, sb.PodUID); err != nil {
			a.log.Warn("remove sandbox", "pod_uid", sb.PodUID, "err", err)
		}
		_ = a.removePodDir(sb.PodUID)
		_ = a.state.remove(sb.PodUID)
	}
	if a.cgroupParent != "" {
		removeCgroupDirs(a.cgroupParent)
	}
	if a.stateTmpfs != "" {
		if err := wrt.UnmountStateTmpfs(a.stateTmpfs); err != nil {
			a.log.Warn("unmount the runtime state's tmpfs", "err", err)
		}
	}
	// Stopping for good: the bridge, routes, table and addresses go too. A
	// normal stop leaves them, so running pods keep their network.
	a.teardownNetwork()
}

// stateOnTmpfs puts the runtime's state directory on a tmpfs
// (Config.StateTmpfs) and says where it is.
func (a *Agent) stateOnTmpfs(dir string) error {
	place, err := wrt.MountStateTmpfs(dir)
	if err != nil {
		return fmt.Errorf("runtime state: %w (run the worker as root, or pass --state-tmpfs=false)", err)
	}
	a.log.Info("runtime state "+place.String(), "dir", dir)
	a.stateTmpfs = dir
	return nil
}

func (a *Agent) closeAll() {
	a.gossip.shutdown()
	a.closeNetwork()
	if a.cfg.api == nil {
		a.api.close()
	}
	if err := a.state.close(); err != nil {
		a.log.Warn("close worker state", "err", err)
	}
}

// startSlot waits for a turn to start a container (see MaxParallelStarts)
// and returns the function that ends it.
func (a *Agent) startSlot(ctx context.Context) (func(), error) {
	if a.starts == nil {
		return func() {}, nil
	}
	select {
	case a.starts <- struct{}{}:
		return func() { <-a.starts }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// getObject reads an object from the API.
func (a *Agent) getObject(ctx context.Context, kind, namespace, name string) (*pb.Object, error) {
	c, err := a.api.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.Get(ctx, kind, namespace, name, client.ReadOptions{})
}

// logShim says which binary runs the containers' shims, and why not
// skiff-shim when one lies beside the worker's binary.
func logShim(log *slog.Logger, cmd []string) {
	if len(cmd) == 0 {
		return
	}
	if filepath.Base(cmd[0]) == shim.Binary {
		log.Info("container shims run skiff-shim", "binary", cmd[0])
		return
	}
	beside := filepath.Join(filepath.Dir(cmd[0]), shim.Binary)
	if _, err := os.Stat(beside); err == nil {
		log.Warn("skiff-shim beside this binary is of another build: containers start with the whole skiff binary instead, which costs more CPU per start",
			"skiff_shim", beside, "fix", "install skiff and skiff-shim from the same build (make build puts both in bin/)")
		return
	}
	log.Info("container shims run this binary; install skiff-shim beside it for cheaper container starts", "binary", cmd[0])
}
