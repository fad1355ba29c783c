package gc

import (
	"context"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func ptr[T any](v T) *T { return &v }

func ref(kind, name, uid string, block bool) *pb.OwnerReference {
	return &pb.OwnerReference{ApiVersion: "apps/v1", Kind: kind, Name: name, Uid: uid, Controller: ptr(true), BlockOwnerDeletion: ptr(block)}
}

func deployment(name string) *pb.Object {
	return pb.Wrap(&pb.Deployment{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name}})
}

func replicaSet(name string, owners ...*pb.OwnerReference) *pb.Object {
	return pb.Wrap(&pb.ReplicaSet{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, OwnerReferences: owners}})
}

func pod(name string, owners ...*pb.OwnerReference) *pb.Object {
	return pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, OwnerReferences: owners}})
}

// deleting marks obj as the store does on a delete with a propagation
// policy that needs the collector.
func deleting(obj *pb.Object, finalizer string) *pb.Object {
	obj.Meta().DeletionTimestamp = timestamppb.New(controllertest.Epoch)
	obj.Meta().Finalizers = append(obj.Meta().Finalizers, finalizer)
	return obj
}

func start(t *testing.T, objs ...*pb.Object) (*controllertest.Harness, *Controller) {
	t.Helper()
	h := controllertest.NewHarness(t, objs...)
	c := New(h.Env(Name))
	h.Start()
	return h, c
}

func expectActions(t *testing.T, h *controllertest.Harness, want ...string) {
	t.Helper()
	got := h.Fake.ActionStrings("Event")
	if !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
}

func TestScenarios(t *testing.T) {
	tests := []struct {
		name string
		objs []*pb.Object
		key  string
		want []string
	}{
		{
			name: "owner gone: background delete",
			objs: []*pb.Object{replicaSet("web-1", ref("Deployment", "web", "uid-web", true))},
			key:  "ReplicaSet/default/web-1",
			want: []string{"delete ReplicaSet default/web-1"},
		},
		{
			name: "owner present: nothing",
			objs: []*pb.Object{deployment("web"), replicaSet("web-1", ref("Deployment", "web", "uid-web", true))},
			key:  "ReplicaSet/default/web-1",
		},
		{
			name: "owner recreated under the same name: the old one is gone",
			objs: []*pb.Object{deployment("web"), replicaSet("web-1", ref("Deployment", "web", "uid-old", true))},
			key:  "ReplicaSet/default/web-1",
			want: []string{"delete ReplicaSet default/web-1"},
		},
		{
			name: "one of two owners gone: only its reference goes",
			objs: []*pb.Object{replicaSet("a"), pod("p", ref("ReplicaSet", "a", "uid-a", true), ref("ReplicaSet", "b", "uid-b", false))},
			key:  "Pod/default/p",
			want: []string{"update Pod default/p"},
		},
		{
			name: "unknown owner kind: left alone",
			objs: []*pb.Object{pod("p", ref("StatefulSet", "db", "uid-db", true))},
			key:  "Pod/default/p",
		},
		{
			name: "no owners: nothing",
			objs: []*pb.Object{pod("p")},
			key:  "Pod/default/p",
		},
		{
			name: "orphan: references removed first",
			objs: []*pb.Object{
				deleting(replicaSet("web-1"), FinalizerOrphan),
				pod("p1", ref("ReplicaSet", "web-1", "uid-web-1", true)),
				pod("p2", ref("ReplicaSet", "web-1", "uid-web-1", true)),
			},
			key:  "ReplicaSet/default/web-1",
			want: []string{"update Pod default/p1", "update Pod default/p2"},
		},
		{
			name: "orphan: no dependents left, the finalizer goes",
			objs: []*pb.Object{deleting(replicaSet("web-1"), FinalizerOrphan), pod("p1")},
			key:  "ReplicaSet/default/web-1",
			want: []string{"update ReplicaSet default/web-1"},
		},
		{
			name: "foreground: dependents with dependents go in the foreground, others in the background",
			objs: []*pb.Object{
				deleting(deployment("web"), FinalizerForeground),
				replicaSet("web-1", ref("Deployment", "web", "uid-web", true)),
				pod("p1", ref("ReplicaSet", "web-1", "uid-web-1", true)),
				pod("loose", ref("Deployment", "web", "uid-web", false)),
			},
			key:  "Deployment/default/web",
			want: []string{"delete Pod default/loose", "delete ReplicaSet default/web-1"},
		},
		{
			name: "foreground: waits while a blocking dependent is going",
			objs: []*pb.Object{
				deleting(deployment("web"), FinalizerForeground),
				deleting(replicaSet("web-1", ref("Deployment", "web", "uid-web", true)), FinalizerForeground),
			},
			key: "Deployment/default/web",
		},
		{
			name: "foreground: a dependent with another owner is released, not deleted",
			objs: []*pb.Object{
				deleting(deployment("web"), FinalizerForeground),
				deployment("other"),
				replicaSet("shared", ref("Deployment", "web", "uid-web", true), ref("Deployment", "other", "uid-other", false)),
			},
			key:  "Deployment/default/web",
			want: []string{"update ReplicaSet default/shared"},
		},
		{
			name: "foreground: only non-blocking dependents left, the finalizer goes",
			objs: []*pb.Object{
				deleting(deployment("web"), FinalizerForeground),
				deleting(pod("loose", ref("Deployment", "web", "uid-web", false)), "test/hold"),
			},
			key:  "Deployment/default/web",
			want: []string{"update Deployment default/web"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, c := start(t, tc.objs...)
			h.Reconcile(c, tc.key)
			expectActions(t, h, tc.want...)
		})
	}
}

func TestDeleteCarriesPreconditionsAndPolicy(t *testing.T) {
	h, c := start(t,
		deleting(deployment("web"), FinalizerForeground),
		replicaSet("web-1", ref("Deployment", "web", "uid-web", true)),
		pod("p1", ref("ReplicaSet", "web-1", "uid-web-1", true)),
	)
	h.Reconcile(c, "Deployment/default/web")
	acts := h.Fake.Actions()
	if len(acts) != 1 || acts[0].Delete == nil {
		t.Fatalf("actions = %v", acts)
	}
	d := acts[0].Delete
	if d.GetUid() != "uid-web-1" || d.GetResourceVersion() == 0 || d.GetPropagationPolicy() != "Foreground" {
		t.Errorf("delete = %v, want uid and resourceVersion preconditions and Foreground", d)
	}
	rs := h.Fake.Get("ReplicaSet", "default", "web-1")
	if rs != nil {
		t.Errorf("ReplicaSet still stored: %v", rs)
	}
}

func TestOrphanKeepsOtherReferences(t *testing.T) {
	h, c := start(t,
		deleting(replicaSet("web-1"), FinalizerOrphan),
		replicaSet("b"),
		pod("p1", ref("ReplicaSet", "web-1", "uid-web-1", true), ref("ReplicaSet", "b", "uid-b", false)),
	)
	h.Reconcile(c, "ReplicaSet/default/web-1")
	refs := h.Fake.Get("Pod", "default", "p1").Meta().GetOwnerReferences()
	if len(refs) != 1 || refs[0].GetUid() != "uid-b" {
		t.Fatalf("owner references = %v, want only uid-b", refs)
	}
	// Once the cache shows the pod released, the owner lets go.
	h.Fake.ClearActions()
	h.Reconcile(c, "ReplicaSet/default/web-1")
	expectActions(t, h, "update ReplicaSet default/web-1")
	if h.Fake.Get("ReplicaSet", "default", "web-1") != nil {
		t.Error("ReplicaSet still stored after its finalizer went")
	}
	if h.Fake.Get("Pod", "default", "p1") == nil {
		t.Error("orphaned pod was deleted")
	}
}

// TestStaleCacheDoesNotDelete: an owner the cache does not show yet, but
// the store has, keeps its dependents.
func TestStaleCacheDoesNotDelete(t *testing.T) {
	h := controllertest.NewHarness(t, replicaSet("web-1", ref("Deployment", "web", "uid-web", true)))
	// The Deployment informer never sees a change after its first list.
	h.Fake.FailOn("watch", "Deployment", status.Error(codes.Unavailable, "watch refused"))
	c := New(h.Env(Name))
	h.Informers.Start(h.Context())
	if !controllers.WaitForSync(h.Context(), c.informers["Deployment"], c.informers["ReplicaSet"]) {
		t.Fatal("informers did not sync")
	}
	h.Fake.Add(deployment("web"))
	if _, ok := c.informers["Deployment"].Get("default/web"); ok {
		t.Fatal("the Deployment cache saw the owner; the test needs a stale cache")
	}
	if _, err := c.Reconcile(h.Context(), "ReplicaSet/default/web-1"); err != nil {
		t.Fatal(err)
	}
	for _, a := range h.Fake.Actions() {
		if a.Verb == "delete" {
			t.Fatalf("deleted on a stale cache: %v", a)
		}
	}
}

// TestCascades runs the collector's loop over a store that records the
// propagation policies as finalizers, as the real one does, and checks the
// end states of background, orphan and foreground deletion.
func TestCascades(t *testing.T) {
	build := func(h *controllertest.Harness) {
		h.Fake.Add(deployment("web"))
		h.Fake.Add(replicaSet("web-1", ref("Deployment", "web", "uid-web", true)))
		for _, p := range []string{"p1", "p2", "p3"} {
			h.Fake.Add(pod(p, ref("ReplicaSet", "web-1", "uid-web-1", true)))
		}
	}
	for _, policy := range []string{"Background", "Orphan", "Foreground"} {
		t.Run(policy, func(t *testing.T) {
			h := controllertest.NewHarness(t)
			build(h)
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait)
			// The store's rule: Orphan and Foreground add a finalizer and
			// keep the object until the collector removes it.
			h.Fake.PrependReactor(func(a controllertest.Action) (bool, error) {
				p := a.Delete.GetPropagationPolicy()
				if a.Verb != "delete" || (p != "Orphan" && p != "Foreground") {
					return false, nil
				}
				f := map[string]string{"Orphan": FinalizerOrphan, "Foreground": FinalizerForeground}[p]
				wg.Go(func() {
					_ = h.Fake.Mutate(a.Kind, a.Namespace, a.Name, func(o *pb.Object) { deleting(o, f) })
				})
				return true, nil
			})
			c := New(h.Env(Name))
			h.Start()
			ctx, cancel := context.WithCancel(h.Context())
			done := make(chan struct{})
			go func() { defer close(done); c.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			if err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Deployment", Namespace: "default", Name: "web", PropagationPolicy: policy}); err != nil {
				t.Fatal(err)
			}
			count := func(kind string) int { return len(h.Fake.Objects(kind)) }
			switch policy {
			case "Orphan":
				h.Eventually(func() bool { return count("Deployment") == 0 }, "the Deployment to go")
				rs := h.Fake.Get("ReplicaSet", "default", "web-1")
				if rs == nil || len(rs.Meta().GetOwnerReferences()) != 0 || count("Pod") != 3 {
					t.Fatalf("orphan: ReplicaSet %v, %d pods; want the ReplicaSet kept without owner and 3 pods", rs, count("Pod"))
				}
			default:
				h.Eventually(func() bool { return count("Deployment")+count("ReplicaSet")+count("Pod") == 0 }, "everything to go")
			}
		})
	}
}

// The collector's caches hold metadata only, while an update writes the
// whole object: removing owner references or a finalizer must keep the
// object's spec and status as the store has them.
func TestUpdatesKeepTheWholeObject(t *testing.T) {
	withSpec := func(o *pb.Object) *pb.Object {
		switch r := o.Resource().(type) {
		case *pb.Pod:
			r.Spec = &pb.PodSpec{NodeName: "n1", Containers: []*pb.Container{{Name: "c", Image: "busybox"}}}
			r.Status = &pb.PodStatus{Phase: "Running"}
		case *pb.ReplicaSet:
			r.Spec = &pb.ReplicaSetSpec{Replicas: ptr(int32(3))}
		}
		return o
	}
	h, c := start(t,
		withSpec(deleting(deleting(replicaSet("web-1"), FinalizerOrphan), "test/hold")),
		replicaSet("b"),
		withSpec(pod("p1", ref("ReplicaSet", "web-1", "uid-web-1", true), ref("ReplicaSet", "b", "uid-b", false))),
	)
	if cached, _ := c.informers["Pod"].Get("default/p1"); cached.GetPod().GetSpec() != nil {
		t.Fatalf("the collector caches whole objects: %v", cached)
	}
	h.Reconcile(c, "ReplicaSet/default/web-1") // releases p1
	h.Reconcile(c, "ReplicaSet/default/web-1") // removes the orphan finalizer
	p := h.Fake.Get("Pod", "default", "p1").GetPod()
	if len(p.GetMetadata().GetOwnerReferences()) != 1 || p.GetSpec().GetNodeName() != "n1" || len(p.GetSpec().GetContainers()) != 1 || p.GetStatus().GetPhase() != "Running" {
		t.Errorf("pod after its reference was removed: %v", p)
	}
	rs := h.Fake.Get("ReplicaSet", "default", "web-1").GetReplicaSet()
	if f := rs.GetMetadata().GetFinalizers(); !slices.Equal(f, []string{"test/hold"}) || rs.GetSpec().GetReplicas() != 3 {
		t.Errorf("ReplicaSet after its finalizer was removed: finalizers %v, spec %v", f, rs.GetSpec())
	}
}
