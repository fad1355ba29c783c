package controllers

import (
	"context"
	"log/slog"
	"sync"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
)

// InformerFactory hands out one Informer per kind, so every controller of a
// run shares one list+watch and one cache per kind.
type InformerFactory struct {
	cluster Cluster
	log     *slog.Logger
	resync  time.Duration
	metrics *informerMetrics

	mu        sync.Mutex
	informers map[string]*Informer
	ctx       context.Context // set by Start
	wg        sync.WaitGroup
}

// NewInformerFactory returns a factory whose informers list and watch
// through cluster. With resync > 0 every handler also sees every object
// again (as an update with old == new) that often, a safety net for a
// missed event.
func NewInformerFactory(cluster Cluster, log *slog.Logger, resync time.Duration) *InformerFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, _ := newMetrics(nil)
	return &InformerFactory{cluster: cluster, log: log, resync: resync, metrics: m.informer, informers: make(map[string]*Informer)}
}

// For returns the informer of kind (any name LookupKind accepts: "Pod",
// "pods", "po"). An informer asked for after Start starts at once.
func (f *InformerFactory) For(kind string) *Informer {
	if k, ok := pb.LookupKind(kind); ok {
		kind = k.Kind
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if inf, ok := f.informers[kind]; ok {
		return inf
	}
	inf := newInformer(kind, f.cluster, f.log, f.metrics, f.resync)
	f.informers[kind] = inf
	if f.ctx != nil {
		f.start(inf)
	}
	return inf
}

// Start starts every informer asked for so far, and later ones as they are
// asked for; they run until ctx ends. Wait waits for them to stop.
func (f *InformerFactory) Start(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx != nil {
		return
	}
	f.ctx = ctx
	for _, inf := range f.informers {
		f.start(inf)
	}
}

func (f *InformerFactory) start(inf *Informer) {
	f.wg.Go(func() { inf.run(f.ctx) })
}

// Wait blocks until every started informer has stopped.
func (f *InformerFactory) Wait() { f.wg.Wait() }

// Informers returns every informer asked for so far.
func (f *InformerFactory) Informers() []*Informer {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*Informer, 0, len(f.informers))
	for _, inf := range f.informers {
		out = append(out, inf)
	}
	return out
}
