package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// dsHashLabel is the label the DaemonSet controller puts on its pods: the
// hash of the template they were made from.
const dsHashLabel = "controller-revision-hash"

// dsEligible are the real workers the test's DaemonSet runs on: w1 and w2
// from the start, w3 joining later.
var dsEligible = []string{"w1", "w2", "w3"}

// TestDaemonSetCLI drives a DaemonSet through the operator commands with
// real containers on real workers (three `skiff worker` processes on this
// machine, each with its own data dir and cgroup parent; --pod-network none
// gives every pod a network namespace of its own, so old and new pods of a
// node both listen on :8080). Two hollow workers are the nodes the
// DaemonSet must stay off (one lacks the nodeSelector's label, one has a
// taint it does not tolerate): placement is the controller's decision, so
// they need no containers.
//
//  1. One pod per eligible node, none on the excluded ones; a node that
//     joins later gets its pod.
//  2. RollingUpdate with maxSurge 1, maxUnavailable 0: after the template
//     changes, a pod watch shows every node kept a ready pod at every Raft
//     index, each old pod went only once the new one on its node was
//     ready, and at most one node surged at a time; `skiff rollout status`
//     reports completion and the new pods serve the new environment.
//  3. OnDelete: a template change replaces nothing; the pod a user deletes
//     comes back with the new template, the others stay.
func TestDaemonSetCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("runs real containers: run the e2e suite as root")
	}
	start := time.Now()
	imageRef := demoImage(t)
	cc := startChaosClusterArgs(t)
	c := cc.cluster
	w1 := startNamedWorker(t, c, "w1", imageRef, "--labels", "tier=edge")
	w2 := startNamedWorker(t, c, "w2", imageRef, "--labels", "tier=edge")
	x1 := hollowWorker(t, c, "x1", "--labels", "tier=core")
	x2 := hollowWorker(t, c, "x2", "--labels", "tier=edge")
	workers := map[string]*workerProc{"w1": w1, "w2": w2, "x1": x1, "x2": x2}
	chaosKeepWorkerLogs(t, workers)
	cl := c.client()
	if err := chaosWaitNodes(cl, 60*time.Second, "w1", "w2", "x1", "x2"); err != nil {
		t.Fatalf("workers: %v", err)
	}
	api := rolloutAPI{t: t, cl: cl}
	run := func(stdin string, args ...string) string {
		t.Helper()
		return c.mustCLI(t, stdin, args...)
	}

	// x2 carries the tier=edge label but a taint the DaemonSet does not
	// tolerate: tainted the way an operator would without a taint command,
	// by editing the Node's YAML and replacing it.
	dsTaintNode(t, run, "x2", "dedicated", "db", "NoSchedule")
	if out := run("", "get", "node", "x2", "-o", "yaml"); !strings.Contains(out, "key: dedicated") {
		t.Fatalf("node x2 after replace has no taint:\n%s", out)
	}

	for _, args := range [][]string{{"rollout", "--help"}, {"rollout", "status", "--help"}} {
		if out := run("", args...); !strings.Contains(strings.ToLower(out), "daemonset") {
			t.Errorf("skiff %s does not mention DaemonSets:\n%s", strings.Join(args, " "), out)
		}
	}

	podWatch := startChaosWatch(cc, "Pod", "default", "app=agent")
	run(dsManifest(imageRef, "RollingUpdate", "v1"), "apply", "-f", "-")
	dsRolledOut(t, run, "agent")
	byNode := dsWaitPods(t, c, api, "agent", []string{"w1", "w2"}, "v1")
	dsCheckGet(t, run, "agent", 2)

	// A node joining later gets its pod; the others keep theirs.
	w3 := startNamedWorker(t, c, "w3", imageRef, "--labels", "tier=edge")
	workers["w3"] = w3
	if err := chaosWaitNodes(cl, 60*time.Second, "w3"); err != nil {
		t.Fatalf("worker w3: %v", err)
	}
	after := dsWaitPods(t, c, api, "agent", dsEligible, "v1")
	for _, n := range []string{"w1", "w2"} {
		if after[n] != byNode[n] {
			t.Errorf("node %s: pod %s was replaced by %s when w3 joined", n, byNode[n], after[n])
		}
	}
	dsRolledOut(t, run, "agent")
	dsCheckGet(t, run, "agent", 3)
	oldHash := api.mustGet("Pod", after["w1"]).Meta().GetLabels()[dsHashLabel]

	// ---- RollingUpdate, maxSurge 1, maxUnavailable 0 ----
	rollStart := time.Now()
	changed := run(dsManifest(imageRef, "RollingUpdate", "v2"), "apply", "-f", "-")
	if !strings.Contains(changed, "configured") {
		t.Errorf("apply of the changed template: %s", changed)
	}
	out := run("", "rollout", "status", "daemonset/agent", "--timeout", "90s")
	if !strings.Contains(out, `daemon set "agent" successfully rolled out`) {
		t.Fatalf("rollout status: %s", out)
	}
	t.Logf("skiff rollout status daemonset/agent:\n%s", out)
	rolled := dsWaitPods(t, c, api, "agent", dsEligible, "v2")
	t.Logf("rolled 3 nodes over in %s", time.Since(rollStart).Round(time.Millisecond))
	var newHash string
	// The list's index, not its pods' latest: the old pods' deletions came
	// after every change of the pods that stay.
	pods, lastRV := dsList(t, api)
	for _, p := range pods {
		h := p.Meta().GetLabels()[dsHashLabel]
		if newHash == "" {
			newHash = h
		}
		if h == oldHash || h != newHash {
			t.Errorf("pod %s has %s=%q after the rollout (old %q, new %q)", p.Meta().GetName(), dsHashLabel, h, oldHash, newHash)
		}
	}
	dsWatchCaughtUp(t, podWatch, pods)
	dsCheckSurge(t, podWatch.history(), oldHash, newHash)
	dsCheckGet(t, run, "agent", 3)
	dsCheckDescribe(t, c)

	// ---- OnDelete ----
	// The template changes together with the strategy: nothing may be
	// replaced until a user deletes a pod.
	run(dsManifest(imageRef, "OnDelete", "v3"), "apply", "-f", "-")
	var gen int64
	eventually(t, 30*time.Second, func() error {
		ds := api.mustGet("DaemonSet", "agent")
		gen = ds.Meta().GetGeneration()
		if st := ds.GetDaemonSet().GetStatus(); st.GetObservedGeneration() < gen {
			return fmt.Errorf("observedGeneration %d of generation %d", st.GetObservedGeneration(), gen)
		}
		return nil
	})
	// kubectl's wording: an OnDelete DaemonSet has no rollout to follow.
	if out, err := c.cli("", "rollout", "status", "daemonset/agent", "--watch=false"); err == nil || !strings.Contains(out, "only available for RollingUpdate") {
		t.Errorf("rollout status of an OnDelete DaemonSet: %v\n%s", err, out)
	}
	// The controller has seen the change (observedGeneration above); give
	// it a while longer to do what it must not do.
	window := time.Now().Add(3 * time.Second)
	eventually(t, 30*time.Second, func() error {
		pods := dsLivePods(api.list("Pod", "app=agent"))
		for n, was := range rolled {
			p := pods[n]
			if p == nil || p.GetMetadata().GetName() != was {
				t.Fatalf("OnDelete replaced the pod of node %s (%s) without anyone deleting it: now %v", n, was, dsNames(pods))
			}
		}
		if len(pods) != len(rolled) {
			t.Fatalf("OnDelete: pods %v, want exactly %v", dsNames(pods), rolled)
		}
		st := api.mustGet("DaemonSet", "agent").GetDaemonSet().GetStatus()
		if st.GetUpdatedNumberScheduled() != 0 || st.GetDesiredNumberScheduled() != 3 || st.GetNumberAvailable() != 3 {
			return fmt.Errorf("status %v: want 0 of 3 updated, 3 available", st)
		}
		if time.Now().Before(window) {
			return fmt.Errorf("still watching")
		}
		return nil
	})
	if out := run("", "get", "daemonsets"); !regexpLine(out, "agent", "3", "3", "3", "0", "3") {
		t.Errorf("get daemonsets after the OnDelete template change: want DESIRED 3 CURRENT 3 READY 3 UP-TO-DATE 0 AVAILABLE 3:\n%s", out)
	}
	victim := rolled["w1"]
	run("", "delete", "pod", victim)
	replaced := map[string]string{}
	eventually(t, 60*time.Second, func() error {
		pods := dsLivePods(api.list("Pod", "app=agent"))
		p := pods["w1"]
		if p == nil || p.GetMetadata().GetName() == victim {
			return fmt.Errorf("no replacement of %s on w1 yet: %v", victim, dsNames(pods))
		}
		if !chaosReady(p) {
			return fmt.Errorf("replacement %s on w1 is not ready", p.GetMetadata().GetName())
		}
		if h := p.GetMetadata().GetLabels()[dsHashLabel]; h == newHash || h == oldHash {
			t.Fatalf("the replacement %s of the deleted pod has an old template (%s=%s)", p.GetMetadata().GetName(), dsHashLabel, h)
		}
		for n, pod := range pods {
			replaced[n] = pod.GetMetadata().GetName()
		}
		return nil
	})
	if got := dsGreeting(t, c, replaced["w1"]); got != "v3" {
		t.Errorf("replacement pod %s serves greeting %q, want the new template's v3", replaced["w1"], got)
	}
	for _, n := range []string{"w2", "w3"} {
		if replaced[n] != rolled[n] {
			t.Errorf("node %s: pod %s replaced by %s though only w1's pod was deleted", n, rolled[n], replaced[n])
		}
		if got := dsGreeting(t, c, replaced[n]); got != "v2" {
			t.Errorf("untouched pod %s on %s serves %q, want v2", replaced[n], n, got)
		}
	}
	// The watch, from the end of the rolling update through the OnDelete
	// change and the user's delete: the only pod deleted was the user's,
	// the only one created its replacement, of the new template.
	pods, _ = dsList(t, api)
	dsWatchCaughtUp(t, podWatch, pods)
	for _, ev := range podWatch.history() {
		if ev.RV <= lastRV {
			continue
		}
		p := ev.Obj.GetPod()
		name, h := p.GetMetadata().GetName(), p.GetMetadata().GetLabels()[dsHashLabel]
		if (ev.Type == "DELETED" || p.GetMetadata().GetDeletionTimestamp() != nil) && name != victim {
			t.Errorf("index %d: pod %s on %s deleted under OnDelete, where only %s was deleted by the user", ev.RV, name, p.GetSpec().GetNodeName(), victim)
		}
		if ev.Type == "ADDED" && (name != replaced["w1"] || h == oldHash || h == newHash) {
			t.Errorf("index %d: pod %s (%s=%s) created on %s under OnDelete; only %s, replacing %s with the new template, should be", ev.RV, name, dsHashLabel, h, p.GetSpec().GetNodeName(), replaced["w1"], victim)
		}
	}
	eventually(t, 30*time.Second, func() error {
		if out := run("", "get", "daemonsets"); !regexpLine(out, "agent", "3", "3", "3", "1", "3") {
			return fmt.Errorf("get daemonsets after one pod was replaced: want DESIRED 3 CURRENT 3 READY 3 UP-TO-DATE 1 AVAILABLE 3:\n%s", out)
		}
		return nil
	})
	t.Logf("done in %s", time.Since(start).Round(time.Millisecond))
}

// dsManifest is the DaemonSet the test applies: one demo container with a
// readiness probe, on the nodes labelled tier=edge, its GREETING the
// template's version.
func dsManifest(image, strategy, greeting string) string {
	update := "type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}"
	if strategy == "OnDelete" {
		update = "type: OnDelete"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy:
    %s
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {tier: edge}
      terminationGracePeriodSeconds: 2
      containers:
      - name: agent
        image: %s
        env:
        - {name: GREETING, value: %s}
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
`, update, image, greeting)
}

// dsTaintNode adds a taint to a node through the CLI: its YAML with the
// taint added, replaced (without the resourceVersion, which the heartbeats
// keep moving: replace then retries on a conflict).
func dsTaintNode(t *testing.T, run func(string, ...string) string, node, key, value, effect string) {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(run("", "get", "node", node, "-o", "yaml")), &doc); err != nil {
		t.Fatalf("node %s yaml: %v", node, err)
	}
	delete(doc, "status")
	meta, _ := doc["metadata"].(map[string]any)
	delete(meta, "resourceVersion")
	spec, _ := doc["spec"].(map[string]any)
	if spec == nil {
		spec = map[string]any{}
		doc["spec"] = spec
	}
	taints, _ := spec["taints"].([]any)
	spec["taints"] = append(taints, map[string]any{"key": key, "value": value, "effect": effect})
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	run(string(b), "replace", "-f", "-")
}

// dsRolledOut runs `skiff rollout status` until the DaemonSet is rolled out.
func dsRolledOut(t *testing.T, run func(string, ...string) string, name string) {
	t.Helper()
	if out := run("", "rollout", "status", "daemonset/"+name, "--timeout", "60s"); !strings.Contains(out, fmt.Sprintf("daemon set %q successfully rolled out", name)) {
		t.Fatalf("rollout status daemonset/%s: %s", name, out)
	}
}

// dsWaitPods waits until the DaemonSet has exactly one live pod on each of
// nodes and none elsewhere, each Running, ready and serving greeting as
// `skiff get pods -o wide` and `skiff exec` show, and no pod of it is
// still going. It returns the pods' names by node.
func dsWaitPods(t *testing.T, c *cluster, api rolloutAPI, name string, nodes []string, greeting string) map[string]string {
	t.Helper()
	byNode := map[string]string{}
	eventually(t, 60*time.Second, func() error {
		byNode = map[string]string{}
		out, err := c.cli("", "get", "pods", "-l", "app="+name, "-o", "wide")
		if err != nil {
			return fmt.Errorf("get pods: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 2 {
			return fmt.Errorf("no pods yet:\n%s", out)
		}
		col := slices.Index(strings.Fields(lines[0]), "NODE")
		if col < 0 {
			t.Fatalf("get pods -o wide has no NODE column:\n%s", out)
		}
		for _, line := range lines[1:] {
			f := strings.Fields(line)
			if len(f) <= col {
				return fmt.Errorf("short line %q", line)
			}
			node := f[col]
			if !slices.Contains(nodes, node) {
				return fmt.Errorf("pod %s on node %s, want only %v:\n%s", f[0], node, nodes, out)
			}
			if byNode[node] != "" {
				return fmt.Errorf("two pods on %s:\n%s", node, out)
			}
			if !regexpLine(line, f[0], "1/1", "Running") {
				return fmt.Errorf("pod %s is not 1/1 Running:\n%s", f[0], out)
			}
			byNode[node] = f[0]
		}
		if len(byNode) != len(nodes) {
			return fmt.Errorf("pods on %d of the %d nodes %v:\n%s", len(byNode), len(nodes), nodes, out)
		}
		// The CLI does not list pods being deleted apart: check none is.
		for _, p := range api.list("Pod", "app="+name) {
			if p.Meta().GetDeletionTimestamp() != nil {
				return fmt.Errorf("pod %s is still being deleted", p.Meta().GetName())
			}
		}
		return nil
	})
	for node, pod := range byNode {
		if got := dsGreeting(t, c, pod); got != greeting {
			t.Errorf("pod %s on %s serves greeting %q, want %q", pod, node, got, greeting)
		}
	}
	return byNode
}

// dsGreeting asks the pod's own server (through `skiff exec`) for its
// greeting: the GREETING of the template the pod was made from.
func dsGreeting(t *testing.T, c *cluster, pod string) string {
	t.Helper()
	out, err := c.cli("", "exec", pod, "--", "/hello", "get", "http://127.0.0.1:8080/")
	if err != nil {
		t.Fatalf("exec in %s: %v\n%s", pod, err, out)
	}
	greeting, _, ok := strings.Cut(strings.TrimSpace(out), " from ")
	if !ok {
		t.Fatalf("exec in %s: unexpected answer %q", pod, out)
	}
	return greeting
}

// dsCheckGet checks `skiff get daemonsets` and `-o wide` show the
// DaemonSet complete on n nodes.
func dsCheckGet(t *testing.T, run func(string, ...string) string, name string, n int) {
	t.Helper()
	want := fmt.Sprint(n)
	var out string
	eventually(t, 30*time.Second, func() error {
		out = run("", "get", "daemonsets")
		if !regexpLine(out, "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR", "AGE") {
			t.Fatalf("get daemonsets: want kubectl's columns NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE:\n%s", out)
		}
		if !regexpLine(out, name, want, want, want, want, want, "tier=edge") {
			return fmt.Errorf("get daemonsets: want %s with %s desired, current, ready, up-to-date and available on tier=edge:\n%s", name, want, out)
		}
		return nil
	})
	out = run("", "get", "ds", name, "-o", "wide")
	t.Logf("skiff get ds %s -o wide:\n%s", name, out)
	if !regexpLine(out, "CONTAINERS", "IMAGES", "SELECTOR") || !regexpLine(out, name, "agent", "app=agent") {
		t.Errorf("get ds -o wide: want the containers, images and selector:\n%s", out)
	}
}

// dsCheckDescribe checks describe shows the counts and the controller's
// events.
func dsCheckDescribe(t *testing.T, c *cluster) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "describe", "daemonset/agent")
		if err != nil {
			return fmt.Errorf("describe: %v\n%s", err, out)
		}
		for _, want := range []string{"desiredNumberScheduled: 3", "numberReady: 3", "updatedNumberScheduled: 3", "numberAvailable: 3", "nodeSelector:"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("describe daemonset/agent lacks %q:\n%s", want, out)
			}
		}
		_, events, ok := strings.Cut(out, "\nEvents:\n")
		if !ok || !regexpLine(events, "Normal", "SuccessfulCreate") || !regexpLine(events, "Normal", "SuccessfulDelete") {
			return fmt.Errorf("describe daemonset/agent shows no SuccessfulCreate and SuccessfulDelete events:\n%s", out)
		}
		return nil
	})
}

// dsList lists the DaemonSet's pods and returns the index the list was
// read at.
func dsList(t *testing.T, api rolloutAPI) ([]*pb.Object, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	items, rv, err := api.cl.List(ctx, "Pod", client.ListOptions{Namespace: "default", LabelSelector: "app=agent"})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	return items, rv
}

// dsWatchCaughtUp waits until the watch's view of the pods is the list's:
// the same pods at the same versions, every deletion delivered. (A watch
// with a label selector delivers no index without an event of its pods,
// so waiting for the list's index would not end.)
func dsWatchCaughtUp(t *testing.T, w *chaosWatch, items []*pb.Object) {
	t.Helper()
	want := map[string]uint64{}
	for _, o := range items {
		want[o.Meta().GetName()] = o.Meta().GetResourceVersion()
	}
	if err := poll(30*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		got := map[string]uint64{}
		for n, o := range w.known {
			got[n] = o.Meta().GetResourceVersion()
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("the pod watch has %v, the list %v (last error: %v)", got, want, w.lastErr)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// dsLivePods returns the pods neither being deleted nor finished, by node.
func dsLivePods(items []*pb.Object) map[string]*pb.Pod {
	out := map[string]*pb.Pod{}
	for _, o := range items {
		p := o.GetPod()
		if p.GetMetadata().GetDeletionTimestamp() == nil && !chaosTerminal(p) {
			out[p.GetSpec().GetNodeName()] = p
		}
	}
	return out
}

func dsNames(pods map[string]*pb.Pod) map[string]string {
	out := map[string]string{}
	for n, p := range pods {
		out[n] = p.GetMetadata().GetName()
	}
	return out
}

// dsCheckSurge replays the pod watch's history state by state (the events
// of one Raft entry applied together) over the rolling update from
// oldHash to newHash, with maxSurge 1 and maxUnavailable 0:
//   - once every eligible node had a ready pod, each kept at least one ready
//     pod not being deleted at every index;
//   - each old pod's deletion began when a new pod on its node was ready;
//   - at most one node had two live pods (maxSurge), none more than two.
func dsCheckSurge(t *testing.T, history []chaosObjEvent, oldHash, newHash string) {
	t.Helper()
	state := map[string]*pb.Pod{} // by uid
	deleting := map[string]bool{} // uids whose deletion was seen
	armed := false
	states, oldDeleted, surgedNodes := 0, 0, map[string]bool{}
	for i := 0; i < len(history); {
		rv := history[i].RV
		var started []*pb.Pod // pods whose deletion began at this index
		for ; i < len(history) && history[i].RV == rv; i++ {
			ev := history[i]
			p := ev.Obj.GetPod()
			uid := p.GetMetadata().GetUid()
			if (ev.Type == "DELETED" || p.GetMetadata().GetDeletionTimestamp() != nil) && !deleting[uid] {
				deleting[uid] = true
				started = append(started, p)
			}
			if ev.Type == "DELETED" {
				delete(state, uid)
			} else {
				state[uid] = p
			}
		}
		ready, live := map[string]int{}, map[string]int{}
		newReady := map[string]bool{}
		for _, p := range state {
			if p.GetMetadata().GetDeletionTimestamp() != nil || chaosTerminal(p) {
				continue
			}
			n := p.GetSpec().GetNodeName()
			live[n]++
			if chaosReady(p) {
				ready[n]++
				if p.GetMetadata().GetLabels()[dsHashLabel] == newHash {
					newReady[n] = true
				}
			}
		}
		if !armed {
			armed = true
			for _, n := range dsEligible {
				armed = armed && ready[n] > 0
			}
			if !armed {
				continue
			}
		}
		states++
		for _, n := range dsEligible {
			if ready[n] == 0 {
				t.Errorf("index %d: node %s has no ready pod (live %d) during the rolling update with maxUnavailable 0", rv, n, live[n])
			}
		}
		surging := 0
		for n, k := range live {
			if k > 1 {
				surging++
				surgedNodes[n] = true
			}
			if k > 2 {
				t.Errorf("index %d: node %s has %d live pods, more than old + new", rv, n, k)
			}
		}
		if surging > 1 {
			t.Errorf("index %d: %d nodes have an old and a new pod at once, more than maxSurge 1 (live per node %v)", rv, surging, live)
		}
		for _, p := range started {
			if p.GetMetadata().GetLabels()[dsHashLabel] != oldHash {
				continue
			}
			oldDeleted++
			if n := p.GetSpec().GetNodeName(); !newReady[n] {
				t.Errorf("index %d: old pod %s on %s deleted before a new pod there was ready", rv, p.GetMetadata().GetName(), n)
			}
		}
	}
	if !armed || states == 0 {
		t.Fatal("the pod watch never saw every eligible node with a ready pod")
	}
	if oldDeleted != len(dsEligible) {
		t.Errorf("the watch saw %d old pods deleted, want one per node (%d)", oldDeleted, len(dsEligible))
	}
	nodes := make([]string, 0, len(surgedNodes))
	for n := range surgedNodes {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	if !slices.Equal(nodes, dsEligible) {
		t.Errorf("nodes seen with an old and a new pod at once: %v, want each of %v (maxSurge starts the new pod first)", nodes, dsEligible)
	}
	t.Logf("surge replay: %d states checked, %d old pods deleted, surged on %v", states, oldDeleted, nodes)
}
