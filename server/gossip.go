package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip member roles. Masters publish RoleServer; workers join the same
// pool with RoleWorker.
const (
	RoleServer = "server"
	RoleWorker = "worker"
)

// nodeMeta is what every member publishes in gossip, as JSON (memberlist
// allows 512 bytes). Masters learn each other's Raft and API addresses from
// it, and bootstrap-expect decides from Expect and HasState.
type nodeMeta struct {
	Role     string `json:"role"`
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr,omitempty"`
	APIAddr  string `json:"api_addr,omitempty"`
	Expect   int    `json:"expect,omitempty"`
	// HasState is set once the master holds Raft state: a fresh master that
	// sees it must not bootstrap, but wait to be added by the leader.
	HasState bool   `json:"has_state,omitempty"`
	Version  string `json:"version,omitempty"`
	// AgentAddr is a worker's NodeAgent gRPC address (host:port): the
	// leader asks it for the worker's registration. Workers publish the
	// same JSON (package worker keeps its own copy of this contract).
	AgentAddr string `json:"agent_addr,omitempty"`
	// Leaving is published by a worker just before it leaves gracefully.
	// memberlist does not tell event delegates whether a member left or
	// failed (the Node it passes to NotifyLeave never has StateLeft), so
	// this intent, like serf's leave intent, is how masters tell the two
	// apart.
	Leaving bool `json:"leaving,omitempty"`
}

// Member is one node of the gossip pool as this master sees it.
type Member struct {
	Name     string
	Addr     string // gossip host:port
	Role     string // RoleServer, RoleWorker, or "" if its metadata is unreadable
	Status   string // alive, suspect, dead, left
	RaftAddr string // masters only
	APIAddr  string // masters only
	Expect   int
	HasState bool
	Version  string
	// AgentAddr is a worker's NodeAgent address (workers only).
	AgentAddr string
}

// gossip owns the memberlist and the local node's metadata.
//
// The view of the pool is kept from memberlist's event callbacks, which run
// under memberlist's own lock: the *Node values that Members() returns are
// updated in place by memberlist, so reading them later would race.
type gossip struct {
	s    *Server
	ml   *memberlist.Memberlist
	self string // gossip host:port

	down atomic.Bool

	mu   sync.Mutex
	meta nodeMeta
	view map[string]Member
}

func newGossip(s *Server) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(s.cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("GossipAddr %s: %w", s.cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("GossipAddr %s: bad port: %w", s.cfg.GossipAddr, err)
	}
	g := &gossip{s: s, view: make(map[string]Member), meta: nodeMeta{
		Role:     RoleServer,
		Name:     s.cfg.Name,
		RaftAddr: string(s.stores.trans.LocalAddr()),
		APIAddr:  s.apiAddr,
		Expect:   s.cfg.BootstrapExpect,
		HasState: s.hasState.Load(),
		Version:  s.cfg.Version,
	}}
	mc := memberlist.DefaultLANConfig()
	mc.Name = s.cfg.Name
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertiseAddr = ""
	mc.AdvertisePort = port
	// A master restarted on a new address may take its name back once the
	// old incarnation is known dead.
	mc.DeadNodeReclaimTime = 30 * time.Second
	mc.Delegate = g
	mc.Events = g
	// memberlist compresses every message it sends with a new LZW writer
	// (a large allocation to clear each time): the masters' acks to a
	// thousand nodes' probes were 7.6 % of the leader's CPU while pods
	// were created. Members read either form.
	mc.EnableCompression = false
	mc.Logger = newStdLogger(s.log, "memberlist")
	if s.tls != nil {
		// AES-256-GCM with a key from the cluster secret: a member without
		// the token can neither read nor join the pool.
		mc.SecretKey = s.tls.token.GossipKey()
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	g.ml, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", s.cfg.GossipAddr, err)
	}
	// Create filled in the port if it was 0.
	g.self = net.JoinHostPort(host, strconv.Itoa(mc.BindPort))
	return g, nil
}

func (g *gossip) addr() string { return g.self }

// setHasState publishes that this master now holds Raft state.
func (g *gossip) setHasState() {
	g.mu.Lock()
	changed := !g.meta.HasState
	g.meta.HasState = true
	g.mu.Unlock()
	if changed {
		if err := g.ml.UpdateNode(g.s.cfg.ShutdownTimeout); err != nil {
			g.s.log.Warn("publish gossip metadata", "err", err)
		}
	}
}

// members returns every member this master has heard of, including dead
// and departed ones, sorted by name.
func (g *gossip) members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.view))
	for _, m := range g.view {
		out = append(out, m)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// servers returns the alive masters.
func (g *gossip) servers() []Member {
	var out []Member
	for _, m := range g.members() {
		if m.Role == RoleServer && m.Status == "alive" {
			out = append(out, m)
		}
	}
	return out
}

// member finds a member by name.
func (g *gossip) member(name string) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.view[name]
	return m, ok
}

// record copies what we need from n; memberlist holds its lock while it
// calls the event delegate, so n is stable here.
func (g *gossip) record(n *memberlist.Node, status string) {
	m := memberOf(n)
	if status != "" {
		m.Status = status
	}
	g.mu.Lock()
	g.view[m.Name] = m
	g.mu.Unlock()
	g.s.changed.notify()
}

func memberOf(n *memberlist.Node) Member {
	m, _ := memberAndMeta(n)
	return m
}

func memberAndMeta(n *memberlist.Node) (Member, nodeMeta) {
	m := Member{
		Name:   n.Name,
		Addr:   net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		Status: stateName(n.State),
	}
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err == nil {
		m.Role, m.RaftAddr, m.APIAddr = meta.Role, meta.RaftAddr, meta.APIAddr
		m.Expect, m.HasState, m.Version = meta.Expect, meta.HasState, meta.Version
		m.AgentAddr = meta.AgentAddr
	}
	return m, meta
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// join contacts the Join addresses (other than our own) until one answers.
// memberlist keeps the pool together from then on.
func (s *Server) joinLoop(ctx context.Context) {
	self := s.gossip.addr()
	var targets []string
	for _, a := range s.cfg.Join {
		if a != self && a != s.cfg.GossipAddr {
			targets = append(targets, a)
		}
	}
	if len(targets) == 0 {
		return
	}
	for attempt := 1; ; attempt++ {
		n, err := s.gossip.ml.Join(targets)
		if n > 0 {
			s.log.Info("joined gossip", "contacted", n, "members", s.gossip.ml.NumMembers())
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("cannot join gossip yet; retrying", "join", targets, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.JoinRetryInterval):
		}
	}
}

func (g *gossip) leave(timeout time.Duration) error {
	if g.down.Load() {
		return nil // memberlist panics on Leave after Shutdown
	}
	return g.ml.Leave(timeout)
}

func (g *gossip) shutdown() {
	g.down.Store(true)
	if err := g.ml.Shutdown(); err != nil {
		g.s.log.Warn("stop gossip", "err", err)
	}
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, err := json.Marshal(g.meta)
	if err != nil || len(b) > limit {
		// Names and addresses are short; this only trips on a misconfigured
		// name hundreds of characters long.
		g.s.log.Error("gossip metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// The rest of memberlist.Delegate: masters exchange nothing but metadata.
func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

// memberlist.EventDelegate: any change may start a bootstrap, a reconcile,
// or reveal the leader's API address.
func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.record(n, "alive") }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.record(n, "alive") }
func (g *gossip) NotifyLeave(n *memberlist.Node) {
	status := "dead"
	if _, meta := memberAndMeta(n); n.State == memberlist.StateLeft || meta.Leaving {
		status = "left"
	}
	g.record(n, status)
}

// Members returns the gossip pool (masters and workers) as this master sees
// it, sorted by name, including members that died or left (see Status).
func (s *Server) Members() []Member { return s.gossip.members() }
