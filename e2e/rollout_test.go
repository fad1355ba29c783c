package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// rolloutAPI reads objects for the rollout tests through the Go client,
// failing the test on errors.
type rolloutAPI struct {
	t  *testing.T
	cl *client.Client
}

func (a rolloutAPI) get(kind, name string) (*pb.Object, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.cl.Get(ctx, kind, "default", name, client.ReadOptions{})
}

func (a rolloutAPI) mustGet(kind, name string) *pb.Object {
	a.t.Helper()
	obj, err := a.get(kind, name)
	if err != nil {
		a.t.Fatalf("get %s %s: %v", kind, name, err)
	}
	return obj
}

func (a rolloutAPI) list(kind, selector string) []*pb.Object {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	items, _, err := a.cl.List(ctx, kind, client.ListOptions{Namespace: "default", LabelSelector: selector})
	if err != nil {
		a.t.Fatalf("list %s: %v", kind, err)
	}
	return items
}

// ownedBy returns the objects among items whose controller is uid, by name.
func ownedBy(items []*pb.Object, uid string) map[string]*pb.Object {
	out := map[string]*pb.Object{}
	for _, o := range items {
		if ref := chaosControllerRef(o.Meta()); ref != nil && ref.GetUid() == uid {
			out[o.Meta().GetName()] = o
		}
	}
	return out
}

// activeImages counts the images of the pods that are neither terminating
// nor finished.
func activeImages(pods []*pb.Object) map[string]int {
	out := map[string]int{}
	for _, o := range pods {
		p := o.GetPod()
		if p.GetMetadata().GetDeletionTimestamp() == nil && !chaosTerminal(p) {
			out[p.GetSpec().GetContainers()[0].GetImage()]++
		}
	}
	return out
}

func templateImage(d *pb.Object) string {
	return d.GetDeployment().GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetImage()
}

// historyRevisions parses the REVISION column of `skiff rollout history`.
func historyRevisions(out string) []int {
	var revs []int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.Atoi(f[0]); err == nil {
			revs = append(revs, n)
		}
	}
	sort.Ints(revs)
	return revs
}

func progressingReason(d *pb.Deployment) string {
	for _, c := range d.GetStatus().GetConditions() {
		if c.GetType() == "Progressing" {
			return c.GetReason()
		}
	}
	return ""
}

// TestRolloutCLI drives a Deployment through the operator commands against
// real masters and two hollow workers: rollout status, set image, history,
// pause and resume, undo (to a revision and to the previous one), describe
// with its events, scale, cordon and drain, and delete with the orphan and
// foreground cascades.
func TestRolloutCLI(t *testing.T) {
	cc := startChaosClusterArgs(t)
	c := cc.cluster
	hollowWorker(t, c, "h1")
	hollowWorker(t, c, "h2")
	waitNodesReady(t, c, "h1", "h2")
	api := rolloutAPI{t: t, cl: c.client()}
	run := func(args ...string) string {
		t.Helper()
		out, err := c.cli("", args...)
		if err != nil {
			t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	rolledOut := func(name string) {
		t.Helper()
		want := fmt.Sprintf("deployment %q successfully rolled out", name)
		if out := run("rollout", "status", "deployment/"+name, "--timeout", "60s"); !strings.Contains(out, want) {
			t.Fatalf("rollout status of %s: %s", name, out)
		}
	}
	// podsRun waits until the Deployment's live pods all run image.
	podsRun := func(selector, image string, n int) {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			if got := activeImages(api.list("Pod", selector)); got[image] != n || len(got) != 1 {
				return fmt.Errorf("want %d live pods of %s, have %v", n, image, got)
			}
			return nil
		})
	}
	if out, err := c.cli(`
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
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	rolledOut("web")
	uid := api.mustGet("Deployment", "web").Meta().GetUid()

	// Revision 2.
	run("set", "image", "deployment/web", "app=example/web:v2")
	rolledOut("web")
	if out := run("get", "deploy", "web", "-o", "wide"); !strings.Contains(out, "example/web:v2") || !regexpLine(out, "web", "4/4") {
		t.Errorf("after set image:\n%s", out)
	}
	if revs := historyRevisions(run("rollout", "history", "deployment/web")); !slices.Equal(revs, []int{1, 2}) {
		t.Errorf("rollout history: revisions %v, want [1 2]", revs)
	}

	// Paused, a template change is recorded but not rolled out: no new
	// ReplicaSet, no pod of the new image, while the controller has seen
	// the change (observedGeneration) and reports the pause.
	if out := run("rollout", "pause", "deployment/web"); !strings.Contains(out, "paused") {
		t.Errorf("rollout pause: %s", out)
	}
	before := ownedBy(api.list("ReplicaSet", ""), uid)
	run("set", "image", "deployment/web", "app=example/web:v3")
	func() {
		window := time.Now().Add(3 * time.Second) // at least this long without a new ReplicaSet
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for name, rs := range ownedBy(api.list("ReplicaSet", ""), uid) {
				if before[name] == nil {
					t.Fatalf("the paused Deployment got a new ReplicaSet %s (%s)", name, rs.GetReplicaSet().GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetImage())
				}
			}
			if imgs := activeImages(api.list("Pod", "app=web")); imgs["example/web:v3"] > 0 {
				t.Fatalf("the paused Deployment has pods of the new image: %v", imgs)
			}
			d := api.mustGet("Deployment", "web")
			dep := d.GetDeployment()
			seen := dep.GetSpec().GetPaused() && templateImage(d) == "example/web:v3" &&
				dep.GetStatus().GetObservedGeneration() >= d.Meta().GetGeneration() && progressingReason(dep) == "DeploymentPaused"
			if seen && time.Now().After(window) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the controller did not report the paused Deployment (paused %v, image %s, generation %d observed %d, Progressing %q)",
					dep.GetSpec().GetPaused(), templateImage(d), d.Meta().GetGeneration(), dep.GetStatus().GetObservedGeneration(), progressingReason(dep))
			}
			<-tick.C
		}
	}()
	if out := run("get", "deploy", "web", "-o", "yaml"); !strings.Contains(out, "paused: true") {
		t.Errorf("get -o yaml of the paused Deployment does not show it paused:\n%s", out)
	}
	if out := run("rollout", "resume", "deployment/web"); !strings.Contains(out, "resumed") {
		t.Errorf("rollout resume: %s", out)
	}
	// Revision 3, rolled out once resumed.
	rolledOut("web")
	podsRun("app=web", "example/web:v3", 4)

	// Back to revision 1's template, which becomes revision 4.
	if out := run("rollout", "undo", "deployment/web", "--to-revision", "1"); !strings.Contains(out, "rolled back") {
		t.Errorf("rollout undo --to-revision 1: %s", out)
	}
	if img := templateImage(api.mustGet("Deployment", "web")); img != "example/web:v1" {
		t.Errorf("after undo --to-revision 1 the template has %s, want revision 1's example/web:v1", img)
	}
	rolledOut("web")
	podsRun("app=web", "example/web:v1", 4)
	if out := run("get", "deploy", "web", "-o", "wide"); !strings.Contains(out, "example/web:v1") {
		t.Errorf("undo did not bring back v1:\n%s", out)
	}
	if revs := historyRevisions(run("rollout", "history", "deployment/web")); !slices.Equal(revs, []int{2, 3, 4}) {
		t.Errorf("rollout history after undo --to-revision 1: revisions %v, want [2 3 4] (revision 1 rolled back to becomes 4)", revs)
	}
	// Plain undo: the revision before the latest (3, v3).
	run("rollout", "undo", "deployment/web")
	rolledOut("web")
	if img := templateImage(api.mustGet("Deployment", "web")); img != "example/web:v3" {
		t.Errorf("after undo the template has %s, want the previous revision's example/web:v3", img)
	}
	podsRun("app=web", "example/web:v3", 4)

	// describe shows the controller's events under Events.
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "describe", "deployment/web")
		_, events, ok := strings.Cut(out, "\nEvents:\n")
		if err != nil || !ok || !regexpLine(events, "Normal", "ScalingReplicaSet") {
			return fmt.Errorf("describe deployment/web shows no ScalingReplicaSet event under Events: %v\n%s", err, out)
		}
		return nil
	})

	run("scale", "deployment", "web", "--replicas", "2")
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pods", "-l", "app=web")
		if n := strings.Count(out, "Running"); err != nil || n != 2 || strings.Count(out, "\n") != 3 {
			return fmt.Errorf("want exactly 2 Running pods after scale: %v\n%s", err, out)
		}
		return nil
	})

	// cordon + drain h1: every pod ends up on h2.
	run("cordon", "h1")
	if out := run("get", "nodes"); !regexpLine(out, "h1", "Ready,SchedulingDisabled") {
		t.Errorf("cordoned node:\n%s", out)
	}
	if out := run("drain", "h1", "--ignore-daemonsets", "--timeout", "60s"); !strings.Contains(out, "node/h1 drained") {
		t.Fatalf("drain: %s", out)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pods", "-l", "app=web", "-o", "wide")
		// Match the NODE column: a pod's random name may contain "h2".
		onH1, onH2 := 0, 0
		for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			switch f := strings.Fields(line); f[len(f)-1] {
			case "h1":
				onH1++
			case "h2":
				onH2++
			}
		}
		if err != nil || onH2 != 2 || onH1 != 0 {
			return fmt.Errorf("want both pods on h2 after draining h1: %v\n%s", err, out)
		}
		return nil
	})
	run("uncordon", "h1")
	if out := run("get", "nodes"); !regexpLine(out, "h1", "Ready") || strings.Contains(out, "SchedulingDisabled") {
		t.Errorf("uncordoned node:\n%s", out)
	}

	// --cascade orphan: the Deployment goes, its ReplicaSets stay without
	// an owner, and their pods keep running.
	rss := ownedBy(api.list("ReplicaSet", ""), uid)
	if len(rss) == 0 {
		t.Fatal("the Deployment owns no ReplicaSet")
	}
	pods := map[string]bool{}
	for _, p := range api.list("Pod", "app=web") {
		pods[p.Meta().GetName()] = true
	}
	run("delete", "deployment/web", "--cascade", "orphan")
	eventually(t, 30*time.Second, func() error {
		if _, err := api.get("Deployment", "web"); !chaosNotFound(err) {
			return fmt.Errorf("deployment web still there after delete --cascade orphan (%v)", err)
		}
		for name := range rss {
			rs, err := api.get("ReplicaSet", name)
			if err != nil {
				return fmt.Errorf("replicaset %s of the orphaning Deployment: %v", name, err)
			}
			if refs := rs.Meta().GetOwnerReferences(); len(refs) > 0 {
				return fmt.Errorf("replicaset %s still has owner references %v", name, refs)
			}
		}
		return nil
	})
	live := map[string]bool{}
	for _, p := range api.list("Pod", "app=web") {
		if p.Meta().GetDeletionTimestamp() == nil {
			live[p.Meta().GetName()] = true
		}
	}
	if len(live) != len(pods) {
		t.Errorf("the orphaned ReplicaSets' pods changed from %v to %v", pods, live)
	}
	for name := range pods {
		if !live[name] {
			t.Errorf("pod %s of an orphaned ReplicaSet is gone or going", name)
		}
	}

	// --cascade foreground: the ReplicaSets and their pods are deleted
	// first (each ReplicaSet after its pods), the Deployment last. The
	// watches record the order by Raft index.
	depWatch := startChaosWatch(cc, "Deployment", "default", "")
	rsWatch := startChaosWatch(cc, "ReplicaSet", "default", "app=api")
	podWatch := startChaosWatch(cc, "Pod", "default", "app=api")
	if out, err := c.cli(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: example/api:v1
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply api: %v\n%s", err, out)
	}
	rolledOut("api")
	apiUID := api.mustGet("Deployment", "api").Meta().GetUid()
	apiRS := ownedBy(api.list("ReplicaSet", ""), apiUID)
	podOwner := map[string]string{} // pod -> its ReplicaSet
	for _, p := range api.list("Pod", "app=api") {
		if ref := chaosControllerRef(p.Meta()); ref != nil && apiRS[ref.GetName()] != nil {
			podOwner[p.Meta().GetName()] = ref.GetName()
		}
	}
	if len(apiRS) != 1 || len(podOwner) != 3 {
		t.Fatalf("deployment api: want 1 ReplicaSet with 3 pods, have %d ReplicaSets and pods %v", len(apiRS), podOwner)
	}
	run("delete", "deployment/api", "--cascade", "foreground")
	// deleted returns the index at which each named object was deleted, as
	// the watch saw it, and what it saw of the object before.
	deleted := func(w *chaosWatch) (map[string]uint64, map[string][]*pb.Object) {
		at, seen := map[string]uint64{}, map[string][]*pb.Object{}
		for _, ev := range w.history() {
			n := ev.Obj.Meta().GetName()
			if ev.Type == "DELETED" {
				at[n] = ev.RV
			} else {
				seen[n] = append(seen[n], ev.Obj)
			}
		}
		return at, seen
	}
	eventually(t, 60*time.Second, func() error {
		var missing []string
		depGone, _ := deleted(depWatch)
		if depGone["api"] == 0 {
			missing = append(missing, "deployment/api")
		}
		rsGone, _ := deleted(rsWatch)
		for n := range apiRS {
			if rsGone[n] == 0 {
				missing = append(missing, "replicaset/"+n)
			}
		}
		podGone, _ := deleted(podWatch)
		for n := range podOwner {
			if podGone[n] == 0 {
				missing = append(missing, "pod/"+n)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not deleted yet (as the watches saw it): %v", missing)
		}
		return nil
	})
	depGone, depSeen := deleted(depWatch)
	rsGone, _ := deleted(rsWatch)
	podGone, _ := deleted(podWatch)
	waited := false
	for _, d := range depSeen["api"] {
		waited = waited || (d.Meta().GetDeletionTimestamp() != nil && slices.Contains(d.Meta().GetFinalizers(), "foregroundDeletion"))
	}
	if !waited {
		t.Error("deployment api was never seen waiting for its dependents (deletionTimestamp with the foregroundDeletion finalizer)")
	}
	for rs := range apiRS {
		if rsGone[rs] >= depGone["api"] {
			t.Errorf("replicaset %s deleted at index %d, not before its Deployment (%d)", rs, rsGone[rs], depGone["api"])
		}
	}
	for pod, rs := range podOwner {
		if podGone[pod] >= rsGone[rs] {
			t.Errorf("pod %s deleted at index %d, not before its ReplicaSet %s (%d)", pod, podGone[pod], rs, rsGone[rs])
		}
	}
	// The orphaned ReplicaSets of web were left alone throughout.
	for name := range rss {
		if _, err := api.get("ReplicaSet", name); err != nil {
			t.Errorf("orphaned replicaset %s: %v", name, err)
		}
	}
}

// TestRolloutBoundsHollowWorkers rolls a Deployment of 6 replicas
// (maxSurge 1, maxUnavailable 1, minReadySeconds 1) over three nodes of a
// real `skiff worker --hollow --hollow-count 3` process, while watches
// record every change of its pods and of the Deployment. The history is
// replayed afterwards: at no index did the rollout have more than
// replicas+maxSurge live pods, nor fewer than replicas-maxUnavailable ready
// ones once the first rollout was complete.
func TestRolloutBoundsHollowWorkers(t *testing.T) {
	const replicas, surge, unavailable = 6, 1, 1
	cc := startChaosClusterArgs(t)
	c := cc.cluster
	hollowWorker(t, c, "hw", "--hollow-count", "3")
	nodes := []string{"hw-0001", "hw-0002", "hw-0003"}
	cl := c.client()
	if err := chaosWaitNodes(cl, 60*time.Second, nodes...); err != nil {
		t.Fatalf("hollow nodes: %v", err)
	}
	api := rolloutAPI{t: t, cl: cl}
	podWatch := startChaosWatch(cc, "Pod", "default", "app=web")
	depWatch := startChaosWatch(cc, "Deployment", "default", "")

	obj := chaosDeployment("web", "example/web:v1", replicas, strconv.Itoa(surge), strconv.Itoa(unavailable))
	obj.GetDeployment().Spec.MinReadySeconds = 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Create(ctx, obj); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	rolledOut := func(image string) *pb.Object {
		t.Helper()
		var d *pb.Object
		if err := poll(90*time.Second, func() error {
			var err error
			if d, err = api.get("Deployment", "web"); err != nil {
				return err
			}
			if img := templateImage(d); img != image {
				return fmt.Errorf("template has %s", img)
			}
			if err := chaosRolledOut(d.GetDeployment()); err != nil {
				return err
			}
			if got := activeImages(api.list("Pod", "app=web")); got[image] != replicas || len(got) != 1 {
				return fmt.Errorf("live pods by image %v, want %d of %s", got, replicas, image)
			}
			return nil
		}); err != nil {
			t.Fatalf("rollout of %s: %v", image, err)
		}
		return d
	}
	rolledOut("example/web:v1")

	start := time.Now()
	if out, err := c.cli("", "set", "image", "deployment/web", "app=example/web:v2"); err != nil {
		t.Fatalf("set image: %v\n%s", err, out)
	}
	if out, err := c.cli("", "rollout", "status", "deployment/web", "--timeout", "90s"); err != nil || !strings.Contains(out, `deployment "web" successfully rolled out`) {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	final := rolledOut("example/web:v2")
	t.Logf("rolled %d replicas over to v2 in %s", replicas, time.Since(start).Round(time.Millisecond))

	pods := api.list("Pod", "app=web")
	perNode := map[string]int{}
	var lastPodRV uint64
	for _, p := range pods {
		perNode[p.GetPod().GetSpec().GetNodeName()]++
		lastPodRV = max(lastPodRV, p.Meta().GetResourceVersion())
		if n := p.GetPod().GetSpec().GetNodeName(); !slices.Contains(nodes, n) {
			t.Errorf("pod %s is on %q, not on one of the hollow nodes %v", p.Meta().GetName(), n, nodes)
		}
	}
	t.Logf("pods per node: %v", perNode)
	if err := podWatch.waitFor(lastPodRV, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := depWatch.waitFor(final.Meta().GetResourceVersion(), 30*time.Second); err != nil {
		t.Fatal(err)
	}

	history := podWatch.history()
	b := chaosCheckBounds(history, chaosSpecVersions(depWatch.history(), "web"), chaosBoundLag)
	t.Logf("bounds replay: %d creations and %d ready deletions checked, %d events unchecked, at most %d live pods, at least %d ready after a deletion",
		b.Creations, b.Deletions, b.Unchecked, b.MaxActive, b.MinAvailable)
	for _, v := range b.Violations {
		t.Error(v)
	}
	// Every pod of both templates was created under the watch (the replay
	// checks a Raft entry that creates several pods once), and the rollout
	// took old ready pods down while new ones were ready.
	created := 0
	for _, ev := range history {
		if ev.Type == "ADDED" && !ev.Relist {
			created++
		}
	}
	if created < 2*replicas || b.Creations == 0 {
		t.Errorf("the watch saw %d pods created (%d creation states checked), want at least %d (v1 and v2)", created, b.Creations, 2*replicas)
	}
	if b.Deletions == 0 {
		t.Error("no deletion of a ready pod was checked against maxUnavailable")
	}
	if b.MaxActive > replicas+surge {
		t.Errorf("at most %d live pods seen, more than replicas+maxSurge = %d", b.MaxActive, replicas+surge)
	}

	// The same history, state by state (events of one Raft entry applied
	// together): with one unchanging spec and no node lost the bounds hold
	// at every index, not only at creations and deletions.
	state := map[string]*pb.Pod{}
	armed, states := false, 0
	for i := 0; i < len(history); {
		j := i
		for j < len(history) && history[j].RV == history[i].RV {
			ev := history[j]
			if ev.Type == "DELETED" {
				delete(state, ev.Obj.Meta().GetUid())
			} else {
				state[ev.Obj.Meta().GetUid()] = ev.Obj.GetPod()
			}
			j++
		}
		rv := history[i].RV
		i = j
		active, ready := 0, 0
		images := map[string]int{}
		for _, p := range state {
			if p.GetMetadata().GetDeletionTimestamp() == nil && !chaosTerminal(p) {
				active++
				images[p.GetSpec().GetContainers()[0].GetImage()]++
				if chaosReady(p) {
					ready++
				}
			}
		}
		if active > replicas+surge {
			t.Errorf("index %d: %d live pods %v, more than replicas+maxSurge = %d", rv, active, images, replicas+surge)
		}
		// Armed once the first rollout had every replica ready.
		armed = armed || ready == replicas
		if armed {
			states++
			if ready < replicas-unavailable {
				t.Errorf("index %d: %d ready pods %v, fewer than replicas-maxUnavailable = %d", rv, ready, images, replicas-unavailable)
			}
		}
	}
	if states == 0 {
		t.Error("the watch never saw every replica ready")
	}
	t.Logf("%d states replayed after the first rollout", states)
}
