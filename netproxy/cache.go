package netproxy

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// source is what the cache needs from the API. Watch resumes after the
// given resourceVersion; the stream's Next returns client.ErrExpired when
// that history is gone (the cache lists again) and ctx's error when ctx
// ends. *client.Client satisfies it through clientSource.
type source interface {
	List(ctx context.Context, kind string) ([]*pb.Object, uint64, error)
	Watch(ctx context.Context, kind string, resourceVersion uint64) (eventStream, error)
}

// eventStream is an open watch; *client.Watcher is one.
type eventStream interface {
	Next(ctx context.Context) (*pb.WatchEvent, error)
	Close()
}

type clientSource struct{ c *client.Client }

func (s clientSource) List(ctx context.Context, kind string) ([]*pb.Object, uint64, error) {
	return s.c.List(ctx, kind, client.ListOptions{})
}

func (s clientSource) Watch(ctx context.Context, kind string, rv uint64) (eventStream, error) {
	return s.c.Watch(ctx, kind, client.WatchOptions{ResourceVersion: rv, BookmarkSeconds: 60})
}

func clientConnect(connect func(ctx context.Context) (*client.Client, error)) func(ctx context.Context) (source, error) {
	return func(ctx context.Context) (source, error) {
		c, err := connect(ctx)
		if err != nil {
			return nil, err
		}
		return clientSource{c}, nil
	}
}

const (
	kindService   = "Service"
	kindEndpoints = "Endpoints"
)

// Cache holds every Service and Endpoints of the cluster, kept current by a
// list+watch of each kind. The proxy and the DNS server read it; one Cache
// can serve both (run it once with Run and pass it in their configs).
type Cache struct {
	connect func(ctx context.Context) (source, error)
	log     *slog.Logger
	started atomic.Bool

	mu        sync.RWMutex
	services  map[string]*pb.Service   // namespace/name
	endpoints map[string]*pb.Endpoints // namespace/name
	listed    map[string]bool          // kind -> listed at least once
	changed   chan struct{}            // closed on the next change
}

// NewCache returns a cache that reads through the client connect returns.
// connect is called again after an error, since a worker's client changes
// when the masters do.
func NewCache(connect func(ctx context.Context) (*client.Client, error), log *slog.Logger) *Cache {
	return newCache(clientConnect(connect), log)
}

func newCache(connect func(ctx context.Context) (source, error), log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{
		connect:   connect,
		log:       log,
		services:  map[string]*pb.Service{},
		endpoints: map[string]*pb.Endpoints{},
		listed:    map[string]bool{},
		changed:   make(chan struct{}),
	}
}

// Run follows Services and Endpoints until ctx ends. Call it once.
func (c *Cache) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("netproxy: Cache.Run called twice")
	}
	var wg sync.WaitGroup
	for _, kind := range []string{kindService, kindEndpoints} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.follow(ctx, kind)
		}()
	}
	wg.Wait()
	return nil
}

// Synced tells whether both kinds have been listed: before that, an empty
// cache means "not known yet", not "no services".
func (c *Cache) Synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.listed[kindService] && c.listed[kindEndpoints]
}

// Changed returns a channel closed at the next change. Take it before
// reading the cache so no change is missed.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// Snapshot returns every Service and Endpoints, sorted by namespace/name.
// The objects are shared: do not modify them.
func (c *Cache) Snapshot() ([]*pb.Service, []*pb.Endpoints) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	svcs := make([]*pb.Service, 0, len(c.services))
	for _, s := range c.services {
		svcs = append(svcs, s)
	}
	eps := make([]*pb.Endpoints, 0, len(c.endpoints))
	for _, e := range c.endpoints {
		eps = append(eps, e)
	}
	slices.SortFunc(svcs, func(a, b *pb.Service) int { return compareMeta(a.GetMetadata(), b.GetMetadata()) })
	slices.SortFunc(eps, func(a, b *pb.Endpoints) int { return compareMeta(a.GetMetadata(), b.GetMetadata()) })
	return svcs, eps
}

func compareMeta(a, b *pb.ObjectMeta) int {
	return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
}

// Service returns one Service, or nil.
func (c *Cache) Service(namespace, name string) *pb.Service {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.services[namespace+"/"+name]
}

// Endpoints returns the Endpoints of one Service, or nil.
func (c *Cache) Endpoints(namespace, name string) *pb.Endpoints {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.endpoints[namespace+"/"+name]
}

// notifyLocked wakes whoever waits on Changed.
func (c *Cache) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// replace installs a full list of one kind.
func (c *Cache) replace(kind string, items []*pb.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch kind {
	case kindService:
		m := make(map[string]*pb.Service, len(items))
		for _, o := range items {
			if s := o.GetService(); s != nil {
				m[key(s.GetMetadata())] = s
			}
		}
		c.services = m
	case kindEndpoints:
		m := make(map[string]*pb.Endpoints, len(items))
		for _, o := range items {
			if e := o.GetEndpoints(); e != nil {
				m[key(e.GetMetadata())] = e
			}
		}
		c.endpoints = m
	}
	c.listed[kind] = true
	c.notifyLocked()
}

// apply records one watch event.
func (c *Cache) apply(ev *pb.WatchEvent) {
	obj := ev.GetObject()
	deleted := ev.GetType() == "DELETED"
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := obj.GetService(); s != nil {
		if deleted {
			delete(c.services, key(s.GetMetadata()))
		} else {
			c.services[key(s.GetMetadata())] = s
		}
	} else if e := obj.GetEndpoints(); e != nil {
		if deleted {
			delete(c.endpoints, key(e.GetMetadata()))
		} else {
			c.endpoints[key(e.GetMetadata())] = e
		}
	} else {
		return
	}
	c.notifyLocked()
}

func key(m *pb.ObjectMeta) string { return m.GetNamespace() + "/" + m.GetName() }

// follow lists and watches one kind until ctx ends, listing again when the
// watch expires or breaks, with backoff on errors.
func (c *Cache) follow(ctx context.Context, kind string) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	fail := func(what string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		c.log.Warn(what+"; retrying", "kind", kind, "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, maxBackoff)
		return true
	}
	for ctx.Err() == nil {
		src, err := c.connect(ctx)
		if err != nil {
			if !fail("connect to the masters", err) {
				return
			}
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		items, rv, err := src.List(lctx, kind)
		cancel()
		if err != nil {
			if !fail("list", err) {
				return
			}
			continue
		}
		c.replace(kind, items)
		w, err := src.Watch(ctx, kind, rv)
		if err != nil {
			if !fail("watch", err) {
				return
			}
			continue
		}
		backoff = minBackoff
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				w.Close()
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, client.ErrExpired) {
					break // relist at once
				}
				if !fail("watch ended", err) {
					return
				}
				break
			}
			c.apply(ev)
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
