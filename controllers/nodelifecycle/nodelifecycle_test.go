package nodelifecycle

import (
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

func node(name, ready string, taints ...*pb.Taint) *pb.Object {
	n := &pb.Node{Metadata: &pb.ObjectMeta{Name: name}, Spec: &pb.NodeSpec{Taints: taints}, Status: &pb.NodeStatus{}}
	if ready != "" {
		n.Status.Conditions = []*pb.NodeCondition{{Type: "Ready", Status: ready}}
	}
	return pb.Wrap(n)
}

func taint(key, effect string, added time.Time) *pb.Taint {
	t := &pb.Taint{Key: key, Effect: effect}
	if !added.IsZero() {
		t.TimeAdded = timestamppb.New(added)
	}
	return t
}

type podOpt func(*pb.Pod)

func pod(name, nodeName string, opts ...podOpt) *pb.Object {
	p := &pb.Pod{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name},
		Spec:     &pb.PodSpec{NodeName: nodeName},
		Status: &pb.PodStatus{Phase: "Running", Conditions: []*pb.PodCondition{
			{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.New(controllertest.Epoch.Add(-time.Hour))},
		}},
	}
	for _, o := range opts {
		o(p)
	}
	return pb.Wrap(p)
}

func tolerating(key string, seconds *int64) podOpt {
	return func(p *pb.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, &pb.Toleration{Key: key, Operator: "Exists", Effect: NoExecute, TolerationSeconds: seconds})
	}
}

func deletingAt(at time.Time) podOpt {
	return func(p *pb.Pod) {
		p.Metadata.DeletionTimestamp = timestamppb.New(at)
		p.Metadata.DeletionGracePeriodSeconds = ptr(int64(30))
	}
}

func testConfig() Config {
	return Config{DefaultTolerationSeconds: 30, StartupGracePeriod: 10 * time.Second}
}

func start(t *testing.T, objs ...*pb.Object) (*controllertest.Harness, *Controller) {
	t.Helper()
	h := controllertest.NewHarness(t, objs...)
	c, err := New(h.Env(Name), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	return h, c
}

func actions(h *controllertest.Harness) []string { return h.Fake.ActionStrings("Event") }

func expect(t *testing.T, h *controllertest.Harness, want ...string) {
	t.Helper()
	if got := actions(h); !slices.Equal(got, want) {
		t.Fatalf("actions:\n got %q\nwant %q", got, want)
	}
	h.Fake.ClearActions()
}

func TestPlanTaints(t *testing.T) {
	now := controllertest.Epoch
	earlier := now.Add(-time.Hour)
	user := taint("dedicated", NoSchedule, time.Time{})
	tests := []struct {
		name    string
		node    *pb.Object
		unsched bool
		want    []string
		changed bool
	}{
		{"ready: none", node("n", "True"), false, nil, false},
		{"never reported: none", node("n", ""), false, nil, false},
		{"not ready", node("n", "False"), false, []string{TaintNotReady + ":NoSchedule", TaintNotReady + ":NoExecute"}, true},
		{"unreachable", node("n", "Unknown"), false, []string{TaintUnreachable + ":NoSchedule", TaintUnreachable + ":NoExecute"}, true},
		{"not ready turns unreachable", node("n", "Unknown", taint(TaintNotReady, NoSchedule, time.Time{}), taint(TaintNotReady, NoExecute, earlier)), false,
			[]string{TaintUnreachable + ":NoSchedule", TaintUnreachable + ":NoExecute"}, true},
		{"ready again keeps the user's taints", node("n", "True", user, taint(TaintUnreachable, NoExecute, earlier)), false, []string{"dedicated:NoSchedule"}, true},
		{"already right", node("n", "False", user, taint(TaintNotReady, NoSchedule, time.Time{}), taint(TaintNotReady, NoExecute, earlier)), false,
			[]string{"dedicated:NoSchedule", TaintNotReady + ":NoSchedule", TaintNotReady + ":NoExecute"}, false},
		{"cordoned", node("n", "True"), true, []string{TaintUnschedulable + ":NoSchedule"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.node.GetNode()
			n.Spec.Unschedulable = tc.unsched
			got, changed := PlanTaints(n, now)
			if s := taintStrings(got); !slices.Equal(s, tc.want) || changed != tc.changed {
				t.Fatalf("PlanTaints = %q, %v; want %q, %v", s, changed, tc.want, tc.changed)
			}
			for _, ta := range got {
				switch {
				case ta.GetEffect() == NoExecute && ta.GetTimeAdded() == nil:
					t.Errorf("%s:%s without timeAdded", ta.GetKey(), ta.GetEffect())
				case ta.GetKey() == TaintNotReady && ta.GetEffect() == NoExecute && !tc.changed && !ta.GetTimeAdded().AsTime().Equal(earlier):
					t.Errorf("timeAdded of a kept taint changed: %v", ta.GetTimeAdded().AsTime())
				}
			}
		})
	}
}

func TestEvictionDelay(t *testing.T) {
	nr := []*pb.Taint{taint(TaintNotReady, NoExecute, time.Time{})}
	tests := []struct {
		name    string
		taints  []*pb.Taint
		tols    []*pb.Toleration
		delay   time.Duration
		forever bool
	}{
		{"default tolerations", nr, DefaultTolerations(nil, 300), 300 * time.Second, false},
		{"own toleration wins over the default", nr, DefaultTolerations([]*pb.Toleration{{Key: TaintNotReady, Operator: "Exists", Effect: NoExecute, TolerationSeconds: ptr(int64(5))}}, 300), 5 * time.Second, false},
		{"tolerates forever", nr, []*pb.Toleration{{Operator: "Exists"}}, 0, true},
		{"untolerated user taint", append(nr, taint("dedicated", NoExecute, time.Time{})), DefaultTolerations(nil, 300), 0, false},
		{"negative seconds mean now", nr, []*pb.Toleration{{Key: TaintNotReady, Operator: "Exists", TolerationSeconds: ptr(int64(-5))}}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, f := EvictionDelay(tc.taints, tc.tols)
			if d != tc.delay || f != tc.forever {
				t.Errorf("EvictionDelay = %s, %v; want %s, %v", d, f, tc.delay, tc.forever)
			}
		})
	}
}

// TestNotReadyNode: taints first, pods marked not ready, evictions only
// once both the startup grace period and the tolerations have run out.
func TestNotReadyNode(t *testing.T) {
	h, c := start(t,
		node("n1", "False"), node("n2", "True"),
		pod("plain", "n1"),
		pod("short", "n1", tolerating(TaintNotReady, ptr(int64(5)))),
		pod("daemon", "n1", tolerating("", nil)),
		pod("elsewhere", "n2"),
		pod("done", "n1", func(p *pb.Pod) { p.Status.Phase = "Succeeded"; p.Status.Conditions = nil }),
	)
	res := h.Reconcile(c, "n1")
	expect(t, h, "update Node n1", "updateStatus Pod default/daemon", "updateStatus Pod default/plain", "updateStatus Pod default/short")
	if got := taintStrings(h.Fake.Get("Node", "", "n1").GetNode().GetSpec().GetTaints()); !slices.Equal(got, []string{TaintNotReady + ":NoSchedule", TaintNotReady + ":NoExecute"}) {
		t.Fatalf("taints = %q", got)
	}
	if controllers.IsPodReady(h.Fake.Get("Pod", "default", "plain").GetPod()) {
		t.Error("pod on a not-ready node still Ready")
	}
	// short tolerates 5 s, but nothing goes during the 10 s grace period.
	if res.RequeueAfter != 10*time.Second {
		t.Errorf("RequeueAfter = %s, want 10s", res.RequeueAfter)
	}

	h.Clock.Step(10 * time.Second)
	res = h.Reconcile(c, "n1")
	expect(t, h, "delete Pod default/short")
	if res.RequeueAfter != 20*time.Second {
		t.Errorf("RequeueAfter = %s, want 20s (default toleration of 30s)", res.RequeueAfter)
	}
	h.Clock.Step(20 * time.Second)
	h.Reconcile(c, "n1")
	expect(t, h, "delete Pod default/plain")
	if d := h.Fake.Get("Pod", "default", "daemon"); d == nil {
		t.Error("a pod tolerating the taint forever was evicted")
	}
	if ev := h.Recorder.Events(); !slices.ContainsFunc(ev, func(s string) bool { return strings.Contains(s, "TaintManagerEviction") }) {
		t.Errorf("no eviction event in %q", ev)
	}

	// Ready again: taints go, nothing else happens.
	if err := h.Fake.Mutate("Node", "", "n1", func(o *pb.Object) { o.GetNode().Status.Conditions[0].Status = "True" }); err != nil {
		t.Fatal(err)
	}
	h.Reconcile(c, "n1")
	expect(t, h, "update Node n1")
	if ts := h.Fake.Get("Node", "", "n1").GetNode().GetSpec().GetTaints(); len(ts) != 0 {
		t.Errorf("taints left: %v", ts)
	}
}

// TestNewLeaderGivesAFreshGracePeriod: taints added long ago by an earlier
// leader do not make a new one evict at once.
func TestNewLeaderGivesAFreshGracePeriod(t *testing.T) {
	long := controllertest.Epoch.Add(-time.Hour)
	h, c := start(t,
		node("n1", "Unknown", taint(TaintUnreachable, NoSchedule, time.Time{}), taint(TaintUnreachable, NoExecute, long)),
		node("n2", "True"),
		pod("plain", "n1", func(p *pb.Pod) { p.Status.Conditions = nil }),
	)
	res := h.Reconcile(c, "n1")
	expect(t, h)
	if res.RequeueAfter != 10*time.Second {
		t.Fatalf("RequeueAfter = %s, want the 10s grace period", res.RequeueAfter)
	}
	h.Clock.Step(10 * time.Second)
	h.Reconcile(c, "n1")
	expect(t, h, "delete Pod default/plain")
}

// TestForceDeletesOnDeadNodes: a deleted pod on an unreachable node is
// finished with grace 0 once its grace period is over; on a Ready node its
// worker does that.
func TestForceDeletesOnDeadNodes(t *testing.T) {
	h, c := start(t,
		node("dead", "Unknown", taint(TaintUnreachable, NoSchedule, time.Time{}), taint(TaintUnreachable, NoExecute, controllertest.Epoch)),
		node("alive", "True"),
		pod("stuck", "dead", deletingAt(controllertest.Epoch.Add(20*time.Second)), func(p *pb.Pod) { p.Status.Conditions = nil }),
		pod("stopping", "alive", deletingAt(controllertest.Epoch)),
	)
	res := h.Reconcile(c, "dead")
	h.Reconcile(c, "alive")
	expect(t, h)
	if res.RequeueAfter != 20*time.Second {
		t.Fatalf("RequeueAfter = %s, want 20s (the pod's grace period)", res.RequeueAfter)
	}
	h.Clock.Step(20 * time.Second)
	h.Reconcile(c, "dead")
	h.Reconcile(c, "alive")
	expect(t, h, "delete Pod default/stuck")
	if d := h.Fake.Actions(); len(d) > 0 {
		t.Fatalf("unexpected %v", d)
	}
	if h.Fake.Get("Pod", "default", "stuck") != nil {
		t.Error("force-deleted pod still stored")
	}
}

func TestNoEvictionsWhenNoNodeIsReady(t *testing.T) {
	h, c := start(t,
		node("n1", "Unknown", taint(TaintUnreachable, NoSchedule, time.Time{}), taint(TaintUnreachable, NoExecute, controllertest.Epoch)),
		node("n2", "Unknown", taint(TaintUnreachable, NoSchedule, time.Time{}), taint(TaintUnreachable, NoExecute, controllertest.Epoch)),
		pod("a", "n1", func(p *pb.Pod) { p.Status.Conditions = nil }),
	)
	h.Clock.Step(time.Hour)
	if res := h.Reconcile(c, "n1"); res.RequeueAfter <= 0 {
		t.Errorf("RequeueAfter = %s, want a later look", res.RequeueAfter)
	}
	expect(t, h)
	// One node comes back: a fresh grace period, then evictions resume.
	if err := h.Fake.Mutate("Node", "", "n2", func(o *pb.Object) { o.GetNode().Status.Conditions[0].Status = "True" }); err != nil {
		t.Fatal(err)
	}
	h.Reconcile(c, "n1")
	expect(t, h)
	h.Clock.Step(10 * time.Second)
	h.Reconcile(c, "n1")
	expect(t, h, "delete Pod default/a")
}

func TestPodsOfMissingNodes(t *testing.T) {
	h, c := start(t, node("n1", "True"), pod("lost", "gone"), pod("fine", "n1"))
	res := h.Reconcile(c, "gone")
	expect(t, h)
	if res.RequeueAfter != 10*time.Second {
		t.Fatalf("RequeueAfter = %s", res.RequeueAfter)
	}
	h.Clock.Step(10 * time.Second)
	h.Reconcile(c, "gone")
	if g := h.Fake.AllActions(); !slices.ContainsFunc(g, func(a controllertest.Action) bool { return a.Verb == "list" && a.Kind == "Node" }) {
		t.Error("no live check that the node is gone")
	}
	expect(t, h, "delete Pod default/lost")
	if h.Fake.Get("Pod", "default", "fine") == nil {
		t.Error("a pod of an existing node was deleted")
	}
}
