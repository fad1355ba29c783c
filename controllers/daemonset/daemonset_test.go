package daemonset

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func node(name string, labels map[string]string, ready bool, taints ...*pb.Taint) *pb.Object {
	status := "True"
	if !ready {
		status = "False"
	}
	return pb.Wrap(&pb.Node{
		Metadata: &pb.ObjectMeta{Name: name, Labels: labels},
		Spec:     &pb.NodeSpec{Taints: taints},
		Status:   &pb.NodeStatus{Conditions: []*pb.NodeCondition{{Type: "Ready", Status: status}}},
	})
}

func daemonSet(name, image string, strategy *pb.DaemonSetUpdateStrategy) *pb.Object {
	return pb.Wrap(&pb.DaemonSet{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Generation: 1},
		Spec: &pb.DaemonSetSpec{
			Selector:       &pb.LabelSelector{MatchLabels: map[string]string{"app": name}},
			UpdateStrategy: strategy,
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: &pb.PodSpec{
					NodeSelector: map[string]string{"role": "worker"},
					Containers:   []*pb.Container{{Name: "agent", Image: image}},
				},
			},
		},
	})
}

var worker = map[string]string{"role": "worker"}

func start(t *testing.T, objs ...*pb.Object) (*controllertest.Harness, *Controller) {
	t.Helper()
	h := controllertest.NewHarness(t, objs...)
	c, err := New(h.Env(Name), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	c.suffix = func() string { return fmt.Sprintf("%05d", n.Add(1)) }
	h.Start()
	return h, c
}

// expect checks the pod writes since the last call (status updates are
// checked separately).
func expect(t *testing.T, h *controllertest.Harness, want ...string) {
	t.Helper()
	got := slices.DeleteFunc(h.Fake.ActionStrings("Event"), func(a string) bool { return strings.HasPrefix(a, "updateStatus ") })
	if !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	h.Fake.ClearActions()
}

// podsByNode is node -> image of each active pod of the store.
func podsByNode(h *controllertest.Harness) map[string][]string {
	out := map[string][]string{}
	for _, o := range h.Fake.Objects("Pod") {
		p := o.GetPod()
		if controllers.IsPodActive(p) {
			out[p.GetSpec().GetNodeName()] = append(out[p.GetSpec().GetNodeName()], p.GetSpec().GetContainers()[0].GetImage())
		}
	}
	return out
}

func makeReady(t *testing.T, h *controllertest.Harness) {
	t.Helper()
	for _, o := range h.Fake.Objects("Pod") {
		if controllers.IsPodReady(o.GetPod()) {
			continue
		}
		if err := h.Fake.Mutate("Pod", "default", o.Meta().GetName(), func(o *pb.Object) {
			p := o.GetPod()
			p.Status.Phase = "Running"
			p.Status.Conditions = append(p.Status.Conditions, &pb.PodCondition{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.New(h.Clock.Now())})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestShouldRun(t *testing.T) {
	pod := &pb.Pod{Spec: &pb.PodSpec{NodeSelector: worker}}
	pod.Spec.Tolerations = DaemonTolerations(pod.Spec)
	cordoned := node("n", worker, true).GetNode()
	cordoned.Spec.Unschedulable = true
	tests := []struct {
		name           string
		node           *pb.Node
		run, continue_ bool
	}{
		{"fits", node("n", worker, true).GetNode(), true, true},
		{"selector does not match", node("n", nil, true).GetNode(), false, false},
		{"not ready: no new pod, the old one stays", node("n", worker, false).GetNode(), false, true},
		{"unreachable taint is tolerated", node("n", worker, true, &pb.Taint{Key: taintUnreachable, Effect: "NoExecute"}).GetNode(), true, true},
		{"cordoned: daemon pods go anyway", cordoned, true, true},
		{"untolerated NoSchedule", node("n", worker, true, &pb.Taint{Key: "dedicated", Value: "db", Effect: "NoSchedule"}).GetNode(), false, true},
		{"untolerated NoExecute", node("n", worker, true, &pb.Taint{Key: "dedicated", Value: "db", Effect: "NoExecute"}).GetNode(), false, false},
		{"PreferNoSchedule ignored", node("n", worker, true, &pb.Taint{Key: "dedicated", Effect: "PreferNoSchedule"}).GetNode(), true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run, cont := ShouldRun(pod, tc.node)
			if run != tc.run || cont != tc.continue_ {
				t.Errorf("ShouldRun = %v, %v; want %v, %v", run, cont, tc.run, tc.continue_)
			}
		})
	}
}

func TestOnePodPerMatchingNode(t *testing.T) {
	h, c := start(t,
		daemonSet("agent", "agent:v1", nil),
		node("n1", worker, true), node("n2", worker, true), node("other", nil, true), node("sick", worker, false),
	)
	h.Reconcile(c, "default/agent")
	expect(t, h, "create Pod default/agent-00001", "create Pod default/agent-00002")
	if got := podsByNode(h); len(got) != 2 || len(got["n1"]) != 1 || len(got["n2"]) != 1 {
		t.Fatalf("pods by node = %v", got)
	}
	p := h.Fake.Get("Pod", "default", "agent-00001").GetPod()
	if p.GetMetadata().GetLabels()[RevisionHashLabel] == "" || len(p.GetSpec().GetTolerations()) < 6 {
		t.Errorf("pod = %v, want the hash label and the daemon tolerations", p)
	}
	if ref := controllers.ControllerOf(p.GetMetadata()); ref.GetKind() != "DaemonSet" {
		t.Errorf("owner = %v", ref)
	}
	st := h.Fake.Get("DaemonSet", "default", "agent").GetDaemonSet().GetStatus()
	if st.GetDesiredNumberScheduled() != 2 || st.GetNumberUnavailable() != 2 || st.GetObservedGeneration() != 1 {
		t.Errorf("status = %v", st)
	}

	// Running and ready: the status says so.
	makeReady(t, h)
	h.Reconcile(c, "default/agent")
	expect(t, h)
	st = h.Fake.Get("DaemonSet", "default", "agent").GetDaemonSet().GetStatus()
	if st.GetCurrentNumberScheduled() != 2 || st.GetNumberReady() != 2 || st.GetNumberAvailable() != 2 || st.GetUpdatedNumberScheduled() != 2 || st.GetNumberUnavailable() != 0 {
		t.Errorf("status = %v", st)
	}
}

func TestFollowsNodes(t *testing.T) {
	h, c := start(t, daemonSet("agent", "agent:v1", nil), node("n1", worker, true))
	h.Reconcile(c, "default/agent")
	h.Fake.ClearActions()

	h.Fake.Add(node("n2", worker, true))
	h.Reconcile(c, "default/agent")
	expect(t, h, "create Pod default/agent-00002")

	// n1 loses the label: its pod goes; n2 leaves: its pod goes.
	if err := h.Fake.Mutate("Node", "", "n1", func(o *pb.Object) { o.Meta().Labels = nil }); err != nil {
		t.Fatal(err)
	}
	h.Fake.Remove("Node", "", "n2")
	h.Reconcile(c, "default/agent")
	expect(t, h, "delete Pod default/agent-00001", "delete Pod default/agent-00002")
}

func TestFailedPodIsReplaced(t *testing.T) {
	h, c := start(t, daemonSet("agent", "agent:v1", nil), node("n1", worker, true))
	h.Reconcile(c, "default/agent")
	h.Fake.ClearActions()
	if err := h.Fake.Mutate("Pod", "default", "agent-00001", func(o *pb.Object) { o.GetPod().Status.Phase = "Failed" }); err != nil {
		t.Fatal(err)
	}
	h.Reconcile(c, "default/agent")
	expect(t, h, "delete Pod default/agent-00001")
	h.Reconcile(c, "default/agent")
	expect(t, h, "create Pod default/agent-00002")
}

func setImage(t *testing.T, h *controllertest.Harness, image string) {
	t.Helper()
	if err := h.Fake.Mutate("DaemonSet", "default", "agent", func(o *pb.Object) {
		o.GetDaemonSet().Spec.Template.Spec.Containers[0].Image = image
		o.Meta().Generation++
	}); err != nil {
		t.Fatal(err)
	}
}

func TestRollingUpdateMaxUnavailable(t *testing.T) {
	h, c := start(t, daemonSet("agent", "agent:v1", &pb.DaemonSetUpdateStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDaemonSet{MaxUnavailable: "1"}}),
		node("n1", worker, true), node("n2", worker, true), node("n3", worker, true))
	h.Reconcile(c, "default/agent")
	makeReady(t, h)
	h.Reconcile(c, "default/agent")
	h.Fake.ClearActions()

	setImage(t, h, "agent:v2")
	h.Reconcile(c, "default/agent")
	expect(t, h, "delete Pod default/agent-00001")
	h.Reconcile(c, "default/agent")
	expect(t, h, "create Pod default/agent-00004")
	// The new pod is not ready yet: nothing else goes.
	h.Reconcile(c, "default/agent")
	expect(t, h)
	makeReady(t, h)
	h.Reconcile(c, "default/agent")
	expect(t, h, "delete Pod default/agent-00002")
}

func TestRollingUpdateMaxSurge(t *testing.T) {
	h, c := start(t, daemonSet("agent", "agent:v1", &pb.DaemonSetUpdateStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDaemonSet{MaxUnavailable: "0", MaxSurge: "1"}}),
		node("n1", worker, true), node("n2", worker, true))
	h.Reconcile(c, "default/agent")
	makeReady(t, h)
	h.Reconcile(c, "default/agent")
	h.Fake.ClearActions()

	setImage(t, h, "agent:v2")
	h.Reconcile(c, "default/agent")
	expect(t, h, "create Pod default/agent-00003")
	if got := podsByNode(h)["n1"]; !slices.Equal(got, []string{"agent:v1", "agent:v2"}) {
		t.Fatalf("n1 runs %v, want the old and the new pod side by side", got)
	}
	makeReady(t, h)
	h.Reconcile(c, "default/agent")
	expect(t, h, "delete Pod default/agent-00001", "create Pod default/agent-00004")
}

func TestOnDeleteDoesNotReplace(t *testing.T) {
	h, c := start(t, daemonSet("agent", "agent:v1", &pb.DaemonSetUpdateStrategy{Type: "OnDelete"}), node("n1", worker, true))
	h.Reconcile(c, "default/agent")
	makeReady(t, h)
	h.Reconcile(c, "default/agent")
	h.Fake.ClearActions()
	setImage(t, h, "agent:v2")
	h.Reconcile(c, "default/agent")
	expect(t, h)
	if st := h.Fake.Get("DaemonSet", "default", "agent").GetDaemonSet().GetStatus(); st.GetUpdatedNumberScheduled() != 0 {
		t.Errorf("updated = %d, want 0", st.GetUpdatedNumberScheduled())
	}
}

// TestRollingUpdateUnderTheLoop runs the controller with a fake kubelet
// and checks in every state of the store that at most maxUnavailable nodes
// lack a ready pod once the DaemonSet has rolled out.
func TestRollingUpdateUnderTheLoop(t *testing.T) {
	nodes := []*pb.Object{daemonSet("agent", "agent:v1", &pb.DaemonSetUpdateStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDaemonSet{MaxUnavailable: "2"}})}
	for i := range 6 {
		nodes = append(nodes, node(fmt.Sprintf("n%d", i), worker, true))
	}
	h := controllertest.NewHarness(t, nodes...)
	c, err := New(h.Env(Name), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var kubelets sync.WaitGroup
	h.Informers.For("Pod").AddHandler(controllers.HandlerFuncs{AddFunc: func(o *pb.Object) {
		name := o.Meta().GetName()
		kubelets.Go(func() {
			_ = h.Fake.Mutate("Pod", "default", name, func(o *pb.Object) {
				p := o.GetPod()
				p.Status.Phase = "Running"
				p.Status.Conditions = append(p.Status.Conditions, &pb.PodCondition{Type: "Ready", Status: "True"})
			})
		})
	}})
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; kubelets.Wait() })

	rolledOut := func(image string) func() bool {
		return func() bool {
			got := podsByNode(h)
			if len(got) != 6 {
				return false
			}
			for _, images := range got {
				if !slices.Equal(images, []string{image}) {
					return false
				}
			}
			st := h.Fake.Get("DaemonSet", "default", "agent").GetDaemonSet().GetStatus()
			return st.GetNumberAvailable() == 6 && st.GetUpdatedNumberScheduled() == 6
		}
	}
	h.Eventually(rolledOut("agent:v1"), "agent:v1 on every node")

	var mu sync.Mutex
	var violations []string
	h.Fake.Observe(func(ev *pb.WatchEvent, objects func(string) []*pb.Object) {
		ready := map[string]bool{}
		for _, o := range objects("Pod") {
			if p := o.GetPod(); controllers.IsPodActive(p) && controllers.IsPodReady(p) {
				ready[p.GetSpec().GetNodeName()] = true
			}
		}
		if len(ready) < 4 {
			mu.Lock()
			violations = append(violations, fmt.Sprintf("rv %d: only %d nodes with a ready pod", ev.GetResourceVersion(), len(ready)))
			mu.Unlock()
		}
	})
	setImage(t, h, "agent:v2")
	h.Eventually(rolledOut("agent:v2"), "agent:v2 on every node")
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Errorf("unavailability bound broken:\n%s", strings.Join(violations[:min(len(violations), 5)], "\n"))
	}
}

// TestStatusCountsOldestPod: during a surge a node's old pod is what it
// serves with, as Kubernetes counts it; the node counts as updated once the
// old pod is gone, and the controller looks again when the new pod becomes
// available.
func TestStatusCountsOldestPod(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ds := daemonSet("agent", "agent:v2", &pb.DaemonSetUpdateStrategy{Type: "RollingUpdate",
		RollingUpdate: &pb.RollingUpdateDaemonSet{MaxUnavailable: "0", MaxSurge: "1"}}).GetDaemonSet()
	ds.Spec.MinReadySeconds = 10
	nodes := []*pb.Node{node("n1", worker, true).GetNode(), node("n2", worker, true).GetNode()}
	pod := func(name, nodeName, hash string, created, readySince time.Duration) *pb.Pod {
		p := &pb.Pod{
			Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: timestamppb.New(now.Add(created)),
				Labels: map[string]string{"app": "agent", RevisionHashLabel: hash}},
			Spec:   &pb.PodSpec{NodeName: nodeName, Containers: []*pb.Container{{Name: "agent", Image: "agent:" + hash}}},
			Status: &pb.PodStatus{Phase: "Running"},
		}
		if readySince > 0 {
			p.Status.Conditions = []*pb.PodCondition{{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.New(now.Add(-readySince))}}
		}
		return p
	}
	old1 := pod("agent-old1", "n1", "v1", -time.Hour, time.Hour)
	old2 := pod("agent-old2", "n2", "v1", -time.Hour, time.Hour)

	for _, tc := range []struct {
		name                      string
		pods                      []*pb.Pod
		ready, available, updated int32
		requeue                   time.Duration
	}{
		{"new pod not ready yet", []*pb.Pod{old1, old2, pod("agent-new1", "n1", "v2", -time.Minute, 0)}, 2, 2, 0, 0},
		{"new pod ready, not yet available", []*pb.Pod{old1, old2, pod("agent-new1", "n1", "v2", -time.Minute, 3*time.Second)}, 2, 2, 0, 7 * time.Second},
		{"old pod gone", []*pb.Pod{old2, pod("agent-new1", "n1", "v2", -time.Minute, time.Minute)}, 2, 2, 1, 0},
		{"new pod alone, not yet available", []*pb.Pod{old2, pod("agent-new1", "n1", "v2", -time.Minute, 4*time.Second)}, 2, 1, 1, 6 * time.Second},
		// Rolled back during a surge: the node's oldest pod is of the
		// current template again.
		{"current template's pod is the oldest", []*pb.Pod{old2, pod("agent-new1", "n1", "v2", -2*time.Hour, time.Hour), pod("agent-v1", "n1", "v1", -time.Minute, time.Minute)}, 2, 2, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := MakePlan(ds, nodes, tc.pods, "v2", now)
			if err != nil {
				t.Fatal(err)
			}
			st := p.Status
			if st.GetDesiredNumberScheduled() != 2 || st.GetCurrentNumberScheduled() != 2 || st.GetNumberReady() != tc.ready ||
				st.GetNumberAvailable() != tc.available || st.GetUpdatedNumberScheduled() != tc.updated {
				t.Errorf("status = desired %d current %d ready %d available %d updated %d; want 2 2 %d %d %d",
					st.GetDesiredNumberScheduled(), st.GetCurrentNumberScheduled(), st.GetNumberReady(), st.GetNumberAvailable(),
					st.GetUpdatedNumberScheduled(), tc.ready, tc.available, tc.updated)
			}
			if p.RequeueAfter != tc.requeue {
				t.Errorf("requeue after %v, want %v", p.RequeueAfter, tc.requeue)
			}
		})
	}
}
