package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func runSchedulerB(b *testing.B, h *controllertest.Harness) *Scheduler {
	b.Helper()
	s, err := New(h.Env(Name), DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	b.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

// runScheduler starts a Scheduler over h and stops it when the test ends.
func runScheduler(t *testing.T, h *controllertest.Harness, cfg Config) *Scheduler {
	t.Helper()
	return runSchedulerEnv(t, h, h.Env(Name), cfg)
}

func runSchedulerEnv(t *testing.T, h *controllertest.Harness, env controllers.Env, cfg Config) *Scheduler {
	t.Helper()
	s, err := New(env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

func objs[T pb.Resource](items ...T) []*pb.Object {
	out := make([]*pb.Object, len(items))
	for i, it := range items {
		out[i] = pb.Wrap(it)
	}
	return out
}

func boundTo(h *controllertest.Harness) map[string]string {
	out := map[string]string{}
	for _, o := range h.Fake.Objects("Pod") {
		out[o.Meta().GetName()] = o.GetPod().GetSpec().GetNodeName()
	}
	return out
}

func allBound(h *controllertest.Harness) func() bool {
	return func() bool {
		for _, n := range boundTo(h) {
			if n == "" {
				return false
			}
		}
		return true
	}
}

func TestSchedulerBindsPendingPodsInOneBatch(t *testing.T) {
	var items []*pb.Object
	items = append(items, objs(node("n1", "4", "8Gi"), node("n2", "4", "8Gi"), node("n3", "4", "8Gi"))...)
	for i := range 6 {
		items = append(items, pb.Wrap(pod(fmt.Sprintf("p%d", i), "500m", "1Gi", ownedBy("rs-1"))))
	}
	h := controllertest.NewHarness(t, items...)
	runScheduler(t, h, DefaultConfig())
	h.Eventually(allBound(h), "every pod to be bound")

	perNode := map[string]int{}
	for _, n := range boundTo(h) {
		perNode[n]++
	}
	if perNode["n1"] != 2 || perNode["n2"] != 2 || perNode["n3"] != 2 {
		t.Errorf("pods per node = %v, want 2 each (spread)", perNode)
	}
	var binds []string
	for _, a := range h.Fake.Actions() {
		if a.Verb == "bind" {
			binds = append(binds, a.String())
		}
	}
	if len(binds) != 1 {
		t.Errorf("bind calls = %q, want one batch", binds)
	}
	h.Eventually(func() bool {
		n := 0
		for _, e := range h.Recorder.Events() {
			if strings.Contains(e, "Scheduled: Successfully assigned default/p") {
				n++
			}
		}
		return n == 6
	}, "a Scheduled event per pod")
}

// The search over a large cluster goes on across batches where the last
// one stopped (Policy.PercentageOfNodesToScore): of three pods created one
// after another, the third finds the only empty node, past the first two
// windows of 420 nodes.
func TestSchedulerSearchContinuesAcrossBatches(t *testing.T) {
	var items []*pb.Object
	for i := range 1000 {
		name := fmt.Sprintf("n%04d", i)
		items = append(items, pb.Wrap(node(name, "8", "16Gi")))
		if i != 900 {
			busy := pod("busy-"+name, "2", "4Gi")
			busy.Spec.NodeName = name
			items = append(items, pb.Wrap(busy))
		}
	}
	h := controllertest.NewHarness(t, items...)
	runScheduler(t, h, DefaultConfig())
	for i, onEmpty := range []bool{false, false, true} {
		name := fmt.Sprintf("p%d", i)
		h.Fake.Add(pb.Wrap(pod(name, "100m", "128Mi")))
		h.Eventually(func() bool { return boundTo(h)[name] != "" }, name+" to be bound")
		if got := boundTo(h)[name]; (got == "n0900") != onEmpty {
			t.Errorf("%s bound to %s; on the empty node n0900: %v, want %v", name, got, got == "n0900", onEmpty)
		}
	}
}

func TestSchedulerReportsUnschedulableAndRetriesWhenANodeAppears(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("small", "1", "1Gi"), node("tainted", "8", "8Gi", taint("dedicated", "db", "NoSchedule")))...)
	h.Fake.Add(pb.Wrap(pod("big", "2", "2Gi")))
	runScheduler(t, h, DefaultConfig())

	want := "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: db}."
	h.Eventually(func() bool {
		c := controllers.PodCondition(h.Fake.Get("Pod", "default", "big").GetPod(), "PodScheduled")
		return c.GetStatus() == "False" && c.GetReason() == "Unschedulable" && c.GetMessage() == want
	}, "PodScheduled=False with the reason")
	h.Eventually(func() bool {
		for _, e := range h.Recorder.Events() {
			if e == "Warning Pod default/big FailedScheduling: "+want {
				return true
			}
		}
		return false
	}, "a FailedScheduling event")

	h.Fake.Add(pb.Wrap(node("large", "8", "16Gi")))
	h.Eventually(func() bool { return boundTo(h)["big"] == "large" }, "the pod to be bound to the new node")
	c := controllers.PodCondition(h.Fake.Get("Pod", "default", "big").GetPod(), "PodScheduled")
	if c.GetStatus() != "True" {
		t.Errorf("PodScheduled = %v, want True", c)
	}
}

func TestSchedulerRetriesWhenAPodIsDeleted(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"))...)
	running := pod("running", "800m", "", nil...)
	running.Spec.NodeName = "n1"
	h.Fake.Add(pb.Wrap(running))
	h.Fake.Add(pb.Wrap(pod("waiting", "500m", "")))
	runScheduler(t, h, DefaultConfig())
	h.Eventually(func() bool {
		return controllers.PodCondition(h.Fake.Get("Pod", "default", "waiting").GetPod(), "PodScheduled").GetStatus() == "False"
	}, "the pod to be unschedulable")
	h.Fake.Remove("Pod", "default", "running")
	h.Eventually(func() bool { return boundTo(h)["waiting"] == "n1" }, "the pod to be bound once room is made")
}

// A pod that finishes frees its node, a pod bound meanwhile by someone else
// takes room, and a deleted node takes no more pods: the scheduler's cache
// follows each event.
func TestSchedulerFollowsBoundPodsAndNodes(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"), node("gone", "8", "16Gi"))...)
	running := pod("running", "800m", "")
	running.Spec.NodeName, running.Status.Phase = "n1", "Running"
	h.Fake.Add(pb.Wrap(running))
	s := runScheduler(t, h, DefaultConfig())
	h.Fake.Remove("Node", "", "gone")
	h.Eventually(func() bool { return s.nodes.HandledResourceVersion() >= h.Fake.KindVersion("Node") }, "the node's deletion to be handled")

	h.Fake.Add(pb.Wrap(pod("waiting", "500m", "")))
	h.Eventually(func() bool {
		return controllers.PodCondition(h.Fake.Get("Pod", "default", "waiting").GetPod(), "PodScheduled").GetStatus() == "False"
	}, "the pod to be unschedulable, with n1 full and the big node gone")
	if n := boundTo(h)["waiting"]; n != "" {
		t.Fatalf("waiting bound to %q, want unbound", n)
	}

	if err := h.Fake.Mutate("Pod", "default", "running", func(o *pb.Object) { o.GetPod().Status.Phase = "Succeeded" }); err != nil {
		t.Fatal(err)
	}
	h.Eventually(func() bool { return boundTo(h)["waiting"] == "n1" }, "the pod to be bound once the running one finished")

	// Bound by another scheduler: it counts on n1 all the same.
	other := pod("other", "500m", "")
	other.Spec.NodeName, other.Spec.SchedulerName = "n1", "custom"
	h.Fake.Add(pb.Wrap(other))
	h.Eventually(func() bool { return s.pods.HandledResourceVersion() >= h.Fake.KindVersion("Pod") }, "the bound pod to be handled")
	h.Fake.Add(pb.Wrap(pod("late", "100m", "")))
	h.Eventually(func() bool {
		return controllers.PodCondition(h.Fake.Get("Pod", "default", "late").GetPod(), "PodScheduled").GetStatus() == "False"
	}, "the late pod to be unschedulable: n1 holds 1000m of 1000m")
}

func TestSchedulerAccountsPodsBoundInTheSameBatch(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"))...)
	for i := range 3 {
		h.Fake.Add(pb.Wrap(pod(fmt.Sprintf("p%d", i), "400m", "")))
	}
	runScheduler(t, h, DefaultConfig())
	h.Eventually(func() bool {
		b := boundTo(h)
		n := 0
		for _, node := range b {
			if node == "n1" {
				n++
			}
		}
		return n == 2
	}, "two pods bound")
	h.Eventually(func() bool {
		for _, o := range h.Fake.Objects("Pod") {
			c := controllers.PodCondition(o.GetPod(), "PodScheduled")
			if c.GetStatus() == "False" && c.GetMessage() == "0/1 nodes are available: 1 Insufficient cpu." {
				return true
			}
		}
		return false
	}, "the third pod to be unschedulable for cpu")
}

// staleBinder changes each pod just before its first bind reaches the
// store, so the bind's resourceVersion precondition fails.
type staleBinder struct {
	controllers.Cluster
	fake *controllertest.Fake
	mu   sync.Mutex
	done map[string]bool
}

func (s *staleBinder) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	s.mu.Lock()
	for _, b := range binds {
		if !s.done[b.GetName()] {
			s.done[b.GetName()] = true
			s.fake.Mutate("Pod", b.GetNamespace(), b.GetName(), func(o *pb.Object) { o.Meta().Labels = map[string]string{"touched": "yes"} })
		}
	}
	s.mu.Unlock()
	return s.Cluster.Bind(ctx, binds)
}

func TestSchedulerRetriesABindOnAStaleView(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "4", "8Gi"))...)
	h.Fake.Add(pb.Wrap(pod("p", "100m", "")))
	env := h.Env(Name)
	env.Cluster = &staleBinder{Cluster: h.Fake, fake: h.Fake, done: map[string]bool{}}
	runSchedulerEnv(t, h, env, DefaultConfig())
	h.Eventually(func() bool { return boundTo(h)["p"] == "n1" }, "the pod to be bound after a stale bind")
	var binds []string
	for _, a := range h.Fake.Actions() {
		if a.Verb == "bind" {
			binds = append(binds, a.String())
		}
	}
	// The stale bind, then retries until the cache has the news.
	if len(binds) < 2 {
		t.Errorf("binds = %q, want the stale one and a retry", binds)
	}
}

func TestSchedulerRetriesAFailedBind(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "4", "8Gi"))...)
	h.Fake.Add(pb.Wrap(pod("p", "100m", "")))
	var once sync.Once
	h.Fake.PrependReactor(func(a controllertest.Action) (bool, error) {
		handled := false
		if a.Verb == "bind" {
			once.Do(func() { handled = true })
		}
		if handled {
			return true, status.Error(codes.Unavailable, "no leader")
		}
		return false, nil
	})
	runScheduler(t, h, DefaultConfig())
	h.Eventually(func() bool { return boundTo(h)["p"] == "n1" }, "the pod to be bound after a failed bind")

	// A bind on a stale resourceVersion fails alone and is retried.
	h.Fake.Add(pb.Wrap(pod("q", "100m", "")))
	h.Eventually(func() bool { return boundTo(h)["q"] == "n1" }, "the second pod to be bound")
}

func TestSchedulerSkipsOtherSchedulersAndBoundPods(t *testing.T) {
	other := pod("other", "", "")
	other.Spec.SchedulerName = "someone-else"
	h := controllertest.NewHarness(t, objs(node("n1", "4", "8Gi"))...)
	h.Fake.Add(pb.Wrap(other))
	h.Fake.Add(pb.Wrap(pod("mine", "", "")))
	runScheduler(t, h, DefaultConfig())
	h.Eventually(func() bool { return boundTo(h)["mine"] == "n1" }, "our pod bound")
	if n := boundTo(h)["other"]; n != "" {
		t.Errorf("pod for another scheduler bound to %q", n)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.BatchSize = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "BatchSize") {
		t.Errorf("Validate = %v, want an error naming BatchSize", err)
	}
}

// TestSchedulerRecordsReconcileMetrics: each batch is a reconcile in the
// controllers' metrics (a failed Bind an error), and pods are counted by
// outcome.
func TestSchedulerRecordsReconcileMetrics(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"))...)
	for i := range 3 {
		h.Fake.Add(pb.Wrap(pod(fmt.Sprintf("p%d", i), "400m", "")))
	}
	var once sync.Once
	h.Fake.PrependReactor(func(a controllertest.Action) (bool, error) {
		failed := false
		if a.Verb == "bind" {
			once.Do(func() { failed = true })
		}
		if failed {
			return true, status.Error(codes.Unavailable, "no leader")
		}
		return false, nil
	})
	registry := prometheus.NewRegistry()
	env, err := h.Env(Name).WithMetrics(registry)
	if err != nil {
		t.Fatal(err)
	}
	runSchedulerEnv(t, h, env, DefaultConfig())

	result := func(r string) map[string]string { return map[string]string{"controller": Name, "result": r} }
	ctl := map[string]string{"controller": Name}
	checks := []struct {
		name   string
		labels map[string]string
		min    float64
		what   string
	}{
		{"skiff_controller_objects_total", result("scheduled"), 2, "the two pods that fit"},
		// The failed batch, then the retry that bound both pods.
		{"skiff_controller_reconcile_duration_seconds", ctl, 2, "at least two batches"},
		{"skiff_controller_reconcile_errors_total", ctl, 1, "the failed bind"},
		{"skiff_controller_reconcile_total", result("error"), 1, "the failed bind"},
		{"skiff_controller_reconcile_total", result("success"), 1, "the batch that bound"},
		{"skiff_controller_objects_total", result("error"), 2, "the two pods of the failed bind"},
		{"skiff_controller_objects_total", result("unschedulable"), 1, "the pod that fits nowhere"},
		// The queue's own metrics go to the same registry.
		{"skiff_controller_queue_adds_total", ctl, 3, "the three pods"},
	}
	// Every batch is observed once its Bind returns, after its pods are
	// counted: poll until all are in.
	missing := func() []string {
		var out []string
		for _, c := range checks {
			if got := controllertest.Gathered(t, registry, c.name, c.labels); got < c.min {
				out = append(out, fmt.Sprintf("%s%v = %v, want at least %v (%s)", c.name, c.labels, got, c.min, c.what))
			}
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(missing()) > 0 && time.Now().Before(deadline) {
		<-tick.C
	}
	for _, m := range missing() {
		t.Error(m)
	}
	if n := controllertest.Gathered(t, registry, "skiff_controller_objects_total", result("scheduled")); n != 2 {
		t.Errorf("objects_total{result=scheduled} = %v, want 2", n)
	}
}
