package e2e

// The chaos suite, worker loss scenario (issue 7, item 5): workers that run
// pods of a Deployment are SIGKILLed. Their nodes must go NotReady within
// the grace period, their pods must be evicted and replaced elsewhere
// within the eviction timeout (grace period + toleration), and a worker
// restarted with its data dir must come back Ready and keep exactly the
// containers of the pods still bound to it: re-adopted when it was back in
// time, removed when their pods were deleted while it was away.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// The masters' node-monitor period (server.DefaultConfig; no flag) and the
// test workers' --heartbeat-interval.
const (
	chaosNodeMonitorPeriod = 5 * time.Second
	chaosHeartbeatInterval = time.Second
)

// chaosLossTimes is what one worker kill measured, each from the kill.
type chaosLossTimes struct {
	Round    int     `json:"round"`
	Worker   string  `json:"worker"`
	Real     bool    `json:"real"`
	Pods     int     `json:"pods"`
	NotReady float64 `json:"not_ready_seconds"`
	Evicted  float64 `json:"evicted_seconds"`  // all its pods terminating or gone
	Replaced float64 `json:"replaced_seconds"` // the Deployment's replicas all ready on other workers
	// Back and Clean are measured from the restart: Ready again, and its
	// containers and pods cleaned up.
	Back  float64 `json:"ready_after_restart_seconds"`
	Clean float64 `json:"clean_after_restart_seconds"`
}

// chaosReadoptTimes is what one kill-and-restart of the real worker before
// its grace period ran out measured.
type chaosReadoptTimes struct {
	Round      int `json:"round"`
	Containers int `json:"containers"`
	// Readopted: restart -> the first heartbeat after it (heartbeat times
	// have second precision) with the same containers running.
	Readopted float64 `json:"readopted_seconds"`
}

// chaosWorkerRig is the worker loss scenario's cluster, workers and
// Deployment.
type chaosWorkerRig struct {
	t        *testing.T
	sc       *scenario
	cl       *client.Client
	ops      *chaosOps
	dep      string
	real     *workerProc
	rt       *wrt.Runtime
	hollow   map[string]*workerProc
	grace    time.Duration
	tolerate time.Duration
	problems []string
	losses   []chaosLossTimes
	// lateNotReady counts kills after which the node went NotReady later
	// than grace + heartbeat interval (within the monitor period).
	lateNotReady int
	readopts     []chaosReadoptTimes
}

func (r *chaosWorkerRig) fail(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.t.Logf("problem: "+format, args...)
}

// read returns the cluster's state, retrying through transient errors.
func (r *chaosWorkerRig) read() chaosWorld {
	r.t.Helper()
	var w chaosWorld
	if err := poll(30*time.Second, func() error {
		var err error
		w, err = chaosRead(r.cl)
		return err
	}); err != nil {
		r.t.Fatalf("read the cluster: %v", err)
	}
	return w
}

// activeOn returns the Deployment's pods bound to node that are not
// terminating.
func (r *chaosWorkerRig) activeOn(w chaosWorld, node string) []*pb.Pod {
	var out []*pb.Pod
	for _, p := range w.podsOf(r.dep) {
		if p.GetSpec().GetNodeName() == node && p.GetMetadata().GetDeletionTimestamp() == nil {
			out = append(out, p)
		}
	}
	return out
}

func chaosHeartbeat(n *pb.Node) time.Time {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" && c.GetLastHeartbeatTime() != nil {
			return c.GetLastHeartbeatTime().AsTime()
		}
	}
	return time.Time{}
}

func chaosNodeStatus(n *pb.Node) string {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus()
		}
	}
	return ""
}

// spread rolls the Deployment (a new env value) so that its pods spread
// over every worker again, the restarted ones included.
func (r *chaosWorkerRig) spread(round int) {
	v := fmt.Sprint(round)
	err := r.ops.change("template", "set env ROUND="+v,
		func(d *pb.Deployment) { chaosSetEnv(d, "ROUND", v) },
		func(d *pb.Deployment) bool { return chaosEnv(d, "ROUND") == v }, 60*time.Second)
	if err == nil {
		err = r.ops.waitRolledOut(90 * time.Second)
	}
	if err != nil {
		r.t.Fatalf("round %d: roll the Deployment: %v", round, err)
	}
}

// readopt SIGKILLs the real worker and restarts it at once: it must pick
// up its running containers again, with no new ones and none lost.
func (r *chaosWorkerRig) readopt(round int) {
	cc := r.sc.cc
	w := r.read()
	before := map[string]bool{}
	cs, err := r.rt.List()
	if err != nil {
		r.t.Fatalf("list containers: %v", err)
	}
	for _, c := range cs {
		if c.State == wrt.StateRunning {
			before[c.ID] = true
		}
	}
	if _, err := chaosContainers(r.rt, "w1", w); err != nil {
		r.fail("round %d: before the kill, w1: %v", round, err)
	}
	f := r.sc.inject("kill-restart", "w1")
	r.real.kill()
	r.real.start()
	restarted := time.Now()
	f.lift(cc.now())
	err = poll(30*time.Second, func() error {
		w, err := chaosRead(r.cl)
		if err != nil {
			return err
		}
		n := w.nodes["w1"]
		if chaosNodeStatus(n) != "True" || chaosHeartbeat(n).Before(restarted.Truncate(time.Second)) {
			return fmt.Errorf("w1 has not heartbeated since its restart (Ready %q)", chaosNodeStatus(n))
		}
		if _, err := chaosContainers(r.rt, "w1", w); err != nil {
			return err
		}
		cs, err := r.rt.List()
		if err != nil {
			return err
		}
		after := map[string]bool{}
		for _, c := range cs {
			if c.State == wrt.StateRunning {
				after[c.ID] = true
			}
		}
		for id := range before {
			if !after[id] {
				return fmt.Errorf("container %s is no longer running after the restart", id)
			}
		}
		for id := range after {
			if !before[id] {
				return fmt.Errorf("container %s was started after the restart instead of adopting the old one", id)
			}
		}
		for _, p := range r.activeOn(w, "w1") {
			if !chaosReady(p) {
				return fmt.Errorf("pod %s is not ready", p.GetMetadata().GetName())
			}
		}
		return nil
	})
	took := time.Since(restarted)
	f.Note = fmt.Sprintf("%d containers re-adopted in %.2fs", len(before), took.Seconds())
	if err != nil {
		r.fail("round %d: w1 restarted at once did not re-adopt its containers: %v", round, err)
		f.Note = "re-adoption failed"
	}
	r.readopts = append(r.readopts, chaosReadoptTimes{Round: round, Containers: len(before), Readopted: took.Seconds()})
}

// lose SIGKILLs the real worker and one hollow worker, measures how the
// cluster notices and replaces their pods, restarts them and checks that
// they come back clean.
func (r *chaosWorkerRig) lose(round int, victim string) {
	cc := r.sc.cc
	w := r.read()
	replicas, _, _ := chaosFenceposts(w.deployment(r.dep))
	victims := []string{"w1", victim}
	procs := map[string]*workerProc{"w1": r.real, victim: r.hollow[victim]}
	pods := map[string]map[string]bool{}
	for _, v := range victims {
		pods[v] = map[string]bool{}
		for _, p := range r.activeOn(w, v) {
			pods[v][p.GetMetadata().GetUid()] = true
		}
		if len(pods[v]) == 0 {
			r.fail("round %d: %s runs no pod of the Deployment before its kill: the round tests less", round, v)
		}
	}
	// Still no duplicate since the re-adoption, a few syncs later.
	if _, err := chaosContainers(r.rt, "w1", w); err != nil {
		r.fail("round %d: before the kill, w1: %v", round, err)
	}
	faults := map[string]int{}
	killed := map[string]time.Time{}
	for _, v := range victims {
		r.sc.inject("kill", v)
		faults[v] = len(r.sc.rep.Faults) - 1
		procs[v].kill()
		killed[v] = time.Now()
	}
	times := map[string]*chaosLossTimes{}
	for _, v := range victims {
		times[v] = &chaosLossTimes{Round: round, Worker: v, Real: v == "w1", Pods: len(pods[v])}
	}
	since := func(v string) float64 { return time.Since(killed[v]).Seconds() }
	err := poll(r.grace+r.tolerate+60*time.Second, func() error {
		w, err := chaosRead(r.cl)
		if err != nil {
			return err
		}
		var waiting []string
		for _, v := range victims {
			tm := times[v]
			if tm.NotReady == 0 && chaosNodeStatus(w.nodes[v]) != "True" {
				tm.NotReady = since(v)
			}
			if tm.Evicted == 0 {
				left := 0
				for _, p := range w.pods {
					if pods[v][p.GetMetadata().GetUid()] && p.GetMetadata().GetDeletionTimestamp() == nil {
						left++
					}
				}
				if left == 0 {
					tm.Evicted = since(v)
				} else {
					waiting = append(waiting, fmt.Sprintf("%d pods of %s not evicted", left, v))
				}
			}
			if tm.NotReady == 0 {
				waiting = append(waiting, v+" still Ready")
			}
		}
		ready := 0
		for _, p := range w.podsOf(r.dep) {
			n := p.GetSpec().GetNodeName()
			if p.GetMetadata().GetDeletionTimestamp() == nil && chaosReady(p) && n != victims[0] && n != victims[1] {
				ready++
			}
		}
		if ready == int(replicas) {
			for _, v := range victims {
				if times[v].Replaced == 0 {
					times[v].Replaced = since(v)
				}
			}
		} else {
			waiting = append(waiting, fmt.Sprintf("%d of %d pods ready on the other workers", ready, replicas))
		}
		if len(waiting) > 0 {
			return fmt.Errorf("%s", strings.Join(waiting, ", "))
		}
		return nil
	})
	if err != nil {
		r.fail("round %d: after killing %s: %v", round, strings.Join(victims, " and "), err)
	}

	// Back with the same data dirs.
	restarted := map[string]time.Time{}
	for _, v := range victims {
		procs[v].start()
		restarted[v] = time.Now()
		f := &r.sc.rep.Faults[faults[v]]
		f.lift(cc.now())
	}
	err = poll(60*time.Second, func() error {
		w, err := chaosRead(r.cl)
		if err != nil {
			return err
		}
		var waiting []string
		for _, v := range victims {
			tm := times[v]
			// Heartbeat times have second precision; the kill was seconds
			// before, so a heartbeat of the restart's second is the new
			// process's.
			hb := chaosHeartbeat(w.nodes[v])
			if tm.Back == 0 && chaosNodeStatus(w.nodes[v]) == "True" && !hb.Before(restarted[v].Truncate(time.Second)) {
				tm.Back = time.Since(restarted[v]).Seconds()
			}
			if tm.Back == 0 {
				waiting = append(waiting, v+" not Ready again")
				continue
			}
			if tm.Clean != 0 {
				continue
			}
			var problem string
			for _, p := range w.pods {
				if p.GetSpec().GetNodeName() == v && p.GetMetadata().GetDeletionTimestamp() != nil {
					problem = fmt.Sprintf("pod %s on %s is still terminating", p.GetMetadata().GetName(), v)
				}
			}
			if v == "w1" && problem == "" {
				if _, err := chaosContainers(r.rt, "w1", w); err != nil {
					problem = "w1: " + err.Error()
				}
			}
			if problem == "" {
				tm.Clean = time.Since(restarted[v]).Seconds()
			} else {
				waiting = append(waiting, problem)
			}
		}
		if len(waiting) > 0 {
			return fmt.Errorf("%s", strings.Join(waiting, "; "))
		}
		return nil
	})
	if err != nil {
		r.fail("round %d: the restarted workers: %v", round, err)
	}

	// The bounds, stage by stage. NotReady: the masters mark a node once
	// its heartbeat has not changed for the grace period, checking at least
	// every node-monitor period, as Kubernetes does (its guarantee is grace
	// + monitor period); the last heartbeat came up to one heartbeat
	// interval before the kill. Evicted: the toleration after the NotReady
	// taint. Replaced: create, schedule and start on a live worker.
	for _, v := range victims {
		tm := times[v]
		f := &r.sc.rep.Faults[faults[v]]
		f.Unavailable = tm.Replaced
		f.Note = fmt.Sprintf("%d pods; NotReady %.2fs, evicted %.2fs, replaced %.2fs; after restart Ready %.2fs, clean %.2fs",
			tm.Pods, tm.NotReady, tm.Evicted, tm.Replaced, tm.Back, tm.Clean)
		notReadyBound := r.grace + chaosNodeMonitorPeriod + chaosHeartbeatInterval
		if tm.NotReady == 0 || tm.NotReady > notReadyBound.Seconds() {
			r.fail("round %d: %s went NotReady %.2fs after its kill, want within grace %s + monitor period %s + heartbeat interval %s",
				round, v, tm.NotReady, r.grace, chaosNodeMonitorPeriod, chaosHeartbeatInterval)
		}
		if tm.NotReady > (r.grace + chaosHeartbeatInterval).Seconds() {
			r.lateNotReady++
		}
		evictBound := r.tolerate + 2*time.Second
		if tm.Evicted == 0 || tm.Evicted-tm.NotReady > evictBound.Seconds() {
			r.fail("round %d: %s's pods were evicted %.2fs after it went NotReady, want within the toleration %s (+2s)",
				round, v, tm.Evicted-tm.NotReady, r.tolerate)
		}
		if tm.Replaced == 0 || tm.Replaced-tm.Evicted > 5 {
			r.fail("round %d: %s's pods were replaced %.2fs after their eviction, want within 5s", round, v, tm.Replaced-tm.Evicted)
		}
		r.losses = append(r.losses, *tm)
	}
}

// TestChaosWorkerLoss: a Deployment runs on one real and three hollow
// workers. Each round (3, 6 with -chaos.full) rolls it so that its pods
// spread over every worker, kills the real worker and restarts it at once
// (it must re-adopt its containers), then SIGKILLs the real worker and one
// hollow worker for good: their nodes go NotReady, their pods are evicted
// and replaced on the others, and once restarted they come back Ready with
// the containers of the deleted pods removed.
func TestChaosWorkerLoss(t *testing.T) {
	chaosNeedRoot(t)
	p := chaosConfig(t)
	rounds := 3
	if p.full {
		rounds = 6
	}
	const grace, toleration = 3 * time.Second, 2 * time.Second
	image := demoImage(t)
	cc := startChaosClusterArgs(t, "--node-monitor-grace-period", grace.String(), "--node-startup-grace-period", "1s",
		"--default-toleration-seconds", fmt.Sprint(int(toleration.Seconds())))
	sc := chaosNewScenario(t, p, cc, "worker-loss")
	rep := &sc.rep
	rep.Params["rounds"] = fmt.Sprint(rounds)
	rep.Params["node_monitor_grace_period"] = grace.String()
	rep.Params["default_toleration_seconds"] = toleration.String()
	r := &chaosWorkerRig{t: t, sc: sc, cl: cc.newClient(cc.apiAddrs()), dep: "chaos-loss", hollow: map[string]*workerProc{},
		grace: grace, tolerate: toleration}
	r.real = startWorker(t, cc.cluster, image)
	r.rt = chaosRuntime(t, r.real)
	hollowNames := []string{"h1", "h2", "h3"}
	for _, n := range hollowNames {
		r.hollow[n] = hollowWorker(t, cc.cluster, n)
	}
	chaosKeepWorkerLogs(t, map[string]*workerProc{"w1": r.real, "h1": r.hollow["h1"], "h2": r.hollow["h2"], "h3": r.hollow["h3"]})
	if err := chaosWaitNodes(r.cl, 60*time.Second, append([]string{"w1"}, hollowNames...)...); err != nil {
		t.Fatalf("workers: %v", err)
	}
	depWatch := startChaosWatch(cc, "Deployment", "default", "")
	podWatch := startChaosWatch(cc, "Pod", "default", "app="+r.dep)
	r.ops = newChaosOps(t, cc.newClient(cc.apiAddrs()), r.dep)
	obj := chaosDeployment(r.dep, image, 8, "2", "2")
	err := chaosRetry(t.Context(), 20*time.Second, func(ctx context.Context) error {
		_, err := r.cl.Create(ctx, gproto.Clone(obj).(*pb.Object))
		return err
	})
	if err != nil {
		t.Fatalf("create the Deployment: %v", err)
	}
	if err := r.ops.waitRolledOut(90 * time.Second); err != nil {
		t.Fatalf("the Deployment does not roll out: %v", err)
	}

	for round := range rounds {
		if round > 0 {
			r.spread(round)
		}
		if len(r.activeOn(r.read(), "w1")) == 0 {
			r.spread(round + 100) // the scheduler left w1 out: roll once more
		}
		r.readopt(round)
		w := r.read()
		// The hollow victim: the next one in turn that runs pods.
		victim := ""
		for i := range hollowNames {
			if n := hollowNames[(round+i)%len(hollowNames)]; len(r.activeOn(w, n)) > 0 {
				victim = n
				break
			}
		}
		if victim == "" {
			t.Fatalf("round %d: no hollow worker runs a pod of the Deployment", round)
		}
		r.lose(round, victim)
	}

	// The end: exact, no orphans, nothing on missing nodes, w1's containers
	// match its pods.
	var world chaosWorld
	err = poll(60*time.Second, func() error {
		var err error
		if world, err = chaosRead(r.cl); err != nil {
			return err
		}
		if err := world.exact(r.dep); err != nil {
			return err
		}
		_, err = chaosContainers(r.rt, "w1", world)
		return err
	})
	if err != nil {
		r.fail("the end state: %v", err)
	} else {
		rep.Converged = true
	}
	for _, p := range world.integrity() {
		r.fail("%s", p)
	}
	if final := world.deployment(r.dep); final != nil {
		var lastPodRV uint64
		for _, p := range world.pods {
			lastPodRV = max(lastPodRV, p.GetMetadata().GetResourceVersion())
		}
		if err := podWatch.waitFor(lastPodRV, 30*time.Second); err != nil {
			r.fail("%v", err)
		}
		if err := depWatch.waitFor(final.GetMetadata().GetResourceVersion(), 30*time.Second); err != nil {
			r.fail("%v", err)
		}
		var lostProblems []string
		rep.Lost, lostProblems = r.ops.lost(depWatch.history(), final)
		for _, p := range lostProblems {
			r.fail("lost: %s", p)
		}
	}
	// Rollouts between rounds and replacements never exceed the surge
	// bound. (The evicted pods are marked not ready before they go, so the
	// availability check does not count them as voluntary.)
	bounds := chaosCheckBounds(podWatch.history(), chaosSpecVersions(depWatch.history(), r.dep), chaosBoundLag)
	for _, v := range bounds.Violations {
		r.fail("%s", v)
	}

	writes, acked, unknown, conflicts, notApplied := r.ops.counts()
	rep.Ops, rep.Writes, rep.Acked, rep.Unknown, rep.Rejected, rep.NotApplied = writes, writes, acked, unknown, conflicts, notApplied
	rep.UnknownApplied = r.ops.unknownApplied
	var unavail []faultRecord
	for _, f := range rep.Faults {
		if f.Kind == "kill" {
			unavail = append(unavail, f)
		}
	}
	rep.UnavailMedian, rep.UnavailMax = medianMax(unavail)
	rep.Extra["losses"] = r.losses
	rep.Extra["readoptions"] = r.readopts
	rep.Extra["bounds"] = bounds
	rep.Extra["not_ready_later_than_grace"] = r.lateNotReady
	summary := func(real bool, get func(chaosLossTimes) float64) (string, float64) {
		var v []float64
		for _, l := range r.losses {
			if l.Real == real {
				v = append(v, get(l))
			}
		}
		if len(v) == 0 {
			return "-", 0
		}
		sort.Float64s(v)
		return fmt.Sprintf("median %.2fs, max %.2fs", v[len(v)/2], v[len(v)-1]), v[len(v)-1]
	}
	var rows [][2]string
	for _, kind := range []struct {
		name string
		real bool
	}{{"real", true}, {"hollow", false}} {
		for _, m := range []struct {
			name string
			get  func(chaosLossTimes) float64
		}{
			{"kill -> NotReady", func(l chaosLossTimes) float64 { return l.NotReady }},
			{"kill -> pods evicted", func(l chaosLossTimes) float64 { return l.Evicted }},
			{"kill -> replacements ready", func(l chaosLossTimes) float64 { return l.Replaced }},
			{"restart -> Ready", func(l chaosLossTimes) float64 { return l.Back }},
			{"restart -> clean", func(l chaosLossTimes) float64 { return l.Clean }},
		} {
			s, _ := summary(kind.real, m.get)
			rows = append(rows, [2]string{kind.name + " worker: " + m.name, s})
		}
	}
	for _, ro := range r.readopts {
		rows = append(rows, [2]string{fmt.Sprintf("round %d: w1 kill+restart re-adopted", ro.Round),
			fmt.Sprintf("%d containers in %.2fs", ro.Containers, ro.Readopted)})
	}
	rows = append(rows, [2]string{"NotReady later than grace + heartbeat interval", fmt.Sprintf("%d of %d kills", r.lateNotReady, len(r.losses))})
	rows = append(rows, [2]string{"pod creations checked (surge)", fmt.Sprintf("%d, max over bound %d", bounds.Creations, bounds.MaxOverBound)})
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.Problems = r.problems
	rep.Passed = len(r.problems) == 0
	t.Logf("%s\n%s\n%s\n%s", table([]scenarioReport{*rep}), faultTable(rep.Faults), chaosLossTable(r.losses), chaosFigures(rows))
	sc.saved = true
	saveReport(t, *rep)
	for _, p := range r.problems {
		t.Error(p)
	}
}

func chaosLossTable(ls []chaosLossTimes) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tworker\tpods\tNotReady\tevicted\treplaced\tReady after restart\tclean after restart\t")
	for _, l := range ls {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.2fs\t%.2fs\t%.2fs\t%.2fs\t%.2fs\t\n", l.Round, l.Worker, l.Pods, l.NotReady, l.Evicted, l.Replaced, l.Back, l.Clean)
	}
	tw.Flush()
	return b.String()
}
