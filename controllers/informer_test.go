package controllers_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func pod(ns, name string, lbls map[string]string, owner string) *pb.Object {
	p := &pb.Pod{Metadata: &pb.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
	if owner != "" {
		t := true
		p.Metadata.OwnerReferences = []*pb.OwnerReference{{Kind: "ReplicaSet", Name: owner, Uid: "uid-" + owner, Controller: &t}}
	}
	return pb.Wrap(p)
}

func keys(objs []*pb.Object) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, controllers.KeyOf(o))
	}
	sort.Strings(out)
	return out
}

// recorder is a Handler that logs what it sees.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) add(s string)             { r.mu.Lock(); r.log = append(r.log, s); r.mu.Unlock() }
func (r *recorder) OnAdd(o *pb.Object)       { r.add("add " + controllers.KeyOf(o)) }
func (r *recorder) OnUpdate(_, o *pb.Object) { r.add("update " + controllers.KeyOf(o)) }
func (r *recorder) OnDelete(o *pb.Object)    { r.add("delete " + controllers.KeyOf(o)) }
func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// informerFor returns the full informer of kind, or its metadata informer:
// the tests below hold for both.
func informerFor(h *controllertest.Harness, kind string, metadata bool) *controllers.Informer {
	if metadata {
		return h.Informers.ForMetadata(kind)
	}
	return h.Informers.For(kind)
}

func TestInformerIndexesAndSelects(t *testing.T) {
	for _, metadata := range []bool{false, true} {
		t.Run(fmt.Sprint("metadata=", metadata), func(t *testing.T) { testInformerIndexesAndSelects(t, metadata) })
	}
}

func testInformerIndexesAndSelects(t *testing.T, metadata bool) {
	h := controllertest.NewHarness(t,
		pod("a", "p1", map[string]string{"app": "web", "tier": "fe"}, "rs1"),
		pod("a", "p2", map[string]string{"app": "web"}, "rs1"),
		pod("a", "p3", map[string]string{"app": "db"}, ""),
		pod("b", "p4", map[string]string{"app": "web"}, "rs2"),
	)
	inf := informerFor(h, "pods", metadata) // any name LookupKind knows
	inf.AddIndexer("app", func(o *pb.Object) []string { return []string{o.Meta().GetLabels()["app"]} })
	h.Start()

	// Before any index is asked for (a metadata informer builds its
	// namespace and label indexes then).
	if got := keys(inf.Select("a", labels.SelectorFromSet(labels.Set{"app": "web"}))); !slices.Equal(got, []string{"a/p1", "a/p2"}) {
		t.Errorf("first Select(a, app=web) = %v", got)
	}
	if got := keys(inf.ByIndex(controllers.IndexNamespace, "a")); !slices.Equal(got, []string{"a/p1", "a/p2", "a/p3"}) {
		t.Errorf("namespace a = %v", got)
	}
	if got := keys(inf.ByIndex(controllers.IndexOwner, "uid-rs1")); !slices.Equal(got, []string{"a/p1", "a/p2"}) {
		t.Errorf("owner rs1 = %v", got)
	}
	if got := keys(inf.ByIndex(controllers.IndexLabel, "app=web")); !slices.Equal(got, []string{"a/p1", "a/p2", "b/p4"}) {
		t.Errorf("label app=web = %v", got)
	}
	if got := keys(inf.ByIndex("app", "db")); !slices.Equal(got, []string{"a/p3"}) {
		t.Errorf("custom index app=db = %v", got)
	}
	for _, tc := range []struct {
		ns, sel string
		want    []string
	}{
		{"a", "app=web", []string{"a/p1", "a/p2"}},
		{"", "app=web", []string{"a/p1", "a/p2", "b/p4"}},
		{"a", "app in (web,db),tier!=fe", []string{"a/p2", "a/p3"}},
		{"a", "app=nothing", nil},
		{"", "", []string{"a/p1", "a/p2", "a/p3", "b/p4"}},
	} {
		sel, err := labels.Parse(tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(inf.Select(tc.ns, sel)); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("Select(%q, %q) = %v, want %v", tc.ns, tc.sel, got, tc.want)
		}
	}

	// Indexes follow changes.
	if err := h.Fake.Mutate("Pod", "a", "p1", func(o *pb.Object) { o.Meta().Labels["app"] = "db" }); err != nil {
		t.Fatal(err)
	}
	h.WaitForCache()
	if got := keys(inf.ByIndex(controllers.IndexLabel, "app=web")); !slices.Equal(got, []string{"a/p2", "b/p4"}) {
		t.Errorf("label app=web after change = %v", got)
	}
	if got := keys(inf.ByIndex("app", "db")); !slices.Equal(got, []string{"a/p1", "a/p3"}) {
		t.Errorf("custom index app=db after change = %v", got)
	}
}

func TestInformerHandlersAndRelist(t *testing.T) {
	for _, metadata := range []bool{false, true} {
		t.Run(fmt.Sprint("metadata=", metadata), func(t *testing.T) { testInformerHandlersAndRelist(t, metadata) })
	}
}

func testInformerHandlersAndRelist(t *testing.T, metadata bool) {
	h := controllertest.NewHarness(t, pod("a", "p1", nil, ""), pod("a", "p2", nil, ""))
	inf := informerFor(h, "Pod", metadata)
	early := &recorder{}
	inf.AddHandler(early)
	h.Start()
	if !inf.HasSynced() {
		t.Fatal("not synced after Start")
	}
	if got := early.get(); !slices.Equal(sortedCopy(got), []string{"add a/p1", "add a/p2"}) {
		t.Errorf("initial list = %v", got)
	}

	// A handler added late is told about what is cached.
	late := &recorder{}
	remove := inf.AddHandler(late)
	if got := sortedCopy(late.get()); !slices.Equal(got, []string{"add a/p1", "add a/p2"}) {
		t.Errorf("replay = %v", got)
	}
	remove()

	h.Fake.Add(pod("a", "p3", nil, ""))
	h.Fake.Mutate("Pod", "a", "p1", func(o *pb.Object) { o.Meta().Labels = map[string]string{"x": "y"} })
	h.Fake.Remove("Pod", "a", "p2")
	h.WaitForCache()
	want := []string{"add a/p1", "add a/p2", "add a/p3", "update a/p1", "delete a/p2"}
	if got := early.get(); !slices.Equal(sortedHead(got, 2), want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	if got := late.get(); len(got) != 2 {
		t.Errorf("removed handler still called: %v", got)
	}

	// The watch history goes while changes happen: the informer lists
	// again and reports the difference.
	h.Fake.ExpireWatches()
	h.Fake.Remove("Pod", "a", "p3")
	h.Fake.Add(pod("a", "p4", nil, ""))
	h.Fake.ExpireWatches()
	h.WaitForCache()
	h.Eventually(func() bool { return len(inf.List()) == 2 }, "relist")
	if got := keys(inf.List()); !slices.Equal(got, []string{"a/p1", "a/p4"}) {
		t.Errorf("after relist = %v", got)
	}
	got := early.get()[len(want):]
	if !slices.Equal(sortedCopy(got), []string{"add a/p4", "delete a/p3"}) {
		t.Errorf("relist events = %v", got)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// sortedHead sorts the first n entries (delivered from one list, in no
// particular order) and keeps the rest in order.
func sortedHead(s []string, n int) []string {
	out := append([]string(nil), s...)
	sort.Strings(out[:min(n, len(out))])
	return out
}

// A metadata informer keeps and hands out kind and metadata only; one asked
// for after the full informer of its kind is that informer.
func TestMetadataInformer(t *testing.T) {
	full := func(ns, name string) *pb.Object {
		o := pod(ns, name, map[string]string{"app": "web"}, "rs1")
		o.GetPod().Spec = &pb.PodSpec{NodeName: "n1", Containers: []*pb.Container{{Name: "c", Image: "busybox"}}}
		o.GetPod().Status = &pb.PodStatus{Phase: "Running"}
		return o
	}
	h := controllertest.NewHarness(t, full("a", "p1"))
	meta := h.Informers.ForMetadata("pods")
	if again := h.Informers.ForMetadata("Pod"); again != meta {
		t.Fatal("a second ForMetadata made another informer")
	}
	fullInf := h.Informers.For("Pod")
	if fullInf == meta {
		t.Fatal("For returned the metadata informer")
	}
	if shared := h.Informers.ForMetadata("ReplicaSet"); shared == h.Informers.For("ReplicaSet") {
		t.Fatal("For after ForMetadata returned the metadata informer")
	}
	cm := h.Informers.For("ConfigMap")
	if h.Informers.ForMetadata("configmaps") != cm {
		t.Fatal("ForMetadata after For did not share the full informer")
	}
	seen := make(chan *pb.Object, 10)
	meta.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { seen <- o },
		UpdateFunc: func(_, o *pb.Object) { seen <- o },
	})
	h.Start()
	h.Fake.Add(full("a", "p2"))
	h.WaitForCache()

	check := func(what string, o *pb.Object) {
		t.Helper()
		p := o.GetPod()
		if p == nil || p.GetSpec() != nil || p.GetStatus() != nil {
			t.Errorf("%s: %v, want a Pod with metadata only", what, o)
		}
		m := o.Meta()
		if m.GetName() == "" || m.GetUid() == "" || m.GetResourceVersion() == 0 || m.GetLabels()["app"] != "web" || len(m.GetOwnerReferences()) != 1 {
			t.Errorf("%s: metadata %v incomplete", what, m)
		}
		if p.GetKind() != "Pod" || p.GetApiVersion() != "v1" {
			t.Errorf("%s: apiVersion %q kind %q", what, p.GetApiVersion(), p.GetKind())
		}
	}
	for _, key := range []string{"a/p1", "a/p2"} {
		o, ok := meta.Get(key)
		if !ok {
			t.Fatalf("%s not cached", key)
		}
		check("cached "+key, o)
		if f, ok := fullInf.Get(key); !ok || f.GetPod().GetSpec().GetNodeName() != "n1" {
			t.Errorf("full informer's %s: %v", key, f)
		}
	}
	if got := keys(meta.ByIndex(controllers.IndexOwner, "uid-rs1")); !slices.Equal(got, []string{"a/p1", "a/p2"}) {
		t.Errorf("owner index = %v", got)
	}
	for i := 0; i < 2; i++ {
		check("handed to a handler", <-seen)
	}

	// Updates and deletes hand out the cached state as old.
	olds := make(chan *pb.Object, 10)
	meta.AddHandler(controllers.HandlerFuncs{
		UpdateFunc: func(old, _ *pb.Object) { olds <- old },
		DeleteFunc: func(old *pb.Object) { olds <- old },
	})
	if err := h.Fake.Mutate("Pod", "a", "p1", func(o *pb.Object) { o.Meta().Labels["tier"] = "web" }); err != nil {
		t.Fatal(err)
	}
	old := <-olds
	check("old of an update", old)
	if _, ok := old.Meta().GetLabels()["tier"]; ok || old.Meta().GetName() != "p1" {
		t.Errorf("old of an update: %v", old.Meta())
	}
	if o, _ := meta.Get("a/p1"); o.Meta().GetLabels()["tier"] != "web" {
		t.Errorf("cached after the update: %v", o.Meta())
	}
	h.Fake.Remove("Pod", "a", "p2")
	check("old of a delete", <-olds)
	h.Eventually(func() bool { _, ok := meta.Get("a/p2"); return !ok }, "p2 gone from the cache")
	if got := keys(meta.ByIndex(controllers.IndexOwner, "uid-rs1")); !slices.Equal(got, []string{"a/p1"}) {
		t.Errorf("owner index after the delete = %v", got)
	}
}

// A metadata informer holds one object per object of its kind in the
// cluster, so it keeps them encoded: a few heap objects each, which the
// garbage collector does not walk into: 381 bytes in 2 heap objects per
// labelled pod, where its decoded metadata cost 1,147 bytes in 10.
// Allocation sizes are deterministic, so the bound holds on any machine.
func TestMetadataInformerHeapPerObject(t *testing.T) {
	const n = 5000
	objs := make([]*pb.Object, n)
	for i := range objs {
		objs[i] = pod("a", fmt.Sprint("p-", i), map[string]string{"app": "web", "tier": "backend"}, "rs1")
	}
	h := controllertest.NewHarness(t, objs...)
	meta := h.Informers.ForMetadata("Pod")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h.Start()
	h.WaitForCache()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if meta.Len() != n {
		t.Fatalf("cached %d of %d", meta.Len(), n)
	}
	objects := (int64(after.HeapObjects) - int64(before.HeapObjects)) / n
	t.Logf("per cached pod: %d bytes in %d heap objects", (int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, objects)
	if objects > 4 {
		t.Fatalf("a metadata informer keeps %d heap objects per pod, want at most 4", objects)
	}
	if o, ok := meta.Get("a/p-7"); !ok || o.Meta().GetLabels()["tier"] != "backend" || len(o.Meta().GetOwnerReferences()) != 1 {
		t.Fatalf("decoded from the cache: %v", o)
	}
}

// cancellingLister ends the informers' run (leadership lost) while their
// list is out, as a leader listing a large store may lose leadership.
type cancellingLister struct {
	controllers.Cluster
	cancel context.CancelFunc
}

func (c cancellingLister) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	resp, err := c.Cluster.List(ctx, req)
	c.cancel()
	return resp, err
}

// A list that comes back after the informers' context ended fills no cache
// and reaches no handler: the run stops instead.
func TestInformerDropsAListAnsweredAfterItsEnd(t *testing.T) {
	h := controllertest.NewHarness(t, pod("a", "p1", nil, ""), pod("a", "p2", nil, ""))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := controllers.NewInformerFactory(cancellingLister{h.Fake, cancel}, nil, 0)
	for _, inf := range []*controllers.Informer{f.For("Pod"), f.ForMetadata("ConfigMap")} {
		inf.AddHandler(controllers.HandlerFuncs{AddFunc: func(o *pb.Object) { t.Errorf("handler saw %s", controllers.KeyOf(o)) }})
	}
	f.Start(ctx)
	f.Wait()
	for _, inf := range f.Informers() {
		if inf.HasSynced() || inf.Len() != 0 {
			t.Errorf("%s informer: synced %v, %d objects; want neither", inf.Kind(), inf.HasSynced(), inf.Len())
		}
	}
}

// listOnly hides the in-process cluster's metadata list: a cluster out of
// process (NewGRPCCluster) lists full objects.
type listOnly struct{ controllers.Cluster }

// A metadata informer fills the same cache, and tells handlers the same,
// whether the cluster lists metadata itself (the master's store) or full
// objects the informer reduces: on the first list and on a relist.
func TestMetadataInformerListsEitherWay(t *testing.T) {
	full := func(name, owner string) *pb.Object {
		o := pod("a", name, map[string]string{"app": "web"}, owner)
		o.GetPod().Spec = &pb.PodSpec{NodeName: "n1", Containers: []*pb.Container{{Name: "c", Image: "busybox"}}}
		o.GetPod().Status = &pb.PodStatus{Phase: "Running"}
		o.Meta().Finalizers = []string{"f"}
		return o
	}
	h := controllertest.NewHarness(t, full("p1", "rs1"), full("p2", ""), full("p3", "rs1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type side struct {
		inf *controllers.Informer
		rec *recorder
	}
	var sides []side
	var factories []*controllers.InformerFactory
	for _, cl := range []controllers.Cluster{h.Fake, listOnly{h.Fake}} {
		f := controllers.NewInformerFactory(cl, nil, 0)
		s := side{f.ForMetadata("Pod"), &recorder{}}
		s.inf.AddHandler(s.rec)
		f.Start(ctx)
		factories = append(factories, f)
		sides = append(sides, s)
	}
	defer func() {
		cancel()
		for _, f := range factories {
			f.Wait()
		}
	}()
	agree := func(what string, want []string) {
		t.Helper()
		h.Eventually(func() bool {
			return slices.Equal(keys(sides[0].inf.List()), want) && slices.Equal(keys(sides[1].inf.List()), want)
		}, what)
		for _, key := range want {
			a, _ := sides[0].inf.Get(key)
			b, _ := sides[1].inf.Get(key)
			if !gproto.Equal(a, b) || a.GetPod().GetSpec() != nil || a.Meta().GetUid() == "" {
				t.Errorf("%s: %s is %v listing metadata, %v listing objects", what, key, a, b)
			}
		}
		// Handlers are told after the cache holds a change: the two sides'
		// handlers may trail their caches for a moment.
		var got, other []string
		ok := func() bool {
			got, other = sortedCopy(sides[0].rec.get()), sortedCopy(sides[1].rec.get())
			return slices.Equal(got, other)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !ok() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling interval, not synchronisation
		}
		if !slices.Equal(got, other) {
			t.Errorf("%s: handlers saw %v listing metadata, %v listing objects", what, got, other)
		}
		if got := keys(sides[0].inf.ByIndex(controllers.IndexOwner, "uid-rs1")); !slices.Contains(got, "a/p1") {
			t.Errorf("%s: owner index %v", what, got)
		}
	}
	agree("first list", []string{"a/p1", "a/p2", "a/p3"})

	h.Fake.ExpireWatches()
	h.Fake.Remove("Pod", "a", "p3")
	h.Fake.Add(full("p4", ""))
	if err := h.Fake.Mutate("Pod", "a", "p2", func(o *pb.Object) { o.Meta().Labels["tier"] = "db" }); err != nil {
		t.Fatal(err)
	}
	h.Fake.ExpireWatches()
	agree("relist", []string{"a/p1", "a/p2", "a/p4"})
	h.Eventually(func() bool { return len(sides[0].rec.get()) == 6 && len(sides[1].rec.get()) == 6 }, "relist events")
	agree("relist events", []string{"a/p1", "a/p2", "a/p4"})
	if o, _ := sides[0].inf.Get("a/p2"); o.Meta().GetLabels()["tier"] != "db" {
		t.Errorf("after relist: %v", o.Meta())
	}
}

// A dependents informer keeps only objects with owners or finalizers, and
// still tells its handlers of every deletion; after a relist they see what
// it keeps again, since deletions of what it did not keep went unseen.
func TestDependentsInformer(t *testing.T) {
	cm := func(name, owner string, finalizers ...string) *pb.Object {
		c := &pb.ConfigMap{Metadata: &pb.ObjectMeta{Namespace: "a", Name: name, Finalizers: finalizers}, Data: map[string]string{"k": "v"}}
		if owner != "" {
			c.Metadata.OwnerReferences = []*pb.OwnerReference{{Kind: "ReplicaSet", Name: owner, Uid: "uid-" + owner}}
		}
		return pb.Wrap(c)
	}
	h := controllertest.NewHarness(t, cm("owned", "rs1"), cm("plain", ""), cm("final", "", "example.com/hold"), cm("plain2", ""), cm("steady", "rs5"))
	inf := h.Informers.ForDependents("configmaps")
	if again := h.Informers.ForDependents("ConfigMap"); again != inf {
		t.Fatal("a second ForDependents made another informer")
	}
	if h.Informers.ForDependents("Pod") == h.Informers.For("Pod") {
		t.Fatal("For after ForDependents returned the dependents informer")
	}
	if full := h.Informers.For("Secret"); h.Informers.ForDependents("secrets") != full {
		t.Fatal("ForDependents after For did not share the full informer")
	}
	rec := &recorder{}
	inf.AddHandler(rec)
	h.Start()
	if got := keys(inf.List()); !slices.Equal(got, []string{"a/final", "a/owned", "a/steady"}) {
		t.Fatalf("cached %v, want only the owned and the finalized", got)
	}
	if o, ok := inf.Get("a/owned"); !ok || o.GetConfigMap().GetData() != nil || len(o.Meta().GetOwnerReferences()) != 1 {
		t.Errorf("a/owned = %v, want its metadata only", o)
	}
	if got := keys(inf.ByIndex(controllers.IndexOwner, "uid-rs1")); !slices.Equal(got, []string{"a/owned"}) {
		t.Errorf("owner rs1 = %v", got)
	}

	// Every deletion is told; an object that gains an owner is added, one
	// that loses its last one is dropped, as an update; changes to objects
	// it does not keep are not told.
	h.Fake.Remove("ConfigMap", "a", "plain")
	h.Fake.Mutate("ConfigMap", "a", "plain2", func(o *pb.Object) { o.Meta().Labels = map[string]string{"x": "y"} })
	h.Fake.Mutate("ConfigMap", "a", "plain2", func(o *pb.Object) {
		o.Meta().OwnerReferences = []*pb.OwnerReference{{Kind: "ReplicaSet", Name: "rs2", Uid: "uid-rs2"}}
	})
	h.Fake.Mutate("ConfigMap", "a", "owned", func(o *pb.Object) { o.Meta().OwnerReferences = nil })
	h.WaitForCache()
	want := []string{"add a/final", "add a/owned", "add a/steady", "delete a/plain", "add a/plain2", "update a/owned"}
	if got := rec.get(); !slices.Equal(sortedHead(got, 3), want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	if got := keys(inf.List()); !slices.Equal(got, []string{"a/final", "a/plain2", "a/steady"}) {
		t.Errorf("cached %v after the changes", got)
	}
	if got := keys(inf.ByIndex(controllers.IndexOwner, "uid-rs1")); len(got) != 0 {
		t.Errorf("owner rs1 = %v after its reference went", got)
	}

	// Relist: what went while the watch was down is reported if it was
	// kept, and what is still kept is seen again.
	h.Fake.ExpireWatches()
	h.Fake.Remove("ConfigMap", "a", "owned")                                                         // not kept: unseen
	h.Fake.Remove("ConfigMap", "a", "final")                                                         // kept: a deletion
	h.Fake.Add(cm("new", "rs3"))                                                                     // an addition
	h.Fake.Mutate("ConfigMap", "a", "plain2", func(o *pb.Object) { o.Meta().OwnerReferences = nil }) // dropped, as an update
	h.Fake.Add(cm("kept", "rs4"))
	h.Fake.ExpireWatches()
	h.Eventually(func() bool { return len(rec.get()) >= len(want)+5 }, "relist events")
	h.WaitForCache()
	if got := keys(inf.List()); !slices.Equal(got, []string{"a/kept", "a/new", "a/steady"}) {
		t.Errorf("cached %v after the relist", got)
	}
	got := sortedCopy(rec.get()[len(want):])
	if wantRelist := []string{"add a/kept", "add a/new", "delete a/final", "update a/plain2", "update a/steady"}; !slices.Equal(got, wantRelist) {
		t.Errorf("relist events = %v, want %v", got, wantRelist)
	}
}
