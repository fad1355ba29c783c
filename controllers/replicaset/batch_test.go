package replicaset

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// batching wraps the Harness's Fake as a Cluster that takes batch writes
// (as the leader's does: one Raft entry, each item applied alone) and
// records their sizes.
type batching struct {
	*controllertest.Fake
	mu      sync.Mutex
	creates []int // size of each CreateBatch call
	deletes []int
}

func (b *batching) CreateBatch(ctx context.Context, objs []*pb.Object) ([]*pb.BatchResult, error) {
	b.mu.Lock()
	b.creates = append(b.creates, len(objs))
	b.mu.Unlock()
	out := make([]*pb.BatchResult, len(objs))
	for i, o := range objs {
		stored, err := b.Fake.Create(ctx, o)
		st := status.Convert(err)
		out[i] = &pb.BatchResult{Code: int32(st.Code()), Message: st.Message(), Object: stored}
	}
	return out, nil
}

func (b *batching) DeleteBatch(ctx context.Context, ops []*pb.DeleteOp) ([]*pb.BatchResult, error) {
	b.mu.Lock()
	b.deletes = append(b.deletes, len(ops))
	b.mu.Unlock()
	out := make([]*pb.BatchResult, len(ops))
	for i, op := range ops {
		st := status.Convert(b.Fake.Delete(ctx, op))
		out[i] = &pb.BatchResult{Code: int32(st.Code()), Message: st.Message()}
	}
	return out, nil
}

func (b *batching) sizes() (creates, deletes []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.creates...), append([]int(nil), b.deletes...)
}

func newBatchingController(t *testing.T, h *controllertest.Harness) (*Controller, *batching) {
	t.Helper()
	b := &batching{Fake: h.Fake}
	env := h.Env(Name)
	env.Cluster = b
	c, err := New(env, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	c.suffix = func() string {
		mu.Lock()
		defer mu.Unlock()
		n++
		return fmt.Sprintf("%05d", n)
	}
	h.Start()
	return c, b
}

func podNames(h *controllertest.Harness) map[string]bool {
	out := map[string]bool{}
	for _, o := range h.Fake.Objects("Pod") {
		out[o.Meta().GetName()] = true
	}
	return out
}

func TestCreatesPodsInSlowStartBatches(t *testing.T) {
	h := controllertest.NewHarness(t, pb.Wrap(newRS("web", 100)))
	c, b := newBatchingController(t, h)
	h.Reconcile(c, "default/web")

	creates, _ := b.sizes()
	if want := []int{1, 2, 4, 8, 16, 32, 37}; fmt.Sprint(creates) != fmt.Sprint(want) {
		t.Errorf("batch create sizes = %v, want %v (100 pods in 7 writes)", creates, want)
	}
	for _, a := range actions(h) {
		if strings.HasPrefix(a, "create") && !strings.HasPrefix(a, "create Pod default/web-") {
			t.Errorf("unexpected create %q", a)
		}
	}
	if names := podNames(h); len(names) != 100 {
		t.Fatalf("%d distinct pods, want 100", len(names))
	}
	for _, o := range h.Fake.Objects("Pod") {
		if ref := controllers.ControllerOf(o.Meta()); ref.GetName() != "web" || o.GetPod().GetSpec().GetContainers()[0].GetImage() != "nginx" {
			t.Fatalf("pod %s not made from the template: %v", o.Meta().GetName(), o)
		}
	}

	// Once the cache shows them, the expectations are met, and reconciling
	// again creates nothing more and reports 100 replicas.
	h.WaitForCache()
	h.Eventually(func() bool { ok, _ := c.expectations.Satisfied("default/web"); return ok }, "expectations to be satisfied")
	h.Fake.ClearActions()
	h.Reconcile(c, "default/web")
	if creates2, _ := b.sizes(); len(creates2) != len(creates) {
		t.Errorf("second reconcile created more: %v", creates2)
	}
	if st := status_(h, "web"); st.GetReplicas() != 100 {
		t.Errorf("status replicas = %d, want 100", st.GetReplicas())
	}
}

// A create that fails inside a batch ends the slow start after that batch:
// the others of the batch exist, nothing more is attempted, the expectation
// of the failed pod is dropped (the ReplicaSet does not wait for it), and
// the next reconcile makes up the difference.
func TestCreateFailureInsideABatch(t *testing.T) {
	h := controllertest.NewHarness(t, pb.Wrap(newRS("web", 10)))
	c, b := newBatchingController(t, h)
	quota := status.Error(codes.ResourceExhausted, "exceeded quota: pods")
	failing := true
	var mu sync.Mutex
	h.Fake.PrependReactor(func(a controllertest.Action) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if failing && a.Verb == "create" && a.Name == "web-00005" {
			return true, quota
		}
		return false, nil
	})
	_, err := c.Reconcile(h.Context(), "default/web")
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("reconcile = %v, want the quota error", err)
	}
	creates, _ := b.sizes()
	if fmt.Sprint(creates) != "[1 2 4]" {
		t.Errorf("batch sizes = %v, want [1 2 4]: stop after the batch that failed", creates)
	}
	names := podNames(h)
	if len(names) != 6 || names["web-00005"] {
		t.Errorf("pods = %v, want 6 without web-00005", names)
	}
	h.WaitForCache()
	h.Eventually(func() bool { ok, _ := c.expectations.Satisfied("default/web"); return ok }, "expectations to be satisfied without the failed pod")
	conds := status_(h, "web").GetConditions()
	if len(conds) != 1 || conds[0].GetReason() != "FailedCreate" || !strings.Contains(conds[0].GetMessage(), "quota") {
		t.Errorf("conditions = %v, want ReplicaFailure/FailedCreate", conds)
	}
	var warned bool
	for _, e := range h.Recorder.Events() {
		warned = warned || strings.Contains(e, "FailedCreate")
	}
	if !warned {
		t.Errorf("no FailedCreate event: %q", h.Recorder.Events())
	}

	mu.Lock()
	failing = false
	mu.Unlock()
	h.Reconcile(c, "default/web")
	if creates, _ := b.sizes(); fmt.Sprint(creates) != "[1 2 4 1 2 1]" {
		t.Errorf("batch sizes = %v, want the 4 missing as [1 2 1] after [1 2 4]", creates)
	}
	if names := podNames(h); len(names) != 10 {
		t.Errorf("%d pods, want 10", len(names))
	}
	h.WaitForCache()
	h.Reconcile(c, "default/web")
	if conds := status_(h, "web").GetConditions(); len(conds) != 0 {
		t.Errorf("conditions = %v, want ReplicaFailure cleared", conds)
	}
}

func TestDeletesSurplusInOneBatch(t *testing.T) {
	rs := newRS("web", 2)
	h := controllertest.NewHarness(t, pb.Wrap(rs))
	for i := range 7 {
		h.Fake.Add(newPod(h, fmt.Sprintf("p%d", i), rs, 0))
	}
	c, b := newBatchingController(t, h)
	h.Reconcile(c, "default/web")
	if _, deletes := b.sizes(); fmt.Sprint(deletes) != "[5]" {
		t.Errorf("batch deletes = %v, want one of 5", deletes)
	}
	if n := len(h.Fake.Objects("Pod")); n != 2 {
		t.Errorf("%d pods left, want 2", n)
	}
	h.WaitForCache()
	h.Eventually(func() bool { ok, _ := c.expectations.Satisfied("default/web"); return ok }, "delete expectations to be satisfied")
}
