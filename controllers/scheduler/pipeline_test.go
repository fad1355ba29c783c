package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// gatedBinder holds every Bind until the test releases it, so that several
// batches are in flight at once; it records each call's pods and the most
// calls seen in flight together.
type gatedBinder struct {
	controllers.Cluster
	release chan struct{}

	mu          sync.Mutex
	calls       [][]string
	inFlight    int
	maxInFlight int
	// reject, when set, answers a bind of that pod with Aborted (a
	// precondition failure) without applying it.
	reject map[string]bool
}

func newGatedBinder(c controllers.Cluster) *gatedBinder {
	return &gatedBinder{Cluster: c, release: make(chan struct{}), reject: map[string]bool{}}
}

func (g *gatedBinder) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	var names []string
	for _, b := range binds {
		names = append(names, b.GetName())
	}
	g.mu.Lock()
	g.calls = append(g.calls, names)
	g.inFlight++
	g.maxInFlight = max(g.maxInFlight, g.inFlight)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inFlight--
		g.mu.Unlock()
	}()
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([]*pb.BatchResult, len(binds))
	var pass []*pb.BindOp
	var at []int
	g.mu.Lock()
	for i, b := range binds {
		if g.reject[b.GetName()] {
			delete(g.reject, b.GetName())
			out[i] = &pb.BatchResult{Code: int32(codes.Aborted), Message: "resourceVersion precondition failed"}
			continue
		}
		pass, at = append(pass, b), append(at, i)
	}
	g.mu.Unlock()
	if len(pass) > 0 {
		res, err := g.Cluster.Bind(ctx, pass)
		if err != nil {
			return nil, err
		}
		for j, i := range at {
			out[i] = res[j]
		}
	}
	return out, nil
}

func (g *gatedBinder) snapshot() (calls [][]string, inFlight, maxInFlight int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]string(nil), g.calls...), g.inFlight, g.maxInFlight
}

func unschedulable(h *controllertest.Harness, name string) bool {
	o := h.Fake.Get("Pod", "default", name)
	return controllers.PodCondition(o.GetPod(), "PodScheduled").GetStatus() == "False"
}

// The next batch is placed while the previous one's Bind is in flight, and
// counts its pods: a node with room for one pod gets exactly one of two
// pods placed in two pipelined batches.
func TestPipelinedBatchesDoNotOvercommit(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"))...)
	h.Fake.Add(pb.Wrap(pod("p1", "800m", "")))
	g := newGatedBinder(h.Fake)
	env := h.Env(Name)
	env.Cluster = g
	runSchedulerEnv(t, h, env, DefaultConfig())

	h.Eventually(func() bool { calls, _, _ := g.snapshot(); return len(calls) == 1 }, "the first batch's bind to be in flight")
	// A second pod arrives while p1's bind is held: it is placed in a
	// batch of its own, against a snapshot that has p1 assumed on n1.
	h.Fake.Add(pb.Wrap(pod("p2", "800m", "")))
	h.Eventually(func() bool { return unschedulable(h, "p2") }, "p2 to be found unschedulable while p1's bind is in flight")
	if calls, inFlight, _ := g.snapshot(); len(calls) != 1 || inFlight != 1 {
		t.Fatalf("binds = %v (in flight %d), want only p1's, still held", calls, inFlight)
	}
	close(g.release)
	h.Eventually(func() bool { return boundTo(h)["p1"] == "n1" }, "p1 bound")
	if got := boundTo(h)["p2"]; got != "" {
		t.Errorf("p2 bound to %q: node overcommitted", got)
	}
	msg := controllers.PodCondition(h.Fake.Get("Pod", "default", "p2").GetPod(), "PodScheduled").GetMessage()
	if msg != "0/1 nodes are available: 1 Insufficient cpu." {
		t.Errorf("p2's message = %q", msg)
	}
}

// Several binds run at once, each batch placed while the earlier ones are
// in flight, and pods spread as if bound one after another.
func TestBindsArePipelined(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"), node("n2", "1", "4Gi"), node("n3", "1", "4Gi"))...)
	g := newGatedBinder(h.Fake)
	env := h.Env(Name)
	env.Cluster = g
	cfg := DefaultConfig()
	cfg.BindsInFlight = 3
	runSchedulerEnv(t, h, env, cfg)
	for i := range 3 {
		h.Fake.Add(pb.Wrap(pod(fmt.Sprintf("p%d", i), "800m", "")))
		h.Eventually(func() bool { calls, _, _ := g.snapshot(); return len(calls) == i+1 }, fmt.Sprintf("bind %d to be in flight", i+1))
	}
	// A fourth waits for a free slot: all three are busy.
	h.Fake.Add(pb.Wrap(pod("p3", "800m", "")))
	if _, inFlight, maxInFlight := g.snapshot(); inFlight != 3 || maxInFlight != 3 {
		t.Fatalf("in flight = %d (max %d), want 3", inFlight, maxInFlight)
	}
	close(g.release)
	h.Eventually(func() bool {
		b := boundTo(h)
		return b["p0"] != "" && b["p1"] != "" && b["p2"] != ""
	}, "three pods bound")
	h.Eventually(func() bool { return unschedulable(h, "p3") }, "the fourth pod to find no room")
	seen := map[string]bool{}
	for _, n := range boundTo(h) {
		if n != "" && seen[n] {
			t.Errorf("two pods on %s: %v", n, boundTo(h))
		}
		seen[n] = true
	}
	if _, _, maxInFlight := g.snapshot(); maxInFlight > cfg.BindsInFlight {
		t.Errorf("%d binds in flight, more than BindsInFlight %d", maxInFlight, cfg.BindsInFlight)
	}
}

// A bind that fails its precondition un-assumes the pod (its node's room
// is free again for it) and queues it again; it is then bound.
func TestFailedBindUnassumesAndRequeues(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"))...)
	h.Fake.Add(pb.Wrap(pod("p1", "800m", "")))
	g := newGatedBinder(h.Fake)
	g.reject["p1"] = true
	close(g.release)
	env := h.Env(Name)
	env.Cluster = g
	s := runSchedulerEnv(t, h, env, DefaultConfig())
	h.Eventually(func() bool { return boundTo(h)["p1"] == "n1" }, "p1 bound after its failed bind")
	calls, _, _ := g.snapshot()
	if len(calls) < 2 {
		t.Errorf("binds = %v, want the rejected one and a retry", calls)
	}
	if unschedulable(h, "p1") {
		t.Error("p1 was marked unschedulable: its own failed assumption still held its node")
	}
	// Once the cache shows the binding the assumption is gone.
	h.Eventually(func() bool { return !s.isAssumed("default/p1", "uid-p1") }, "the assumption to be dropped")
}

// A Bind that fails as a whole (no leader) un-assumes every pod of it.
func TestWholeBindFailureUnassumes(t *testing.T) {
	h := controllertest.NewHarness(t, objs(node("n1", "1", "4Gi"))...)
	h.Fake.Add(pb.Wrap(pod("p1", "800m", "")))
	var mu sync.Mutex
	fail := true
	h.Fake.PrependReactor(func(a controllertest.Action) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if a.Verb == "bind" && fail {
			fail = false
			return true, status.Error(codes.Unavailable, "not applied: no leader")
		}
		return false, nil
	})
	runScheduler(t, h, DefaultConfig())
	h.Eventually(func() bool { return boundTo(h)["p1"] == "n1" }, "p1 bound after a failed Bind")
}

func TestBindsInFlightValidated(t *testing.T) {
	c := DefaultConfig()
	c.BindsInFlight = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "BindsInFlight") {
		t.Errorf("Validate = %v, want an error naming BindsInFlight", err)
	}
}

// BenchmarkPipelinedBinds streams 5,000 pods (in chunks of 50) to a
// scheduler whose Binds take 5 ms, as a Raft round trip does, with one
// Bind at a time versus three: how much of the bind latency pipelining
// hides.
func BenchmarkPipelinedBinds(b *testing.B) {
	for _, inFlight := range []int{1, 3} {
		b.Run(fmt.Sprintf("inflight=%d", inFlight), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				var items []*pb.Object
				for i := range 1000 {
					items = append(items, pb.Wrap(node(fmt.Sprintf("node-%04d", i), "64", "256Gi")))
				}
				h := controllertest.NewHarness(b, items...)
				env := h.Env(Name)
				env.Cluster = slowBinder{h.Fake, 5 * time.Millisecond}
				cfg := DefaultConfig()
				cfg.BindsInFlight = inFlight
				s, err := New(env, cfg)
				if err != nil {
					b.Fatal(err)
				}
				h.Start()
				ctx, cancel := context.WithCancel(h.Context())
				var wg sync.WaitGroup
				b.StartTimer()
				wg.Go(func() { s.Run(ctx) })
				for c := range 100 {
					for i := range 50 {
						h.Fake.Add(pb.Wrap(pod(fmt.Sprintf("p%05d", c*50+i), "100m", "128Mi", ownedBy(fmt.Sprintf("rs-%d", c)))))
					}
				}
				h.Eventually(func() bool {
					for _, o := range h.Fake.Objects("Pod") {
						if o.GetPod().GetSpec().GetNodeName() == "" {
							return false
						}
					}
					return true
				}, "all pods bound")
				cancel()
				wg.Wait()
			}
		})
	}
}

// slowBinder adds a fixed latency to each Bind (a benchmark's stand-in for
// the Raft round trip; not used for synchronisation).
type slowBinder struct {
	controllers.Cluster
	latency time.Duration
}

func (s slowBinder) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Cluster.Bind(ctx, binds)
}
