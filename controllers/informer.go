package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	pb "github.com/skiff-sh/skiff/proto"
)

// Names of the indexes every Informer keeps.
const (
	// IndexNamespace maps a namespace to the objects in it.
	IndexNamespace = "namespace"
	// IndexOwner maps an owner's UID to the objects that list it in
	// metadata.ownerReferences.
	IndexOwner = "owner"
	// IndexLabel maps "key=value" to the objects carrying that label.
	// (A metadata informer builds its namespace and label indexes when
	// first asked: lazyIndexes.)
	IndexLabel = "label"
)

// IndexFunc returns the index values of an object (none, one or many).
type IndexFunc func(obj *pb.Object) []string

// Handler receives an informer's changes, after its cache holds them. Calls
// for one informer are serialised. A handler must be quick and must not
// block: it enqueues keys and returns. Objects are the cache's: read only.
type Handler interface {
	OnAdd(obj *pb.Object)
	// OnUpdate is also called with old == obj on a periodic resync.
	OnUpdate(old, obj *pb.Object)
	OnDelete(obj *pb.Object)
}

// HandlerFuncs adapts functions to Handler; nil functions are skipped.
type HandlerFuncs struct {
	AddFunc    func(obj *pb.Object)
	UpdateFunc func(old, obj *pb.Object)
	DeleteFunc func(obj *pb.Object)
}

func (h HandlerFuncs) OnAdd(obj *pb.Object) {
	if h.AddFunc != nil {
		h.AddFunc(obj)
	}
}

func (h HandlerFuncs) OnUpdate(old, obj *pb.Object) {
	if h.UpdateFunc != nil {
		h.UpdateFunc(old, obj)
	}
}

func (h HandlerFuncs) OnDelete(obj *pb.Object) {
	if h.DeleteFunc != nil {
		h.DeleteFunc(obj)
	}
}

// EnqueueKeys returns a Handler that adds the keys keysOf returns for every
// added, updated or deleted object (for an update, of both versions).
func EnqueueKeys(q Queue, keysOf func(obj *pb.Object) []string) Handler {
	add := func(obj *pb.Object) {
		for _, k := range keysOf(obj) {
			q.Add(k)
		}
	}
	return HandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(old, obj *pb.Object) { add(old); add(obj) },
		DeleteFunc: add,
	}
}

// EnqueueObject returns a Handler that adds the key of every added, updated
// or deleted object.
func EnqueueObject(q Queue) Handler {
	return EnqueueKeys(q, func(obj *pb.Object) []string { return []string{KeyOf(obj)} })
}

// Informer keeps a local, indexed copy of every object of one kind, fed by
// list+watch through a Cluster, and tells handlers about changes. When the
// watch's history has expired it lists again and tells handlers the
// difference. Get one from an InformerFactory so controllers share it.
//
// A metadata informer (InformerFactory.ForMetadata) keeps only each object's
// kind and metadata, as Kubernetes' metadata informers keep
// PartialObjectMetadata: what the garbage collector and the namespace
// controller need of every object in the cluster, without a second copy of
// all of it in the leader's memory. It keeps them encoded (itemStore), and
// hands out decoded copies.
type Informer struct {
	kind     string
	metadata bool // keep and hand out metadataOf(obj), encoded (itemStore)
	// keep, if set, decides which objects the cache holds (a dependents
	// informer's, InformerFactory.ForDependents); handlers still hear of
	// every deletion, and of the update by which a cached object stops
	// being kept.
	keep     func(*pb.Object) bool
	cluster  Cluster
	log      *slog.Logger
	metrics  *informerMetrics
	resync   time.Duration
	bookmark int32

	mu       sync.RWMutex
	items    itemStore
	indexers map[string]IndexFunc
	indices  map[string]map[string]map[string]struct{} // index -> value -> keys
	rv       uint64                                    // last resourceVersion seen
	// handled is rv once the handlers for it have run (markHandled).
	handled atomic.Uint64
	synced  chan struct{}

	// dispatchMu serialises handler calls, and replays to a handler added
	// late, with the watch's own dispatch.
	dispatchMu sync.Mutex
	handlers   map[int]Handler
	nextID     int
}

func newInformer(kind string, metadata bool, keep func(*pb.Object) bool, cluster Cluster, log *slog.Logger, m *informerMetrics, resync time.Duration) *Informer {
	inf := &Informer{
		kind: kind, metadata: metadata, keep: keep, cluster: cluster, log: log.With("informer", kind), metrics: m, resync: resync,
		bookmark: 30,
		indexers: make(map[string]IndexFunc),
		indices:  make(map[string]map[string]map[string]struct{}),
		synced:   make(chan struct{}),
		handlers: make(map[int]Handler),
	}
	inf.items.init(metadata)
	inf.AddIndexer(IndexOwner, func(o *pb.Object) []string {
		refs := o.Meta().GetOwnerReferences()
		out := make([]string, 0, len(refs))
		for _, r := range refs {
			out = append(out, r.GetUid())
		}
		return out
	})
	if !metadata {
		for name, fn := range lazyIndexes {
			inf.AddIndexer(name, fn)
		}
	}
	return inf
}

// lazyIndexes are the built-in indexes a metadata informer builds only when
// first asked for them (ByIndex). The garbage collector keeps one for every
// kind, holding every object of the cluster, and looks objects up by owner
// only; the namespace index (for a namespace's deletion) and the label index
// were two thirds of what its informers spent indexing under a write load.
var lazyIndexes = map[string]IndexFunc{
	IndexNamespace: func(o *pb.Object) []string { return []string{o.Meta().GetNamespace()} },
	IndexLabel: func(o *pb.Object) []string {
		l := o.Meta().GetLabels()
		out := make([]string, 0, len(l))
		for k, v := range l {
			out = append(out, k+"="+v)
		}
		return out
	},
}

// needIndex builds a lazy index on its first use.
func (inf *Informer) needIndex(name string) {
	fn, lazy := lazyIndexes[name]
	if !lazy {
		return
	}
	inf.mu.RLock()
	have := inf.indices[name] != nil
	inf.mu.RUnlock()
	if !have {
		inf.AddIndexer(name, fn)
	}
}

// Kind is the kind this informer caches.
func (inf *Informer) Kind() string { return inf.kind }

// AddIndexer adds (or replaces) a named index, built over the objects
// already cached.
func (inf *Informer) AddIndexer(name string, fn IndexFunc) {
	inf.mu.Lock()
	defer inf.mu.Unlock()
	inf.indexers[name] = fn
	idx := make(map[string]map[string]struct{})
	inf.indices[name] = idx
	inf.items.each(func(key string, obj *pb.Object) {
		for _, v := range fn(obj) {
			addToIndex(idx, v, key)
		}
	})
}

// AddHandler registers h and calls h.OnAdd for every object already
// cached. The returned function removes h.
func (inf *Informer) AddHandler(h Handler) (remove func()) {
	inf.dispatchMu.Lock()
	defer inf.dispatchMu.Unlock()
	id := inf.nextID
	inf.nextID++
	inf.handlers[id] = h
	for _, obj := range inf.List() {
		h.OnAdd(obj)
	}
	return func() {
		inf.dispatchMu.Lock()
		delete(inf.handlers, id)
		inf.dispatchMu.Unlock()
	}
}

// HasSynced reports whether the first list has been cached and dispatched.
func (inf *Informer) HasSynced() bool {
	select {
	case <-inf.synced:
		return true
	default:
		return false
	}
}

// Synced is closed once HasSynced is true.
func (inf *Informer) Synced() <-chan struct{} { return inf.synced }

// HandledResourceVersion is the store index of the last change whose
// handlers have all returned: a test that waits for it knows that what
// the handlers record (queued keys, expectations) reflects the cache.
func (inf *Informer) HandledResourceVersion() uint64 { return inf.handled.Load() }

// ResourceVersion is the store index of the last change the cache holds.
func (inf *Informer) ResourceVersion() uint64 {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return inf.rv
}

// Get returns the cached object with key ("namespace/name" or "name").
// The object is shared: Clone it before changing it.
func (inf *Informer) Get(key string) (*pb.Object, bool) {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	o := inf.items.get(key)
	return o, o != nil
}

// Len is the number of cached objects.
func (inf *Informer) Len() int {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return inf.items.len()
}

// List returns every cached object, in no particular order.
func (inf *Informer) List() []*pb.Object {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	out := make([]*pb.Object, 0, inf.items.len())
	inf.items.each(func(_ string, o *pb.Object) { out = append(out, o) })
	return out
}

// ByIndex returns the cached objects whose index name has value, in key
// order, so reconcilers act in a stable order.
func (inf *Informer) ByIndex(name, value string) []*pb.Object {
	inf.needIndex(name)
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	keys := inf.indices[name][value]
	out := make([]*pb.Object, 0, len(keys))
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		out = append(out, inf.items.get(k))
	}
	return out
}

// Select returns the cached objects in namespace ("" for all) whose labels
// match sel, in key order. It starts from the label index when sel requires
// a label value, or the namespace index, when the informer keeps them.
func (inf *Informer) Select(namespace string, sel labels.Selector) []*pb.Object {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	var keys map[string]struct{}
	indexed := false
	if reqs, ok := sel.Requirements(); ok && inf.indices[IndexLabel] != nil {
		for _, r := range reqs {
			op := r.Operator()
			if vals := r.Values(); vals.Len() == 1 && (op == selection.Equals || op == selection.DoubleEquals || op == selection.In) {
				keys, indexed = inf.indices[IndexLabel][r.Key()+"="+vals.UnsortedList()[0]], true
				break
			}
		}
	}
	if !indexed && namespace != "" && inf.indices[IndexNamespace] != nil {
		keys, indexed = inf.indices[IndexNamespace][namespace], true
	}
	var out []*pb.Object
	match := func(o *pb.Object) {
		if (namespace == "" || o.Meta().GetNamespace() == namespace) && sel.Matches(labels.Set(o.Meta().GetLabels())) {
			out = append(out, o)
		}
	}
	if !indexed {
		inf.items.each(func(_ string, o *pb.Object) { match(o) })
		slices.SortFunc(out, func(a, b *pb.Object) int { return strings.Compare(KeyOf(a), KeyOf(b)) })
		return out
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		match(inf.items.get(k))
	}
	return out
}

// run lists and watches until ctx ends.
func (inf *Informer) run(ctx context.Context) {
	if inf.resync > 0 {
		go inf.resyncLoop(ctx)
	}
	bo := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	needList := true
	for ctx.Err() == nil {
		resume := true
		if needList {
			if err := inf.list(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				inf.log.Warn("list failed; retrying", "err", err, "in", bo.next())
				bo.wait(ctx)
				continue
			}
			needList, resume = false, false
		}
		err := inf.watch(ctx, &bo, resume)
		switch {
		case ctx.Err() != nil:
			return
		case IsExpired(err):
			inf.log.Info("watch history expired; listing again", "err", err)
			inf.metrics.relists.WithLabelValues(inf.kind).Inc()
			needList = true
		default:
			inf.log.Warn("watch failed; resuming", "err", err, "in", bo.next())
			bo.wait(ctx)
		}
	}
}

// metadataLister is a Cluster that lists objects reduced to their
// metadata, encoded (pb.AppendMetadata), without decoding them: the
// master's own store, where a metadata informer's list of every object of
// a kind at each leadership term would otherwise decode them all in full.
type metadataLister interface {
	ListMetadata(ctx context.Context, req *pb.ListRequest) (items [][]byte, resourceVersion uint64, err error)
}

func (inf *Informer) list(ctx context.Context) error {
	var (
		items []*pb.Object
		raws  [][]byte
		rv    uint64
	)
	if ml, ok := inf.cluster.(metadataLister); ok && inf.metadata {
		var err error
		if raws, rv, err = ml.ListMetadata(ctx, &pb.ListRequest{Kind: inf.kind}); err != nil {
			return fmt.Errorf("list %s: %w", inf.kind, err)
		}
	} else {
		resp, err := inf.cluster.List(ctx, &pb.ListRequest{Kind: inf.kind})
		if err != nil {
			return fmt.Errorf("list %s: %w", inf.kind, err)
		}
		items, rv = resp.GetItems(), resp.GetResourceVersion()
	}
	if !inf.replace(ctx, items, raws, rv) {
		return ctx.Err()
	}
	inf.markHandled()
	return nil
}

func (inf *Informer) watch(ctx context.Context, bo *backoff, resume bool) error {
	inf.mu.RLock()
	from := inf.rv
	inf.mu.RUnlock()
	// Several events of one Raft batch share an index, and a watch resumes
	// strictly after its index: when resuming a broken watch, start one
	// earlier so a batch cut in half is delivered again in full. The
	// repeats are recognised and dropped. (After a list, the list's index
	// is complete.)
	if resume && from > 1 {
		from--
	}
	w, err := inf.cluster.Watch(ctx, &pb.WatchRequest{Kind: inf.kind, ResourceVersion: from, BookmarkSeconds: inf.bookmark})
	if err != nil {
		return fmt.Errorf("watch %s: %w", inf.kind, err)
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			return fmt.Errorf("watch %s: %w", inf.kind, err)
		}
		bo.reset()
		inf.apply(ev)
		inf.markHandled()
	}
}

// markHandled records that the handlers have run for every change up to
// the cache's resourceVersion (apply and replace dispatch before they
// return, and one goroutine calls them).
func (inf *Informer) markHandled() {
	inf.handled.Store(inf.ResourceVersion())
}

// replace makes the cache hold exactly the listed objects, items or (a
// metadata informer's, from a metadataLister) raws, and tells handlers the
// difference. It gives up, reporting false, once ctx ends: a leader that
// lost leadership while listing a large store (every object, for the
// garbage collector's informers) must not spend seconds filling a cache it
// will throw away.
func (inf *Informer) replace(ctx context.Context, items []*pb.Object, raws [][]byte, rv uint64) bool {
	type change struct{ old, obj *pb.Object }
	var changes []change
	if ctx.Err() != nil {
		return false
	}
	n := len(items)
	if raws != nil {
		n = len(raws)
	}
	inf.mu.Lock()
	// An empty cache (the first list) has nothing to remove afterwards:
	// no need to remember what the list had.
	var seen map[string]struct{}
	if inf.items.len() > 0 {
		seen = make(map[string]struct{}, n)
	} else {
		inf.items.grow(n)
	}
	for i := range n {
		if i%256 == 255 && ctx.Err() != nil {
			inf.mu.Unlock()
			return false
		}
		var (
			obj *pb.Object
			raw []byte
		)
		switch {
		case raws != nil:
			raw = raws[i]
			obj = decodeItem(raw)
		case inf.metadata:
			obj = metadataOf(items[i])
		default:
			obj = items[i]
		}
		key := KeyOf(obj)
		var old *pb.Object
		if seen != nil {
			seen[key] = struct{}{}
			old = inf.items.get(key)
		}
		if inf.keep != nil && !inf.keep(obj) {
			if old != nil {
				// No longer kept: dropped, and reported as the update it is.
				inf.store(key, old, nil, nil)
				changes = append(changes, change{old, obj})
			}
			continue
		}
		if old != nil && old.Meta().GetResourceVersion() == obj.Meta().GetResourceVersion() && old.Meta().GetUid() == obj.Meta().GetUid() {
			if inf.keep != nil {
				// Deletions of objects it did not keep went unseen while
				// the watch was down: handlers look at what is kept again.
				changes = append(changes, change{old, old})
			}
			continue
		}
		inf.store(key, old, obj, raw)
		changes = append(changes, change{old, obj})
	}
	var gone []string
	if seen != nil {
		inf.items.eachKey(func(key string) {
			if _, ok := seen[key]; !ok {
				gone = append(gone, key)
			}
		})
	}
	for _, key := range gone {
		old := inf.items.get(key)
		inf.store(key, old, nil, nil)
		changes = append(changes, change{old, nil})
	}
	inf.rv = rv
	n = inf.items.len()
	inf.mu.Unlock()
	inf.metrics.objects.WithLabelValues(inf.kind).Set(float64(n))

	inf.dispatchMu.Lock()
	defer inf.dispatchMu.Unlock()
	for _, c := range changes {
		inf.dispatch(c.old, c.obj)
	}
	if !inf.HasSynced() {
		close(inf.synced)
	}
	return true
}

func (inf *Informer) apply(ev *pb.WatchEvent) {
	inf.mu.Lock()
	if ev.GetResourceVersion() > inf.rv {
		inf.rv = ev.GetResourceVersion()
	}
	obj := ev.GetObject()
	if ev.GetType() == EventBookmark || obj.Resource() == nil {
		inf.mu.Unlock()
		return
	}
	if inf.metadata {
		obj = metadataOf(obj)
	}
	inf.metrics.events.WithLabelValues(inf.kind, ev.GetType()).Inc()
	key := KeyOf(obj)
	old := inf.items.get(key)
	var next *pb.Object
	switch {
	case ev.GetType() == EventDeleted:
		if old == nil || (old.Meta().GetUid() != obj.Meta().GetUid() && obj.Meta().GetUid() != "") {
			// Already gone (a repeated event), or a newer object of the
			// same name has replaced it; or, if this informer keeps only
			// some objects, one it did not keep, whose deletion its
			// handlers still hear of.
			inf.mu.Unlock()
			if inf.keep != nil {
				inf.dispatchMu.Lock()
				inf.dispatch(obj, nil)
				inf.dispatchMu.Unlock()
			}
			return
		}
	case old != nil && old.Meta().GetUid() == obj.Meta().GetUid() &&
		old.Meta().GetResourceVersion() >= obj.Meta().GetResourceVersion():
		// A repeat of a change the cache already holds.
		inf.mu.Unlock()
		return
	case inf.keep != nil && !inf.keep(obj):
		if old == nil {
			inf.mu.Unlock()
			return
		}
		// No longer kept: dropped from the cache, and reported as the
		// update (or replacement) it is.
		inf.store(key, old, nil, nil)
		n := inf.items.len()
		inf.mu.Unlock()
		inf.metrics.objects.WithLabelValues(inf.kind).Set(float64(n))
		inf.dispatchMu.Lock()
		inf.dispatch(old, obj)
		inf.dispatchMu.Unlock()
		return
	default:
		next = obj
	}
	inf.store(key, old, next, nil)
	n := inf.items.len()
	inf.mu.Unlock()
	inf.metrics.objects.WithLabelValues(inf.kind).Set(float64(n))

	inf.dispatchMu.Lock()
	inf.dispatch(old, next)
	inf.dispatchMu.Unlock()
}

// store puts obj under key (nil removes it) and updates the indices; raw,
// if not nil, is obj encoded, for a metadata informer to keep as it is.
// The caller holds mu.
func (inf *Informer) store(key string, old, obj *pb.Object, raw []byte) {
	for name, fn := range inf.indexers {
		idx := inf.indices[name]
		if old != nil {
			for _, v := range fn(old) {
				removeFromIndex(idx, v, key)
			}
		}
		if obj != nil {
			for _, v := range fn(obj) {
				addToIndex(idx, v, key)
			}
		}
	}
	if raw != nil && inf.items.encoded != nil {
		inf.items.encoded[key] = raw
		return
	}
	inf.items.put(key, obj)
}

// dispatch tells every handler; the caller holds dispatchMu.
func (inf *Informer) dispatch(old, obj *pb.Object) {
	for _, h := range inf.handlers {
		switch {
		case old == nil:
			h.OnAdd(obj)
		case obj == nil:
			h.OnDelete(old)
		case old.Meta().GetUid() != obj.Meta().GetUid():
			// Deleted and created again under the same name.
			h.OnDelete(old)
			h.OnAdd(obj)
		default:
			h.OnUpdate(old, obj)
		}
	}
}

func (inf *Informer) resyncLoop(ctx context.Context) {
	t := time.NewTicker(inf.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		inf.dispatchMu.Lock()
		for _, obj := range inf.List() {
			for _, h := range inf.handlers {
				h.OnUpdate(obj, obj)
			}
		}
		inf.dispatchMu.Unlock()
	}
}

func addToIndex(idx map[string]map[string]struct{}, value, key string) {
	set := idx[value]
	if set == nil {
		set = make(map[string]struct{})
		idx[value] = set
	}
	set[key] = struct{}{}
}

func removeFromIndex(idx map[string]map[string]struct{}, value, key string) {
	set := idx[value]
	delete(set, key)
	if len(set) == 0 {
		delete(idx, value)
	}
}

// WaitForSync blocks until every informer has synced or ctx ends, and
// reports whether they all synced.
func WaitForSync(ctx context.Context, informers ...*Informer) bool {
	for _, inf := range informers {
		select {
		case <-inf.Synced():
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// backoff is a capped doubling delay.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	}
	return b.cur
}

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	b.cur = min(b.cur*2, b.max)
}

func (b *backoff) reset() { b.cur = 0 }

// metadataOf returns obj reduced to its apiVersion, kind and metadata. The
// metadata message is shared with obj, which is read only.
func metadataOf(obj *pb.Object) *pb.Object {
	r := obj.Resource()
	if r == nil {
		return obj
	}
	src := r.ProtoReflect()
	fields := metadataFields(src.Descriptor())
	dst := src.New()
	for _, fd := range fields {
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		}
	}
	return pb.Wrap(dst.Interface().(pb.Resource))
}

// metadataFieldsOf caches, per message type, the fields metadataOf keeps:
// looking them up by name was most of its time, once per watch event of
// every metadata informer.
var metadataFieldsOf sync.Map // protoreflect.FullName -> []protoreflect.FieldDescriptor

func metadataFields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if f, ok := metadataFieldsOf.Load(md.FullName()); ok {
		return f.([]protoreflect.FieldDescriptor)
	}
	var fields []protoreflect.FieldDescriptor
	for _, name := range []protoreflect.Name{"api_version", "kind", "metadata"} {
		if fd := md.Fields().ByName(name); fd != nil {
			fields = append(fields, fd)
		}
	}
	metadataFieldsOf.Store(md.FullName(), fields)
	return fields
}

// itemStore is an informer's cache, by key. A full informer keeps the
// objects as the watch delivered them. A metadata informer keeps its
// reduced objects encoded, since it holds one for every object of its kind
// in the cluster: a decoded object is a tree of small heap objects that
// the garbage collector marks on every cycle, bytes are not scanned. Each
// read decodes a copy (about a microsecond for metadata).
type itemStore struct {
	decoded map[string]*pb.Object // full informers
	encoded map[string][]byte     // metadata informers
}

func (s *itemStore) init(encode bool) {
	if encode {
		s.encoded = make(map[string][]byte)
	} else {
		s.decoded = make(map[string]*pb.Object)
	}
}

// get returns the object of key, or nil.
func (s *itemStore) get(key string) *pb.Object {
	if s.decoded != nil {
		return s.decoded[key]
	}
	raw, ok := s.encoded[key]
	if !ok {
		return nil
	}
	return decodeItem(raw)
}

// put stores obj under key; nil removes key.
func (s *itemStore) put(key string, obj *pb.Object) {
	switch {
	case obj == nil:
		delete(s.decoded, key)
		delete(s.encoded, key)
	case s.decoded != nil:
		s.decoded[key] = obj
	default:
		raw, err := obj.MarshalVT()
		if err != nil {
			// Only a bug can get here: an object the store encoded once
			// already. Keep the key, as absent would tell the collector
			// the object is gone.
			panic(fmt.Sprintf("informer: encode %s: %v", key, err))
		}
		s.encoded[key] = raw
	}
}

func (s *itemStore) len() int { return len(s.decoded) + len(s.encoded) }

// grow makes room for n objects in an empty store.
func (s *itemStore) grow(n int) {
	if s.len() > 0 {
		return
	}
	if s.decoded != nil {
		s.decoded = make(map[string]*pb.Object, n)
	} else {
		s.encoded = make(map[string][]byte, n)
	}
}

// each calls fn for every object, in no particular order.
func (s *itemStore) each(fn func(key string, obj *pb.Object)) {
	for k, o := range s.decoded {
		fn(k, o)
	}
	for k, raw := range s.encoded {
		fn(k, decodeItem(raw))
	}
}

// eachKey calls fn for every key, decoding nothing.
func (s *itemStore) eachKey(fn func(key string)) {
	for k := range s.decoded {
		fn(k)
	}
	for k := range s.encoded {
		fn(k)
	}
}

func decodeItem(raw []byte) *pb.Object {
	obj := &pb.Object{}
	if err := obj.UnmarshalVT(raw); err != nil {
		panic(fmt.Sprintf("informer: decode a cached object: %v", err)) // its own encoding: a bug
	}
	return obj
}
