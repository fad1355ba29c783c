package server

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers/nodelifecycle"
	pb "github.com/skiff-sh/skiff/proto"
)

// Integration tests of the leader-run controllers against real in-process
// masters. There are no workers: Node objects are created by the test, and
// a hollow worker (ctlWorker) plays the part of the workers' pod sync
// loops through the API, as the hollow runtime would.

// ctlConfigs returns configs for n masters with the node lifecycle
// timeouts shortened for tests.
func ctlConfigs(t *testing.T, n int) []Config {
	t.Helper()
	cfgs := testConfigs(t, n, n)
	for i := range cfgs {
		if n == 1 {
			cfgs[i].Join = nil
		}
		cfgs[i].ControllerConfig.NodeLifecycle = nodelifecycle.Config{DefaultTolerationSeconds: 2, StartupGracePeriod: time.Second}
		cfgs[i].ControllerConfig.Job.BackoffBase = 0
	}
	return cfgs
}

func ctlNode(name, cpu string, labels map[string]string) *pb.Object {
	return pb.Wrap(&pb.Node{
		Metadata: &pb.ObjectMeta{Name: name, Labels: labels},
		Status: &pb.NodeStatus{
			Capacity:    map[string]string{"cpu": cpu, "memory": "8Gi", "pods": "110"},
			Allocatable: map[string]string{"cpu": cpu, "memory": "8Gi", "pods": "110"},
			Conditions:  []*pb.NodeCondition{{Type: "Ready", Status: "True", LastHeartbeatTime: timestamppb.Now()}},
		},
	})
}

// ctlAddNode registers a Ready node, as a worker would.
func ctlAddNode(t *testing.T, c pb.ClusterClient, n *pb.Object) {
	t.Helper()
	if _, err := c.Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: n}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateStatus(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: n}); err != nil {
		t.Fatal(err)
	}
}

// ctlModify reads an object, changes it and writes it back (spec or status),
// retrying on conflicts.
func ctlModify(t *testing.T, c pb.ClusterClient, kind, ns, name string, statusOnly bool, fn func(o *pb.Object)) *pb.Object {
	t.Helper()
	for range 20 {
		got, err := c.Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: kind, Namespace: ns, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		o := got.GetObject()
		fn(o)
		var resp *pb.WriteResponse
		if statusOnly {
			resp, err = c.UpdateStatus(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: o})
		} else {
			resp, err = c.Update(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: o})
		}
		if status.Code(err) == codes.Aborted {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetObject()
	}
	t.Fatalf("%s %s/%s: too many conflicts", kind, ns, name)
	return nil
}

func ctlSetNodeReady(t *testing.T, c pb.ClusterClient, name, ready string) {
	t.Helper()
	ctlModify(t, c, "Node", "", name, true, func(o *pb.Object) {
		for _, cond := range o.GetNode().GetStatus().GetConditions() {
			if cond.GetType() == "Ready" {
				cond.Status = ready
				cond.LastTransitionTime = timestamppb.Now()
			}
		}
	})
}

// ctlWorker plays the workers of some nodes: it starts every pod bound
// to them (Running and Ready, or straight to Succeeded for pods that
// finish), finishes the deletion of their pods as a worker confirms a
// stopped pod, and posts their heartbeats (Ready=True, as a worker does).
type ctlWorker struct {
	t *testing.T
	c pb.ClusterClient

	// Set before start.
	// finish says which pods run to completion rather than forever.
	finish func(p *pb.Pod) bool
	// beat is how often heartbeats are posted.
	beat time.Duration

	mu    sync.Mutex
	nodes map[string]bool
}

// newCtlWorker returns a worker for nodes that is not running yet, so a
// test can set its fields first.
func newCtlWorker(t *testing.T, c pb.ClusterClient, nodes ...string) *ctlWorker {
	w := &ctlWorker{t: t, c: c, nodes: map[string]bool{}, finish: func(*pb.Pod) bool { return false }, beat: 5 * time.Second}
	for _, n := range nodes {
		w.nodes[n] = true
	}
	return w
}

func startCtlWorker(t *testing.T, c pb.ClusterClient, nodes ...string) *ctlWorker {
	return newCtlWorker(t, c, nodes...).start()
}

func (w *ctlWorker) start() *ctlWorker {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		lastBeat := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			w.sync(ctx)
			if time.Since(lastBeat) >= w.beat {
				w.heartbeat(ctx)
				lastBeat = time.Now()
			}
		}
	}()
	w.t.Cleanup(func() { cancel(); <-done })
	return w
}

// kill stops serving a node: its pods are left as they are and its
// heartbeats stop, like a dead worker's.
func (w *ctlWorker) kill(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.nodes, node)
}

// serve starts serving a node (a worker that joins).
func (w *ctlWorker) serve(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nodes[node] = true
}

func (w *ctlWorker) serves(node string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nodes[node]
}

func (w *ctlWorker) sync(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := pb.CollectList(w.c.List(rctx, &pb.ListRequest{Kind: "Pod"}))
	if err != nil {
		return // a leader change; the next round sees it
	}
	for _, o := range resp.GetItems() {
		p := o.GetPod()
		m := p.GetMetadata()
		if !w.serves(p.GetSpec().GetNodeName()) {
			continue
		}
		switch {
		case m.GetDeletionTimestamp() != nil:
			if m.DeletionGracePeriodSeconds != nil && m.GetDeletionGracePeriodSeconds() == 0 {
				continue // confirmed already, held by finalizers
			}
			zero := int64(0)
			_, _ = w.c.Delete(rctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), GracePeriodSeconds: &zero}})
		case p.GetStatus().GetPhase() == "Pending":
			next := o.Clone()
			st := next.GetPod().Status
			now := timestamppb.Now()
			st.StartTime = now
			st.Conditions = slices.DeleteFunc(st.Conditions, func(c *pb.PodCondition) bool { return c.GetType() == "Ready" })
			if w.finish(p) {
				st.Phase = "Succeeded"
				st.Conditions = append(st.Conditions, &pb.PodCondition{Type: "Ready", Status: "False", Reason: "PodCompleted", LastTransitionTime: now})
			} else {
				st.Phase = "Running"
				st.Conditions = append(st.Conditions, &pb.PodCondition{Type: "Ready", Status: "True", LastTransitionTime: now})
			}
			_, _ = w.c.UpdateStatus(rctx, &pb.WriteRequest{Object: next})
		}
	}
}

// heartbeat posts Ready=True with a fresh heartbeat time for every node
// served, keeping the transition time while it stays True.
func (w *ctlWorker) heartbeat(ctx context.Context) {
	w.mu.Lock()
	nodes := make([]string, 0, len(w.nodes))
	for n := range w.nodes {
		nodes = append(nodes, n)
	}
	w.mu.Unlock()
	for _, n := range nodes {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := w.c.Get(rctx, &pb.GetRequest{Kind: "Node", Name: n})
		if err == nil {
			o := got.GetObject()
			now := timestamppb.Now()
			for _, c := range o.GetNode().GetStatus().GetConditions() {
				if c.GetType() != "Ready" {
					continue
				}
				if c.GetStatus() != "True" {
					c.Status, c.Reason, c.Message, c.LastTransitionTime = "True", "KubeletReady", "", now
				}
				c.LastHeartbeatTime = now
			}
			_, _ = w.c.UpdateStatus(rctx, &pb.WriteRequest{Object: o})
		}
		cancel()
	}
}

func ctlListPods(t *testing.T, c pb.ClusterClient, ns, selector string) []*pb.Pod {
	t.Helper()
	resp, err := pb.CollectList(c.List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "Pod", Namespace: ns, LabelSelector: selector}))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*pb.Pod, 0, len(resp.GetItems()))
	for _, o := range resp.GetItems() {
		out = append(out, o.GetPod())
	}
	return out
}

func podActive(p *pb.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return p.GetMetadata().GetDeletionTimestamp() == nil && ph != "Succeeded" && ph != "Failed"
}

func podReady(p *pb.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

func ctlDeployment(ns, name string, replicas int32, image string) *pb.Object {
	labels := map[string]string{"app": name}
	grace := int64(1)
	return pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: ns},
		Spec: &pb.DeploymentSpec{
			Replicas: &replicas,
			Selector: &pb.LabelSelector{MatchLabels: labels},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: labels},
				Spec: &pb.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []*pb.Container{{
						Name: "app", Image: image,
						Resources: &pb.ResourceRequirements{Requests: map[string]string{"cpu": "100m", "memory": "64Mi"}},
					}},
				},
			},
		},
	})
}

func ctlCreate(t *testing.T, c pb.ClusterClient, o *pb.Object) *pb.Object {
	t.Helper()
	resp, err := c.Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: o})
	if err != nil {
		t.Fatalf("create %s %s: %v", o.KindName(), o.Meta().Key(), err)
	}
	return resp.GetObject()
}

// ctlRunningPods waits until the selector has want active, bound, ready pods.
func ctlRunningPods(t *testing.T, c pb.ClusterClient, ns, selector string, want int, timeout time.Duration) []*pb.Pod {
	t.Helper()
	var out []*pb.Pod
	eventually(t, timeout, fmt.Sprintf("%d running pods %s", want, selector), func() error {
		out = out[:0]
		for _, p := range ctlListPods(t, c, ns, selector) {
			if podActive(p) && p.GetSpec().GetNodeName() != "" && podReady(p) {
				out = append(out, p)
			}
		}
		if len(out) != want {
			return fmt.Errorf("%d running", len(out))
		}
		return nil
	})
	return out
}

// TestNamespaceDeletionLeavesNothing deletes a namespace full of objects
// and checks that every one of them, and then the namespace, is gone.
func TestNamespaceDeletionLeavesNothing(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ctlConfigs(t, 1)[0])
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("n1", "4", nil))
	startCtlWorker(t, c, "n1")

	ctlCreate(t, c, pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "team"}}))
	ctlCreate(t, c, ctlDeployment("team", "web", 3, "web:v1"))
	ctlCreate(t, c, pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "settings", Namespace: "team"}, Data: map[string]string{"a": "b"}}))
	ctlCreate(t, c, pb.Wrap(&pb.Secret{Metadata: &pb.ObjectMeta{Name: "token", Namespace: "team"}, StringData: map[string]string{"t": "x"}}))
	ctlCreate(t, c, pb.Wrap(&pb.Job{
		Metadata: &pb.ObjectMeta{Name: "forever", Namespace: "team"},
		Spec: &pb.JobSpec{Template: &pb.PodTemplateSpec{Spec: &pb.PodSpec{
			RestartPolicy: "Never", Containers: []*pb.Container{{Name: "c", Image: "busybox"}},
		}}},
	}))
	ctlRunningPods(t, c, "team", "app=web", 3, 20*time.Second)
	ctlRunningPods(t, c, "team", "batch.kubernetes.io/job-name=forever", 1, 20*time.Second)
	// A standalone pod too, and one in another namespace that must stay.
	ctlCreate(t, c, pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "lone", Namespace: "team"}, Spec: &pb.PodSpec{Containers: []*pb.Container{{Name: "c", Image: "busybox"}}}}))
	ctlCreate(t, c, pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "keep", Namespace: "default"}}))

	start := time.Now()
	if _, err := c.Delete(ctxT(t, 10*time.Second), &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Namespace", Name: "team"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "namespace team to be gone", func() error {
		_, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Namespace", Name: "team"})
		if status.Code(err) == codes.NotFound {
			return nil
		}
		var left []string
		for _, k := range pb.Kinds() {
			if !k.Namespaced {
				continue
			}
			resp, lerr := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: k.Kind, Namespace: "team"}))
			if lerr == nil && len(resp.GetItems()) > 0 {
				left = append(left, fmt.Sprintf("%d %s", len(resp.GetItems()), k.Plural))
			}
		}
		return fmt.Errorf("still there (err %v), holding %v", err, left)
	})
	t.Logf("namespace with %s gone in %s", "a deployment, a job, a pod, a configmap and a secret", time.Since(start).Round(time.Millisecond))
	for _, k := range pb.Kinds() {
		if !k.Namespaced {
			continue
		}
		resp, err := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: k.Kind, Namespace: "team"}))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.GetItems()); n != 0 {
			t.Errorf("%d %s left in the deleted namespace", n, k.Plural)
		}
	}
	if _, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "keep"}); err != nil {
		t.Errorf("another namespace's object: %v", err)
	}
}

// TestCascadingDeletion deletes Deployments with each propagation policy.
func TestCascadingDeletion(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ctlConfigs(t, 1)[0])
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("n1", "8", nil))
	startCtlWorker(t, c, "n1")

	for _, name := range []string{"bg", "orphan", "fg"} {
		ctlCreate(t, c, ctlDeployment("default", name, 2, "web:v1"))
	}
	for _, name := range []string{"bg", "orphan", "fg"} {
		ctlRunningPods(t, c, "default", "app="+name, 2, 20*time.Second)
	}
	count := func(kind, selector string) int {
		resp, err := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: kind, Namespace: "default", LabelSelector: selector}))
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetItems())
	}
	del := func(name, policy string) {
		if _, err := c.Delete(ctxT(t, 10*time.Second), &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Deployment", Namespace: "default", Name: name, PropagationPolicy: policy}}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("background", func(t *testing.T) {
		del("bg", "Background")
		eventually(t, 20*time.Second, "the ReplicaSet and pods to go", func() error {
			if rs, pods := count("ReplicaSet", "app=bg"), count("Pod", "app=bg"); rs+pods > 0 {
				return fmt.Errorf("%d replicasets, %d pods left", rs, pods)
			}
			return nil
		})
	})
	t.Run("orphan", func(t *testing.T) {
		del("orphan", "Orphan")
		eventually(t, 20*time.Second, "the Deployment to go", func() error {
			if n := count("Deployment", "app=orphan"); n > 0 {
				return fmt.Errorf("%d deployments", n)
			}
			_, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Deployment", Namespace: "default", Name: "orphan"})
			if status.Code(err) != codes.NotFound {
				return fmt.Errorf("get: %v", err)
			}
			return nil
		})
		resp, err := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: "ReplicaSet", Namespace: "default", LabelSelector: "app=orphan"}))
		if err != nil || len(resp.GetItems()) != 1 {
			t.Fatalf("replicasets: %v %v", resp, err)
		}
		if refs := resp.GetItems()[0].Meta().GetOwnerReferences(); len(refs) != 0 {
			t.Errorf("orphaned ReplicaSet still has owners %v", refs)
		}
		// Its pods stay and keep running.
		ctlRunningPods(t, c, "default", "app=orphan", 2, 10*time.Second)
	})
	t.Run("foreground", func(t *testing.T) {
		del("fg", "Foreground")
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Deployment", Namespace: "default", Name: "fg"})
		if err == nil && !slices.Contains(got.GetObject().Meta().GetFinalizers(), "foregroundDeletion") {
			t.Errorf("foreground deletion without the finalizer: %v", got.GetObject().Meta())
		}
		eventually(t, 20*time.Second, "everything to go", func() error {
			d, rs, pods := count("Deployment", "app=fg"), count("ReplicaSet", "app=fg"), count("Pod", "app=fg")
			_, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Deployment", Namespace: "default", Name: "fg"})
			if status.Code(err) != codes.NotFound || d+rs+pods > 0 {
				return fmt.Errorf("deployment: %v, %d replicasets, %d pods", err, rs, pods)
			}
			return nil
		})
	})
}

// TestNotReadyNodeGetsItsPodsReplaced kills the worker of a node: its
// heartbeats stop, the leader marks it Ready=Unknown after
// NodeMonitorGracePeriod, it gets tainted unreachable, its pods are marked
// not ready, evicted once the (short) toleration has run out and not
// before, force-deleted since nobody confirms them, and replaced on the
// other node within the toleration and some slack.
func TestNotReadyNodeGetsItsPodsReplaced(t *testing.T) {
	t.Parallel()
	cfg := ctlConfigs(t, 1)[0]
	cfg.NodeMonitorGracePeriod = 3 * time.Second
	// The leader notices a heartbeat that changed when it looks, at least
	// every NodeMonitorPeriod: a node goes Unknown between grace and
	// grace+period after its last heartbeat.
	cfg.NodeMonitorPeriod = 500 * time.Millisecond
	var (
		grace      = cfg.NodeMonitorGracePeriod
		period     = cfg.NodeMonitorPeriod
		toleration = time.Duration(cfg.ControllerConfig.NodeLifecycle.DefaultTolerationSeconds) * time.Second
		// slack is what a loaded 2-core CI machine running -race may add
		// to each step, well below the margins a bug would overshoot by.
		slack = 8 * time.Second
	)
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("n1", "4", nil))
	ctlAddNode(t, c, ctlNode("n2", "4", nil))
	w := newCtlWorker(t, c, "n1", "n2")
	w.beat = 250 * time.Millisecond // well inside the grace period
	w.start()
	ctlCreate(t, c, ctlDeployment("default", "web", 4, "web:v1"))
	pods := ctlRunningPods(t, c, "default", "app=web", 4, 20*time.Second)
	onN1 := map[string]bool{}
	for _, p := range pods {
		if p.GetSpec().GetNodeName() == "n1" {
			onN1[p.GetMetadata().GetName()] = true
		}
	}
	if len(onN1) == 0 {
		t.Fatalf("no pod on n1: %v", pods)
	}

	// The watch records when each of n1's pods was evicted: the time of
	// its deletion command is its deletionTimestamp less its grace period.
	evicted := map[string]time.Time{}
	pw := watchPods(t, c, "default", "app=web", nil, func(ev *pb.WatchEvent) {
		m := ev.GetObject().Meta()
		if !onN1[m.GetName()] || m.GetDeletionTimestamp() == nil || m.GetDeletionGracePeriodSeconds() == 0 {
			return
		}
		if _, ok := evicted[m.GetName()]; !ok {
			evicted[m.GetName()] = m.GetDeletionTimestamp().AsTime().Add(-time.Duration(m.GetDeletionGracePeriodSeconds()) * time.Second)
		}
	})

	w.kill("n1")
	killed := time.Now()
	var lastBeat, notReadyAt, taintedAt time.Time
	eventually(t, grace+period+slack, "n1 Unknown and tainted unreachable, its pods not ready", func() error {
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Node", Name: "n1"})
		if err != nil {
			return err
		}
		n := got.GetObject().GetNode()
		for _, cond := range n.GetStatus().GetConditions() {
			if cond.GetType() == "Ready" {
				if cond.GetStatus() != "Unknown" {
					return fmt.Errorf("Ready=%s", cond.GetStatus())
				}
				lastBeat, notReadyAt = cond.GetLastHeartbeatTime().AsTime(), cond.GetLastTransitionTime().AsTime()
			}
		}
		var taints []string
		for _, tn := range n.GetSpec().GetTaints() {
			taints = append(taints, tn.GetKey()+":"+tn.GetEffect())
			if tn.GetKey() == nodelifecycle.TaintUnreachable && tn.GetEffect() == nodelifecycle.NoExecute {
				taintedAt = tn.GetTimeAdded().AsTime()
			}
		}
		if !slices.Contains(taints, nodelifecycle.TaintUnreachable+":NoExecute") || !slices.Contains(taints, nodelifecycle.TaintUnreachable+":NoSchedule") {
			return fmt.Errorf("taints %v", taints)
		}
		for _, p := range ctlListPods(t, c, "default", "app=web") {
			if onN1[p.GetMetadata().GetName()] && podActive(p) && podReady(p) {
				return fmt.Errorf("pod %s on n1 still ready", p.GetMetadata().GetName())
			}
		}
		return nil
	})
	// The master's times are whole seconds (as Kubernetes'): a lower bound
	// holds for the second it falls in.
	if floor := lastBeat.Add(grace).Truncate(time.Second); notReadyAt.Before(floor) {
		t.Errorf("n1 marked Unknown at %s, before its last heartbeat %s plus the grace period %s", notReadyAt, lastBeat, grace)
	}
	if late := killed.Add(grace + period + slack); notReadyAt.After(late) {
		t.Errorf("n1 marked Unknown at %s, %s after its worker died (grace %s, period %s)", notReadyAt, notReadyAt.Sub(killed), grace, period)
	}
	if taintedAt.Before(notReadyAt) || taintedAt.After(notReadyAt.Add(slack)) {
		t.Errorf("n1 tainted at %s, marked Unknown at %s", taintedAt, notReadyAt)
	}
	got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Node", Name: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range got.GetObject().GetNode().GetStatus().GetConditions() {
		if cond.GetType() == "Ready" && cond.GetStatus() != "True" {
			t.Errorf("n2, whose worker lives, is Ready=%s: %s", cond.GetStatus(), cond.GetMessage())
		}
	}

	// Replaced on n2 and gone from n1 within the toleration plus slack.
	due := taintedAt.Add(toleration)
	var replacements []*pb.Pod
	eventually(t, time.Until(due.Add(slack)), "n1's pods replaced on n2 and gone", func() error {
		replacements = replacements[:0]
		var onN2 int
		for _, p := range ctlListPods(t, c, "default", "app=web") {
			if onN1[p.GetMetadata().GetName()] {
				return fmt.Errorf("pod %s of n1 still stored (deleting: %v)", p.GetMetadata().GetName(), p.GetMetadata().GetDeletionTimestamp() != nil)
			}
			if podActive(p) && podReady(p) && p.GetSpec().GetNodeName() == "n2" {
				onN2++
				if !slices.ContainsFunc(pods, func(q *pb.Pod) bool { return q.GetMetadata().GetUid() == p.GetMetadata().GetUid() }) {
					replacements = append(replacements, p)
				}
			}
		}
		if onN2 != 4 {
			return fmt.Errorf("%d running on n2", onN2)
		}
		return nil
	})
	done := time.Now()

	// Nothing moved before the toleration ran out.
	pw.mu.Lock()
	defer pw.mu.Unlock()
	floor := due.Truncate(time.Second)
	for name := range onN1 {
		at, ok := evicted[name]
		switch {
		case !ok:
			t.Errorf("the watch saw no eviction of %s", name)
		case at.Before(floor):
			t.Errorf("%s evicted at %s, %s after the taint, before the toleration of %s ran out", name, at, at.Sub(taintedAt), toleration)
		}
	}
	if len(replacements) != len(onN1) {
		t.Errorf("%d replacement pods, want %d", len(replacements), len(onN1))
	}
	for _, p := range replacements {
		if at := p.GetMetadata().GetCreationTimestamp().AsTime(); at.Before(floor) {
			t.Errorf("replacement %s created at %s, %s after the taint, before the toleration of %s ran out", p.GetMetadata().GetName(), at, at.Sub(taintedAt), toleration)
		}
	}
	t.Logf("worker killed; n1 Unknown and tainted %s later (grace %s, period %s); its pods evicted and replaced %s after the taint (toleration %s)",
		taintedAt.Sub(killed).Round(time.Millisecond), grace, period, done.Sub(taintedAt).Round(time.Millisecond), toleration)
}

// TestUnschedulableThenScheduled: a pod that fits nowhere says why, and is
// placed as soon as a node with room joins.
func TestUnschedulableThenScheduled(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ctlConfigs(t, 1)[0])
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("small", "1", nil))
	ctlCreate(t, c, pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Name: "big", Namespace: "default"},
		Spec: &pb.PodSpec{Containers: []*pb.Container{{Name: "c", Image: "busybox",
			Resources: &pb.ResourceRequirements{Requests: map[string]string{"cpu": "2"}}}}},
	}))
	const want = "0/1 nodes are available: 1 Insufficient cpu."
	eventually(t, 20*time.Second, "the pod to say why it waits", func() error {
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Pod", Namespace: "default", Name: "big"})
		if err != nil {
			return err
		}
		for _, cond := range got.GetObject().GetPod().GetStatus().GetConditions() {
			if cond.GetType() == "PodScheduled" && cond.GetStatus() == "False" && cond.GetReason() == "Unschedulable" && cond.GetMessage() == want {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", got.GetObject().GetPod().GetStatus().GetConditions())
	})
	eventually(t, 10*time.Second, "a FailedScheduling event", func() error {
		resp, err := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: "Event", Namespace: "default"}))
		if err != nil {
			return err
		}
		for _, o := range resp.GetItems() {
			if e := o.GetEvent(); e.GetReason() == "FailedScheduling" && e.GetInvolvedObject().GetName() == "big" && e.GetMessage() == want {
				return nil
			}
		}
		return fmt.Errorf("no event among %d", len(resp.GetItems()))
	})
	ctlAddNode(t, c, ctlNode("large", "4", nil))
	eventually(t, 20*time.Second, "the pod bound to the new node", func() error {
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Pod", Namespace: "default", Name: "big"})
		if err != nil {
			return err
		}
		if n := got.GetObject().GetPod().GetSpec().GetNodeName(); n != "large" {
			return fmt.Errorf("bound to %q", n)
		}
		return nil
	})
}

// TestJobRunsToCompletion: the hollow worker runs the Job's pods to
// success; the Job completes with the right counts.
func TestJobRunsToCompletion(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ctlConfigs(t, 1)[0])
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("n1", "4", nil))
	w := newCtlWorker(t, c, "n1")
	w.finish = func(p *pb.Pod) bool { return p.GetMetadata().GetLabels()[pb.JobNameLabel] != "" }
	w.start()

	completions, parallelism := int32(5), int32(2)
	ctlCreate(t, c, pb.Wrap(&pb.Job{
		Metadata: &pb.ObjectMeta{Name: "pi", Namespace: "default"},
		Spec: &pb.JobSpec{
			Completions: &completions, Parallelism: &parallelism,
			Template: &pb.PodTemplateSpec{Spec: &pb.PodSpec{RestartPolicy: "Never", Containers: []*pb.Container{{Name: "pi", Image: "perl"}}}},
		},
	}))
	var maxActive atomic.Int32
	eventually(t, 30*time.Second, "the Job to complete", func() error {
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Job", Namespace: "default", Name: "pi"})
		if err != nil {
			return err
		}
		st := got.GetObject().GetJob().GetStatus()
		if st.GetActive() > maxActive.Load() {
			maxActive.Store(st.GetActive())
		}
		for _, cond := range st.GetConditions() {
			if cond.GetType() == "Complete" && cond.GetStatus() == "True" {
				if st.GetSucceeded() != 5 || st.GetActive() != 0 || st.GetCompletionTime() == nil || st.GetStartTime() == nil {
					return fmt.Errorf("complete with status %v", st)
				}
				return nil
			}
		}
		return fmt.Errorf("status %v", st)
	})
	if m := maxActive.Load(); m > parallelism {
		t.Errorf("%d pods active at once, parallelism is %d", m, parallelism)
	}
	eventually(t, 10*time.Second, "5 succeeded pods, released by the Job", func() error {
		succeeded := 0
		for _, p := range ctlListPods(t, c, "default", pb.JobNameLabel+"=pi") {
			if slices.Contains(p.GetMetadata().GetFinalizers(), "batch.kubernetes.io/job-tracking") {
				return fmt.Errorf("%s still tracked", p.GetMetadata().GetName())
			}
			if p.GetStatus().GetPhase() == "Succeeded" {
				succeeded++
			}
		}
		if succeeded != 5 {
			return fmt.Errorf("%d succeeded pods", succeeded)
		}
		return nil
	})
}

// podWatch follows pods through a watch and replays their history: while
// armed, check sees every committed state (all events of one Raft entry
// applied) and the time it arrived; event, if set, sees every event as it
// comes. Both run under mu.
type podWatch struct {
	armed atomic.Bool
	check func(rv uint64, at time.Time, pods map[string]*pb.Pod) error
	event func(ev *pb.WatchEvent)

	mu         sync.Mutex
	pods       map[string]*pb.Pod
	states     int
	violations []string
}

func watchPods(t *testing.T, c pb.ClusterClient, ns, selector string, check func(rv uint64, at time.Time, pods map[string]*pb.Pod) error, event func(ev *pb.WatchEvent)) *podWatch {
	t.Helper()
	w := &podWatch{check: check, event: event, pods: map[string]*pb.Pod{}}
	resp, err := pb.CollectList(c.List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "Pod", Namespace: ns, LabelSelector: selector}))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range resp.GetItems() {
		w.pods[o.Meta().GetName()] = o.GetPod()
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Watch(ctx, &pb.WatchRequest{Kind: "Pod", Namespace: ns, LabelSelector: selector, ResourceVersion: resp.GetResourceVersion()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var rv uint64
		var since time.Time
		for {
			ev, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil && err != io.EOF {
					w.violate(fmt.Sprintf("watch broke: %v", err))
				}
				return
			}
			if ev.GetType() == "BOOKMARK" {
				continue
			}
			// Events of one Raft entry share its index: check the state
			// once the entry is complete.
			if ev.GetResourceVersion() != rv {
				if rv != 0 {
					w.checkState(rv, since)
				}
				rv, since = ev.GetResourceVersion(), time.Now()
			}
			w.mu.Lock()
			if ev.GetType() == "DELETED" {
				delete(w.pods, ev.GetObject().Meta().GetName())
			} else {
				w.pods[ev.GetObject().Meta().GetName()] = ev.GetObject().GetPod()
			}
			if w.event != nil {
				w.event(ev)
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *podWatch) violate(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.violations) < 10 {
		w.violations = append(w.violations, s)
	}
}

func (w *podWatch) checkState(rv uint64, at time.Time) {
	if !w.armed.Load() || w.check == nil {
		return
	}
	w.mu.Lock()
	w.states++
	err := w.check(rv, at, w.pods)
	w.mu.Unlock()
	if err != nil {
		w.violate(err.Error())
	}
}

// report fails t if a state broke the bounds or none was seen.
func (w *podWatch) report(t *testing.T, bounds string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.states == 0 {
		t.Error("the watcher saw no state")
	}
	if len(w.violations) > 0 {
		t.Errorf("%s broken (%d states watched):\n%s", bounds, w.states, strings.Join(w.violations, "\n"))
	}
	t.Logf("%d states watched within %s", w.states, bounds)
}

// watchCtlBounds checks, at every committed state of the selected pods,
// that the active pods stay within maxPods and the ready ones at or above
// minReady.
func watchCtlBounds(t *testing.T, c pb.ClusterClient, selector string, maxPods, minReady int, event func(ev *pb.WatchEvent)) *podWatch {
	return watchPods(t, c, "default", selector, func(rv uint64, _ time.Time, pods map[string]*pb.Pod) error {
		n, r := 0, 0
		images := map[string]int{}
		for _, p := range pods {
			if podActive(p) {
				n++
				images[p.GetSpec().GetContainers()[0].GetImage()]++
				if podReady(p) {
					r++
				}
			}
		}
		if n > maxPods {
			return fmt.Errorf("rv %d: %d pods %v, more than %d", rv, n, images, maxPods)
		}
		if r < minReady {
			return fmt.Errorf("rv %d: %d ready pods %v, fewer than %d", rv, r, images, minReady)
		}
		return nil
	}, event)
}

// TestRollingUpdateBoundsAcrossLeaderChange rolls a Deployment out to a new
// image, takes the leader away in the middle (gracefully, handing
// leadership over, or as a crash), and checks that the new leader completes
// the rollout and that a watcher never saw the pods exceed the surge or
// unavailability bounds.
func TestRollingUpdateBoundsAcrossLeaderChange(t *testing.T) {
	t.Parallel()
	for _, crash := range []bool{false, true} {
		name := "graceful"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A try proves the point only if the stopped leader started
			// the rollout and a later one went on with it. One whose
			// rollout outran the leader change is repeated, slower.
			for _, minReady := range []int32{1, 3} {
				var proved bool
				t.Run(fmt.Sprintf("minReadySeconds=%d", minReady), func(t *testing.T) {
					proved = rolloutAcrossLeaderChange(t, crash, minReady)
				})
				if proved || t.Failed() {
					return
				}
				t.Logf("with minReadySeconds %d the rollout outran the leader change; again, slower", minReady)
			}
			t.Fatal("every rollout was over before the leader change: nothing proves a rollout survives one")
		})
	}
}

// rolloutAcrossLeaderChange runs one try of the test above on a fresh
// cluster. It reports whether the leader change fell in the middle of the
// rollout: the Raft term of each new pod's creation entry says which
// leader created it.
func rolloutAcrossLeaderChange(t *testing.T, crash bool, minReady int32) bool {
	servers := startCluster(t, ctlConfigs(t, 3))
	leader := waitLeader(t, servers)
	// Everything talks to a follower that stays up.
	survivor := followers(servers, leader)[0]
	c := survivor.cluster()
	ctlAddNode(t, c, ctlNode("n1", "8", nil))
	ctlAddNode(t, c, ctlNode("n2", "8", nil))
	startCtlWorker(t, c, "n1", "n2")

	const replicas = 6
	d := ctlDeployment("default", "web", replicas, "web:v1")
	// maxSurge 1, maxUnavailable 1: the rollout goes in waves of about
	// two pods, each minReadySeconds long, so the leader change falls in
	// its middle.
	d.GetDeployment().Spec.Strategy = &pb.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: "1", MaxUnavailable: "1"}}
	d.GetDeployment().Spec.MinReadySeconds = minReady
	ctlCreate(t, c, d)
	complete := func(image string) func() error {
		return func() error {
			got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Deployment", Namespace: "default", Name: "web"})
			if err != nil {
				return err
			}
			dep := got.GetObject().GetDeployment()
			st := dep.GetStatus()
			if st.GetObservedGeneration() < dep.GetMetadata().GetGeneration() || st.GetUpdatedReplicas() != replicas || st.GetReplicas() != replicas || st.GetAvailableReplicas() != replicas {
				return fmt.Errorf("status %v", st)
			}
			for _, p := range ctlListPods(t, c, "default", "app=web") {
				if podActive(p) && p.GetSpec().GetContainers()[0].GetImage() != image {
					return fmt.Errorf("pod %s still runs %s", p.GetMetadata().GetName(), p.GetSpec().GetContainers()[0].GetImage())
				}
			}
			return nil
		}
	}
	eventually(t, 30*time.Second, "web:v1 rolled out", complete("web:v1"))

	// created holds the Raft index of each web:v2 pod's creation.
	created := map[string]uint64{}
	b := watchCtlBounds(t, c, "app=web", replicas+1, replicas-1, func(ev *pb.WatchEvent) {
		if ev.GetType() == "ADDED" && ev.GetObject().GetPod().GetSpec().GetContainers()[0].GetImage() == "web:v2" {
			created[ev.GetObject().Meta().GetName()] = ev.GetResourceVersion()
		}
	})
	b.armed.Store(true)
	start := time.Now()
	ctlModify(t, c, "Deployment", "default", "web", false, func(o *pb.Object) {
		o.GetDeployment().Spec.Template.Spec.Containers[0].Image = "web:v2"
	})
	eventually(t, 30*time.Second, "the rollout under way", func() error {
		n := 0
		for _, p := range ctlListPods(t, c, "default", "app=web") {
			if podActive(p) && podReady(p) && p.GetSpec().GetContainers()[0].GetImage() == "web:v2" {
				n++
			}
		}
		if n < 1 {
			return fmt.Errorf("%d new pods ready", n)
		}
		return nil
	})
	into := time.Since(start)
	old, term := leader.cfg.Name, leader.srv.raft.CurrentTerm()
	if !leader.srv.IsLeader() {
		t.Logf("%s lost leadership on its own before it could be stopped", old)
		return false
	}
	if crash {
		leader.crash()
	} else {
		leader.stop()
	}
	newLeader := waitLeader(t, followers(servers, leader))
	t.Logf("leader %s (term %d) %s %s into the rollout; %s leads", old, term, map[bool]string{false: "stopped", true: "crashed"}[crash], into.Round(time.Millisecond), newLeader.cfg.Name)
	eventually(t, 60*time.Second, "web:v2 rolled out by the new leader", complete("web:v2"))
	t.Logf("rollout of %d replicas complete in %s", replicas, time.Since(start).Round(time.Millisecond))
	b.report(t, fmt.Sprintf("replicas+1 = %d pods and replicas-1 = %d ready", replicas+1, replicas-1))

	// Which leader created each new pod: the term of its creation entry,
	// read from the survivor's log (applied, so it is there).
	b.mu.Lock()
	defer b.mu.Unlock()
	var before, after []string
	for name, index := range created {
		var l raft.Log
		if err := survivor.srv.stores.logs.GetLog(index, &l); err != nil {
			t.Fatalf("log entry %d that created pod %s on %s: %v", index, name, survivor.cfg.Name, err)
		}
		if l.Term <= term {
			before = append(before, name)
		} else {
			after = append(after, name)
		}
	}
	t.Logf("web:v2 pods created in the stopped leader's term %d or before: %d, in later terms: %d", term, len(before), len(after))
	if len(before) == 0 {
		t.Errorf("no web:v2 pod created before the leader change, though one was ready: %v", created)
	}
	return len(before) > 0 && len(after) > 0
}
