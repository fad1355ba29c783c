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
// stopped pod, and keeps their heartbeats fresh.
type ctlWorker struct {
	t *testing.T
	c pb.ClusterClient

	mu    sync.Mutex
	nodes map[string]bool
	// finish says which pods run to completion rather than forever.
	finish func(p *pb.Pod) bool
}

func startCtlWorker(t *testing.T, c pb.ClusterClient, nodes ...string) *ctlWorker {
	w := &ctlWorker{t: t, c: c, nodes: map[string]bool{}, finish: func(*pb.Pod) bool { return false }}
	for _, n := range nodes {
		w.nodes[n] = true
	}
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
			if time.Since(lastBeat) > 5*time.Second {
				w.heartbeat(ctx)
				lastBeat = time.Now()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// kill stops serving a node: its pods are left as they are, like a dead
// worker's.
func (w *ctlWorker) kill(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.nodes, node)
}

func (w *ctlWorker) serves(node string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nodes[node]
}

func (w *ctlWorker) sync(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := w.c.List(rctx, &pb.ListRequest{Kind: "Pod"})
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
			for _, c := range o.GetNode().GetStatus().GetConditions() {
				if c.GetType() == "Ready" && c.GetStatus() == "True" {
					c.LastHeartbeatTime = timestamppb.Now()
				}
			}
			_, _ = w.c.UpdateStatus(rctx, &pb.WriteRequest{Object: o})
		}
		cancel()
	}
}

func ctlListPods(t *testing.T, c pb.ClusterClient, ns, selector string) []*pb.Pod {
	t.Helper()
	resp, err := c.List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "Pod", Namespace: ns, LabelSelector: selector})
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
			resp, lerr := c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: k.Kind, Namespace: "team"})
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
		resp, err := c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: k.Kind, Namespace: "team"})
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
		resp, err := c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: kind, Namespace: "default", LabelSelector: selector})
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
		resp, err := c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: "ReplicaSet", Namespace: "default", LabelSelector: "app=orphan"})
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

// TestNotReadyNodeGetsItsPodsReplaced turns a node NotReady (its worker
// dies): it gets tainted, its pods are marked not ready, evicted after the
// (short) toleration, force-deleted since nobody confirms them, and
// replaced on the other node.
func TestNotReadyNodeGetsItsPodsReplaced(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ctlConfigs(t, 1)[0])
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("n1", "4", nil))
	ctlAddNode(t, c, ctlNode("n2", "4", nil))
	w := startCtlWorker(t, c, "n1", "n2")
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

	w.kill("n1")
	start := time.Now()
	ctlSetNodeReady(t, c, "n1", "Unknown")
	eventually(t, 10*time.Second, "n1 tainted unreachable, its pods not ready", func() error {
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "Node", Name: "n1"})
		if err != nil {
			return err
		}
		var taints []string
		for _, tn := range got.GetObject().GetNode().GetSpec().GetTaints() {
			taints = append(taints, tn.GetKey()+":"+tn.GetEffect())
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
	// Toleration 2 s, grace period 1 s: replaced on n2 within seconds.
	eventually(t, 20*time.Second, "n1's pods replaced on n2 and gone", func() error {
		var onN2 int
		for _, p := range ctlListPods(t, c, "default", "app=web") {
			if onN1[p.GetMetadata().GetName()] {
				return fmt.Errorf("pod %s of n1 still stored (deleting: %v)", p.GetMetadata().GetName(), p.GetMetadata().GetDeletionTimestamp() != nil)
			}
			if podActive(p) && podReady(p) && p.GetSpec().GetNodeName() == "n2" {
				onN2++
			}
		}
		if onN2 != 4 {
			return fmt.Errorf("%d running on n2", onN2)
		}
		return nil
	})
	t.Logf("pods of the NotReady node replaced and removed in %s (toleration 2s, pod grace 1s)", time.Since(start).Round(time.Millisecond))
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
		resp, err := c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: "Event", Namespace: "default"})
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
	w := startCtlWorker(t, c, "n1")
	w.finish = func(p *pb.Pod) bool { return p.GetMetadata().GetLabels()[pb.JobNameLabel] != "" }

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

// ctlBounds follows a Deployment's pods through a watch and checks,
// at every committed state, that the active pods stay within
// replicas+maxSurge and the ready ones at or above replicas-maxUnavailable.
type ctlBounds struct {
	maxPods, minReady int
	armed             atomic.Bool

	mu         sync.Mutex
	pods       map[string]*pb.Pod
	states     int
	violations []string
}

func watchCtlBounds(t *testing.T, c pb.ClusterClient, selector string, maxPods, minReady int) *ctlBounds {
	t.Helper()
	b := &ctlBounds{maxPods: maxPods, minReady: minReady, pods: map[string]*pb.Pod{}}
	resp, err := c.List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "Pod", Namespace: "default", LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range resp.GetItems() {
		b.pods[o.Meta().GetName()] = o.GetPod()
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Watch(ctx, &pb.WatchRequest{Kind: "Pod", Namespace: "default", LabelSelector: selector, ResourceVersion: resp.GetResourceVersion()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var at uint64
		for {
			ev, err := stream.Recv()
			if err != nil {
				if ctx.Err() == nil && err != io.EOF {
					b.violate(fmt.Sprintf("watch broke: %v", err))
				}
				return
			}
			if ev.GetType() == "BOOKMARK" {
				continue
			}
			// Events of one Raft entry share its index: check the state
			// once the entry is complete.
			if ev.GetResourceVersion() != at && at != 0 {
				b.check(at)
			}
			at = ev.GetResourceVersion()
			b.mu.Lock()
			if ev.GetType() == "DELETED" {
				delete(b.pods, ev.GetObject().Meta().GetName())
			} else {
				b.pods[ev.GetObject().Meta().GetName()] = ev.GetObject().GetPod()
			}
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

func (b *ctlBounds) violate(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.violations) < 10 {
		b.violations = append(b.violations, s)
	}
}

func (b *ctlBounds) check(rv uint64) {
	if !b.armed.Load() {
		return
	}
	b.mu.Lock()
	b.states++
	n, r := 0, 0
	images := map[string]int{}
	for _, p := range b.pods {
		if podActive(p) {
			n++
			images[p.GetSpec().GetContainers()[0].GetImage()]++
			if podReady(p) {
				r++
			}
		}
	}
	b.mu.Unlock()
	if n > b.maxPods {
		b.violate(fmt.Sprintf("rv %d: %d pods %v, more than %d", rv, n, images, b.maxPods))
	}
	if r < b.minReady {
		b.violate(fmt.Sprintf("rv %d: %d ready pods %v, fewer than %d", rv, r, images, b.minReady))
	}
}

// TestRollingUpdateBoundsAcrossLeaderChange rolls a Deployment out to a new
// image, stops the leader in the middle, and checks that the new leader
// completes the rollout and that a watcher never saw the pods exceed the
// surge or unavailability bounds.
func TestRollingUpdateBoundsAcrossLeaderChange(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, ctlConfigs(t, 3))
	leader := waitLeader(t, servers)
	// Everything talks to a follower that stays up.
	c := followers(servers, leader)[0].cluster()
	ctlAddNode(t, c, ctlNode("n1", "8", nil))
	ctlAddNode(t, c, ctlNode("n2", "8", nil))
	startCtlWorker(t, c, "n1", "n2")

	const replicas = 6
	d := ctlDeployment("default", "web", replicas, "web:v1")
	// maxSurge 1, maxUnavailable 1; minReadySeconds spreads the rollout
	// over a few seconds so the leader change falls in its middle.
	d.GetDeployment().Spec.Strategy = &pb.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDeployment{MaxSurge: "1", MaxUnavailable: "1"}}
	d.GetDeployment().Spec.MinReadySeconds = 1
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

	b := watchCtlBounds(t, c, "app=web", replicas+1, replicas-1)
	b.armed.Store(true)
	start := time.Now()
	ctlModify(t, c, "Deployment", "default", "web", false, func(o *pb.Object) {
		o.GetDeployment().Spec.Template.Spec.Containers[0].Image = "web:v2"
	})
	// Stop the leader once the rollout is under way but not done.
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
		if n >= replicas {
			t.Log("the rollout finished before the leader could be stopped; stopping it anyway")
		}
		return nil
	})
	old := leader.cfg.Name
	leader.stop()
	newLeader := waitLeader(t, followers(servers, leader))
	t.Logf("leader %s stopped %s into the rollout; %s leads", old, time.Since(start).Round(time.Millisecond), newLeader.cfg.Name)
	eventually(t, 60*time.Second, "web:v2 rolled out by the new leader", complete("web:v2"))
	t.Logf("rollout of %d replicas complete in %s", replicas, time.Since(start).Round(time.Millisecond))

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.states == 0 {
		t.Error("the watcher saw no state")
	}
	if len(b.violations) > 0 {
		t.Errorf("bounds broken (%d states watched):\n%s", b.states, strings.Join(b.violations, "\n"))
	}
	t.Logf("%d states watched within replicas+1 pods and replicas-1 ready", b.states)
}
