package deployment

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	"github.com/skiff-sh/skiff/controllers/replicaset"
	pb "github.com/skiff-sh/skiff/proto"
)

// sim runs the deployment and replicaset controllers over a Fake, with a
// fake kubelet that makes every new pod run and become ready.
type sim struct {
	h *controllertest.Harness

	mu         sync.Mutex
	violations []string
}

func newSim(t *testing.T, d *pb.Deployment) *sim {
	t.Helper()
	h := controllertest.NewHarness(t, pb.Wrap(d))
	s := &sim{h: h}
	dc := New(h.Env(Name))
	rc, err := replicaset.New(h.Env(replicaset.Name), replicaset.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet: runs each new pod and reports it ready.
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
				p.Status.Conditions = append(p.Status.Conditions, &pb.PodCondition{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.New(h.Clock.Now())})
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
	return s
}

func (s *sim) deployment() *pb.Deployment {
	return s.h.Fake.Get("Deployment", "default", "web").GetDeployment()
}

// waitComplete waits until every replica runs the template with image and
// the status says the rollout is complete.
func (s *sim) waitComplete(image string) {
	s.h.T.Helper()
	s.h.Eventually(func() bool {
		d := s.deployment()
		n := replicasOf(d)
		st := d.GetStatus()
		if st.GetObservedGeneration() < d.GetMetadata().GetGeneration() || st.GetUpdatedReplicas() != n || st.GetReplicas() != n || st.GetAvailableReplicas() != n {
			return false
		}
		count := 0
		for _, o := range s.h.Fake.Objects("Pod") {
			p := o.GetPod()
			if !controllers.IsPodActive(p) {
				continue
			}
			if p.GetSpec().GetContainers()[0].GetImage() != image || !controllers.IsPodReady(p) {
				return false
			}
			count++
		}
		return int32(count) == n
	}, "the rollout of "+image+" to complete")
}

// setImage changes the template, as `skiff set image` would.
func (s *sim) setImage(image string) {
	s.h.T.Helper()
	if err := s.h.Fake.Mutate("Deployment", "default", "web", func(o *pb.Object) {
		d := o.GetDeployment()
		d.Spec.Template.Spec.Containers[0].Image = image
		d.Metadata.Generation++
	}); err != nil {
		s.h.T.Fatal(err)
	}
}

func (s *sim) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < 10 {
		s.violations = append(s.violations, fmt.Sprintf(format, args...))
	}
}

func (s *sim) check(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.violations {
		t.Error(v)
	}
}

// activePods counts the pods (not finished, not being deleted) in a store
// view, and how many of them are ready, by image.
func activePods(objects func(string) []*pb.Object) (active, ready int, byImage map[string]int) {
	byImage = map[string]int{}
	for _, o := range objects("Pod") {
		p := o.GetPod()
		if !controllers.IsPodActive(p) {
			continue
		}
		active++
		byImage[p.GetSpec().GetContainers()[0].GetImage()]++
		if controllers.IsPodReady(p) {
			ready++
		}
	}
	return active, ready, byImage
}

// TestRollingUpdateStaysWithinBounds watches every state of the store
// during rolling updates and checks that the pods never exceed
// replicas+maxSurge and the available ones never drop below
// replicas-maxUnavailable.
func TestRollingUpdateStaysWithinBounds(t *testing.T) {
	tests := []struct {
		replicas       int32
		surge, unavail string
	}{
		{10, "", ""}, // 25%/25%: surge 3, unavailable 2
		{5, "0", "1"},
		{5, "2", "0"},
		{6, "50%", "50%"},
		{1, "", ""}, // surge 1, unavailable 0
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-surge%s-unavailable%s", tc.replicas, tc.surge, tc.unavail), func(t *testing.T) {
			d := newDeployment("web", tc.replicas, "app:v1")
			d.Spec.Strategy = &pb.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: tc.surge, MaxUnavailable: tc.unavail}}
			surge, unavail, err := fenceposts(d)
			if err != nil {
				t.Fatal(err)
			}
			s := newSim(t, d)
			s.waitComplete("app:v1")

			maxPods, minReady := int(tc.replicas+surge), int(tc.replicas-unavail)
			s.h.Fake.Observe(func(ev *pb.WatchEvent, objects func(string) []*pb.Object) {
				active, ready, byImage := activePods(objects)
				if active > maxPods {
					s.violate("rv %d: %d pods %v, more than %d", ev.GetResourceVersion(), active, byImage, maxPods)
				}
				if ready < minReady {
					s.violate("rv %d: %d ready pods %v, fewer than %d", ev.GetResourceVersion(), ready, byImage, minReady)
				}
				var specs int32
				for _, o := range objects("ReplicaSet") {
					specs += rsReplicas(o.GetReplicaSet())
				}
				if int(specs) > maxPods {
					s.violate("rv %d: ReplicaSets want %d pods, more than %d", ev.GetResourceVersion(), specs, maxPods)
				}
			})
			for _, image := range []string{"app:v2", "app:v3"} {
				s.setImage(image)
				s.waitComplete(image)
			}
			s.check(t)

			d = s.deployment()
			if rev := d.GetMetadata().GetAnnotations()[RevisionAnnotation]; rev != "3" {
				t.Errorf("revision = %q, want 3", rev)
			}
			if c := getCondition(d.GetStatus().GetConditions(), "Progressing"); c.GetReason() != "NewReplicaSetAvailable" {
				t.Errorf("Progressing = %v", c)
			}
			if c := getCondition(d.GetStatus().GetConditions(), "Available"); c.GetStatus() != "True" {
				t.Errorf("Available = %v", c)
			}
		})
	}
}

// TestRecreateNeverOverlaps checks that no new pod runs while an old one
// does.
func TestRecreateNeverOverlaps(t *testing.T) {
	d := newDeployment("web", 4, "app:v1")
	d.Spec.Strategy = &pb.DeploymentStrategy{Type: "Recreate"}
	s := newSim(t, d)
	s.waitComplete("app:v1")
	s.h.Fake.Observe(func(ev *pb.WatchEvent, objects func(string) []*pb.Object) {
		if _, _, byImage := activePods(objects); len(byImage) > 1 {
			s.violate("rv %d: pods of two templates at once: %v", ev.GetResourceVersion(), byImage)
		}
	})
	s.setImage("app:v2")
	s.waitComplete("app:v2")
	s.check(t)
}

// TestScaleDuringSteadyState follows replicas up and down.
func TestScaleDuringSteadyState(t *testing.T) {
	s := newSim(t, newDeployment("web", 2, "app:v1"))
	s.waitComplete("app:v1")
	for _, n := range []int32{7, 3} {
		if err := s.h.Fake.Mutate("Deployment", "default", "web", func(o *pb.Object) {
			o.GetDeployment().Spec.Replicas = ptr(n)
			o.Meta().Generation++
		}); err != nil {
			t.Fatal(err)
		}
		s.waitComplete("app:v1")
	}
}
