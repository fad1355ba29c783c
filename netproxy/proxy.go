package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// backend programs a RuleSet on the node. Sync replaces, as a whole,
// whatever the previous Sync or an earlier process installed, so the first
// Sync after a restart leaves no stale rules; a failed Sync may be retried
// with the same or a newer RuleSet. Cleanup removes everything the backend
// owns; it is called after the last Sync has returned.
type backend interface {
	Sync(rs RuleSet) error
	Cleanup() error
}

// resyncPeriod repairs rules changed behind the proxy's back (someone
// flushing the ruleset) even when the cluster is quiet.
const resyncPeriod = time.Minute

// Proxy keeps the node's forwarding rules equal to the cluster's Services
// and ready Endpoints.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	cache    *Cache
	ownCache bool
	be       backend
	started  atomic.Bool

	mu      sync.Mutex
	applied *RuleSet // last RuleSet programmed successfully
	syncs   int      // successful syncs, for tests
	synced  chan struct{}
}

// New returns a proxy for cfg. connect returns the current API client (the
// worker's master client changes on failover: it is called again after an
// error); it may be nil when cfg.Cache is set.
func New(cfg Config, connect func(ctx context.Context) (*client.Client, error)) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Cache == nil && connect == nil {
		return nil, errors.New("netproxy: New needs a connect func or Config.Cache")
	}
	be, err := newBackend(cfg)
	if err != nil {
		return nil, err
	}
	cache, own := cfg.Cache, false
	if cache == nil {
		cache, own = NewCache(connect, cfg.Logger), true
	}
	return newProxy(cfg, cache, own, be), nil
}

func newProxy(cfg Config, cache *Cache, ownCache bool, be backend) *Proxy {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{
		cfg: cfg, log: log.With("component", "netproxy", "mode", cfg.Mode),
		cache: cache, ownCache: ownCache, be: be, synced: make(chan struct{}),
	}
}

// Run follows Services and Endpoints and rebuilds the rules on every
// change, no more often than MinSyncInterval. Nothing is programmed before
// both kinds have been listed, so a restart never flashes an empty rule
// set; the first sync then replaces whatever an earlier run left. Run
// returns when ctx ends and leaves the rules in place (a restarted worker
// takes them over); Cleanup removes them.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("netproxy: Run called twice")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if p.ownCache {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.cache.Run(ctx)
		}()
	}

	const minRetry, maxRetry = 100 * time.Millisecond, 30 * time.Second
	var (
		last    time.Time // start of the last sync attempt
		retry   = minRetry
		pending = true // a change not yet programmed
	)
	timer := time.NewTimer(resyncPeriod)
	defer timer.Stop()
	for {
		changed := p.cache.Changed()
		if pending && p.cache.Synced() {
			if wait := time.Until(last.Add(p.cfg.MinSyncInterval)); wait > 0 {
				// Rate bound: changes arriving meanwhile are coalesced into
				// the sync after the wait.
				if !sleep(ctx, wait) {
					return nil
				}
				changed = p.cache.Changed()
			}
			last = time.Now()
			if err := p.syncOnce(); err != nil {
				p.log.Error("sync rules; retrying", "err", err, "in", retry)
				timer.Reset(retry)
				retry = min(2*retry, maxRetry)
			} else {
				pending = false
				retry = minRetry
				timer.Reset(resyncPeriod)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			pending = true
		case <-timer.C:
			pending = true
		}
	}
}

// syncOnce programs the cache's current content.
func (p *Proxy) syncOnce() error {
	svcs, eps := p.cache.Snapshot()
	rs := Translate(svcs, eps)
	start := time.Now()
	if err := p.be.Sync(rs); err != nil {
		return err
	}
	p.mu.Lock()
	first := p.applied == nil
	p.applied = &rs
	p.syncs++
	close(p.synced)
	p.synced = make(chan struct{})
	p.mu.Unlock()
	lvl := slog.LevelDebug
	if first {
		lvl = slog.LevelInfo
	}
	p.log.Log(context.Background(), lvl, "rules synced", "service_ports", len(rs.Ports), "took", time.Since(start))
	return nil
}

// Cleanup removes every table, link and listener the proxy created: for a
// worker that stops for good. Call it after Run has returned.
func (p *Proxy) Cleanup() error {
	if err := p.be.Cleanup(); err != nil {
		return fmt.Errorf("netproxy cleanup (%s mode): %w", p.cfg.Mode, err)
	}
	return nil
}
