package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

type schedSettings struct {
	nodes  int // hollow nodes
	pods   int // pods in all
	rsSize int // replicas per ReplicaSet
}

// schedRS is a ReplicaSet of hollow pods: no requests, an image that is
// never pulled (hollow nodes run nothing).
const schedRS = `apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: %[1]s
  namespace: sched
spec:
  replicas: %[2]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: app
        image: registry.example.com/pause:3.9
`

// clusterCIDRFor returns a 10.0.0.0/8-based range with a /24 for each of
// nodes (at least a /16, at most the whole /8).
func clusterCIDRFor(nodes int) string {
	bits := 16
	for bits > 8 && 1<<(24-bits) < nodes {
		bits--
	}
	return fmt.Sprintf("10.0.0.0/%d", bits)
}

// benchScheduling measures the scheduler as Kubernetes' scheduler_perf
// does, through the whole control plane: ReplicaSets create the pods, the
// leader's scheduler binds them to hollow nodes, the hollow nodes report
// them Running. A watch on the Pods timestamps each bind and each Running.
func benchScheduling(ctx context.Context, e *env, o options, rep *Report) error {
	const bench = "scheduling"
	s := o.sched
	if s.rsSize < 1 || s.pods < 1 || s.nodes < 1 {
		return errors.New("-sched-nodes, -sched-pods and -sched-rs-size must be at least 1")
	}
	// The hollow process is a thousand kubelets behind one connection:
	// each node's pod watch counts against the masters' watches-per-client
	// cap (100), meant for one client. (startSkiff already lifts the
	// per-client request rate limit.)
	extra := append([]string(nil), o.serverArgs...)
	if supportsFlag(o.skiff, "max-watches-per-client") {
		extra = append(extra, "--max-watches-per-client=0")
	}
	// Every node gets a pod subnet, as a real cluster of this size would
	// be configured: the default 10.244.0.0/16 holds 256 /24s, and the
	// nodes beyond them would wait for one (and be looked at again on
	// each heartbeat) for the whole run.
	if supportsFlag(o.skiff, "cluster-cidr") {
		extra = append(extra, "--cluster-cidr", clusterCIDRFor(s.nodes))
	}
	c, err := startSkiff(ctx, e, o.skiff, "sched", 3, extra)
	if err != nil {
		return err
	}
	defer c.close()

	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossipAddr)
	}
	hargs := []string{"worker", "--hollow", "--hollow-count", fmt.Sprint(s.nodes),
		"--name", "hollow", "--join", strings.Join(joins, ","), "--listen-addr", "127.0.0.1:0", "--insecure",
		// error: a thousand gossip members in one process warn about each
		// other's alive messages, gigabytes of log per run.
		"--log-format", "json", "--log-level", "error"}
	if workerSupportsFlag(o.skiff, "insecure") {
		hargs = append(hargs, "--insecure")
	}
	hollow := e.newProc("sched-hollow", o.skiff, hargs, filepath.Join(c.dir, "hollow.log"))
	if err := hollow.start(); err != nil {
		return err
	}
	defer hollow.kill()

	cl, err := c.client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	started := time.Now()
	var ready int
	err = poll(ctx, 5*time.Minute+time.Duration(s.nodes)*50*time.Millisecond, time.Second, func() error {
		if hollow.exited() {
			return fmt.Errorf("hollow worker exited:\n%s", hollow.logTail(20))
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		nodes, _, err := cl.List(rctx, "Node", client.ListOptions{Stale: true})
		if err != nil {
			return err
		}
		ready = 0
		for _, n := range nodes {
			for _, cond := range n.GetNode().GetStatus().GetConditions() {
				if cond.GetType() == "Ready" && cond.GetStatus() == "True" {
					ready++
				}
			}
		}
		if ready < s.nodes {
			return fmt.Errorf("%d of %d hollow nodes Ready", ready, s.nodes)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hollow nodes: %w", err)
	}
	logf("%d hollow nodes Ready after %s", s.nodes, time.Since(started).Round(time.Second))
	if err := idleCPU(ctx, c, hollow, rep, s.nodes); err != nil {
		return err
	}

	nrs := (s.pods + s.rsSize - 1) / s.rsSize
	// The ReplicaSets: all at once, as many clients as there are sets (up
	// to 100), so that the controllers, not the client, set the pace.
	err = schedPhase(ctx, c, hollow, rep, s, o.perfDir, "sched", fmt.Sprintf("%d ReplicaSets x %d", nrs, s.rsSize), true,
		func() error {
			return createRetrying(ctx, c, nrs, min(nrs, 100), func(i int) (*pb.Object, error) {
				n := s.rsSize
				if i == nrs-1 {
					n = s.pods - s.rsSize*(nrs-1)
				}
				return pb.DecodeObject([]byte(fmt.Sprintf(schedRS, fmt.Sprintf("rs-%03d", i), n)))
			})
		})
	if err != nil {
		return err
	}
	// The same number of bare pods created by 64 clients, as scheduler_perf
	// creates them: the scheduler without the ReplicaSet controller's pace.
	// Like scheduler_perf, from one decoded template: decoding the YAML of
	// each pod cost the benchmark 60 us of CPU per pod, beside the masters.
	tmpl, err := pb.DecodeObject([]byte(fmt.Sprintf(schedPod, "pod")))
	if err != nil {
		return err
	}
	return schedPhase(ctx, c, hollow, rep, s, o.perfDir, "sched-bare", "bare pods, 64 clients", false,
		func() error {
			return createRetrying(ctx, c, s.pods, 64, func(i int) (*pb.Object, error) {
				p := tmpl.Clone()
				p.Meta().Name = fmt.Sprintf("pod-%05d", i)
				return p, nil
			})
		})
}

// schedPod is a bare hollow pod.
const schedPod = `apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: sched-bare
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: registry.example.com/pause:3.9
`

// schedPhase creates s.pods pods in namespace ns through create and
// reports how fast they were bound and reported Running. With perfDir, the
// leader is recorded with Linux perf for the phase's first 30 s
// (perfDir/ns.perf.data).
func schedPhase(ctx context.Context, c *skiffCluster, hollow *proc, rep *Report, s schedSettings, perfDir, ns, how string, rs bool, create func() error) error {
	bench := "scheduling"
	if !rs {
		bench = "scheduling/bare"
	}
	if _, err := createAll(ctx, c, 1, 1, func(int) (*pb.Object, error) {
		return pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: ns}}), nil
	}); err != nil {
		return err
	}
	leader, err := c.leader(ctx)
	if err != nil {
		return err
	}
	pw, err := watchPods(ctx, c, (leader+1)%len(c.masters), ns)
	if err != nil {
		return err
	}
	defer pw.close()

	cpuBefore, err := cpuTime(c.masters[leader].pid())
	if err != nil {
		return fmt.Errorf("leader CPU: %w", err)
	}
	before := takeCPU(c, hollow)
	load := loadAvg()
	stopPerf := perfLeader(ctx, c, perfDir, ns, 30*time.Second)
	defer stopPerf()
	machine0 := readMachineCPU()
	t0 := time.Now()
	if err := create(); err != nil {
		return fmt.Errorf("create %s: %w", how, err)
	}
	created := time.Since(t0)
	within := 3*time.Minute + time.Duration(s.pods)*30*time.Millisecond
	waitErr := pw.waitFor(ctx, within, fmt.Sprintf("%d pods Running", s.pods), func(n podCounts, _ map[string]*podTimes) bool {
		return n.running >= s.pods
	})
	end := time.Now()
	steal := readMachineCPU().stealSince(machine0)
	cpuAfter, cerr := cpuTime(c.masters[leader].pid())
	after := takeCPU(c, hollow)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	leaderAfter, _ := c.leader(ctx)

	pods := pw.snapshot()
	var adds, binds, runs []time.Time
	var lag []time.Duration // ADDED -> bound: the time a pod waits for the scheduler
	for _, p := range pods {
		if !p.added.IsZero() {
			adds = append(adds, p.added)
		}
		if !p.bound.IsZero() {
			binds = append(binds, p.bound)
			if !p.added.IsZero() {
				lag = append(lag, p.bound.Sub(p.added))
			}
		}
		if !p.running.IsZero() {
			runs = append(runs, p.running)
		}
	}
	sortTimes(adds)
	sortTimes(binds)
	sortTimes(runs)
	sortDurations(lag)
	note := joinNotes(fmt.Sprintf("3 masters, %d hollow nodes, %s created in %s; load %s", s.nodes, how, created.Round(time.Millisecond), load),
		stealNote(steal))
	if leaderAfter != leader {
		note += "; LEADER CHANGED during the run"
	}
	if len(binds) < 2 {
		rep.failed(bench, "pods bound/s", atLeast(1000, " pods/s"), fmt.Errorf("%d pods bound: %v", len(binds), waitErr))
		return nil
	}
	if waitErr != nil {
		rep.failed(bench, fmt.Sprintf("all %d pods Running", s.pods), nil,
			fmt.Errorf("%d bound, %d Running: %v", len(binds), len(runs), waitErr))
	}
	span := binds[len(binds)-1].Sub(binds[0])
	overall := float64(len(binds)-1) / span.Seconds()
	rates := slidingRates(binds, time.Second, 100*time.Millisecond)
	rep.add(bench, "pods bound/s, median of 1s windows", median(rates), "pods/s", atLeast(1000, " pods/s"),
		spread(rates, ""), note)
	rep.add(bench, "pods bound/s, first->last bind", overall, "pods/s", atLeast(1000, " pods/s"), "",
		fmt.Sprintf("%d binds in %.2fs; first bind %s after the first create", len(binds), span.Seconds(), binds[0].Sub(t0).Round(time.Millisecond)))
	if len(adds) > 1 {
		// Pods cannot be bound faster than they are created: when the
		// two rates match and the wait for a bind is short, creation
		// (the ReplicaSet controller, or the API) is the limit, not the
		// scheduler.
		rep.add(bench, "pods created/s, first->last", float64(len(adds)-1)/adds[len(adds)-1].Sub(adds[0]).Seconds(), "pods/s", nil,
			fmt.Sprintf("created->bound p50 %.0fms p99 %.0fms", ms(percentile(lag, 50)), ms(percentile(lag, 99))), "")
	}
	rep.add(bench, fmt.Sprintf("create -> all %d bound", len(binds)), secs(binds[len(binds)-1].Sub(t0)), "s", nil, "", "")
	if len(runs) > 0 {
		rep.add(bench, fmt.Sprintf("create -> all %d Running", len(runs)), secs(runs[len(runs)-1].Sub(t0)), "s", nil, "",
			"Running as reported by the hollow nodes, seen on the watch")
	}
	if cerr == nil {
		cpu := cpuAfter - cpuBefore
		wall := end.Sub(t0)
		rep.add(bench, "leader CPU time, create -> all Running", secs(cpu), "s", nil,
			fmt.Sprintf("%.2f ms/pod, %.0f%% of a core", ms(cpu)/float64(s.pods), 100*cpu.Seconds()/wall.Seconds()),
			fmt.Sprintf("over %.1fs; %s", wall.Seconds(), cpuSplit(before, after, leader)))
	}
	return nil
}

// createRetrying is createAll that rides out a leader change: a create
// whose outcome is unknown (or that failed) is tried again, and one that
// finds its object already there was applied the first time.
func createRetrying(ctx context.Context, c *skiffCluster, n, conc int, mk func(i int) (*pb.Object, error)) error {
	_, err := createAll(ctx, c, n, conc, mk)
	if err == nil || ctx.Err() != nil {
		return err
	}
	// Some creates failed (createAll stops a client at its first error):
	// go over every object again, one client, tolerating AlreadyExists.
	cl, cerr := c.client(0)
	if cerr != nil {
		return cerr
	}
	defer cl.Close()
	logf("create: %v; creating what is missing", err)
	for i := 0; i < n; i++ {
		o, err := mk(i)
		if err != nil {
			return err
		}
		err = poll(ctx, time.Minute, 200*time.Millisecond, func() error {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := cl.Create(rctx, o)
			if status.Code(err) == codes.AlreadyExists {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("create object %d: %w", i, err)
		}
	}
	return nil
}

// cpuUse is the CPU time used so far by each master, the hollow worker and
// this process (the clients and the pod watch): on one machine they share
// its CPUs, and the split shows how much of them the masters got.
type cpuUse struct {
	masters      []time.Duration
	hollow, self time.Duration
}

func takeCPU(c *skiffCluster, hollow *proc) cpuUse {
	u := cpuUse{masters: make([]time.Duration, len(c.masters))}
	for i, m := range c.masters {
		u.masters[i], _ = cpuTime(m.pid())
	}
	u.hollow, _ = cpuTime(hollow.pid())
	u.self, _ = cpuTime(os.Getpid())
	return u
}

// cpuSplit describes the CPU each process used between before and after.
func cpuSplit(before, after cpuUse, leader int) string {
	var followers []string
	for i := range after.masters {
		if i != leader {
			followers = append(followers, fmt.Sprintf("%.1f", (after.masters[i]-before.masters[i]).Seconds()))
		}
	}
	return fmt.Sprintf("followers used %ss, the hollow worker %.1fs, this process (clients, watch) %.1fs",
		strings.Join(followers, " / "), (after.hollow - before.hollow).Seconds(), (after.self - before.self).Seconds())
}

// idleWindow is how long the masters' CPU is measured once every hollow
// node is Ready, before any pod is created.
const idleWindow = 10 * time.Second

// idleCPU reports the masters' CPU with the hollow nodes Ready and nothing
// else to do: the cost of the nodes' heartbeats (a Lease renewal per node
// every heartbeat interval, a Node status write before node leases) and
// gossip, which is there under every
// other figure of this benchmark too.
func idleCPU(ctx context.Context, c *skiffCluster, hollow *proc, rep *Report, nodes int) error {
	leader, err := c.leader(ctx)
	if err != nil {
		return err
	}
	before := takeCPU(c, hollow)
	t0 := time.Now()
	select {
	case <-time.After(idleWindow):
	case <-ctx.Done():
		return ctx.Err()
	}
	after := takeCPU(c, hollow)
	wall := time.Since(t0)
	var total time.Duration
	for i := range after.masters {
		total += after.masters[i] - before.masters[i]
	}
	lead := after.masters[leader] - before.masters[leader]
	rep.add("scheduling", fmt.Sprintf("masters' CPU, idle with %d nodes", nodes), 100*total.Seconds()/wall.Seconds(), "% of a core", nil,
		fmt.Sprintf("leader %.0f%%", 100*lead.Seconds()/wall.Seconds()),
		fmt.Sprintf("over %.1fs after the last node turned Ready, no pods; %s", wall.Seconds(), cpuSplit(before, after, leader)))
	return nil
}
