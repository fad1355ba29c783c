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
	metadata  map[string]*Informer // ForMetadata's, for kinds For had not been asked for
	dependent map[string]*Informer // ForDependents', for kinds neither had been asked for
	ctx       context.Context      // set by Start
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
	return &InformerFactory{cluster: cluster, log: log, resync: resync, metrics: m.informer,
		informers: make(map[string]*Informer), metadata: make(map[string]*Informer), dependent: make(map[string]*Informer)}
}

// For returns the informer of kind (any name LookupKind accepts: "Pod",
// "pods", "po"). An informer asked for after Start starts at once.
func (f *InformerFactory) For(kind string) *Informer {
	return f.get(kind, false, false)
}

// ForMetadata returns an informer of kind whose objects carry only their
// apiVersion, kind and metadata (status, spec and data are left out): for
// controllers that watch every object of a kind but read only metadata.
// If the full informer of kind was asked for already it is shared instead,
// rather than watching twice; register controllers that want the full
// objects first. Handlers and readers must not rely on the objects being
// either.
func (f *InformerFactory) ForMetadata(kind string) *Informer {
	return f.get(kind, true, false)
}

// ForDependents returns a metadata informer of kind that caches only the
// objects with owner references or finalizers, and tells its handlers of
// the deletion of every object of kind, cached or not: what the garbage
// collector and the namespace controller follow of every kind, without a
// copy of every object in the cluster in the leader's memory. Handlers
// also hear of the update by which a cached object stops being kept (its
// last owner or finalizer removed), and after a relist see every kept
// object again (as an update with old == new): deletions of objects it did
// not keep may have gone unseen meanwhile. If a full or metadata informer
// of kind was asked for already it is shared instead, as for ForMetadata:
// its handlers then hear of everything.
func (f *InformerFactory) ForDependents(kind string) *Informer {
	return f.get(kind, true, true)
}

// Dependent reports whether obj is one a ForDependents informer keeps: it
// has owners, or finalizers that something must remove before it goes.
func Dependent(obj *pb.Object) bool {
	m := obj.Meta()
	return len(m.GetOwnerReferences()) > 0 || len(m.GetFinalizers()) > 0
}

func (f *InformerFactory) get(kind string, metadata, dependents bool) *Informer {
	if k, ok := pb.LookupKind(kind); ok {
		kind = k.Kind
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if inf, ok := f.informers[kind]; ok {
		return inf
	}
	into := f.informers
	if metadata {
		if inf, ok := f.metadata[kind]; ok {
			return inf
		}
		into = f.metadata
	}
	var keep func(*pb.Object) bool
	if dependents {
		if inf, ok := f.dependent[kind]; ok {
			return inf
		}
		into, keep = f.dependent, Dependent
	}
	inf := newInformer(kind, metadata, keep, f.cluster, f.log, f.metrics, f.resync)
	into[kind] = inf
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
	for _, inf := range f.metadata {
		f.start(inf)
	}
	for _, inf := range f.dependent {
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
	out := make([]*Informer, 0, len(f.informers)+len(f.metadata)+len(f.dependent))
	for _, inf := range f.informers {
		out = append(out, inf)
	}
	for _, inf := range f.metadata {
		out = append(out, inf)
	}
	for _, inf := range f.dependent {
		out = append(out, inf)
	}
	return out
}
