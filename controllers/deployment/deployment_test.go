package deployment

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func ptr[T any](v T) *T { return &v }

func newDeployment(name string, replicas int32, image string) *pb.Deployment {
	return &pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Generation: 1},
		Spec: &pb.DeploymentSpec{
			Replicas: ptr(replicas),
			Selector: &pb.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: image}}},
			},
		},
		Status: &pb.DeploymentStatus{},
	}
}

// rsFor builds the ReplicaSet the controller would make for d's current
// template, at a revision, with spec replicas and available pods.
func rsFor(h *controllertest.Harness, d *pb.Deployment, rev, replicas, available int32, age time.Duration) *pb.Object {
	hash := templateHash(d.GetSpec().GetTemplate(), nil)
	tmpl := d.GetSpec().GetTemplate()
	tmplLabels := copyMap(tmpl.GetMetadata().GetLabels())
	tmplLabels[PodTemplateHashLabel] = hash
	sel := map[string]string{PodTemplateHashLabel: hash}
	for k, v := range d.GetSpec().GetSelector().GetMatchLabels() {
		sel[k] = v
	}
	return pb.Wrap(&pb.ReplicaSet{
		Metadata: &pb.ObjectMeta{
			Name: d.GetMetadata().GetName() + "-" + hash, Namespace: "default", Uid: "uid-rs-" + hash, Generation: 1,
			Labels:            tmplLabels,
			Annotations:       map[string]string{RevisionAnnotation: fmt.Sprint(rev)},
			OwnerReferences:   []*pb.OwnerReference{controllers.NewControllerRef(d.GetMetadata(), "apps/v1", "Deployment")},
			CreationTimestamp: timestamppb.New(h.Clock.Now().Add(-age)),
		},
		Spec: &pb.ReplicaSetSpec{
			Replicas: ptr(replicas), Selector: &pb.LabelSelector{MatchLabels: sel},
			Template: &pb.PodTemplateSpec{Metadata: &pb.ObjectMeta{Labels: tmplLabels}, Spec: tmpl.GetSpec()},
		},
		Status: &pb.ReplicaSetStatus{Replicas: replicas, ReadyReplicas: available, AvailableReplicas: available, ObservedGeneration: 1},
	})
}

func newController(t *testing.T, h *controllertest.Harness) *Controller {
	t.Helper()
	c := New(h.Env(Name))
	h.Start()
	return c
}

func actions(h *controllertest.Harness) []string { return h.Fake.ActionStrings("Event") }

func rsReplicasIn(h *controllertest.Harness) map[string]int32 {
	out := map[string]int32{}
	for _, o := range h.Fake.Objects("ReplicaSet") {
		out[o.Meta().GetName()] = rsReplicas(o.GetReplicaSet())
	}
	return out
}

func TestFenceposts(t *testing.T) {
	tests := []struct {
		replicas               int32
		surge, unavail         string
		wantSurge, wantUnavail int32
	}{
		{10, "", "", 3, 2}, // 25% of 10: 2.5 up and down
		{4, "", "", 1, 1},
		{1, "", "", 1, 0},
		{3, "30%", "30%", 1, 0},
		{5, "0", "0", 0, 1}, // both zero: unavailable becomes 1
		{5, "2", "100%", 2, 5},
		{0, "", "", 0, 1},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%s/%s", tc.replicas, tc.surge, tc.unavail), func(t *testing.T) {
			d := newDeployment("d", tc.replicas, "v1")
			d.Spec.Strategy = &pb.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: tc.surge, MaxUnavailable: tc.unavail}}
			s, u, err := fenceposts(d)
			if err != nil || s != tc.wantSurge || u != tc.wantUnavail {
				t.Errorf("fenceposts = %d, %d, %v; want %d, %d", s, u, err, tc.wantSurge, tc.wantUnavail)
			}
		})
	}
	d := newDeployment("d", 3, "v1")
	d.Spec.Strategy = &pb.DeploymentStrategy{RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: "lots"}}
	if _, _, err := fenceposts(d); err == nil || !strings.Contains(err.Error(), "maxSurge") {
		t.Errorf("fenceposts = %v, want an error naming maxSurge", err)
	}
}

func TestCreatesFirstReplicaSet(t *testing.T) {
	d := newDeployment("web", 4, "nginx:1")
	h := controllertest.NewHarness(t, pb.Wrap(d))
	c := newController(t, h)
	h.Reconcile(c, "default/web")

	hash := templateHash(d.GetSpec().GetTemplate(), nil)
	name := "web-" + hash
	want := []string{"create ReplicaSet default/" + name, "update Deployment default/web", "updateStatus Deployment default/web"}
	if got := actions(h); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	rs := h.Fake.Get("ReplicaSet", "default", name).GetReplicaSet()
	if got := rsReplicas(rs); got != 4 {
		t.Errorf("replicas = %d, want 4", got)
	}
	if rs.GetSpec().GetSelector().GetMatchLabels()[PodTemplateHashLabel] != hash ||
		rs.GetSpec().GetTemplate().GetMetadata().GetLabels()[PodTemplateHashLabel] != hash ||
		rs.GetMetadata().GetLabels()[PodTemplateHashLabel] != hash {
		t.Errorf("pod-template-hash missing from selector, template or labels: %v", rs)
	}
	if a := rs.GetMetadata().GetAnnotations(); a[RevisionAnnotation] != "1" || a[DesiredReplicasAnnotation] != "4" || a[MaxReplicasAnnotation] != "5" {
		t.Errorf("annotations = %v", a)
	}
	if ref := controllers.ControllerOf(rs.GetMetadata()); ref.GetKind() != "Deployment" || ref.GetName() != "web" {
		t.Errorf("owner = %v", ref)
	}
	dep := h.Fake.Get("Deployment", "default", "web").GetDeployment()
	if dep.GetMetadata().GetAnnotations()[RevisionAnnotation] != "1" {
		t.Errorf("deployment revision = %v, want 1", dep.GetMetadata().GetAnnotations())
	}
	if c := getCondition(dep.GetStatus().GetConditions(), "Progressing"); c.GetReason() != "NewReplicaSetCreated" {
		t.Errorf("Progressing = %v, want NewReplicaSetCreated", c)
	}
	if c := getCondition(dep.GetStatus().GetConditions(), "Available"); c.GetStatus() != "False" {
		t.Errorf("Available = %v, want False", c)
	}
}

func TestRollingUpdateSteps(t *testing.T) {
	// 4 replicas, 25%/25%: surge 1, unavailable 1.
	d1 := newDeployment("web", 4, "nginx:1")
	d := newDeployment("web", 4, "nginx:2")
	d.Metadata.Generation = 2
	h := controllertest.NewHarness(t, pb.Wrap(d))
	old := h.Fake.Add(rsFor(h, d1, 1, 4, 4, time.Hour))
	c := newController(t, h)

	// Step 1: the new ReplicaSet takes the one pod of surge, and one old
	// pod may go (3 of 4 must stay available).
	h.Reconcile(c, "default/web")
	newName := "web-" + templateHash(d.GetSpec().GetTemplate(), nil)
	if got := rsReplicasIn(h); got[old.Meta().GetName()] != 3 || got[newName] != 1 {
		t.Fatalf("after step 1: %v, want old 3, new 1", got)
	}
	if rev := h.Fake.Get("ReplicaSet", "default", newName).Meta().GetAnnotations()[RevisionAnnotation]; rev != "2" {
		t.Errorf("new revision = %s, want 2", rev)
	}

	// Step 2: nothing moves while the old RS still reports its 4th pod
	// (counting it, another new pod would exceed the surge) and the new
	// pod is not available.
	h.Fake.ClearActions()
	h.Reconcile(c, "default/web")
	for _, a := range actions(h) {
		if strings.HasPrefix(a, "update ReplicaSet") {
			t.Errorf("scaled while waiting: %q", actions(h))
		}
	}

	// The old RS removes its pod; the new pod becomes available.
	h.Fake.Mutate("ReplicaSet", "default", old.Meta().GetName(), func(o *pb.Object) {
		st := o.GetReplicaSet().Status
		st.Replicas, st.ReadyReplicas, st.AvailableReplicas = 3, 3, 3
	})
	h.Fake.Mutate("ReplicaSet", "default", newName, func(o *pb.Object) {
		st := o.GetReplicaSet().Status
		st.Replicas, st.ReadyReplicas, st.AvailableReplicas = 1, 1, 1
	})
	// Step 3: scale up first...
	h.Reconcile(c, "default/web")
	if got := rsReplicasIn(h); got[old.Meta().GetName()] != 3 || got[newName] != 2 {
		t.Fatalf("after step 3: %v, want old 3, new 2", got)
	}
	// Step 4: ...then down: 4 available, 3 needed.
	h.Reconcile(c, "default/web")
	if got := rsReplicasIn(h); got[old.Meta().GetName()] != 2 || got[newName] != 2 {
		t.Fatalf("after step 4: %v, want old 2, new 2", got)
	}
}

func TestRecreate(t *testing.T) {
	d1 := newDeployment("web", 3, "nginx:1")
	d := newDeployment("web", 3, "nginx:2")
	d.Spec.Strategy = &pb.DeploymentStrategy{Type: "Recreate"}
	h := controllertest.NewHarness(t, pb.Wrap(d))
	old := h.Fake.Add(rsFor(h, d1, 1, 3, 3, time.Hour))
	h.Fake.Add(pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Name: "old-pod", Namespace: "default", Labels: map[string]string{"app": "web"},
			OwnerReferences: []*pb.OwnerReference{controllers.NewControllerRef(old.Meta(), "apps/v1", "ReplicaSet")}},
		Status: &pb.PodStatus{Phase: "Running"},
	}))
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	if got := rsReplicasIn(h); len(got) != 1 || got[old.Meta().GetName()] != 0 {
		t.Fatalf("after step 1: %v, want only the old RS, at 0", got)
	}
	// Its pods are still there: no new ReplicaSet yet.
	h.Fake.Mutate("ReplicaSet", "default", old.Meta().GetName(), func(o *pb.Object) {
		st := o.GetReplicaSet().Status
		st.Replicas, st.ReadyReplicas, st.AvailableReplicas = 0, 0, 0
	})
	h.Reconcile(c, "default/web")
	if got := rsReplicasIn(h); len(got) != 1 {
		t.Fatalf("new RS created while an old pod runs: %v", got)
	}
	h.Fake.Remove("Pod", "default", "old-pod")
	h.Reconcile(c, "default/web")
	newName := "web-" + templateHash(d.GetSpec().GetTemplate(), nil)
	if got := rsReplicasIn(h); got[newName] != 3 {
		t.Fatalf("after the old pods left: %v, want new RS at 3", got)
	}
}

func TestRollbackBumpsRevision(t *testing.T) {
	d1 := newDeployment("web", 2, "nginx:1")
	d2 := newDeployment("web", 2, "nginx:2")
	// The template is back at v1: its ReplicaSet (revision 1) is new again.
	h := controllertest.NewHarness(t, pb.Wrap(d1))
	rs1 := h.Fake.Add(rsFor(h, d1, 1, 0, 0, 2*time.Hour))
	h.Fake.Add(rsFor(h, d2, 2, 2, 2, time.Hour))
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	if rev := h.Fake.Get("ReplicaSet", "default", rs1.Meta().GetName()).Meta().GetAnnotations()[RevisionAnnotation]; rev != "3" {
		t.Errorf("rolled-back RS revision = %s, want 3", rev)
	}
	if rev := h.Fake.Get("Deployment", "default", "web").Meta().GetAnnotations()[RevisionAnnotation]; rev != "3" {
		t.Errorf("deployment revision = %s, want 3", rev)
	}
}

func TestCleansUpHistoryBeyondLimit(t *testing.T) {
	d := newDeployment("web", 1, "nginx:4")
	d.Spec.RevisionHistoryLimit = ptr(int32(1))
	h := controllertest.NewHarness(t, pb.Wrap(d))
	var names []string
	for i := 1; i <= 3; i++ {
		o := h.Fake.Add(rsFor(h, newDeployment("web", 1, fmt.Sprintf("nginx:%d", i)), int32(i), 0, 0, time.Duration(5-i)*time.Hour))
		names = append(names, o.Meta().GetName())
	}
	h.Fake.Add(rsFor(h, d, 4, 1, 1, time.Minute))
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	var deletes []string
	for _, a := range actions(h) {
		if strings.HasPrefix(a, "delete") {
			deletes = append(deletes, a)
		}
	}
	want := []string{"delete ReplicaSet default/" + names[0], "delete ReplicaSet default/" + names[1]}
	if !slices.Equal(deletes, want) {
		t.Errorf("deletes = %q, want %q", deletes, want)
	}
	dep := h.Fake.Get("Deployment", "default", "web").GetDeployment()
	if c := getCondition(dep.GetStatus().GetConditions(), "Progressing"); c.GetReason() != "NewReplicaSetAvailable" {
		t.Errorf("Progressing = %v, want NewReplicaSetAvailable", c)
	}
}

func TestProgressDeadline(t *testing.T) {
	d := newDeployment("web", 2, "nginx:1")
	d.Spec.ProgressDeadlineSeconds = ptr(int32(60))
	h := controllertest.NewHarness(t, pb.Wrap(d))
	c := newController(t, h)
	res := h.Reconcile(c, "default/web")
	if res.RequeueAfter != 61*time.Second {
		t.Errorf("RequeueAfter = %s, want 61s (the progress deadline)", res.RequeueAfter)
	}
	h.Clock.Step(61 * time.Second)
	h.Reconcile(c, "default/web")
	dep := h.Fake.Get("Deployment", "default", "web").GetDeployment()
	cond := getCondition(dep.GetStatus().GetConditions(), "Progressing")
	if cond.GetStatus() != "False" || cond.GetReason() != "ProgressDeadlineExceeded" {
		t.Errorf("Progressing = %v, want False/ProgressDeadlineExceeded", cond)
	}
}

func TestPausedDoesNotRollOut(t *testing.T) {
	d1 := newDeployment("web", 2, "nginx:1")
	d := newDeployment("web", 3, "nginx:2")
	d.Spec.Paused = true
	h := controllertest.NewHarness(t, pb.Wrap(d))
	h.Fake.Add(rsFor(h, d1, 1, 2, 2, time.Hour))
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	if got := rsReplicasIn(h); len(got) != 1 {
		t.Errorf("paused deployment created a ReplicaSet: %v", got)
	}
	cond := getCondition(h.Fake.Get("Deployment", "default", "web").GetDeployment().GetStatus().GetConditions(), "Progressing")
	if cond.GetReason() != "DeploymentPaused" {
		t.Errorf("Progressing = %v, want DeploymentPaused", cond)
	}
}
