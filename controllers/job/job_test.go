package job

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func ptr[T any](v T) *T { return &v }

// newJob is a Job as the store holds it: defaulted after its uid was set,
// so it has the generated selector and template labels.
func newJob(name string, completions, parallelism *int32, backoff int32) *pb.Object {
	j := &pb.Job{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name, Generation: 1},
		Spec: &pb.JobSpec{
			Completions: completions, Parallelism: parallelism, BackoffLimit: &backoff,
			Template: &pb.PodTemplateSpec{Spec: &pb.PodSpec{
				RestartPolicy: "Never",
				Containers:    []*pb.Container{{Name: "work", Image: "busybox"}},
			}},
		},
		Status: &pb.JobStatus{},
	}
	o := pb.Wrap(j)
	pb.SetDefaults(o)
	return o
}

func testConfig() Config {
	c := DefaultConfig()
	c.BackoffBase = 0
	return c
}

func start(t *testing.T, cfg Config, objs ...*pb.Object) (*controllertest.Harness, *Controller) {
	t.Helper()
	h := controllertest.NewHarness(t, objs...)
	c, err := New(h.Env(Name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	c.suffix = func() string { return fmt.Sprintf("%05d", n.Add(1)) }
	h.Start()
	return h, c
}

func expect(t *testing.T, h *controllertest.Harness, want ...string) {
	t.Helper()
	if got := h.Fake.ActionStrings("Event"); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	h.Fake.ClearActions()
}

func finish(t *testing.T, h *controllertest.Harness, name, phase string) {
	t.Helper()
	if err := h.Fake.Mutate("Pod", "default", name, func(o *pb.Object) {
		p := o.GetPod()
		p.Spec.NodeName = "n1"
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []*pb.ContainerStatus{{Name: "work", State: &pb.ContainerState{Terminated: &pb.ContainerStateTerminated{
			FinishedAt: timestamppb.New(h.Clock.Now()),
		}}}}
	}); err != nil {
		t.Fatal(err)
	}
}

func jobStatus(h *controllertest.Harness, name string) *pb.JobStatus {
	return h.Fake.Get("Job", "default", name).GetJob().GetStatus()
}

func condition(st *pb.JobStatus, typ string) *pb.WorkloadCondition {
	for _, c := range st.GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

func TestCompletionsWithParallelism(t *testing.T) {
	h, c := start(t, testConfig(), newJob("pi", ptr(int32(3)), ptr(int32(2)), 6))
	h.Reconcile(c, "default/pi")
	expect(t, h, "create Pod default/pi-00001", "create Pod default/pi-00002", "updateStatus Job default/pi")
	p := h.Fake.Get("Pod", "default", "pi-00001").GetPod()
	if ref := controllers.ControllerOf(p.GetMetadata()); ref.GetKind() != "Job" || ref.GetUid() != "uid-pi" {
		t.Errorf("owner = %v", ref)
	}
	if !slices.Contains(p.GetMetadata().GetFinalizers(), TrackingFinalizer) || p.GetMetadata().GetLabels()[pb.JobControllerUIDLabel] != "uid-pi" {
		t.Errorf("pod metadata = %v", p.GetMetadata())
	}
	if st := jobStatus(h, "pi"); st.GetActive() != 2 || st.GetStartTime() == nil {
		t.Errorf("status = %v, want 2 active and a startTime", st)
	}

	finish(t, h, "pi-00001", "Succeeded")
	finish(t, h, "pi-00002", "Succeeded")
	h.Reconcile(c, "default/pi")
	expect(t, h, "create Pod default/pi-00003", "updateStatus Job default/pi")
	if st := jobStatus(h, "pi"); st.GetSucceeded() != 2 || st.GetActive() != 1 {
		t.Errorf("status = %v, want 2 succeeded, 1 active", st)
	}

	finish(t, h, "pi-00003", "Succeeded")
	h.Reconcile(c, "default/pi")
	expect(t, h, "updateStatus Job default/pi", "update Pod default/pi-00001", "update Pod default/pi-00002", "update Pod default/pi-00003")
	st := jobStatus(h, "pi")
	if cond := condition(st, ConditionComplete); cond.GetStatus() != "True" || cond.GetReason() != ReasonCompletionsReached || st.GetCompletionTime() == nil || st.GetSucceeded() != 3 || st.GetActive() != 0 {
		t.Errorf("status = %v, want Complete with 3 succeeded", st)
	}
	for _, o := range h.Fake.Objects("Pod") {
		if slices.Contains(o.Meta().GetFinalizers(), TrackingFinalizer) {
			t.Errorf("pod %s still tracked after the Job finished", o.Meta().GetName())
		}
	}
	// Finished: nothing more happens.
	h.Reconcile(c, "default/pi")
	expect(t, h)
}

func TestBackoffLimit(t *testing.T) {
	h, c := start(t, testConfig(), newJob("flaky", ptr(int32(1)), ptr(int32(2)), 1))
	h.Reconcile(c, "default/flaky")
	expect(t, h, "create Pod default/flaky-00001", "updateStatus Job default/flaky")
	finish(t, h, "flaky-00001", "Failed")
	h.Reconcile(c, "default/flaky")
	expect(t, h, "create Pod default/flaky-00002", "updateStatus Job default/flaky")
	finish(t, h, "flaky-00002", "Failed")
	h.Reconcile(c, "default/flaky")
	expect(t, h, "updateStatus Job default/flaky", "update Pod default/flaky-00001", "update Pod default/flaky-00002")
	st := jobStatus(h, "flaky")
	if cond := condition(st, ConditionFailed); cond.GetReason() != ReasonBackoffLimitExceeded || st.GetFailed() != 2 || st.GetCompletionTime() != nil {
		t.Errorf("status = %v, want Failed/BackoffLimitExceeded with 2 failed", st)
	}
}

func TestFailedPodsAreReplacedAfterABackoff(t *testing.T) {
	cfg := testConfig()
	cfg.BackoffBase = 10 * time.Second
	h, c := start(t, cfg, newJob("flaky", ptr(int32(1)), nil, 6))
	h.Reconcile(c, "default/flaky")
	expect(t, h, "create Pod default/flaky-00001", "updateStatus Job default/flaky")
	finish(t, h, "flaky-00001", "Failed")
	res := h.Reconcile(c, "default/flaky")
	expect(t, h, "updateStatus Job default/flaky")
	if res.RequeueAfter != 10*time.Second {
		t.Fatalf("RequeueAfter = %s, want 10s", res.RequeueAfter)
	}
	h.Clock.Step(10 * time.Second)
	h.Reconcile(c, "default/flaky")
	expect(t, h, "create Pod default/flaky-00002", "updateStatus Job default/flaky")
}

func TestActiveDeadline(t *testing.T) {
	j := newJob("slow", ptr(int32(1)), nil, 6)
	j.GetJob().Spec.ActiveDeadlineSeconds = ptr(int64(60))
	h, c := start(t, testConfig(), j)
	res := h.Reconcile(c, "default/slow")
	expect(t, h, "create Pod default/slow-00001", "updateStatus Job default/slow")
	if res.RequeueAfter != time.Minute {
		t.Fatalf("RequeueAfter = %s, want 1m", res.RequeueAfter)
	}
	h.Clock.Step(time.Minute)
	h.Reconcile(c, "default/slow")
	expect(t, h, "updateStatus Job default/slow", "update Pod default/slow-00001", "delete Pod default/slow-00001")
	if cond := condition(jobStatus(h, "slow"), ConditionFailed); cond.GetReason() != ReasonDeadlineExceeded {
		t.Errorf("Failed condition = %v", cond)
	}
}

// TestWorkQueue: without completions, the Job is done when one pod
// succeeded and none is left running; no new pods start after a success.
func TestWorkQueue(t *testing.T) {
	h, c := start(t, testConfig(), newJob("queue", nil, ptr(int32(3)), 6))
	h.Reconcile(c, "default/queue")
	expect(t, h, "create Pod default/queue-00001", "create Pod default/queue-00002", "create Pod default/queue-00003", "updateStatus Job default/queue")
	finish(t, h, "queue-00002", "Succeeded")
	h.Reconcile(c, "default/queue")
	expect(t, h, "updateStatus Job default/queue")
	if condition(jobStatus(h, "queue"), ConditionComplete) != nil {
		t.Fatal("complete while pods still run")
	}
	finish(t, h, "queue-00001", "Succeeded")
	finish(t, h, "queue-00003", "Succeeded")
	h.Reconcile(c, "default/queue")
	if cond := condition(jobStatus(h, "queue"), ConditionComplete); cond.GetStatus() != "True" || jobStatus(h, "queue").GetSucceeded() != 3 {
		t.Errorf("status = %v", jobStatus(h, "queue"))
	}
}

func TestParallelismDown(t *testing.T) {
	h, c := start(t, testConfig(), newJob("pi", ptr(int32(10)), ptr(int32(3)), 6))
	h.Reconcile(c, "default/pi")
	expect(t, h, "create Pod default/pi-00001", "create Pod default/pi-00002", "create Pod default/pi-00003", "updateStatus Job default/pi")
	finish(t, h, "pi-00001", "Running")
	if err := h.Fake.Mutate("Job", "default", "pi", func(o *pb.Object) { o.GetJob().Spec.Parallelism = ptr(int32(1)) }); err != nil {
		t.Fatal(err)
	}
	h.Reconcile(c, "default/pi")
	expect(t, h, "delete Pod default/pi-00003", "delete Pod default/pi-00002", "updateStatus Job default/pi")
}

// TestCountsSurviveDeletion: a finished pod deleted before its Job is done
// stays (its finalizer holds it) and keeps counting.
func TestCountsSurviveDeletion(t *testing.T) {
	h, c := start(t, testConfig(), newJob("pi", ptr(int32(2)), ptr(int32(1)), 6))
	h.Reconcile(c, "default/pi")
	h.Fake.ClearActions()
	finish(t, h, "pi-00001", "Succeeded")
	if err := h.Fake.Delete(h.Context(), &pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "pi-00001"}); err != nil {
		t.Fatal(err)
	}
	h.Fake.ClearActions()
	h.Reconcile(c, "default/pi")
	expect(t, h, "create Pod default/pi-00002", "updateStatus Job default/pi")
	if st := jobStatus(h, "pi"); st.GetSucceeded() != 1 {
		t.Errorf("succeeded = %d, want 1", st.GetSucceeded())
	}
}

func TestDeletedJobReleasesItsPods(t *testing.T) {
	h, c := start(t, testConfig(), newJob("pi", ptr(int32(2)), ptr(int32(2)), 6))
	h.Reconcile(c, "default/pi")
	h.Fake.ClearActions()
	h.Fake.Remove("Job", "default", "pi")
	h.Reconcile(c, "default/pi")
	expect(t, h, "update Pod default/pi-00001", "update Pod default/pi-00002")
}

func TestTTLAfterFinished(t *testing.T) {
	j := newJob("pi", ptr(int32(1)), nil, 6)
	j.GetJob().Spec.TtlSecondsAfterFinished = ptr(int32(30))
	h, c := start(t, testConfig(), j)
	h.Reconcile(c, "default/pi")
	finish(t, h, "pi-00001", "Succeeded")
	h.Fake.ClearActions()
	res := h.Reconcile(c, "default/pi")
	expect(t, h, "updateStatus Job default/pi", "update Pod default/pi-00001")
	if res.RequeueAfter != 30*time.Second {
		t.Fatalf("RequeueAfter = %s, want 30s", res.RequeueAfter)
	}
	h.Clock.Step(30 * time.Second)
	h.Reconcile(c, "default/pi")
	expect(t, h, "delete Job default/pi")
	if d := h.Fake.Actions(); len(d) != 0 {
		t.Fatal(d)
	}
}

func TestAdoptsMatchingOrphans(t *testing.T) {
	stray := pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Name: "stray", Namespace: "default", Labels: map[string]string{pb.JobControllerUIDLabel: "uid-pi"}},
		Spec:     &pb.PodSpec{NodeName: "n1"},
		Status:   &pb.PodStatus{Phase: "Running"},
	})
	h, c := start(t, testConfig(), newJob("pi", ptr(int32(1)), nil, 6), stray)
	h.Reconcile(c, "default/pi")
	expect(t, h, "update Pod default/stray", "updateStatus Job default/pi")
	if ref := controllers.ControllerOf(h.Fake.Get("Pod", "default", "stray").Meta()); ref.GetUid() != "uid-pi" {
		t.Errorf("owner = %v", ref)
	}
}
