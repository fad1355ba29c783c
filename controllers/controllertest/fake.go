// Package controllertest helps test controllers: Fake is an in-memory
// Cluster that records the writes made to it, and Harness wires informers,
// a fake clock and a fake event recorder around it, so a test can say
// "given these objects, reconcile this key, expect these actions".
package controllertest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Action is one call made to the Fake.
type Action struct {
	Verb      string // list, watch, create, update, updateStatus, delete, bind
	Kind      string
	Namespace string
	Name      string
	Object    *pb.Object   // create, update, updateStatus: what was sent
	Delete    *pb.DeleteOp // delete
	Binds     []*pb.BindOp // bind
}

// String is "verb Kind namespace/name", or for a bind "bind ns/pod->node, ...".
func (a Action) String() string {
	if a.Verb == "bind" {
		parts := make([]string, 0, len(a.Binds))
		for _, b := range a.Binds {
			parts = append(parts, b.GetNamespace()+"/"+b.GetName()+"->"+b.GetNodeName())
		}
		return "bind " + strings.Join(parts, ", ")
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s %s", a.Verb, a.Kind, controllers.Key(a.Namespace, a.Name)))
}

// Reactor sees every action before the Fake applies it. If it returns
// handled, the Fake returns err without applying the action (the action is
// still recorded). Use it to inject failures.
type Reactor func(a Action) (handled bool, err error)

// Fake is an in-memory controllers.Cluster with the store's rules:
// resourceVersion is a global counter, Update and UpdateStatus check a
// non-zero resourceVersion, Delete honours finalizers, Bind sets
// spec.nodeName of an unbound pod, watches resume from a resourceVersion.
// Safe for concurrent use.
type Fake struct {
	// GracefulPodDeletion makes Delete of a bound pod only set its
	// deletionTimestamp (as the real store does, leaving the worker to
	// finish it); by default bound pods are removed at once.
	GracefulPodDeletion bool

	mu        sync.Mutex
	clock     clock.PassiveClock
	rv        uint64
	uid       int
	objects   map[string]map[string]*pb.Object // kind -> key -> object
	kindRV    map[string]uint64
	log       []fakeEvent
	logStart  uint64 // watches from before this resourceVersion have expired
	logSeq0   uint64 // sequence number of log[0]
	changed   chan struct{}
	actions   []Action
	reactors  []Reactor
	observers []Observer
}

// Observer sees every change the Fake makes, synchronously and in order,
// with a view of the whole store right after it. It must not call the Fake.
// Use it to check invariants that must hold in every state.
type Observer func(ev *pb.WatchEvent, objects func(kind string) []*pb.Object)

type fakeEvent struct {
	kind string
	ev   *pb.WatchEvent
}

// NewFake returns a Fake holding objs (stored as if created, without
// recording actions). clk may be nil for the real clock.
func NewFake(clk clock.PassiveClock, objs ...*pb.Object) *Fake {
	if clk == nil {
		clk = clock.RealClock{}
	}
	f := &Fake{clock: clk, objects: make(map[string]map[string]*pb.Object), kindRV: make(map[string]uint64), changed: make(chan struct{})}
	for _, o := range objs {
		f.Add(o)
	}
	return f
}

// Add stores obj as if created, filling uid, resourceVersion and
// creationTimestamp when unset, without recording an action. It replaces an
// object of the same key. It returns the stored copy.
func (f *Fake) Add(obj *pb.Object) *pb.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := obj.Clone()
	normalize(o)
	m := o.Meta()
	if m.Uid == "" {
		f.uid++
		m.Uid = fmt.Sprintf("uid-%d", f.uid)
	}
	if m.CreationTimestamp == nil {
		m.CreationTimestamp = timestamppb.New(f.clock.Now())
	}
	if m.Generation == 0 && hasSpec(o) {
		m.Generation = 1
	}
	kind := o.KindName()
	typ := controllers.EventAdded
	if f.objects[kind][controllers.KeyOf(o)] != nil {
		typ = controllers.EventModified
	}
	f.rv++
	f.put(typ, o, f.rv)
	return o.Clone()
}

// Mutate changes a stored object in place (as a worker or a user would),
// bumping its resourceVersion and notifying watchers, without recording an
// action. It fails if the object does not exist.
func (f *Fake) Mutate(kind, namespace, name string, fn func(obj *pb.Object)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := f.objects[kind][controllers.Key(namespace, name)]
	if cur == nil {
		return status.Errorf(codes.NotFound, "%s %s not found", kind, controllers.Key(namespace, name))
	}
	next := cur.Clone()
	fn(next)
	f.rv++
	f.put(controllers.EventModified, next, f.rv)
	return nil
}

// Remove deletes a stored object at once, without recording an action.
func (f *Fake) Remove(kind, namespace, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur := f.objects[kind][controllers.Key(namespace, name)]; cur != nil {
		f.rv++
		f.put(controllers.EventDeleted, cur, f.rv)
	}
}

// Get returns a copy of a stored object, or nil.
func (f *Fake) Get(kind, namespace, name string) *pb.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o := f.objects[kind][controllers.Key(namespace, name)]; o != nil {
		return o.Clone()
	}
	return nil
}

// Objects returns copies of every stored object of kind, sorted by key.
func (f *Fake) Objects(kind string) []*pb.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*pb.Object, 0, len(f.objects[kind]))
	for _, o := range f.objects[kind] {
		out = append(out, o.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return controllers.KeyOf(out[i]) < controllers.KeyOf(out[j]) })
	return out
}

// Actions returns the actions recorded so far, except lists and watches.
func (f *Fake) Actions() []Action {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Action
	for _, a := range f.actions {
		if a.Verb != "list" && a.Verb != "watch" {
			out = append(out, a)
		}
	}
	return out
}

// ActionStrings returns Actions as strings, leaving out writes of kinds
// in skip (typically "Event").
func (f *Fake) ActionStrings(skip ...string) []string {
	var out []string
next:
	for _, a := range f.Actions() {
		for _, k := range skip {
			if a.Kind == k {
				continue next
			}
		}
		out = append(out, a.String())
	}
	return out
}

// AllActions returns every recorded action, lists and watches included.
func (f *Fake) AllActions() []Action {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Action(nil), f.actions...)
}

// ClearActions forgets the recorded actions.
func (f *Fake) ClearActions() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = nil
}

// PrependReactor adds r before the reactors already added.
func (f *Fake) PrependReactor(r Reactor) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reactors = append([]Reactor{r}, f.reactors...)
}

// FailOn makes every action of verb on kind ("*" for any) fail with err.
func (f *Fake) FailOn(verb, kind string, err error) {
	f.PrependReactor(func(a Action) (bool, error) {
		if a.Verb == verb && (kind == "*" || a.Kind == kind) {
			return true, err
		}
		return false, nil
	})
}

// ResourceVersion is the last resourceVersion the Fake handed out.
func (f *Fake) ResourceVersion() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rv
}

// KindVersion is the resourceVersion of the last change to an object of
// kind: an informer whose ResourceVersion is at least this holds it.
func (f *Fake) KindVersion(kind string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kindRV[kind]
}

// ExpireWatches drops the watch history: every open watch fails with an
// expired error and must list again.
func (f *Fake) ExpireWatches() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logSeq0 += uint64(len(f.log))
	f.log = nil
	f.logStart = f.rv + 1
	f.notify()
}

// record runs the reactors for a and records it. The caller holds mu.
func (f *Fake) record(a Action) (bool, error) {
	f.actions = append(f.actions, a)
	for _, r := range f.reactors {
		if handled, err := r(a); handled {
			return true, err
		}
	}
	return false, nil
}

// put stores obj (or removes it for a DELETED event) at rv and logs the
// event. The caller holds mu.
func (f *Fake) put(typ string, obj *pb.Object, rv uint64) {
	kind := obj.KindName()
	key := controllers.KeyOf(obj)
	if f.objects[kind] == nil {
		f.objects[kind] = make(map[string]*pb.Object)
	}
	if typ == controllers.EventDeleted {
		delete(f.objects[kind], key)
	} else {
		obj.Meta().ResourceVersion = rv
		f.objects[kind][key] = obj
	}
	f.kindRV[kind] = rv
	ev := &pb.WatchEvent{Type: typ, Object: obj.Clone(), ResourceVersion: rv}
	f.log = append(f.log, fakeEvent{kind: kind, ev: ev})
	for _, o := range f.observers {
		o(ev, f.objectsLocked)
	}
	f.notify()
}

// Observe adds an Observer.
func (f *Fake) Observe(o Observer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.observers = append(f.observers, o)
}

func (f *Fake) objectsLocked(kind string) []*pb.Object {
	out := make([]*pb.Object, 0, len(f.objects[kind]))
	for _, o := range f.objects[kind] {
		out = append(out, o)
	}
	return out
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func normalize(o *pb.Object) {
	r := o.Resource()
	info, _ := pb.LookupKind(o.KindName())
	m := r.ProtoReflect()
	fs := m.Descriptor().Fields()
	m.Set(fs.ByName("api_version"), protoreflect.ValueOfString(info.APIVersion))
	m.Set(fs.ByName("kind"), protoreflect.ValueOfString(info.Kind))
	pb.MetaOf(r)
	// As the store does: spec and status are always present.
	for _, name := range []protoreflect.Name{"spec", "status"} {
		if fd := fs.ByName(name); fd != nil {
			m.Mutable(fd)
		}
	}
}

func hasSpec(o *pb.Object) bool {
	return o.Resource().ProtoReflect().Descriptor().Fields().ByName("spec") != nil
}

func notFound(kind, ns, name string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, controllers.Key(ns, name))
}

func preconditions(cur *pb.ObjectMeta, uid string, rv uint64) error {
	if uid != "" && uid != cur.GetUid() {
		return status.Errorf(codes.Aborted, "%s: precondition failed: uid is %s, not %s", cur.Key(), cur.GetUid(), uid)
	}
	if rv != 0 && rv != cur.GetResourceVersion() {
		return status.Errorf(codes.Aborted, "%s: the object has been modified (resourceVersion %d, not %d); read it again", cur.Key(), cur.GetResourceVersion(), rv)
	}
	return nil
}

// List implements controllers.Cluster.
func (f *Fake) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kind := canonical(req.GetKind())
	if handled, err := f.record(Action{Verb: "list", Kind: kind, Namespace: req.GetNamespace()}); handled {
		return nil, err
	}
	sel, fsel, err := selectors(req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListResponse{ResourceVersion: f.rv}
	for _, o := range f.objects[kind] {
		if matches(o, req.GetNamespace(), sel, fsel) {
			resp.Items = append(resp.Items, o.Clone())
		}
	}
	sort.Slice(resp.Items, func(i, j int) bool { return controllers.KeyOf(resp.Items[i]) < controllers.KeyOf(resp.Items[j]) })
	return resp, nil
}

// ListMetadata lists as the in-process cluster does for metadata
// informers: List's items reduced to their metadata, encoded.
func (f *Fake) ListMetadata(ctx context.Context, req *pb.ListRequest) ([][]byte, uint64, error) {
	resp, err := f.List(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	out := make([][]byte, 0, len(resp.GetItems()))
	for _, o := range resp.GetItems() {
		raw, err := o.MarshalVT()
		if err != nil {
			return nil, 0, err
		}
		md, err := pb.AppendMetadata(nil, raw)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, md)
	}
	return out, resp.GetResourceVersion(), nil
}

// Watch implements controllers.Cluster.
func (f *Fake) Watch(ctx context.Context, req *pb.WatchRequest) (controllers.Watch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kind := canonical(req.GetKind())
	if handled, err := f.record(Action{Verb: "watch", Kind: kind, Namespace: req.GetNamespace()}); handled {
		return nil, err
	}
	sel, fsel, err := selectors(req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return nil, err
	}
	from := req.GetResourceVersion()
	if from == 0 {
		from = f.rv
	}
	if from+1 < f.logStart {
		return nil, status.Errorf(codes.OutOfRange, "resourceVersion %d is older than the oldest retained (%d): list again", from, f.logStart)
	}
	pos := f.logSeq0 + uint64(len(f.log))
	for i, e := range f.log {
		if e.ev.GetResourceVersion() > from {
			pos = f.logSeq0 + uint64(i)
			break
		}
	}
	return &fakeWatch{f: f, kind: kind, ns: req.GetNamespace(), sel: sel, fsel: fsel, pos: pos, epoch: f.logStart, done: make(chan struct{})}, nil
}

type fakeWatch struct {
	f         *Fake
	kind, ns  string
	sel       labels.Selector
	fsel      fields.Selector
	pos       uint64 // sequence number of the next event to look at
	epoch     uint64
	closeOnce sync.Once
	done      chan struct{}
}

func (w *fakeWatch) Next(ctx context.Context) (*pb.WatchEvent, error) {
	for {
		w.f.mu.Lock()
		if w.f.logStart != w.epoch {
			w.f.mu.Unlock()
			return nil, fmt.Errorf("%w: history dropped", controllers.ErrExpired)
		}
		for ; w.pos < w.f.logSeq0+uint64(len(w.f.log)); w.pos++ {
			e := w.f.log[w.pos-w.f.logSeq0]
			if e.kind != w.kind || !matches(e.ev.GetObject(), w.ns, w.sel, w.fsel) {
				continue
			}
			w.pos++
			ev := gproto.Clone(e.ev).(*pb.WatchEvent)
			w.f.mu.Unlock()
			return ev, nil
		}
		ch := w.f.changed
		w.f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.done:
			return nil, status.Error(codes.Canceled, "watch closed")
		case <-ch:
		}
	}
}

func (w *fakeWatch) Close() { w.closeOnce.Do(func() { close(w.done) }) }
