package worker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// masterSet is the API client of a worker, kept pointed at every master
// gossip reports alive. The client fails over between the masters it
// knows; when the set changes (a master added or replaced) a new client
// replaces it, and the old one is closed a little later so calls in flight
// can finish (a watch on it ends and is reopened on the new one).
type masterSet struct {
	log *slog.Logger
	tls *tls.Config // nil: plaintext
	// gate, when not nil, holds every caller of get until it is closed: a
	// worker without its certificate yet must not open connections to the
	// masters that would stay unauthenticated (see certificateLoop).
	gate     chan struct{}
	gateOnce sync.Once

	mu      sync.Mutex
	addrs   []string // the masters cur talks to
	latest  []string // the masters gossip reported last
	cur     *client.Client
	changed chan struct{} // closed when cur changes
	closed  bool
	// prune, while set, drops lost masters once lostGrace (tests; 0:
	// lostMasterGrace) has passed.
	prune     *time.Timer
	lostGrace time.Duration
}

// lostMasterGrace is how long a worker keeps talking to a master that
// gossip lost before it forgets it: longer than a flap under load, short
// enough that a removed master is soon out of the client.
const lostMasterGrace = time.Minute

func newMasterSet(log *slog.Logger, tlsConfig *tls.Config) *masterSet {
	return &masterSet{log: log, tls: tlsConfig, changed: make(chan struct{})}
}

// update sets the masters' API addresses. A master gossip lost is kept
// for lostMasterGrace: gossip declares a master dead after a few missed
// probes (a loaded machine, a long GC pause) and it is back a moment later,
// while a new client each time would reopen every watch of the worker and
// list its pods again, twice per flap, on masters already too slow to
// answer probes; the client skips a master that is down by itself. A new
// master (added, or one that replaced another) makes a new client at once.
func (m *masterSet) update(addrs []string) {
	addrs = slices.Clone(addrs)
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || len(addrs) == 0 {
		return
	}
	m.latest = addrs
	switch {
	case slices.Equal(addrs, m.addrs):
		// All back: a later loss waits a whole grace period again.
		m.stopPrune()
	case subset(addrs, m.addrs):
		if m.prune == nil {
			m.prune = time.AfterFunc(m.grace(), m.pruneLost)
		}
	default:
		m.stopPrune()
		m.replaceLocked(addrs)
	}
}

func (m *masterSet) stopPrune() {
	if m.prune != nil {
		m.prune.Stop()
		m.prune = nil
	}
}

// pruneLost drops the masters gossip has not reported for the whole grace
// period (removed from the cluster, or gone for good).
func (m *masterSet) pruneLost() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune = nil
	if m.closed || slices.Equal(m.latest, m.addrs) || !subset(m.latest, m.addrs) {
		return
	}
	m.replaceLocked(m.latest)
}

func (m *masterSet) grace() time.Duration {
	if m.lostGrace > 0 {
		return m.lostGrace
	}
	return lostMasterGrace
}

// replaceLocked points the worker at addrs with a new client (m.mu held).
func (m *masterSet) replaceLocked(addrs []string) {
	cfg := client.DefaultConfig()
	cfg.Servers = addrs
	cfg.Logger = m.log
	cfg.TLS = m.tls
	// Heartbeats and status writes retry on their own schedule; do not let
	// one call block for long on dead masters.
	cfg.ConnectTimeout = time.Second
	c, err := client.New(cfg)
	if err != nil {
		m.log.Warn("connect to masters", "masters", addrs, "err", err)
		return
	}
	old := m.cur
	m.cur, m.addrs = c, addrs
	close(m.changed)
	m.changed = make(chan struct{})
	m.log.Info("masters", "api", addrs)
	if old != nil {
		time.AfterFunc(time.Minute, func() { old.Close() })
	}
}

// subset reports whether every address in a is in b.
func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// holdUntilOpen makes get wait for open.
func (m *masterSet) holdUntilOpen() { m.gate = make(chan struct{}) }

// open lets get callers through.
func (m *masterSet) open() {
	if m.gate != nil {
		m.gateOnce.Do(func() { close(m.gate) })
	}
}

// get returns the current client, waiting until a master is known.
func (m *masterSet) get(ctx context.Context) (*client.Client, error) {
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return m.known(ctx)
}

// known is get without the gate.
func (m *masterSet) known(ctx context.Context) (*client.Client, error) {
	for {
		m.mu.Lock()
		c, ch := m.cur, m.changed
		m.mu.Unlock()
		if c != nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// fresh returns a new client to the masters known now (waiting for one),
// with connections of its own; the caller closes it.
func (m *masterSet) fresh(ctx context.Context) (*client.Client, error) {
	if _, err := m.known(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	addrs := slices.Clone(m.addrs)
	m.mu.Unlock()
	cfg := client.DefaultConfig()
	cfg.Servers = addrs
	cfg.Logger = m.log
	cfg.ConnectTimeout = time.Second
	cfg.TLS = m.tls
	return client.New(cfg)
}

// current returns the client, or nil when no master is known yet or while
// the gate holds callers (a connection opened now would stay without a
// certificate).
func (m *masterSet) current() *client.Client {
	if m.gate != nil {
		select {
		case <-m.gate:
		default:
			return nil
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

func (m *masterSet) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.stopPrune()
	if m.cur != nil {
		m.cur.Close()
	}
}
