package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// hollowWorker starts a `skiff worker --hollow` process: a node that runs
// no containers but registers, heartbeats and reports pod status like a
// real one, with the cluster's token (its own certificate) unless the
// cluster is insecure. extra flags are added to the worker's (e.g.
// --hollow-count 3: three nodes NAME-0001.. in the one process).
func hollowWorker(t *testing.T, c *cluster, name string, extra ...string) *workerProc {
	t.Helper()
	dir := t.TempDir()
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossip)
	}
	w := &workerProc{t: t, logPath: filepath.Join(dir, name+".log"), args: []string{
		"worker", "--hollow", "--name", name, "--data-dir", filepath.Join(dir, name),
		"--join", strings.Join(joins, ","), "--listen-addr", "127.0.0.1:0",
		"--heartbeat-interval", "1s", "--log-level", "debug",
	}}
	w.args = append(append(w.args, c.securityArgs()...), extra...)
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("---- last log lines of %s ----\n%s", name, tailFile(w.logPath, 40))
		}
	})
	w.start()
	return w
}

// waitNodesReady waits until `skiff get nodes` shows every named node Ready.
func waitNodesReady(t *testing.T, c *cluster, names ...string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		for _, n := range names {
			if !regexpLine(out, n, "Ready") {
				return fmt.Errorf("node %s not Ready:\n%s", n, out)
			}
		}
		return nil
	})
}

// TestKilledWorkerPodsReplaced: a Deployment's pods on a worker that is
// SIGKILLed are evicted once the node is unreachable for their
// tolerationSeconds, and the ReplicaSet replaces them on the other worker:
// within grace + toleration (+ slack for a loaded CI machine) of the kill,
// and not before the toleration has run from the node's NoExecute taint.
func TestKilledWorkerPodsReplaced(t *testing.T) {
	const (
		grace      = 3 * time.Second
		toleration = 2 * time.Second
		// slack covers the heartbeat interval, the node monitor's and the
		// controllers' periods, scheduling and the hollow worker's status
		// reports on a loaded 2-core machine.
		slack = 20 * time.Second
	)
	cc := startChaosClusterArgs(t, "--node-monitor-grace-period", grace.String(), "--node-startup-grace-period", "1s",
		"--default-toleration-seconds", fmt.Sprint(int(toleration.Seconds())))
	c := cc.cluster
	w1 := hollowWorker(t, c, "h1")
	hollowWorker(t, c, "h2")
	waitNodesReady(t, c, "h1", "h2")
	// Every change to the pods: the eviction and replacement stamps are
	// read from it afterwards (an evicted pod is gone within a second).
	watch := startChaosWatch(cc, "Pod", "default", "app=web")
	out, err := c.cli(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: example/web:v1
        resources: {requests: {cpu: 10m, memory: 16Mi}}
`, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// podsOn counts Running pods of the Deployment per node and names
	// them by node.
	podsOn := func() (map[string]int, map[string]map[string]bool, string, error) {
		out, err := c.cli("", "get", "pods", "-l", "app=web", "-o", "wide")
		if err != nil {
			return nil, nil, out, err
		}
		n, names := map[string]int{}, map[string]map[string]bool{}
		for _, line := range strings.Split(out, "\n")[1:] {
			f := strings.Fields(line)
			if len(f) >= 7 && f[2] == "Running" {
				n[f[6]]++
				if names[f[6]] == nil {
					names[f[6]] = map[string]bool{}
				}
				names[f[6]][f[0]] = true
			}
		}
		return n, names, out, nil
	}
	// victims are the pods on h1 when it is killed; a pod that is not in
	// before is a replacement.
	var victims, before map[string]bool
	eventually(t, 60*time.Second, func() error {
		n, names, out, err := podsOn()
		if err != nil || n["h1"]+n["h2"] != 4 || n["h1"] == 0 {
			return fmt.Errorf("want 4 Running pods spread over h1 and h2: %v\n%s", err, out)
		}
		victims, before = names["h1"], map[string]bool{}
		for _, byName := range names {
			for name := range byName {
				before[name] = true
			}
		}
		return nil
	})

	killed := time.Now()
	w1.kill()
	// The deadline runs from the kill: the replacement must come within
	// grace + toleration + slack, not merely at some point.
	eventually(t, grace+toleration+slack-time.Since(killed), func() error {
		n, _, out, err := podsOn()
		if err != nil || n["h2"] != 4 || n["h1"] != 0 {
			return fmt.Errorf("want all 4 pods Running on h2 within %s of the kill: %v\n%s", grace+toleration+slack, err, out)
		}
		return nil
	})
	replacedIn := time.Since(killed)
	t.Logf("pods of the killed worker replaced on h2 %.1fs after the kill (grace %s, toleration %s, bound %s)",
		replacedIn.Seconds(), grace, toleration, grace+toleration+slack)

	// Not too early: tolerationSeconds count from the NoExecute taint the
	// node got when it went NotReady (timeAdded, the leader's clock at full
	// precision).
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node, err := cl.Get(ctx, "Node", "", "h1", client.ReadOptions{})
	if err != nil {
		t.Fatalf("get node h1: %v", err)
	}
	var tainted time.Time
	for _, tn := range node.GetNode().GetSpec().GetTaints() {
		if tn.GetEffect() == "NoExecute" && tn.GetTimeAdded() != nil && (tainted.IsZero() || tn.GetTimeAdded().AsTime().Before(tainted)) {
			tainted = tn.GetTimeAdded().AsTime()
		}
	}
	if tainted.IsZero() {
		t.Fatalf("node h1 has no NoExecute taint with timeAdded after the kill: %v", node.GetNode().GetSpec().GetTaints())
	}
	if tainted.Before(killed) {
		t.Errorf("node h1 was tainted NoExecute at %s, before its worker was killed at %s", tainted.Format(time.StampMilli), killed.Format(time.StampMilli))
	}
	t.Logf("h1 tainted NoExecute %.1fs after the kill", tainted.Sub(killed).Seconds())
	// The evicted pods cannot be confirmed by their dead worker; once their
	// grace period has passed they are removed, leaving exactly 4.
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pods", "-l", "app=web")
		if got := strings.Count(out, "\n") - 1; err != nil || got != 4 {
			return fmt.Errorf("%d pods remain, want exactly 4 (%v):\n%s", got, err, out)
		}
		return nil
	})
	// The watch has all of it once it delivered the last change of every
	// pod left and the removal of every victim.
	items, _, err := cl.List(ctx, "Pod", client.ListOptions{Namespace: "default", LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for _, it := range items {
		last = max(last, it.Meta().GetResourceVersion())
	}
	if err := watch.waitFor(last, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		gone := map[string]bool{}
		for _, ev := range watch.history() {
			if ev.Type == "DELETED" {
				gone[ev.Obj.Meta().GetName()] = true
			}
		}
		for name := range victims {
			if !gone[name] {
				return fmt.Errorf("the watch has not delivered the removal of %s", name)
			}
		}
		return nil
	})
	// Metadata times are whole seconds (truncated, as Kubernetes'): an
	// action at time T is stamped in [T-1s, T], so one stamped s happened
	// before s+1s. Anything stamped at or before tainted+toleration-1s
	// surely came before the toleration ran out.
	earliest := tainted.Add(toleration)
	tooEarly := func(stamp time.Time) bool { return !stamp.Add(time.Second).After(earliest) }
	evicted := map[string]time.Time{}
	var replacements []string
	for _, ev := range watch.history() {
		m := ev.Obj.GetPod().GetMetadata()
		switch {
		case victims[m.GetName()]:
			// deletionTimestamp is when the deletion was asked for plus the
			// grace period it gave the pod, as Kubernetes'.
			if _, seen := evicted[m.GetName()]; !seen && m.GetDeletionTimestamp() != nil {
				evicted[m.GetName()] = m.GetDeletionTimestamp().AsTime().Add(-time.Duration(m.GetDeletionGracePeriodSeconds()) * time.Second)
			}
		case ev.Type == "ADDED" && !before[m.GetName()]:
			replacements = append(replacements, m.GetName())
			if at := m.GetCreationTimestamp().AsTime(); tooEarly(at) {
				t.Errorf("replacement pod %s created at %s, before the toleration (%s) had run from the NoExecute taint at %s",
					m.GetName(), at.Format(time.StampMilli), toleration, tainted.Format(time.StampMilli))
			}
		}
	}
	for name := range victims {
		at, ok := evicted[name]
		switch {
		case !ok:
			t.Errorf("pod %s of the killed worker was never seen marked for deletion", name)
		case tooEarly(at):
			t.Errorf("pod %s evicted at %s, before the toleration (%s) had run from the NoExecute taint at %s",
				name, at.Format(time.StampMilli), toleration, tainted.Format(time.StampMilli))
		}
	}
	if len(replacements) < len(victims) {
		t.Errorf("%d pods created after the kill (%v), want at least one per evicted pod (%d)", len(replacements), replacements, len(victims))
	}
}
