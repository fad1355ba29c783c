package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossipMeta is what a worker publishes in gossip. It is the JSON contract
// masters read (server/gossip.go, nodeMeta): role "worker", the node name,
// the NodeAgent address the leader asks for the registration, and the
// version. Masters publish role "server" and their API address, which is how
// a worker finds the API.
type gossipMeta struct {
	Role      string `json:"role"`
	Name      string `json:"name"`
	APIAddr   string `json:"api_addr,omitempty"`
	Version   string `json:"version,omitempty"`
	AgentAddr string `json:"agent_addr,omitempty"`
	// Leaving is set just before a graceful leave: memberlist cannot tell
	// masters whether a member left or failed, this intent does.
	Leaving bool `json:"leaving,omitempty"`
}

const (
	roleServer = "server"
	roleWorker = "worker"
)

// gossip is the worker's memberlist member. It follows the masters' API
// addresses and reports them to onMasters.
type gossip struct {
	log       *slog.Logger
	ml        *memberlist.Memberlist
	metaMu    sync.Mutex
	meta      gossipMeta
	onMasters func([]string)
	down      atomic.Bool

	mu      sync.Mutex
	masters map[string]string // master name -> API address, alive only
}

// gossipOptions tune memberlist; hollow nodes use longer intervals so that
// a thousand members in one process stay cheap.
type gossipOptions struct {
	name, bindAddr string
	meta           gossipMeta
	light          bool
	log            *slog.Logger
	onMasters      func([]string)
	// secretKey encrypts gossip (AES-256-GCM, from the cluster token);
	// nil gossips in plaintext.
	secretKey []byte
}

func newGossip(o gossipOptions) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(o.bindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %s: %w", o.bindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %s: bad port: %w", o.bindAddr, err)
	}
	probe := o.meta
	probe.Leaving = true
	if b, _ := json.Marshal(probe); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata is %d bytes, over memberlist's %d: shorten the node name", len(b), memberlist.MetaMaxSize)
	}
	g := &gossip{log: o.log, meta: o.meta, onMasters: o.onMasters, masters: map[string]string{}}
	mc := memberlist.DefaultLANConfig()
	mc.Name = o.name
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertisePort = port
	mc.DeadNodeReclaimTime = 30 * time.Second
	mc.Delegate = g
	mc.Events = g
	if o.light {
		// Hollow nodes: a thousand full members in one process would
		// each keep, probe and relay rumors about all the others, O(N²)
		// work in one process. Towards the masters a hollow member is a
		// full member (it joins, answers probes, refutes suspicion, leaves
		// with intent), but it keeps only the masters as peers: it ignores
		// other workers, so it neither stores nor relays news about them.
		// The masters still know and probe every member, and node
		// readiness rests on heartbeats anyway.
		mc.Alive = &mastersOnly{self: o.name, seen: make(map[string]aliveVerdict)}
		mc.ProbeInterval = 5 * time.Second
		mc.ProbeTimeout = 2 * time.Second
		mc.GossipInterval = 500 * time.Millisecond
		mc.PushPullInterval = 2 * time.Minute
	}
	// memberlist compresses every message with a new LZW writer and its
	// 64 KB table: in a process of a thousand hollow members that was a
	// third of its gossip CPU, and the masters do without it too. Members
	// read either form.
	mc.EnableCompression = false
	mc.Logger = log.New(&slogWriter{log: o.log}, "", 0)
	if o.secretKey != nil {
		mc.SecretKey = o.secretKey
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	g.ml, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", o.bindAddr, err)
	}
	return g, nil
}

// addr is the bound gossip address.
func (g *gossip) addr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// joinLoop contacts the masters until one answers.
func (g *gossip) joinLoop(ctx context.Context, targets []string, every time.Duration) {
	for attempt := 1; ; attempt++ {
		n, err := g.ml.Join(targets)
		if n > 0 {
			g.log.Info("joined gossip", "contacted", n, "members", g.ml.NumMembers())
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			g.log.Warn("cannot join gossip yet; retrying", "join", targets, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// rejoinLoop rejoins the masters when this member finds itself alone
// (every master restarted, or a partition healed after they declared it
// dead).
func (g *gossip) rejoinLoop(ctx context.Context, targets []string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		alone := len(g.masters) == 0
		g.mu.Unlock()
		if alone {
			_, _ = g.ml.Join(targets)
		}
	}
}

// leave announces the intent to leave, then leaves: the masters mark the
// node not ready at once instead of waiting for the grace period.
func (g *gossip) leave(timeout time.Duration) error {
	if g.down.Load() {
		return nil
	}
	g.metaMu.Lock()
	g.meta.Leaving = true
	g.metaMu.Unlock()
	if err := g.ml.UpdateNode(timeout); err != nil {
		g.log.Warn("announce leaving", "err", err)
	}
	return g.ml.Leave(timeout)
}

func (g *gossip) shutdown() {
	if g.down.CompareAndSwap(false, true) {
		_ = g.ml.Shutdown()
	}
}

func (g *gossip) record(n *memberlist.Node, alive bool) {
	var m gossipMeta
	if err := json.Unmarshal(n.Meta, &m); err != nil || m.Role != roleServer {
		return
	}
	g.mu.Lock()
	if alive && m.APIAddr != "" {
		g.masters[n.Name] = m.APIAddr
	} else {
		delete(g.masters, n.Name)
	}
	addrs := make([]string, 0, len(g.masters))
	for _, a := range g.masters {
		addrs = append(addrs, a)
	}
	g.mu.Unlock()
	sort.Strings(addrs)
	if g.onMasters != nil {
		g.onMasters(addrs)
	}
}

// memberlist.Delegate: a worker publishes its metadata and nothing else.
func (g *gossip) NodeMeta(limit int) []byte {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	b, _ := json.Marshal(g.meta)
	return b
}

func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

// memberlist.EventDelegate.
func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.record(n, true) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.record(n, true) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.record(n, false) }

// slogWriter adapts memberlist's log.Logger output to slog, mapping its
// "[LEVEL]" prefixes.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(msg, prefix) {
			level = l
			msg = strings.TrimSpace(strings.TrimPrefix(msg, prefix))
		}
	}
	// memberlist reports each probe of a dead peer at WARN; keep it at
	// debug so a dead master does not flood the log.
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg, "component", "memberlist")
	return len(p), nil
}

var _ io.Writer = (*slogWriter)(nil)

// mastersOnly is the memberlist.AliveDelegate of hollow members: only
// masters (and the member itself) become peers. Each hollow member hears of
// every other one again and again (a thousand in one process), so the
// verdict is kept per member and its metadata decoded only when it changes.
type mastersOnly struct {
	self string
	mu   sync.Mutex
	seen map[string]aliveVerdict // by member name
}

type aliveVerdict struct {
	meta string
	peer bool
}

func (m *mastersOnly) NotifyAlive(n *memberlist.Node) error {
	if n.Name == m.self {
		return nil
	}
	m.mu.Lock()
	v, ok := m.seen[n.Name]
	m.mu.Unlock()
	if !ok || v.meta != string(n.Meta) {
		var meta gossipMeta
		v = aliveVerdict{meta: string(n.Meta), peer: json.Unmarshal(n.Meta, &meta) == nil && meta.Role == roleServer}
		m.mu.Lock()
		m.seen[n.Name] = v
		m.mu.Unlock()
	}
	if v.peer {
		return nil
	}
	return errNotAPeer
}

var errNotAPeer = errors.New("a hollow member keeps only masters as peers")
