// Command skiffbench is skiff's benchmark suite for the masters: write
// throughput through the API beside raw raft.Apply, failover and leadership
// transfer, memory and list/watch latency at scale, and the microbenchmarks;
// with -bench compare, the same write and failover workloads against a
// 3-member etcd, interleaved in one run.
//
// It prints one table (target, result, met / not met) and writes
// bench/results.json. Figures are measured, never asserted: it exits 0
// unless something is broken (a lost acknowledged write, a cluster that
// would not start), whatever the figures.
//
//	go run ./bench/cmd/skiffbench -skiff bin/skiff                 # the suite
//	go run ./bench/cmd/skiffbench -skiff bin/skiff -bench failover # one benchmark
//	go run ./bench/cmd/skiffbench -skiff bin/skiff -bench compare  # against etcd
//	go run ./bench/cmd/skiffbench -skiff bin/skiff -quick          # small sizes, ~2 minutes
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	wrt "github.com/skiff-sh/skiff/worker/runtime"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// The benchmarks, in the order they run.
var benchOrder = []string{"micro", "raft", "writes", "failover", "scale", "scheduling", "podstart", "serviceproxy", "compare-writes", "compare-failover"}

var groups = map[string][]string{
	// all is the whole suite, about 7 minutes here; the cluster
	// benchmarks in it run only as root (allGroup).
	"all":     {"micro", "raft", "writes", "failover", "scale", "scheduling", "podstart", "serviceproxy"},
	"compare": {"compare-writes", "compare-failover"},
	"cluster": {"scheduling", "podstart", "serviceproxy"},
}

// allGroup is what "all" runs for a user: the cluster benchmarks need root
// (containers, network namespaces, nftables), so without it all is the
// masters' benchmarks only, said once.
func allGroup(root bool) []string {
	if root {
		return groups["all"]
	}
	logf("-bench all: scheduling, podstart and serviceproxy need root (containers, network namespaces, nftables): not run; run as root for the whole suite")
	return slices.DeleteFunc(slices.Clone(groups["all"]), func(b string) bool { return slices.Contains(groups["cluster"], b) })
}

type options struct {
	skiff    string
	benches  map[string]bool
	out      string
	keep     bool
	duration time.Duration
	clients  []int
	rounds   int

	kills, transfers int
	timeouts         []time.Duration
	backoff          time.Duration
	failClients      int

	scale     scaleSettings
	sched     schedSettings
	podstart  podstartSettings
	microTime string
	perfDir   string

	raftVariants []string
	serverArgs   []string
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var benchList, clientList, timeoutList string
	var quick bool
	flag.StringVar(&o.skiff, "skiff", "", "skiff binary to benchmark (default: build ./cmd/skiff into the temp dir)")
	flag.StringVar(&benchList, "bench", "all", "comma-separated benchmarks or groups: "+strings.Join(benchOrder, ", ")+"; all (the first eight; scheduling, podstart and serviceproxy only as root), cluster (those three), compare (against etcd)")
	flag.StringVar(&o.out, "out", "bench/results.json", "where to write the results")
	flag.BoolVar(&o.keep, "keep", false, "keep data dirs and logs (for debugging)")
	flag.BoolVar(&quick, "quick", false, "small sizes and short runs (about 2-3 minutes for all); explicit flags still win")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each write-throughput run")
	flag.StringVar(&clientList, "clients", "1,16,64", "concurrent clients of the write-throughput runs")
	flag.IntVar(&o.rounds, "rounds", 3, "compare: interleaved rounds (skiff, etcd, etcd, skiff, ...) per client count")
	flag.IntVar(&o.kills, "kills", 10, "failover: leader SIGKILLs per setting")
	flag.IntVar(&o.transfers, "transfers", 10, "failover: graceful leadership transfers per setting")
	flag.StringVar(&timeoutList, "timeouts", "250ms,1s", "failover: the client's per-request timeouts to run with")
	flag.DurationVar(&o.backoff, "backoff", 50*time.Millisecond, "failover: the client's pause after a failed attempt")
	flag.IntVar(&o.failClients, "failover-clients", 16, "failover: writing clients")
	flag.IntVar(&o.scale.nodes, "nodes", 1000, "scale: Node objects")
	flag.IntVar(&o.scale.pods, "pods", 10000, "scale: pods, bound to the nodes")
	flag.IntVar(&o.scale.namespaces, "namespaces", 10, "scale: namespaces the pods are spread over")
	flag.IntVar(&o.scale.watchers, "watchers", 1000, "scale: concurrent watchers")
	flag.IntVar(&o.scale.events, "events", 50, "scale: writes each watcher must receive")
	flag.IntVar(&o.scale.lists, "lists", 10, "scale: repetitions of each list")
	flag.IntVar(&o.scale.snapshots, "snapshots", 3, "scale: snapshot saves")
	flag.IntVar(&o.sched.nodes, "sched-nodes", 1000, "scheduling: hollow nodes (one skiff worker --hollow process)")
	flag.IntVar(&o.sched.pods, "sched-pods", 10000, "scheduling: pods, created by ReplicaSets all at once, then as many bare pods")
	flag.IntVar(&o.sched.rsSize, "sched-rs-size", 100, "scheduling: replicas per ReplicaSet")
	flag.IntVar(&o.podstart.serial, "podstart-serial", 50, "podstart: pods created one by one (each waits for Running)")
	flag.IntVar(&o.podstart.burst, "podstart-burst", 20, "podstart: pods created at once")
	flag.StringVar(&o.podstart.networks, "podstart-networks", "none,bridge", "podstart: the worker's --pod-network modes to run (when the worker has the flag)")
	flag.StringVar(&o.podstart.child, "podstart-child", "", "internal: run podstart for this pod network mode in this process, which its parent started in a new network namespace")
	flag.StringVar(&o.microTime, "benchtime", "300ms", "microbenchmarks: go test -benchtime")
	flag.StringVar(&o.perfDir, "perf", "", "writes and scheduling: record the leading master with Linux perf into this directory during each run")
	var serverArgs string
	flag.StringVar(&serverArgs, "server-args", "", "extra arguments for every skiff server process (space-separated), e.g. \"--raft-multiplier 2\" or \"--controllers=\"")
	var raftVariants string
	flag.StringVar(&raftVariants, "raft-variants", "raft,raft+fsm", "raft: in-process variants; experiments: +logcache (raft.NewLogCache), +ct<duration> (CommitTimeout), e.g. raft+fsm+logcache,raft+fsm+ct5ms")
	var cpuProfile string
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the clients, and the in-process raft of -bench raft) to this file")
	flag.Parse()

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if quick {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("duration", func() { o.duration = 3 * time.Second })
		def("rounds", func() { o.rounds = 1 })
		def("kills", func() { o.kills = 3 })
		def("transfers", func() { o.transfers = 3 })
		def("timeouts", func() { timeoutList = "250ms" })
		def("nodes", func() { o.scale.nodes = 100 })
		def("pods", func() { o.scale.pods = 1000 })
		def("watchers", func() { o.scale.watchers = 100 })
		def("events", func() { o.scale.events = 20 })
		def("lists", func() { o.scale.lists = 5 })
		def("snapshots", func() { o.scale.snapshots = 1 })
		def("benchtime", func() { o.microTime = "100ms" })
		def("sched-nodes", func() { o.sched.nodes = 100 })
		def("sched-pods", func() { o.sched.pods = 1000 })
		def("podstart-serial", func() { o.podstart.serial = 10 })
		def("podstart-burst", func() { o.podstart.burst = 5 })
	}
	var err error
	if o.clients, err = parseInts(clientList); err != nil {
		fmt.Fprintln(os.Stderr, "-clients:", err)
		return 2
	}
	if o.timeouts, err = parseDurations(timeoutList); err != nil {
		fmt.Fprintln(os.Stderr, "-timeouts:", err)
		return 2
	}
	o.raftVariants = strings.Split(raftVariants, ",")
	o.serverArgs = strings.Fields(serverArgs)

	o.benches = map[string]bool{}
	for _, b := range strings.Split(benchList, ",") {
		b = strings.TrimSpace(b)
		if g, ok := groups[b]; ok {
			if b == "all" {
				g = allGroup(os.Geteuid() == 0)
			}
			for _, x := range g {
				o.benches[x] = true
			}
			continue
		}
		known := false
		for _, x := range benchOrder {
			known = known || x == b
		}
		if !known {
			fmt.Fprintf(os.Stderr, "-bench: unknown benchmark %q (have %s, all, cluster, compare)\n", b, strings.Join(benchOrder, ", "))
			return 2
		}
		o.benches[b] = true
	}
	if o.scale.namespaces < 1 || o.scale.nodes < 1 || o.failClients < 1 {
		fmt.Fprintln(os.Stderr, "-namespaces, -nodes and -failover-clients must be at least 1")
		return 2
	}

	e, err := newEnv(o.keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// First Ctrl-C: stop the benchmarks and clean up. Second: clean up now.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "\ninterrupted: stopping and cleaning up (again to force)")
		cancel()
		<-sigs
		e.cleanup()
		os.Exit(130)
	}()
	defer e.cleanup()

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	rep := newReport()
	rep.Config["bench"] = benchList
	rep.Config["duration"] = o.duration.String()
	rep.Config["clients"] = clientList
	rep.Config["rounds"] = fmt.Sprint(o.rounds)
	rep.Config["kills"] = fmt.Sprint(o.kills)
	rep.Config["timeouts"] = timeoutList
	rep.Config["backoff"] = o.backoff.String()
	rep.Config["server_args"] = serverArgs
	rep.Config["scale"] = fmt.Sprintf("%d nodes, %d pods, %d watchers x %d events", o.scale.nodes, o.scale.pods, o.scale.watchers, o.scale.events)

	// The binary goes in a directory of its own, not in e.root: the
	// workers' state dirs are below e.root, and libcontainer copies a
	// binary whose directory holds the state dir into memory at every
	// container start (40 ms of CPU per pod for skiff's; the worker warns).
	binDir := filepath.Join(e.root, "bin")
	if o.skiff == "" && needsSkiff(o.benches) {
		o.skiff = filepath.Join(binDir, "skiff")
		if err := os.MkdirAll(binDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "building skiff and skiff-shim ...")
		build := exec.CommandContext(ctx, "go", "build", "-o", binDir+string(filepath.Separator), "./cmd/skiff", "./cmd/skiff-shim")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build skiff (run from the repository root, or pass -skiff):", err)
			return 1
		}
	} else if o.skiff != "" {
		bin, err := placeSkiff(o.skiff, e.root, binDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		o.skiff = bin
	}
	if o.skiff != "" {
		// Which binary the podstart workers run their containers' shims with.
		rep.Config["shim"] = wrt.ShimCommandFor(o.skiff)[0]
	}
	if v, err := exec.Command(o.skiff, "version").CombinedOutput(); err == nil {
		rep.Config["skiff_version"] = strings.TrimSpace(string(v))
	}

	benches := map[string]func(context.Context, *env, options, *Report) error{
		"micro":    benchMicro,
		"raft":     benchRaft,
		"writes":   benchWrites,
		"failover": benchFailover,
		"scale": func(ctx context.Context, e *env, o options, r *Report) error {
			return benchScale(ctx, e, o.skiff, o.serverArgs, o.scale, r)
		},
		"scheduling":       benchScheduling,
		"podstart":         benchPodstart,
		"serviceproxy":     benchServiceProxy,
		"compare-writes":   benchCompareWrites,
		"compare-failover": benchCompareFailover,
	}
	for _, name := range benchOrder {
		if !o.benches[name] || ctx.Err() != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s (%s)\n", name, time.Now().Format("15:04:05"))
		start := time.Now()
		if err := benches[name](ctx, e, o, rep); err != nil {
			if ctx.Err() != nil {
				rep.fail(name, fmt.Errorf("interrupted"))
			} else {
				rep.fail(name, err)
			}
		}
		fmt.Fprintf(os.Stderr, "   %s took %s\n", name, time.Since(start).Round(time.Second))
	}

	rep.print(os.Stdout)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err == nil {
		if err := rep.write(o.out); err != nil {
			fmt.Fprintln(os.Stderr, "write results:", err)
		} else {
			fmt.Printf("results written to %s\n", o.out)
		}
	}
	switch {
	case ctx.Err() != nil:
		return 130
	case len(rep.Broken) > 0:
		return 1
	case len(rep.Errors) > 0:
		// A benchmark that could not run is broken too: the figures are
		// missing, not merely slow.
		return 1
	}
	return 0
}

// placeSkiff returns the absolute path of bin, or of a copy of it in binDir
// when bin's directory holds root, where the benchmark's workers keep their
// state: the worker would protect such a binary from its containers by
// copying it into memory at every container start, which a deployment with
// the binary in /usr/local/bin does not pay.
func placeSkiff(bin, root, binDir string) (string, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	dir, rootReal := filepath.Dir(abs), root
	if p, err := filepath.EvalSymlinks(dir); err == nil {
		dir = p
	}
	if p, err := filepath.EvalSymlinks(root); err == nil {
		rootReal = p
	}
	rel, err := filepath.Rel(dir, rootReal)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return abs, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", err
	}
	cp := filepath.Join(binDir, filepath.Base(abs))
	if err := copyExecutable(abs, cp); err != nil {
		return "", fmt.Errorf("-skiff: %w", err)
	}
	// skiff-shim beside it goes along (the workers use it when it is there).
	if shimBin := filepath.Join(filepath.Dir(abs), shim.Binary); fileExists(shimBin) {
		if err := copyExecutable(shimBin, filepath.Join(binDir, shim.Binary)); err != nil {
			return "", err
		}
	}
	fmt.Fprintf(os.Stderr, "-skiff %s: its directory holds the benchmark's data dir %s; benchmarking a copy in %s (see placeSkiff)\n", abs, root, binDir)
	return cp, nil
}

func copyExecutable(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return dst.Close()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func needsSkiff(b map[string]bool) bool {
	return b["writes"] || b["failover"] || b["scale"] || b["scheduling"] || b["podstart"] || b["compare-writes"] || b["compare-failover"]
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q is not a positive duration", f)
		}
		out = append(out, d)
	}
	return out, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "   "+format+"\n", args...)
}
