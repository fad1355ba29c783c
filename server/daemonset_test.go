package server

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/daemonset"
	pb "github.com/skiff-sh/skiff/proto"
)

func ctlDaemonSet(name, image string, maxUnavailable string, minReady int32) *pb.Object {
	labels := map[string]string{"app": name}
	grace := int64(1)
	return pb.Wrap(&pb.DaemonSet{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"},
		Spec: &pb.DaemonSetSpec{
			Selector:        &pb.LabelSelector{MatchLabels: labels},
			MinReadySeconds: minReady,
			UpdateStrategy:  &pb.DaemonSetUpdateStrategy{Type: "RollingUpdate", RollingUpdate: &pb.RollingUpdateDaemonSet{MaxUnavailable: maxUnavailable}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: labels},
				Spec: &pb.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers:                    []*pb.Container{{Name: "agent", Image: image}},
				},
			},
		},
	})
}

// waitDaemonPods waits until the DaemonSet has exactly one pod on each of
// nodes, running image and ready, no other pod stored (deleted ones gone
// too), and a status that says so. It returns the pods' UIDs by node.
func waitDaemonPods(t *testing.T, c pb.ClusterClient, name string, nodes []string, image string) map[string]string {
	t.Helper()
	var uids map[string]string
	eventually(t, 30*time.Second, fmt.Sprintf("one %s pod of %s on each of %v", image, name, nodes), func() error {
		uids = map[string]string{}
		pods := ctlListPods(t, c, "default", "app="+name)
		for _, p := range pods {
			n := p.GetSpec().GetNodeName()
			switch {
			case !slices.Contains(nodes, n):
				return fmt.Errorf("pod %s on node %q", p.GetMetadata().GetName(), n)
			case !podActive(p) || !podReady(p):
				return fmt.Errorf("pod %s on %s: phase %s, ready %v, deleting %v", p.GetMetadata().GetName(), n, p.GetStatus().GetPhase(), podReady(p), p.GetMetadata().GetDeletionTimestamp() != nil)
			case p.GetSpec().GetContainers()[0].GetImage() != image:
				return fmt.Errorf("pod %s on %s runs %s", p.GetMetadata().GetName(), n, p.GetSpec().GetContainers()[0].GetImage())
			case uids[n] != "":
				return fmt.Errorf("two pods on %s", n)
			}
			uids[n] = p.GetMetadata().GetUid()
		}
		if len(uids) != len(nodes) {
			return fmt.Errorf("pods on %d of %d nodes", len(uids), len(nodes))
		}
		got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "DaemonSet", Namespace: "default", Name: name})
		if err != nil {
			return err
		}
		ds := got.GetObject().GetDaemonSet()
		st, want := ds.GetStatus(), int32(len(nodes))
		if st.GetObservedGeneration() < ds.GetMetadata().GetGeneration() || st.GetDesiredNumberScheduled() != want || st.GetCurrentNumberScheduled() != want ||
			st.GetUpdatedNumberScheduled() != want || st.GetNumberReady() != want || st.GetNumberAvailable() != want || st.GetNumberUnavailable() != 0 || st.GetNumberMisscheduled() != 0 {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	return uids
}

// kept checks that the pods of nodes are the ones they had before: a node
// joining or leaving does not churn the others' daemon pods.
func kept(t *testing.T, before, after map[string]string, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		if before[n] != after[n] {
			t.Errorf("the daemon pod of %s was replaced (uid %s, now %s)", n, before[n], after[n])
		}
	}
}

// TestDaemonSetFollowsNodes runs a DaemonSet as nodes join and leave, then
// rolls it out to a new image while a watcher checks, at every committed
// state, that no more than maxUnavailable nodes lack an available pod.
func TestDaemonSetFollowsNodes(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ctlConfigs(t, 1)[0])
	waitLeader(t, []*testServer{ts})
	c := ts.cluster()
	ctlAddNode(t, c, ctlNode("n1", "4", nil))
	ctlAddNode(t, c, ctlNode("n2", "4", nil))
	w := startCtlWorker(t, c, "n1", "n2")

	const (
		maxUnavailable = 1
		minReady       = 1
	)
	ctlCreate(t, c, ctlDaemonSet("agent", "agent:v1", fmt.Sprint(maxUnavailable), minReady))
	pods := waitDaemonPods(t, c, "agent", []string{"n1", "n2"}, "agent:v1")

	t.Run("a node joins", func(t *testing.T) {
		w.serve("n3")
		ctlAddNode(t, c, ctlNode("n3", "4", nil))
		now := waitDaemonPods(t, c, "agent", []string{"n1", "n2", "n3"}, "agent:v1")
		kept(t, pods, now, "n1", "n2")
		pods = now
	})
	t.Run("a node leaves", func(t *testing.T) {
		// Its worker goes with it: nobody confirms its pod stopped.
		w.kill("n2")
		if _, err := c.Delete(ctxT(t, 10*time.Second), &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Node", Name: "n2"}}); err != nil {
			t.Fatal(err)
		}
		now := waitDaemonPods(t, c, "agent", []string{"n1", "n3"}, "agent:v1")
		kept(t, pods, now, "n1", "n3")
		pods = now
	})
	if t.Failed() {
		return
	}

	// Roll out over four nodes, so the bound is not the same as "all".
	nodes := []string{"n1", "n3", "n4", "n5"}
	for _, n := range nodes[2:] {
		w.serve(n)
		ctlAddNode(t, c, ctlNode(n, "4", nil))
	}
	waitDaemonPods(t, c, "agent", nodes, "agent:v1")
	worst := 0
	pw := watchPods(t, c, "default", "app=agent", func(rv uint64, at time.Time, pods map[string]*pb.Pod) error {
		// A node lacks an available pod when no live pod on it has been
		// ready for minReadySeconds, judged when the state arrived (no
		// earlier than the controller decided it).
		served := map[string]bool{}
		for _, p := range pods {
			if ok, _ := controllers.PodAvailableIn(p, minReady, at); ok && podActive(p) {
				served[p.GetSpec().GetNodeName()] = true
			}
		}
		var lacking []string
		for _, n := range nodes {
			if !served[n] {
				lacking = append(lacking, n)
			}
		}
		worst = max(worst, len(lacking))
		if len(lacking) > maxUnavailable {
			return fmt.Errorf("rv %d: nodes %v lack an available pod, maxUnavailable is %d", rv, lacking, maxUnavailable)
		}
		return nil
	}, nil)
	pw.armed.Store(true)
	start := time.Now()
	ctlModify(t, c, "DaemonSet", "default", "agent", false, func(o *pb.Object) {
		o.GetDaemonSet().Spec.Template.Spec.Containers[0].Image = "agent:v2"
	})
	waitDaemonPods(t, c, "agent", nodes, "agent:v2")
	t.Logf("rolling update over %d nodes done in %s", len(nodes), time.Since(start).Round(time.Millisecond))
	pw.report(t, fmt.Sprintf("maxUnavailable %d nodes without an available pod", maxUnavailable))
	pw.mu.Lock()
	if worst == 0 {
		t.Error("the watcher never saw a node without an available pod: it did not see the rollout")
	}
	pw.mu.Unlock()

	// Every pod carries the new template's hash.
	got, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "DaemonSet", Namespace: "default", Name: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	hash := daemonset.TemplateHash(got.GetObject().GetDaemonSet().GetSpec().GetTemplate())
	for _, p := range ctlListPods(t, c, "default", "app=agent") {
		if h := p.GetMetadata().GetLabels()[daemonset.RevisionHashLabel]; h != hash {
			t.Errorf("pod %s has %s=%s, want %s", p.GetMetadata().GetName(), daemonset.RevisionHashLabel, h, hash)
		}
	}

	// Deleting the DaemonSet takes its pods.
	if _, err := c.Delete(ctxT(t, 10*time.Second), &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "DaemonSet", Namespace: "default", Name: "agent"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the DaemonSet's pods to go", func() error {
		_, err := c.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Kind: "DaemonSet", Namespace: "default", Name: "agent"})
		if status.Code(err) != codes.NotFound {
			return fmt.Errorf("daemonset: %v", err)
		}
		var left []string
		for _, p := range ctlListPods(t, c, "default", "app=agent") {
			left = append(left, p.GetMetadata().GetName())
		}
		sort.Strings(left)
		if len(left) > 0 {
			return fmt.Errorf("pods left: %v", left)
		}
		return nil
	})
}
