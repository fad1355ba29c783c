package replicaset

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func ptr[T any](v T) *T { return &v }

func newRS(name string, replicas int32) *pb.ReplicaSet {
	return &pb.ReplicaSet{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Generation: 1},
		Spec: &pb.ReplicaSetSpec{
			Replicas: ptr(replicas),
			Selector: &pb.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": name, "tier": "web"}},
				Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "nginx"}}},
			},
		},
		Status: &pb.ReplicaSetStatus{},
	}
}

type podOpt func(*pb.Pod)

// newPod is a pod of rs created age ago.
func newPod(h *controllertest.Harness, name string, rs *pb.ReplicaSet, age time.Duration, opts ...podOpt) *pb.Object {
	p := &pb.Pod{
		Metadata: &pb.ObjectMeta{
			Name: name, Namespace: "default", Uid: "uid-" + name,
			Labels:            map[string]string{"app": rs.GetMetadata().GetName()},
			CreationTimestamp: timestamppb.New(h.Clock.Now().Add(-age)),
		},
		Spec:   &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "nginx"}}},
		Status: &pb.PodStatus{Phase: "Pending"},
	}
	if rs != nil {
		p.Metadata.OwnerReferences = []*pb.OwnerReference{controllers.NewControllerRef(rs.GetMetadata(), "apps/v1", "ReplicaSet")}
	}
	for _, o := range opts {
		o(p)
	}
	return pb.Wrap(p)
}

func orphan(p *pb.Pod) { p.Metadata.OwnerReferences = nil }

func scheduled(p *pb.Pod) { p.Spec.NodeName = "n1" }

func running(p *pb.Pod) { p.Spec.NodeName = "n1"; p.Status.Phase = "Running" }

func readyFor(h *controllertest.Harness, d time.Duration) podOpt {
	return func(p *pb.Pod) {
		running(p)
		p.Status.Conditions = append(p.Status.Conditions, &pb.PodCondition{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.New(h.Clock.Now().Add(-d))})
	}
}

func deleting(h *controllertest.Harness) podOpt {
	return func(p *pb.Pod) {
		p.Metadata.DeletionTimestamp = timestamppb.New(h.Clock.Now())
		p.Metadata.Finalizers = []string{"test/hold"}
	}
}

func newController(t *testing.T, h *controllertest.Harness) *Controller {
	t.Helper()
	c, err := New(h.Env(Name), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	c.suffix = func() string { return fmt.Sprintf("%05d", n.Add(1)) }
	h.Start()
	return c
}

func actions(h *controllertest.Harness) []string { return h.Fake.ActionStrings("Event") }

func status_(h *controllertest.Harness, name string) *pb.ReplicaSetStatus {
	return h.Fake.Get("ReplicaSet", "default", name).GetReplicaSet().GetStatus()
}

func TestCreatesPodsFromTemplate(t *testing.T) {
	rs := newRS("web", 3)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	c := newController(t, h)
	h.Reconcile(c, "default/web")

	want := []string{"create Pod default/web-00001", "create Pod default/web-00002", "create Pod default/web-00003", "updateStatus ReplicaSet default/web"}
	if got := actions(h); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	p := h.Fake.Get("Pod", "default", "web-00001").GetPod()
	if p.GetMetadata().GetLabels()["tier"] != "web" || p.GetSpec().GetContainers()[0].GetImage() != "nginx" {
		t.Errorf("pod not made from the template: %v", p)
	}
	ref := controllers.ControllerOf(p.GetMetadata())
	if ref.GetUid() != h.Fake.Get("ReplicaSet", "default", "web").Meta().GetUid() || ref.GetKind() != "ReplicaSet" || !ref.GetBlockOwnerDeletion() {
		t.Errorf("owner reference = %v", ref)
	}

	// Reconciling again at once never creates more, whether or not the cache
	// has seen the pods yet (expectations cover the gap).
	h.Fake.ClearActions()
	if _, err := c.Reconcile(h.Context(), "default/web"); err != nil && !controllers.IsConflict(err) {
		t.Fatal(err) // a conflict is fine: the status write raced the cache
	}
	for _, a := range actions(h) {
		if strings.HasPrefix(a, "create") {
			t.Errorf("second reconcile created more: %q", actions(h))
		}
	}
	h.Reconcile(c, "default/web")
	if st := status_(h, "web"); st.GetReplicas() != 3 || st.GetFullyLabeledReplicas() != 3 || st.GetObservedGeneration() != 1 {
		t.Errorf("status = %v, want 3 replicas observed at generation 1", st)
	}
}

func TestDeletesLeastUsefulPodsFirst(t *testing.T) {
	rs := newRS("web", 2)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	for _, p := range []*pb.Object{
		newPod(h, "old-ready", rs, 10*time.Hour, readyFor(h, 9*time.Hour)),
		newPod(h, "new-ready", rs, time.Hour, readyFor(h, 50*time.Minute)),
		newPod(h, "newest-ready", rs, time.Minute, readyFor(h, 30*time.Second)),
		newPod(h, "running-not-ready", rs, 5*time.Hour, running),
		newPod(h, "unscheduled", rs, 20*time.Hour),
		newPod(h, "scheduled-pending", rs, 20*time.Hour, scheduled),
	} {
		h.Fake.Add(p)
	}
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	want := []string{
		"delete Pod default/unscheduled",
		"delete Pod default/scheduled-pending",
		"delete Pod default/running-not-ready",
		"delete Pod default/newest-ready",
		"updateStatus ReplicaSet default/web",
	}
	if got := actions(h); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	if d := h.Fake.Actions()[0].Delete; d.GetUid() != "uid-unscheduled" {
		t.Errorf("delete without a UID precondition: %v", d)
	}
}

func TestAdoptsOrphansAndReleasesStrays(t *testing.T) {
	rs := newRS("web", 2)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	h.Fake.Add(newPod(h, "orphan", rs, time.Hour, orphan))
	h.Fake.Add(newPod(h, "other-app", rs, time.Hour, orphan, func(p *pb.Pod) { p.Metadata.Labels["app"] = "db" }))
	h.Fake.Add(newPod(h, "stray", rs, time.Hour, func(p *pb.Pod) { p.Metadata.Labels["app"] = "moved" }))
	c := newController(t, h)
	h.Reconcile(c, "default/web")

	want := []string{"update Pod default/orphan", "update Pod default/stray", "create Pod default/web-00001", "updateStatus ReplicaSet default/web"}
	got := actions(h)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	if ref := controllers.ControllerOf(h.Fake.Get("Pod", "default", "orphan").Meta()); ref.GetName() != "web" {
		t.Errorf("orphan not adopted: owner %v", ref)
	}
	if ref := controllers.ControllerOf(h.Fake.Get("Pod", "default", "stray").Meta()); ref != nil {
		t.Errorf("stray not released: owner %v", ref)
	}
	if ref := controllers.ControllerOf(h.Fake.Get("Pod", "default", "other-app").Meta()); ref != nil {
		t.Errorf("non-matching orphan adopted: owner %v", ref)
	}
}

func TestPodsBeingDeletedDoNotCount(t *testing.T) {
	rs := newRS("web", 2)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	h.Fake.Add(newPod(h, "a", rs, time.Hour, readyFor(h, time.Hour)))
	h.Fake.Add(newPod(h, "b", rs, time.Hour, readyFor(h, time.Hour), deleting(h)))
	h.Fake.Add(newPod(h, "done", rs, time.Hour, func(p *pb.Pod) { p.Status.Phase = "Succeeded" }))
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	want := []string{"create Pod default/web-00001", "updateStatus ReplicaSet default/web"}
	if got := actions(h); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	if st := status_(h, "web"); st.GetReplicas() != 1 || st.GetReadyReplicas() != 1 {
		t.Errorf("status = %v, want 1 replica, 1 ready", st)
	}
}

func TestAvailabilityWaitsForMinReadySeconds(t *testing.T) {
	rs := newRS("web", 2)
	rs.Spec.MinReadySeconds = 10
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	h.Fake.Add(newPod(h, "a", rs, time.Hour, readyFor(h, time.Hour)))
	h.Fake.Add(newPod(h, "b", rs, time.Minute, readyFor(h, 4*time.Second)))
	c := newController(t, h)
	res := h.Reconcile(c, "default/web")
	if st := status_(h, "web"); st.GetReadyReplicas() != 2 || st.GetAvailableReplicas() != 1 {
		t.Errorf("status = %v, want 2 ready, 1 available", st)
	}
	if res.RequeueAfter != 6*time.Second {
		t.Errorf("RequeueAfter = %s, want 6s (when b becomes available)", res.RequeueAfter)
	}
	h.Clock.Step(6 * time.Second)
	if res := h.Reconcile(c, "default/web"); res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %s, want 0", res.RequeueAfter)
	}
	if st := status_(h, "web"); st.GetAvailableReplicas() != 2 {
		t.Errorf("status = %v, want 2 available", st)
	}
}

func TestCreateFailureIsReported(t *testing.T) {
	rs := newRS("web", 2)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	h.Fake.FailOn("create", "Pod", status.Error(codes.FailedPrecondition, `namespace "default" is terminating`))
	c := newController(t, h)
	h.WaitForCache()
	if _, err := c.Reconcile(h.Context(), "default/web"); err == nil {
		t.Fatal("Reconcile succeeded, want the create error")
	}
	// Slow start: one failed create, not two.
	want := []string{"create Pod default/web-00001", "updateStatus ReplicaSet default/web"}
	if got := actions(h); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	conds := status_(h, "web").GetConditions()
	if len(conds) != 1 || conds[0].GetType() != "ReplicaFailure" || conds[0].GetReason() != "FailedCreate" || !strings.Contains(conds[0].GetMessage(), "terminating") {
		t.Errorf("conditions = %v, want ReplicaFailure/FailedCreate", conds)
	}
	if ev := h.Recorder.Events(); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning ReplicaSet default/web FailedCreate: ") {
		t.Errorf("events = %q", ev)
	}
}

func TestDeletedReplicaSetIsLeftAlone(t *testing.T) {
	rs := newRS("web", 2)
	h := controllertest.NewHarness(t)
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	if got := actions(h); len(got) != 0 {
		t.Errorf("actions = %q, want none", got)
	}
	// Being deleted: no new pods, no adoption.
	rs.Metadata.DeletionTimestamp = timestamppb.New(h.Clock.Now())
	rs.Metadata.Finalizers = []string{"foregroundDeletion"}
	h.Fake.Add(pb.Wrap(rs))
	h.Fake.Add(newPod(h, "orphan", rs, time.Hour, orphan))
	h.Reconcile(c, "default/web")
	if got := actions(h); !slices.Equal(got, []string{"updateStatus ReplicaSet default/web"}) {
		t.Errorf("actions = %q, want only a status update", got)
	}
}

// TestConvergesUnderTheLoop runs the controller's Loop with a fake kubelet
// that makes pods ready, until the status says all are available.
func TestConvergesUnderTheLoop(t *testing.T) {
	rs := newRS("web", 5)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	c := newController(t, h)
	kubelet := h.Informers.For("Pod")
	kubelet.AddHandler(controllers.HandlerFuncs{AddFunc: func(o *pb.Object) {
		if o.GetPod().GetStatus().GetPhase() == "Pending" {
			go h.Fake.Mutate("Pod", o.Meta().GetNamespace(), o.Meta().GetName(), func(o *pb.Object) {
				readyFor(h, time.Minute)(o.GetPod())
			})
		}
	}})
	stop := runLoop(t, h, c)
	h.Eventually(func() bool {
		st := status_(h, "web")
		return st.GetReplicas() == 5 && st.GetReadyReplicas() == 5 && st.GetAvailableReplicas() == 5
	}, "5 available replicas")
	h.Fake.Mutate("ReplicaSet", "default", "web", func(o *pb.Object) { o.GetReplicaSet().Spec.Replicas = ptr(int32(2)) })
	h.Eventually(func() bool { return status_(h, "web").GetReplicas() == 2 && len(h.Fake.Objects("Pod")) == 2 }, "scale down to 2")
	stop()
}

func runLoop(t *testing.T, h *controllertest.Harness, c *Controller) (stop func()) {
	t.Helper()
	ctx, cancel := contextWithCancel(h)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}
