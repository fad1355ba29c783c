package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/vishvananda/netlink"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

type podstartSettings struct {
	serial, burst int
	// networks are the worker's --pod-network modes to run.
	networks string
	// child is set in the process that runs one mode inside its own
	// network namespace: the mode ("none", "bridge", or "default" for a
	// worker without --pod-network).
	child string
}

// benchPodstart measures pod start latency with real containers: three
// masters and one real `skiff worker` run pods of a small static image from
// a registry on loopback. Each network mode runs in a child skiffbench
// process in a new network namespace, with its masters, registry and worker
// on that namespace's loopback: the worker's pod network (bridge, veths,
// nftables) then never touches the machine's own, and disappears with the
// namespace.
func benchPodstart(ctx context.Context, e *env, o options, rep *Report) error {
	if o.podstart.child != "" {
		return podstartRun(ctx, e, o, rep, o.podstart.child)
	}
	if os.Geteuid() != 0 {
		return errors.New("podstart runs real containers through libcontainer: run as root")
	}
	if o.podstart.serial < 1 || o.podstart.burst < 1 {
		return errors.New("-podstart-serial and -podstart-burst must be at least 1")
	}
	modes := []string{"default"}
	if workerSupportsFlag(o.skiff, "pod-network") {
		modes = strings.Split(o.podstart.networks, ",")
	} else {
		logf("skiff worker has no --pod-network flag: running with its default pod network")
	}
	for _, mode := range modes {
		mode = strings.TrimSpace(mode)
		if err := podstartChild(ctx, e, o, rep, mode); err != nil {
			rep.fail("podstart/"+mode, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// workerSupportsFlag reports whether `skiff worker --help` lists flag.
func workerSupportsFlag(bin, flag string) bool {
	out, _ := exec.Command(bin, "worker", "--help").CombinedOutput()
	return strings.Contains(string(out), "--"+flag+" ")
}

// podstartChild runs this program again in a new network namespace for one
// mode and merges its rows into rep.
func podstartChild(ctx context.Context, e *env, o options, rep *Report, mode string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	out := filepath.Join(e.root, "podstart-"+mode+".json")
	args := []string{"-skiff", o.skiff, "-bench", "podstart", "-podstart-child", mode, "-out", out,
		"-podstart-serial", fmt.Sprint(o.podstart.serial), "-podstart-burst", fmt.Sprint(o.podstart.burst),
		"-podstart-networks", o.podstart.networks}
	if len(o.serverArgs) > 0 {
		args = append(args, "-server-args", strings.Join(o.serverArgs, " "))
	}
	if o.keep {
		args = append(args, "-keep")
	}
	cmd := exec.Command(exe, args...)
	// The child's progress lines go to our stderr; its own table is
	// dropped: its rows come back through the file.
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the podstart child in a new network namespace: %w", err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// Ctrl-C: the child deletes its pods and stops its worker.
			_ = cmd.Process.Signal(os.Interrupt)
		case <-done:
		}
	}()
	werr := cmd.Wait()
	close(done)
	data, err := os.ReadFile(out)
	if err != nil {
		return fmt.Errorf("podstart child (%v) wrote no results: %w", werr, err)
	}
	var sub Report
	if err := json.Unmarshal(data, &sub); err != nil {
		return fmt.Errorf("podstart child results: %w", err)
	}
	rep.mu.Lock()
	rep.Rows = append(rep.Rows, sub.Rows...)
	rep.Errors = append(rep.Errors, sub.Errors...)
	rep.Broken = append(rep.Broken, sub.Broken...)
	rep.mu.Unlock()
	return nil
}

// podSample is one pod's start, in this process's clock.
type podSample struct {
	name    string
	created time.Time // Create call issued
	bound   time.Time // watch: spec.nodeName set
	started time.Time // worker log: "started container" (container running)
	runtime time.Duration
	// queued is how long the start waited for a turn (the worker's
	// MaxParallelStarts) before the runtime was called; 0 for workers
	// without the bound.
	queued time.Duration
	// setup is how long the worker took to set up the pod's sandbox,
	// network, /etc files and volumes before its first container; 0 for
	// workers that do not log it.
	setup   time.Duration
	running time.Time // watch: status.phase Running
}

const podstartNS = "podstart"

const podstartPod = `apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: podstart
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hello
    image: %s
`

// podstartRun is the benchmark proper, in the child process.
func podstartRun(ctx context.Context, e *env, o options, rep *Report, mode string) (retErr error) {
	bench := "podstart/" + mode
	if err := freshNetNS(); err != nil {
		return err
	}
	ref, stopRegistry, err := podstartImage(ctx, e)
	if err != nil {
		return err
	}
	defer stopRegistry()

	c, err := startSkiff(ctx, e, o.skiff, "podstart", 3, o.serverArgs)
	if err != nil {
		return err
	}
	defer c.close()

	// The worker.
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossipAddr)
	}
	dataDir := filepath.Join(c.dir, "w1")
	cgParent := fmt.Sprintf("/skiffbench-%d", os.Getpid())
	args := []string{"worker", "--name", "w1", "--data-dir", dataDir, "--join", strings.Join(joins, ","),
		"--listen-addr", "127.0.0.1:0", "--insecure-registry", strings.Split(ref, "/")[0],
		"--heartbeat-interval", "1s", "--cgroup-parent", cgParent, "--log-level", "info", "--log-format", "json",
		"--insecure"} // the masters run plaintext (skiff.go)
	if workerSupportsFlag(o.skiff, "insecure") {
		args = append(args, "--insecure")
	}
	if mode != "default" {
		args = append(args, "--pod-network", mode)
	}
	stopPods := workerSupportsFlag(o.skiff, "stop-pods-on-exit")
	if stopPods {
		args = append(args, "--stop-pods-on-exit")
	}
	w := e.newProc("podstart-w1", o.skiff, args, filepath.Join(c.dir, "w1.log"))
	if err := w.start(); err != nil {
		return err
	}
	// The worker in a cgroup of its own, before it starts any container:
	// its shims, and what they fork, start there too, and the cgroup
	// counts their CPU although they are not reaped before the end.
	cg, cgErr := findCPUCgroups()
	workerCg := fmt.Sprintf("/skiffbench-%d-worker", os.Getpid())
	if cgErr == nil {
		if cgErr = cg.create(workerCg); cgErr == nil {
			if cgErr = cg.move(workerCg, w.pid()); cgErr != nil {
				_ = cg.remove(workerCg)
			} else {
				// Runs after podstartCleanup (deferred below) has stopped
				// the worker and its containers.
				defer func() {
					if err := cg.remove(workerCg); err != nil {
						rep.broken(bench, fmt.Sprintf("remove the worker's cgroup %s: %v", cg.dir(workerCg), err))
					}
				}()
			}
		}
	}
	if cgErr != nil {
		logf("podstart: the shims' and containers' CPU will not be measured: %v", cgErr)
	}
	cl, err := c.client(0)
	if err != nil {
		w.kill()
		return err
	}
	defer cl.Close()
	var names []string
	// Undo in order: pods, worker, whatever the runtime left, then (the
	// deferred c.close above) the masters.
	defer func() {
		if err := podstartCleanup(cl, w, names, o.skiff, dataDir, cgParent); err != nil {
			rep.broken(bench, err.Error())
		}
	}()

	err = poll(ctx, 90*time.Second, 200*time.Millisecond, func() error {
		if w.exited() {
			return fmt.Errorf("worker exited:\n%s", w.logTail(20))
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n, err := cl.Get(rctx, "Node", "", "w1", client.ReadOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.GetNode().GetStatus().GetConditions() {
			if cond.GetType() == "Ready" && cond.GetStatus() == "True" {
				return nil
			}
		}
		return errors.New("node w1 not Ready")
	})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if _, err := cl.Create(ctx, pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: podstartNS}})); err != nil {
		return err
	}
	pw, err := watchPods(ctx, c, 0, podstartNS)
	if err != nil {
		return err
	}
	defer pw.close()

	create := func(name string) (time.Time, error) {
		o, err := pb.DecodeObject([]byte(fmt.Sprintf(podstartPod, name, ref)))
		if err != nil {
			return time.Time{}, err
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t0 := time.Now()
		_, err = cl.Create(rctx, o)
		return t0, err
	}
	running := func(names ...string) func(podCounts, map[string]*podTimes) bool {
		return func(_ podCounts, pods map[string]*podTimes) bool {
			for _, n := range names {
				if p := pods[n]; p == nil || p.running.IsZero() {
					return false
				}
			}
			return true
		}
	}

	// Warm up: the image is pulled and unpacked once, the code paths run.
	names = append(names, "warm")
	if _, err := create("warm"); err != nil {
		return fmt.Errorf("create the warm-up pod: %w", err)
	}
	if err := pw.waitFor(ctx, 2*time.Minute, "warm-up pod Running", running("warm")); err != nil {
		return fmt.Errorf("%w\nworker log:\n%s", err, w.logTail(20))
	}

	load := loadAvg()
	// CPU time of the worker, of the masters and of the shims and
	// containers per run: unlike latency, it hardly depends on what else
	// the machine runs, so it compares builds on a busy machine. The
	// shims' and containers' is what the worker's cgroup and the pod
	// cgroups used beyond the worker process itself.
	type cpuMark struct {
		worker, masters, runtime time.Duration
		machine                  machineCPU
	}
	mark := func() cpuMark {
		m := cpuMark{machine: readMachineCPU()}
		m.worker, _ = cpuTime(w.pid())
		for _, ms := range c.masters {
			d, _ := cpuTime(ms.pid())
			m.masters += d
		}
		if cgErr == nil {
			wg, err1 := cg.usage(workerCg)
			pods, err2 := cg.usage(cgParent)
			if err := errors.Join(err1, err2); err != nil {
				logf("podstart: read cgroup CPU usage: %v", err)
			}
			m.runtime = wg + pods - m.worker
		}
		return m
	}
	cpu0 := mark()
	createdAt := map[string]time.Time{}
	var serial []string
	for i := 0; i < o.podstart.serial; i++ {
		n := fmt.Sprintf("serial-%02d", i)
		names, serial = append(names, n), append(serial, n)
		t0, err := create(n)
		if err != nil {
			return fmt.Errorf("create %s: %w", n, err)
		}
		createdAt[n] = t0
		if err := pw.waitFor(ctx, time.Minute, n+" Running", running(n)); err != nil {
			return err
		}
	}
	cpu1 := mark()
	var burst []string
	for i := 0; i < o.podstart.burst; i++ {
		burst = append(burst, fmt.Sprintf("burst-%02d", i))
	}
	names = append(names, burst...)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var cerr error
	for _, n := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0, err := create(n)
			mu.Lock()
			defer mu.Unlock()
			createdAt[n] = t0
			if err != nil && cerr == nil {
				cerr = fmt.Errorf("create %s: %w", n, err)
			}
		}()
	}
	wg.Wait()
	if cerr != nil {
		return cerr
	}
	if err := pw.waitFor(ctx, 2*time.Minute, fmt.Sprintf("%d pods Running", len(burst)), running(burst...)); err != nil {
		return err
	}
	cpu2 := mark()
	loadEnd := loadAvg()

	starts, err := startedContainers(w.logPath)
	if err != nil {
		return err
	}
	seen := pw.snapshot()
	sample := func(n string) podSample {
		s := podSample{name: n, created: createdAt[n], bound: seen[n].bound, running: seen[n].running}
		if st, ok := starts[podstartNS+"/"+n]; ok {
			s.started, s.runtime, s.queued, s.setup = st.at, st.took, st.queued, st.setup
		}
		return s
	}
	var note string
	if mode == "default" {
		note = "worker's default pod network; "
	}
	note += fmt.Sprintf("3 masters + 1 worker; load %s -> %s", load, loadEnd)
	for _, run := range []struct {
		what     string
		names    []string
		from, to cpuMark
	}{
		{fmt.Sprintf("%d one by one", len(serial)), serial, cpu0, cpu1},
		{fmt.Sprintf("%d at once", len(burst)), burst, cpu1, cpu2},
	} {
		var ss []podSample
		for _, n := range run.names {
			ss = append(ss, sample(n))
		}
		reportPodstart(rep, bench, run.what, ss, note, stealNote(run.to.machine.stealSince(run.from.machine)))
		note = ""
		per := func(d time.Duration) float64 { return ms(d) / float64(len(run.names)) }
		rep.add(bench, run.what+": worker CPU per pod", per(run.to.worker-run.from.worker), "ms", nil, "",
			"worker process user+system time over the run / pods (shims and containers not included)")
		rep.add(bench, run.what+": masters CPU per pod", per(run.to.masters-run.from.masters), "ms", nil, "", "3 masters together")
		if cgErr == nil {
			rep.add(bench, run.what+": shims and containers CPU per pod", per(run.to.runtime-run.from.runtime), "ms", nil, "",
				"the worker's cgroup and the pod cgroups, less the worker process: shims, container inits, the containers")
		}
	}
	if cgErr == nil && (mode == "default" || mode == firstMode(o.podstart.networks)) {
		// The reference, once: runc starting as many containers at once.
		ref, err := runcReference(ctx, c.dir, filepath.Join(e.root, "hello"), len(burst), cg)
		if errors.Is(err, errNoRunc) {
			logf("podstart: no runc reference: %v", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("runc reference: %w", err)
		}
		skiffPer := ms(cpu2.runtime-cpu1.runtime) / float64(len(burst))
		rep.add("podstart/runc", fmt.Sprintf("%d at once: runc CPU per container", len(burst)), ms(ref.perCtr), "ms", nil, "",
			ref.version+": runc run -d, the same program and seccomp filter, a read-only rootfs (no overlay), the same network namespace")
		rep.add("podstart/runc", fmt.Sprintf("%d at once: skiff shims and containers / runc", len(burst)), skiffPer/ms(ref.perCtr), "x", nil, "",
			fmt.Sprintf("CPU per container, skiff %s ms (pod network %s) against runc %s ms", fmtNum(skiffPer), mode, fmtNum(ms(ref.perCtr))))
	}
	return nil
}

// firstMode is the first of the comma-separated pod network modes.
func firstMode(networks string) string {
	first, _, _ := strings.Cut(networks, ",")
	return strings.TrimSpace(first)
}

// reportPodstart adds the rows of one run: create -> Running observed, and
// where the time went.
func reportPodstart(rep *Report, bench, what string, ss []podSample, note, p99note string) {
	phase := func(f func(s podSample) (time.Duration, bool)) []time.Duration {
		var out []time.Duration
		for _, s := range ss {
			if d, ok := f(s); ok {
				out = append(out, d)
			}
		}
		sortDurations(out)
		return out
	}
	total := phase(func(s podSample) (time.Duration, bool) { return s.running.Sub(s.created), !s.running.IsZero() })
	if len(total) == 0 {
		rep.failed(bench, what+": create -> Running", atMost(1000, "ms"), errors.New("no pod seen Running"))
		return
	}
	rep.add(bench, what+": create -> Running p50", ms(percentile(total, 50)), "ms", nil, "", note)
	rep.add(bench, what+": create -> Running p99", ms(percentile(total, 99)), "ms", atMost(1000, "ms"),
		fmt.Sprintf("max %.0fms n=%d", ms(total[len(total)-1]), len(total)), p99note)
	hasLog := func(s podSample) bool { return !s.started.IsZero() && !s.bound.IsZero() && !s.running.IsZero() }
	type part struct {
		name string
		d    []time.Duration
	}
	parts := []part{
		{"create -> scheduled (bind seen)", phase(func(s podSample) (time.Duration, bool) { return s.bound.Sub(s.created), !s.bound.IsZero() })},
		{"scheduled -> container started", phase(func(s podSample) (time.Duration, bool) { return s.started.Sub(s.bound), hasLog(s) })},
		{"  of which pod setup (sandbox, network, volumes)", phase(func(s podSample) (time.Duration, bool) { return s.setup, hasLog(s) && s.setup > 0 })},
		{"  of which runtime create+start", phase(func(s podSample) (time.Duration, bool) { return s.runtime, hasLog(s) })},
		{"  of which queued for a start slot", phase(func(s podSample) (time.Duration, bool) { return s.queued, hasLog(s) })},
		{"container started -> Running seen", phase(func(s podSample) (time.Duration, bool) { return s.running.Sub(s.started), hasLog(s) })},
	}
	for _, p := range parts {
		if len(p.d) == 0 {
			continue
		}
		rep.add(bench, what+": "+p.name+" p50", ms(percentile(p.d, 50)), "ms", nil,
			fmt.Sprintf("p99 %.0fms max %.0fms", ms(percentile(p.d, 99)), ms(p.d[len(p.d)-1])), "")
	}
	var sumRT, sumTotal time.Duration
	for _, s := range ss {
		if hasLog(s) {
			sumRT += s.runtime
			sumTotal += s.running.Sub(s.created)
		}
	}
	if sumTotal > 0 {
		rep.add(bench, what+": share in container start (runtime)", 100*sumRT.Seconds()/sumTotal.Seconds(), "%", nil, "",
			"sum of the runtime's create+start over sum of create -> Running; times from the watch and the worker's log (object timestamps have 1s resolution)")
	}
}

type containerStart struct {
	at     time.Time
	took   time.Duration
	queued time.Duration
	setup  time.Duration
}

// startedContainers reads the worker's JSON log: for each pod, when its
// (first) container was started and how long the runtime took to create
// and start it.
func startedContainers(path string) (map[string]containerStart, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]containerStart{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"started container"`)) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
			Pod  string    `json:"pod"`
			Took int64     `json:"took"` // slog's JSON: nanoseconds
			// Queued: waiting for a start slot before the runtime
			// was called (newer workers).
			Queued int64 `json:"queued"`
			// Setup: the pod's sandbox, network, /etc files and
			// volumes, before its first container (newer workers).
			Setup int64 `json:"setup"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "started container" {
			continue
		}
		if _, ok := out[rec.Pod]; !ok {
			out[rec.Pod] = containerStart{at: rec.Time, took: time.Duration(rec.Took), queued: time.Duration(rec.Queued), setup: time.Duration(rec.Setup)}
		}
	}
	return out, sc.Err()
}

// freshNetNS makes sure this process is not in the machine's network
// namespace (the worker's pod network goes where it runs) and brings up
// loopback, which a new namespace starts with down.
func freshNetNS() error {
	// The parent skiffbench runs in the machine's namespace and started
	// this process with CLONE_NEWNET.
	self, err1 := os.Readlink("/proc/self/ns/net")
	parent, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getppid()))
	if err1 != nil || err2 != nil {
		return fmt.Errorf("read network namespaces: %v; %v", err1, err2)
	}
	if self == parent {
		return errors.New("podstart: refusing to run a worker in the machine's own network namespace (run through skiffbench -bench podstart, which starts it in a new one)")
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}

// podstartImage builds examples/hello as a static binary, packs it into a
// one-layer image and serves it from a registry on 127.0.0.1.
func podstartImage(ctx context.Context, e *env) (ref string, stop func(), retErr error) {
	bin := filepath.Join(e.root, "hello")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/hello")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("build examples/hello (run from the repository root): %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return "", nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, h := range []*tar.Header{
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: mtime},
		{Name: "hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			return "", nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				return "", nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return "", nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		return "", nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{"/hello"}, Env: []string{"PATH=/"}, WorkingDir: "/"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	defer func() {
		if retErr != nil {
			stop()
		}
	}()
	ref = ln.Addr().String() + "/hello:v1"
	tag, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", nil, err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return "", nil, fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, stop, nil
}

// podstartCleanup deletes the pods, stops the worker gracefully and then
// checks that nothing is left: containers and sandboxes in the runtime's
// state, cgroups under cgParent, mounts under the data dir. What is left is
// removed and reported.
func podstartCleanup(cl *client.Client, w *proc, names []string, bin, dataDir, cgParent string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if len(names) > 0 && !w.exited() {
		// With the pods' own grace period (1s), not 0: a pod object then
		// stays until the worker has stopped its containers.
		for _, n := range names {
			_, _ = cl.Delete(ctx, &pb.DeleteOp{Kind: "Pod", Namespace: podstartNS, Name: n})
		}
		err := poll(ctx, time.Minute, 200*time.Millisecond, func() error {
			items, _, err := cl.List(ctx, "Pod", client.ListOptions{Namespace: podstartNS})
			if err != nil {
				return err
			}
			if len(items) > 0 {
				return fmt.Errorf("%d pods not deleted yet", len(items))
			}
			return nil
		})
		if err != nil {
			logf("delete pods: %v", err)
		}
	}
	if err := w.stop(30 * time.Second); err != nil {
		logf("stop worker: %v", err)
	}

	var left []string
	cfg := wrt.DefaultConfig()
	cfg.DataDir = filepath.Join(dataDir, "runtime")
	cfg.StateDir = filepath.Join(dataDir, "state")
	cfg.CgroupParent = cgParent
	cfg.ShimCommand = []string{bin, shim.Subcommand}
	cfg.Logger = slog.New(slog.DiscardHandler)
	if _, err := os.Stat(dataDir); err == nil {
		rt, err := wrt.New(cfg)
		if err != nil {
			return fmt.Errorf("cleanup: open the worker's runtime: %w", err)
		}
		if cs, err := rt.List(); err == nil {
			for _, c := range cs {
				left = append(left, "container "+c.ID)
				_ = rt.Remove(ctx, c.ID)
			}
		}
		if sbs, err := rt.ListSandboxes(); err == nil {
			for _, sb := range sbs {
				left = append(left, "sandbox "+sb.PodUID)
				_ = rt.RemoveSandbox(ctx, sb.PodUID)
			}
		}
		// A worker that stops without --cleanup-on-exit keeps the tmpfs of
		// its runtime state (--state-tmpfs) for its next run.
		if err := wrt.UnmountStateTmpfs(cfg.StateDir); err != nil {
			left = append(left, err.Error())
		}
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(r, cgParent), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if i > 0 { // the parent itself is the worker's, not a pod's
				left = append(left, "cgroup "+dirs[i])
			}
			_ = syscall.Rmdir(dirs[i])
		}
	}
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dataDir) {
				left = append(left, "mount "+f[4])
				_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("after deleting the pods and stopping the worker, left behind (now removed): %s", strings.Join(left, ", "))
	}
	return nil
}

// stop sends SIGTERM and waits for the process to exit, SIGKILLing it after
// within.
func (p *proc) stop(within time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("%s exited with %d after SIGTERM", p.name, code)
		}
		return nil
	case <-time.After(within):
		p.kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.name, within)
	}
}
