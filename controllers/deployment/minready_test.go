package deployment

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	"github.com/skiff-sh/skiff/controllers/replicaset"
	pb "github.com/skiff-sh/skiff/proto"
)

// readyFor is how long before "now" the fake kubelet reports a new pod
// ready: less than minReadySeconds, so no new pod is available until the
// clock moves.
const readyFor = 4 * time.Second

// newMinReadySim runs the deployment and replicaset controllers over a
// Fake whose kubelet reports every new pod ready readyFor ago.
func newMinReadySim(t *testing.T, d *pb.Deployment) *controllertest.Harness {
	t.Helper()
	h := controllertest.NewHarness(t, pb.Wrap(d))
	dc := New(h.Env(Name))
	rc, err := replicaset.New(h.Env(replicaset.Name), replicaset.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var kubelets sync.WaitGroup
	h.Informers.For("Pod").AddHandler(controllers.HandlerFuncs{AddFunc: func(o *pb.Object) {
		if o.GetPod().GetSpec().GetNodeName() != "" {
			return
		}
		ns, name := o.Meta().GetNamespace(), o.Meta().GetName()
		kubelets.Go(func() {
			_ = h.Fake.Mutate("Pod", ns, name, func(o *pb.Object) {
				p := o.GetPod()
				p.Spec.NodeName = "n1"
				p.Status.Phase = "Running"
				p.Status.Conditions = append(p.Status.Conditions, &pb.PodCondition{
					Type: "Ready", Status: "True", LastTransitionTime: timestamppb.New(h.Clock.Now().Add(-readyFor)),
				})
			})
		})
	}})
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	var wg sync.WaitGroup
	for _, c := range []controllers.Controller{dc, rc} {
		wg.Go(func() {
			if err := c.Run(ctx); err != nil {
				t.Errorf("%s: %v", c.Name(), err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait(); kubelets.Wait() })
	return h
}

// stepAndTouch moves the clock and has the kubelet touch every pod, as
// its next status report would: the controllers' own look-again timers
// run on the real clock, the availability they compute on the fake one.
func stepAndTouch(h *controllertest.Harness, d time.Duration) {
	h.T.Helper()
	h.Clock.Step(d)
	for _, o := range h.Fake.Objects("Pod") {
		_ = h.Fake.Mutate("Pod", o.Meta().GetNamespace(), o.Meta().GetName(), func(o *pb.Object) {
			if o.Meta().Annotations == nil {
				o.Meta().Annotations = map[string]string{}
			}
			o.Meta().Annotations["test/touched"] = h.Clock.Now().String()
		})
	}
}

// availablePods counts active pods that have been ready for minReady on
// the fake clock.
func availablePods(h *controllertest.Harness, objects func(string) []*pb.Object, minReady int32) int {
	n := 0
	for _, o := range objects("Pod") {
		p := o.GetPod()
		if !controllers.IsPodActive(p) {
			continue
		}
		if ok, _ := controllers.PodAvailableIn(p, minReady, h.Clock.Now()); ok {
			n++
		}
	}
	return n
}

// replicaSetOf returns the ReplicaSet whose pods run image.
func replicaSetOf(objects func(string) []*pb.Object, image string) *pb.ReplicaSet {
	for _, o := range objects("ReplicaSet") {
		rs := o.GetReplicaSet()
		if rs.GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetImage() == image {
			return rs
		}
	}
	return nil
}

// TestRollingUpdateWaitsForMinReadySeconds: new pods ready for less than
// minReadySeconds are not available, so old pods are not scaled down past
// the unavailability bound until the new ones have been ready long enough.
func TestRollingUpdateWaitsForMinReadySeconds(t *testing.T) {
	const replicas, minReady = 4, 10
	d := newDeployment("web", replicas, "app:v1")
	d.Spec.MinReadySeconds = minReady
	// surge 1, unavailable 1: at most 5 pods, at least 3 available.
	d.Spec.Strategy = &pb.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: "1", MaxUnavailable: "1"}}
	h := newMinReadySim(t, d)
	fake := func(kind string) []*pb.Object { return h.Fake.Objects(kind) }

	// The first rollout: four pods, ready 4 s ago, available after 6 s more.
	h.Eventually(func() bool {
		st := h.Fake.Get("Deployment", "default", "web").GetDeployment().GetStatus()
		return st.GetReadyReplicas() == replicas && st.GetAvailableReplicas() == 0
	}, "four ready pods, none available yet")
	if rs := replicaSetOf(fake, "app:v1"); rs.GetSpec().GetMinReadySeconds() != minReady {
		t.Fatalf("ReplicaSet minReadySeconds = %d, want %d", rs.GetSpec().GetMinReadySeconds(), minReady)
	}
	stepAndTouch(h, minReady*time.Second)
	h.Eventually(func() bool {
		return h.Fake.Get("Deployment", "default", "web").GetDeployment().GetStatus().GetAvailableReplicas() == replicas
	}, "four available pods")

	// Every state of the rollout keeps 3 pods available by the fake
	// clock; until the clock moves, the old ReplicaSet keeps 3.
	var stepped atomic.Bool
	var mu sync.Mutex
	var violations []string
	violate := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(violations) < 10 {
			violations = append(violations, s)
		}
	}
	// Reported however the test ends: a rollout that runs ahead of
	// minReadySeconds never reaches the state waited for below.
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range violations {
			t.Error(v)
		}
	}()
	h.Fake.Observe(func(ev *pb.WatchEvent, objects func(string) []*pb.Object) {
		if n := availablePods(h, objects, minReady); n < replicas-1 {
			violate(fmt.Sprintf("rv %d: %d available pods, fewer than 3", ev.GetResourceVersion(), n))
		}
		if old := replicaSetOf(objects, "app:v1"); !stepped.Load() && rsReplicas(old) < replicas-1 {
			violate(fmt.Sprintf("rv %d: old ReplicaSet scaled to %d, below 3, while no new pod was available", ev.GetResourceVersion(), rsReplicas(old)))
		}
	})

	if err := h.Fake.Mutate("Deployment", "default", "web", func(o *pb.Object) {
		o.GetDeployment().Spec.Template.Spec.Containers[0].Image = "app:v2"
		o.Meta().Generation++
	}); err != nil {
		t.Fatal(err)
	}
	// The rollout stalls: 3 old pods and 2 new ready but unavailable ones,
	// with the Deployment's status showing the controller saw them.
	h.Eventually(func() bool {
		dep := h.Fake.Get("Deployment", "default", "web").GetDeployment()
		st := dep.GetStatus()
		return st.GetObservedGeneration() == dep.GetMetadata().GetGeneration() &&
			st.GetUpdatedReplicas() == 2 && st.GetReadyReplicas() == 5 && st.GetAvailableReplicas() == 3
	}, "the rollout to wait with 3 old and 2 new, unavailable, pods")
	if old, cur := rsReplicas(replicaSetOf(fake, "app:v1")), rsReplicas(replicaSetOf(fake, "app:v2")); old != 3 || cur != 2 {
		t.Errorf("ReplicaSets old %d, new %d; want 3 and 2", old, cur)
	}
	if st := replicaSetOf(fake, "app:v2").GetStatus(); st.GetReadyReplicas() != 2 || st.GetAvailableReplicas() != 0 {
		t.Errorf("new ReplicaSet ready %d, available %d; want 2 and 0", st.GetReadyReplicas(), st.GetAvailableReplicas())
	}

	// 6 s later the new pods have been ready for minReadySeconds.
	stepped.Store(true)
	stepAndTouch(h, minReady*time.Second-readyFor)
	h.Eventually(func() bool { return rsReplicas(replicaSetOf(fake, "app:v1")) < 3 }, "the old ReplicaSet to scale down")
}

// TestMinReadySecondsChangeReachesReplicaSet: the ReplicaSet computes
// availability, so a changed minReadySeconds must reach it.
func TestMinReadySecondsChangeReachesReplicaSet(t *testing.T) {
	d := newDeployment("web", 3, "nginx:1")
	h := controllertest.NewHarness(t, pb.Wrap(d))
	h.Fake.Add(rsFor(h, d, 1, 3, 3, time.Hour))
	c := newController(t, h)
	h.Reconcile(c, "default/web")
	rsName := "web-" + templateHash(d.GetSpec().GetTemplate(), nil)
	if got := h.Fake.Get("ReplicaSet", "default", rsName).GetReplicaSet().GetSpec().GetMinReadySeconds(); got != 0 {
		t.Fatalf("minReadySeconds = %d before the change, want 0", got)
	}

	if err := h.Fake.Mutate("Deployment", "default", "web", func(o *pb.Object) {
		o.GetDeployment().Spec.MinReadySeconds = 30
		o.Meta().Generation++
	}); err != nil {
		t.Fatal(err)
	}
	h.Fake.ClearActions()
	h.Reconcile(c, "default/web")
	rs := h.Fake.Get("ReplicaSet", "default", rsName).GetReplicaSet()
	if got := rs.GetSpec().GetMinReadySeconds(); got != 30 {
		t.Errorf("ReplicaSet minReadySeconds = %d, want 30", got)
	}
	if got := rsReplicas(rs); got != 3 {
		t.Errorf("ReplicaSet replicas = %d, want 3 (a minReadySeconds change is no rollout)", got)
	}
	if n := len(h.Fake.Objects("ReplicaSet")); n != 1 {
		t.Errorf("%d ReplicaSets, want 1 (a minReadySeconds change makes no new one)", n)
	}
}
