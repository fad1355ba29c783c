package namespace

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func namespace(name string, terminating bool) *pb.Object {
	ns := &pb.Namespace{Metadata: &pb.ObjectMeta{Name: name}, Status: &pb.NamespaceStatus{Phase: "Active"}}
	if terminating {
		ns.Metadata.DeletionTimestamp = timestamppb.New(controllertest.Epoch)
		ns.Status.Phase = "Terminating"
	}
	return pb.Wrap(ns)
}

func contents(ns string) []*pb.Object {
	m := func(name string) *pb.ObjectMeta { return &pb.ObjectMeta{Name: name, Namespace: ns} }
	return []*pb.Object{
		pb.Wrap(&pb.Deployment{Metadata: m("web")}),
		pb.Wrap(&pb.ReplicaSet{Metadata: m("web-1")}),
		pb.Wrap(&pb.Pod{Metadata: m("web-1-abcde")}),
		pb.Wrap(&pb.ConfigMap{Metadata: m("settings")}),
		pb.Wrap(&pb.Event{Metadata: m("web.1")}),
		pb.Wrap(&pb.Job{Metadata: m("migrate")}),
	}
}

func TestDeletesContentsThenTheNamespace(t *testing.T) {
	objs := []*pb.Object{namespace("team", true), namespace("other", false)}
	objs = append(objs, contents("team")...)
	objs = append(objs, contents("other")...)
	h := controllertest.NewHarness(t, objs...)
	c := New(h.Env(Name))
	h.Start()

	h.Reconcile(c, "team")
	want := []string{
		"delete ConfigMap team/settings",
		"delete Deployment team/web",
		"delete Event team/web.1",
		"delete Job team/migrate",
		"delete Pod team/web-1-abcde",
		"delete ReplicaSet team/web-1",
	}
	if got := h.Fake.ActionStrings(); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	for _, a := range h.Fake.Actions() {
		if a.Delete.GetUid() == "" {
			t.Errorf("%s without a uid precondition", a)
		}
	}

	// Once the cache shows it empty, the namespace itself goes.
	h.Fake.ClearActions()
	h.Reconcile(c, "team")
	if got := h.Fake.ActionStrings(); !slices.Equal(got, []string{"delete Namespace team"}) {
		t.Fatalf("actions = %q, want the namespace deleted", got)
	}
	if len(h.Fake.Objects("Pod")) != 1 || h.Fake.Get("Namespace", "", "other") == nil {
		t.Error("another namespace's objects were touched")
	}
}

func TestActiveNamespaceIsLeftAlone(t *testing.T) {
	h := controllertest.NewHarness(t, append([]*pb.Object{namespace("team", false)}, contents("team")...)...)
	c := New(h.Env(Name))
	h.Start()
	h.Reconcile(c, "team")
	h.Reconcile(c, "gone")
	if got := h.Fake.ActionStrings(); len(got) != 0 {
		t.Fatalf("actions = %q, want none", got)
	}
}

// TestWaitsForGracefulDeletion: a pod that is stopping holds the namespace
// until its worker finishes it; it is not deleted twice.
func TestWaitsForGracefulDeletion(t *testing.T) {
	h := controllertest.NewHarness(t, namespace("team", true))
	h.Fake.GracefulPodDeletion = true
	h.Fake.Add(pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "p", Namespace: "team"}, Spec: &pb.PodSpec{NodeName: "n1"}}))
	c := New(h.Env(Name))
	h.Start()

	res := h.Reconcile(c, "team")
	if got := h.Fake.ActionStrings(); !slices.Equal(got, []string{"delete Pod team/p"}) {
		t.Fatalf("actions = %q", got)
	}
	if res.RequeueAfter == 0 {
		t.Error("no requeue while waiting")
	}
	h.Fake.ClearActions()
	h.Reconcile(c, "team")
	if got := h.Fake.ActionStrings(); len(got) != 0 {
		t.Fatalf("actions = %q, want none while the pod stops", got)
	}
	// The worker finishes it: the namespace goes.
	h.Fake.Remove("Pod", "team", "p")
	h.Reconcile(c, "team")
	if got := h.Fake.ActionStrings(); !slices.Equal(got, []string{"delete Namespace team"}) {
		t.Fatalf("actions = %q", got)
	}
}

// TestUnderTheLoop: the namespace goes without anyone reconciling by hand.
func TestUnderTheLoop(t *testing.T) {
	h := controllertest.NewHarness(t, append([]*pb.Object{namespace("team", false)}, contents("team")...)...)
	c := New(h.Env(Name))
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := h.Fake.Mutate("Namespace", "", "team", func(o *pb.Object) {
		o.Meta().DeletionTimestamp = timestamppb.New(controllertest.Epoch)
		o.GetNamespace().Status.Phase = "Terminating"
	}); err != nil {
		t.Fatal(err)
	}
	h.Eventually(func() bool { return h.Fake.Get("Namespace", "", "team") == nil }, "the namespace to go")
	for _, k := range pb.Kinds() {
		if n := len(h.Fake.Objects(k.Kind)); n != 0 {
			t.Errorf("%d %s left", n, k.Plural)
		}
	}
}
