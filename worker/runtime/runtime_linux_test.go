package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	"github.com/skiff-sh/skiff/worker/internal/testimage"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// These tests run real containers: they need root, cgroups, overlayfs and
// namespaces. The test binary doubles as libcontainer's init and as the
// shim, exactly as the skiff binary does.

const helperEnv = "SKIFF_RUNTIME_TEST_HELPER"

func TestMain(m *testing.M) {
	shim.Init()
	if len(os.Args) > 1 && os.Args[1] == shim.Subcommand {
		os.Exit(shim.Main(os.Args[2:]))
	}
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	// Orphaned shims (TestReadoption) and container inits (TestShimDeath)
	// are re-parented to this process rather than to a pid 1 that may not
	// reap them; teardown reaps them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
	}
	// Shims and helpers are this binary too; under -race each would
	// otherwise sleep a second at exit (the race runtime's default).
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	code := m.Run()
	fix.close()
	os.Exit(code)
}

// fix is the image every test runs: testapp, pushed to an in-process
// registry and pulled once into a store shared by the package's tests.
var fix fixture

type fixture struct {
	once     sync.Once
	err      error
	reg      *testimage.Registry
	store    *image.Store
	storeDir string
	ref      string
	img      *image.Image
}

func (f *fixture) init() {
	f.reg = testimage.NewRegistry()
	appImg, err := testimage.AppImage()
	if err != nil {
		f.err = err
		return
	}
	if f.ref, err = f.reg.Push("testapp:v1", appImg); err != nil {
		f.err = err
		return
	}
	if f.storeDir, err = os.MkdirTemp("", "skiff-rt-images-"); err != nil {
		f.err = err
		return
	}
	cfg := image.DefaultConfig()
	cfg.DataDir = f.storeDir
	cfg.InsecureRegistries = []string{f.reg.Host}
	cfg.Logger = quietLogger()
	if f.store, err = image.Open(cfg); err != nil {
		f.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f.img, f.err = f.store.Ensure(ctx, f.ref, image.PullIfNotPresent)
}

func (f *fixture) close() {
	if f.reg != nil {
		f.reg.Close()
	}
	if f.storeDir != "" {
		_ = os.RemoveAll(f.storeDir)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func requireContainers(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("runs real containers: needs root (run the tests as root, as make test in CI does)")
	}
	fix.once.Do(fix.init)
	if fix.err != nil {
		t.Fatalf("test image: %v", fix.err)
	}
}

type testEnv struct {
	rt       *Runtime
	cfg      Config
	base     string
	cgParent string
}

// newEnv returns a runtime over fresh directories and a fresh cgroup
// parent. Whatever the test leaves behind (containers, shims, mounts,
// cgroups, namespace pins) is torn down when it ends, pass or fail.
func newEnv(t *testing.T) *testEnv {
	t.Helper()
	requireContainers(t)
	base, err := os.MkdirTemp("", "skiff-rt-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(base, "data")
	cfg.StateDir = filepath.Join(base, "state")
	cfg.CgroupParent = "/skiff-test-" + filepath.Base(base)
	cfg.Images = fix.store
	cfg.Logger = quietLogger()
	cfg.LogMaxSize = 1 << 20
	e := &testEnv{cfg: cfg, base: base, cgParent: cfg.CgroupParent}
	t.Cleanup(func() { e.teardown(t) })
	// As the worker runs it (--state-tmpfs).
	if _, err := MountStateTmpfs(cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	if e.rt, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *testEnv) teardown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if cs, err := e.rt.List(); err == nil {
		for _, c := range cs {
			if err := e.rt.Remove(ctx, c.ID); err != nil {
				t.Errorf("teardown: remove %s: %v", c.ID, err)
			}
		}
	}
	if sbs, err := e.rt.ListSandboxes(); err == nil {
		for _, sb := range sbs {
			if err := e.rt.RemoveSandbox(ctx, sb.PodUID); err != nil {
				t.Errorf("teardown: remove sandbox %s: %v", sb.PodUID, err)
			}
		}
	}
	// Safety net for what the runtime itself failed to clean.
	shims, _ := filepath.Glob(filepath.Join(e.cfg.StateDir, "containers", "*", "shim.json"))
	for _, p := range shims {
		if ss, err := shim.ReadJSON[shim.State](p); err == nil && procAlive(ss.ShimPid, ss.ShimStartTime) {
			_ = unix.Kill(ss.ShimPid, unix.SIGKILL)
		}
	}
	for _, dir := range cgroupDirs(e.cgParent) {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(procs)) {
				var pid int
				fmt.Sscan(f, &pid)
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	for _, m := range mountsUnder(e.base) {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		dirs := cgroupDirs(e.cgParent)
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = unix.Rmdir(dirs[i])
		}
		if len(cgroupDirs(e.cgParent)) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := cgroupDirs(e.cgParent); len(left) > 0 {
		t.Errorf("teardown: cgroups left: %v", left)
	}
	if err := os.RemoveAll(e.base); err != nil {
		t.Errorf("teardown: %v", err)
	}
	reapZombies()
}

// reapZombies reaps exited children of this process that nobody waits
// for: adopted orphans. (A child an exec.Cmd has yet to wait for may be
// reaped too; the runtime ignores its shims' wait errors.)
func reapZombies() {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		var state string
		var ppid, pid int
		fmt.Sscan(rest, &state, &ppid)
		fmt.Sscan(filepath.Base(filepath.Dir(p)), &pid)
		if state == "Z" && ppid == os.Getpid() {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// cgroupDirs lists the cgroup directories at and below parent in every
// hierarchy, parents before children.
func cgroupDirs(parent string) []string {
	var out []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		roots = []string{"/sys/fs/cgroup"}
	}
	for _, root := range roots {
		_ = filepath.WalkDir(filepath.Join(root, parent), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

func mountsUnder(prefix string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], prefix+"/") {
			out = append(out, fields[4])
		}
	}
	// Deepest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// assertClean checks that nothing of any container or sandbox is left.
func (e *testEnv) assertClean(t *testing.T) {
	t.Helper()
	for _, m := range mountsUnder(e.base) {
		if m != e.cfg.StateDir { // the state's own tmpfs
			t.Errorf("mount left: %s", m)
		}
	}
	for _, dir := range cgroupDirs(e.cgParent) {
		if filepath.Base(dir) != filepath.Base(e.cgParent) {
			t.Errorf("cgroup left: %s", dir)
		}
	}
	for _, d := range []string{
		filepath.Join(e.cfg.StateDir, "containers"), filepath.Join(e.cfg.StateDir, "sandboxes"),
		filepath.Join(e.cfg.StateDir, "libcontainer"), filepath.Join(e.cfg.DataDir, "containers"),
		filepath.Join(e.cfg.StateDir, "pods"),
	} {
		if entries, _ := os.ReadDir(d); len(entries) > 0 {
			t.Errorf("%s not empty: %v", d, entries)
		}
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (e *testEnv) sandbox(t *testing.T, uid string, opts SandboxOptions) *Sandbox {
	t.Helper()
	sb, err := e.rt.CreateSandbox(ctxFor(t, 30*time.Second), uid, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func app(name string, args ...string) *pb.Container {
	return &pb.Container{Name: name, Image: fix.ref, Command: []string{testimage.AppPath}, Args: args}
}

func (e *testEnv) start(t *testing.T, sb *Sandbox, c *pb.Container) string {
	t.Helper()
	start := time.Now()
	id, err := e.rt.StartContainer(ctxFor(t, 60*time.Second), sb, ContainerSpec{Container: c, Image: fix.img})
	if err != nil {
		t.Fatalf("start %s: %v", c.GetName(), err)
	}
	t.Logf("started %s in %v", c.GetName(), time.Since(start).Round(time.Millisecond))
	return id
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *testEnv) waitExited(t *testing.T, id string) ContainerStatus {
	t.Helper()
	var st ContainerStatus
	eventually(t, 60*time.Second, "container exit", func() bool {
		var err error
		st, err = e.rt.Status(id)
		if err != nil {
			t.Fatal(err)
		}
		return st.State == StateExited
	})
	return st
}

var logLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([FP]) (.*)$`)

// logs returns the container's log messages as "stream: text".
func (e *testEnv) logs(t *testing.T, id string) []string {
	t.Helper()
	b, err := os.ReadFile(e.rt.LogPath(id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		m := logLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("malformed log line %q", l)
		}
		out = append(out, m[2]+": "+m[4])
	}
	return out
}

func (e *testEnv) waitLog(t *testing.T, id, want string) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("log line %q", want), func() bool {
		for _, l := range e.logs(t, id) {
			if l == want {
				return true
			}
		}
		return false
	})
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func TestRunToCompletion(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-complete", SandboxOptions{})
	ok := e.start(t, sb, app("ok", "out", "fine"))
	fail := e.start(t, sb, app("fail", "out", "hello", "err", "oops", "exit", "3"))

	st := e.waitExited(t, fail)
	if st.ExitCode != 3 || st.Signal != 0 || st.Reason != ReasonError || st.OOMKilled {
		t.Errorf("status = %+v, want exit 3 Error", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) || st.Name != "fail" || st.PodUID != "pod-complete" || st.ImageID != fix.img.ID {
		t.Errorf("status = %+v", st)
	}
	if lines := e.logs(t, fail); !contains(lines, "stdout: hello") || !contains(lines, "stderr: oops") {
		t.Errorf("logs = %q", lines)
	}
	if st := e.waitExited(t, ok); st.ExitCode != 0 || st.Reason != ReasonCompleted {
		t.Errorf("ok status = %+v", st)
	}

	ctx := ctxFor(t, 60*time.Second)
	if err := e.rt.Remove(ctx, fail); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Status(fail); !errors.Is(err, ErrNotFound) {
		t.Errorf("status after remove: %v", err)
	}
	if err := e.rt.RemoveSandbox(ctx, sb.PodUID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.GetSandbox(sb.PodUID); !errors.Is(err, ErrSandboxNotFound) {
		t.Errorf("sandbox after remove: %v", err)
	}
	e.assertClean(t)
}

func TestProcessEnvironment(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-env", SandboxOptions{Hostname: "envhost"})
	uid := int64(1000)
	c := app("env", "env", "id", "pwd", "hostname", "out", "$(GREETING) $$(GREETING)")
	c.WorkingDir = "/tmp"
	c.Env = []*pb.EnvVar{{Name: "NAME", Value: "world"}, {Name: "GREETING", Value: "hello $(NAME)"}, {Name: "FROM_IMAGE", Value: "overridden"}}
	c.SecurityContext = &pb.SecurityContext{RunAsUser: &uid}
	c.Image = fix.ref
	// No Image in the spec: the runtime pulls through its store.
	id, err := e.rt.StartContainer(ctxFor(t, 60*time.Second), sb, ContainerSpec{
		Container:          c,
		PodSecurityContext: &pb.PodSecurityContext{SupplementalGroups: []int64{3000}},
		Labels:             map[string]string{"attempt": "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(t, id); st.ExitCode != 0 || st.Labels["attempt"] != "0" {
		t.Fatalf("status = %+v, logs %q", st, e.logs(t, id))
	}
	lines := e.logs(t, id)
	for _, want := range []string{
		"stdout: FROM_IMAGE=overridden", "stdout: GREETING=hello world", "stdout: HOME=/home/app",
		"stdout: HOSTNAME=envhost", "stdout: PATH=/usr/local/bin:/usr/bin:/bin",
		"stdout: uid=1000 gid=1000 groups=[2000 3000]", "stdout: /tmp", "stdout: envhost",
		"stdout: hello world $(GREETING)",
	} {
		if !contains(lines, want) {
			t.Errorf("missing %q in %q", want, lines)
		}
	}
}

func TestStartFailuresLeaveNothing(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-fail", SandboxOptions{})
	nonRoot := true
	asRoot := app("root", "out", "x")
	asRoot.SecurityContext = &pb.SecurityContext{RunAsNonRoot: &nonRoot}
	for _, c := range []*pb.Container{
		{Name: "missing", Image: fix.ref, Command: []string{"/no/such/binary"}},
		asRoot,
	} {
		_, err := e.rt.StartContainer(ctxFor(t, 60*time.Second), sb, ContainerSpec{Container: c, Image: fix.img})
		if err == nil {
			t.Fatalf("%s started", c.Name)
		}
		t.Logf("%s: %v", c.Name, err)
	}
	bad := app("bad")
	bad.Resources = &pb.ResourceRequirements{Limits: map[string]string{"memory": "lots"}}
	if _, err := e.rt.StartContainer(ctxFor(t, 10*time.Second), sb, ContainerSpec{Container: bad, Image: fix.img}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("bad quantity: %v", err)
	}
	if cs, _ := e.rt.List(); len(cs) != 0 {
		t.Errorf("containers after failed starts: %+v", cs)
	}
	if err := e.rt.RemoveSandbox(ctxFor(t, 30*time.Second), sb.PodUID); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t)
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-oom", SandboxOptions{})
	c := app("hog", "oom")
	c.Resources = &pb.ResourceRequirements{Limits: map[string]string{"memory": "32Mi", "cpu": "500m"}}
	id := e.start(t, sb, c)
	st := e.waitExited(t, id)
	if !st.OOMKilled || st.Reason != ReasonOOMKilled || st.ExitCode != 137 || st.Signal != int(unix.SIGKILL) {
		t.Errorf("status = %+v, want OOMKilled 137", st)
	}
}

func TestCgroupLimits(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-limits", SandboxOptions{})
	c := app("limited", "sleep", "1h")
	c.Resources = &pb.ResourceRequirements{
		Requests: map[string]string{"cpu": "250m"},
		Limits:   map[string]string{"cpu": "1500m", "memory": "64Mi"},
	}
	id := e.start(t, sb, c)
	dir := filepath.Join(sb.CgroupPath, id)
	// The files each limit is written to, per cgroup mode; the pod cgroup
	// exists and holds no process itself (its containers' cgroups do).
	want := map[string]string{
		"cpu/" + dir + "/cpu.shares":                  "256",
		"cpu/" + dir + "/cpu.cfs_quota_us":            "150000",
		"cpu/" + dir + "/cpu.cfs_period_us":           "100000",
		"memory/" + dir + "/memory.limit_in_bytes":    "67108864",
		"pids/" + filepath.Dir(dir) + "/cgroup.procs": "",
	}
	procs := filepath.Join("/sys/fs/cgroup/pids", dir, "cgroup.procs")
	if cgroups.IsCgroup2UnifiedMode() {
		want = map[string]string{
			dir + "/cpu.weight": fmt.Sprint(cgroups.ConvertCPUSharesToCgroupV2Value(256)),
			dir + "/cpu.max":    "150000 100000",
			dir + "/memory.max": "67108864",
			dir + "/pids.max":   "max",
		}
		procs = filepath.Join("/sys/fs/cgroup", dir, "cgroup.procs")
	} else if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.shares"); err != nil {
		// The runtime found no v1 cpu controller to put the limit in:
		// the container runs without its CPU limit.
		t.Fatalf("cgroup v1 without the cpu controller at /sys/fs/cgroup/cpu (%v): mount it (mount -t cgroup -o cpu,cpuacct cgroup /sys/fs/cgroup/cpu,cpuacct) or boot with cgroup v2", err)
	}
	for file, want := range want {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	st, _ := e.rt.Status(id)
	b, _ := os.ReadFile(procs)
	if strings.TrimSpace(string(b)) != fmt.Sprint(st.Pid) {
		t.Errorf("container cgroup procs = %q, want init pid %d", b, st.Pid)
	}
}

// TestCgroupNamespace: a container sees its own cgroup as the root of the
// hierarchy, in /proc/self/cgroup and under /sys/fs/cgroup, where its own
// limits are (what a JVM or Go's runtime reads to size itself).
func TestCgroupNamespace(t *testing.T) {
	if _, err := os.Stat("/proc/self/ns/cgroup"); err != nil {
		t.Fatalf("this kernel has no cgroup namespaces (%v): the worker needs Linux 4.6 or later", err)
	}
	e := newEnv(t)
	sb := e.sandbox(t, "pod-cgroupns", SandboxOptions{})
	quota, want := "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "150000"
	if cgroups.IsCgroup2UnifiedMode() {
		quota, want = "/sys/fs/cgroup/cpu.max", "150000 100000"
	}
	c := app("cgroupns", "cat", "/proc/self/cgroup", "out", "quota", "cat", quota)
	c.Resources = &pb.ResourceRequirements{Limits: map[string]string{"cpu": "1500m"}}
	id := e.start(t, sb, c)
	if st := e.waitExited(t, id); st.ExitCode != 0 {
		t.Fatalf("status = %+v, logs %q", st, e.logs(t, id))
	}
	lines := e.logs(t, id)
	i := slices.Index(lines, "stdout: quota")
	if i < 1 || i != len(lines)-2 {
		t.Fatalf("logs %q, want /proc/self/cgroup, quota, the quota", lines)
	}
	for _, l := range lines[:i] {
		// hierarchy-ID:controllers:path
		if parts := strings.SplitN(strings.TrimPrefix(l, "stdout: "), ":", 3); len(parts) != 3 || parts[2] != "/" {
			t.Errorf("/proc/self/cgroup line %q: the container's cgroup is not its root", l)
		}
	}
	if got := strings.TrimPrefix(lines[i+1], "stdout: "); got != want {
		t.Errorf("%s in the container = %q, want %q", quota, got, want)
	}
}

// TestContainerTimerSlack: skiff worker runs with a timer slack of its own
// (--timer-slack, 1 ms), which its shims and the containers' inits inherit;
// the containers' programs, the first and every exec, start with the
// kernel's default (shim.ContainerTimerSlack), as runc's do.
func TestContainerTimerSlack(t *testing.T) {
	e := newEnv(t)
	const workerSlack = "1000000"
	setThreadsTimerSlack(t, workerSlack)
	t.Cleanup(func() { setThreadsTimerSlack(t, "50000") })
	sb := e.sandbox(t, "pod-slack", SandboxOptions{})
	id := e.start(t, sb, app("slack", "timerslack", "sleep", "1h"))
	want := strconv.FormatInt(shim.ContainerTimerSlack.Nanoseconds(), 10)
	eventually(t, 60*time.Second, "the container's output", func() bool { return len(e.logs(t, id)) > 0 })
	if got := e.logs(t, id); got[0] != "stdout: timerslack="+want {
		t.Errorf("the container's timer slack: logs %q, want %s", got, want)
	}

	ss, err := shim.ReadJSON[shim.State](filepath.Join(e.cfg.StateDir, "containers", id, "shim.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The premise: the shim got the worker's.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", ss.ShimPid))
	if got := strings.TrimSpace(string(b)); err != nil || got != workerSlack {
		t.Errorf("the shim's timer slack = %q, %v; want the worker's, %s", got, err, workerSlack)
	}
	var out bytes.Buffer
	code, err := e.rt.Exec(ctxFor(t, 60*time.Second), id, []string{testimage.AppPath, "timerslack"}, ExecIO{Stdout: &out}, false)
	if err != nil || code != 0 || out.String() != "timerslack="+want+"\n" {
		t.Errorf("timer slack of an exec = %q (exit %d, %v), want %s", out.String(), code, err, want)
	}
}

// setThreadsTimerSlack sets the timer slack of every thread of this
// process, as skiff worker does with --timer-slack.
func setThreadsTimerSlack(t *testing.T, ns string) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if err := os.WriteFile("/proc/"+task.Name()+"/timerslack_ns", []byte(ns), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

func TestStop(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-stop", SandboxOptions{})
	graceful := e.start(t, sb, app("graceful", "trap-term", "42", "out", "ready", "sleep", "1h"))
	stubborn := e.start(t, sb, app("stubborn", "ignore-term", "out", "ready", "sleep", "1h"))
	e.waitLog(t, graceful, "stdout: ready")
	e.waitLog(t, stubborn, "stdout: ready")

	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		if err := e.rt.Stop(ctxFor(t, 60*time.Second), graceful, 30*time.Second); err != nil {
			t.Error(err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("graceful stop took %v; the handler exits at once", d)
		}
		st, _ := e.rt.Status(graceful)
		if st.State != StateExited || st.ExitCode != 42 || st.Signal != 0 {
			t.Errorf("graceful status = %+v", st)
		}
		if !contains(e.logs(t, graceful), "stdout: got SIGTERM") {
			t.Errorf("no SIGTERM in log: %q", e.logs(t, graceful))
		}
	})
	wg.Go(func() {
		const grace = 1500 * time.Millisecond
		start := time.Now()
		if err := e.rt.Stop(ctxFor(t, 60*time.Second), stubborn, grace); err != nil {
			t.Error(err)
		}
		if d := time.Since(start); d < grace || d > grace+20*time.Second {
			t.Errorf("stop took %v, want grace %v then SIGKILL", d, grace)
		}
		st, _ := e.rt.Status(stubborn)
		if st.State != StateExited || st.Signal != int(unix.SIGKILL) || st.ExitCode != 137 || st.OOMKilled {
			t.Errorf("stubborn status = %+v", st)
		}
	})
	wg.Wait()
	// Stopping again is a no-op.
	if err := e.rt.Stop(ctxFor(t, 10*time.Second), graceful, time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

func TestExec(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-exec", SandboxOptions{})
	c := app("target", "sleep", "1h")
	c.Env = []*pb.EnvVar{{Name: "MARK", Value: "in-container"}}
	id := e.start(t, sb, c)
	ctx := ctxFor(t, 60*time.Second)

	var stdout, stderr bytes.Buffer
	start := time.Now()
	code, err := e.rt.Exec(ctx, id, []string{testimage.AppPath, "out", "hi", "err", "there", "env", "exit", "3"}, ExecIO{Stdout: &stdout, Stderr: &stderr}, false)
	t.Logf("exec took %v", time.Since(start).Round(time.Millisecond))
	if err != nil || code != 3 {
		t.Fatalf("exec = %d, %v", code, err)
	}
	if !strings.HasPrefix(stdout.String(), "hi\n") || !strings.Contains(stdout.String(), "MARK=in-container\n") || !strings.Contains(stdout.String(), "HOME=/root\n") || stderr.String() != "there\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}

	stdout.Reset()
	code, err = e.rt.Exec(ctx, id, []string{testimage.AppPath, "stdin"}, ExecIO{Stdin: strings.NewReader("piped input"), Stdout: &stdout}, false)
	if err != nil || code != 0 || stdout.String() != "piped input" {
		t.Errorf("stdin exec = %d %v %q", code, err, stdout.String())
	}

	stdout.Reset()
	code, err = e.rt.Exec(ctx, id, []string{testimage.AppPath, "tty", "pid", "exit", "5"}, ExecIO{Stdout: &stdout}, true)
	if err != nil || code != 5 {
		t.Fatalf("tty exec = %d, %v", code, err)
	}
	if !strings.Contains(stdout.String(), "tty=true") {
		t.Errorf("tty exec output %q", stdout.String())
	}
	stdout.Reset()
	code, err = e.rt.Exec(ctx, id, []string{testimage.AppPath, "tty"}, ExecIO{Stdout: &stdout}, false)
	if err != nil || code != 0 || stdout.String() != "tty=false\n" {
		t.Errorf("non-tty exec = %d %v %q", code, err, stdout.String())
	}

	// Cancelling the context kills the exec'd process.
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := e.rt.Exec(cctx, id, []string{testimage.AppPath, "sleep", "1h"}, ExecIO{}, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled exec: %v", err)
	}

	if err := e.rt.Stop(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Exec(ctx, id, []string{testimage.AppPath}, ExecIO{}, false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec in stopped container: %v", err)
	}
}

func TestTTYContainer(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-tty", SandboxOptions{})
	c := app("tty", "tty", "out", "done")
	c.Tty = true
	id := e.start(t, sb, c)
	if st := e.waitExited(t, id); st.ExitCode != 0 {
		t.Fatalf("status = %+v", st)
	}
	lines := e.logs(t, id)
	if !contains(lines, "stdout: tty=true\r") && !contains(lines, "stdout: tty=true") {
		t.Errorf("logs = %q", lines)
	}
}

func TestSandboxNetworking(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-net", SandboxOptions{Hostname: "netpod"})
	server := e.start(t, sb, app("server", "serve", "127.0.0.1:8080", "sleep", "1h"))
	e.waitLog(t, server, "stdout: listening on 127.0.0.1:8080")
	client := e.start(t, sb, app("client", "get", "http://127.0.0.1:8080/"))
	if st := e.waitExited(t, client); st.ExitCode != 0 {
		t.Fatalf("client status = %+v, logs %q", st, e.logs(t, client))
	}
	if lines := e.logs(t, client); !contains(lines, "stdout: hello from netpod") {
		t.Errorf("client logs = %q", lines)
	}

	// Another pod has its own loopback.
	other := e.sandbox(t, "pod-other", SandboxOptions{})
	outsider := e.start(t, other, app("outsider", "get-once", "http://127.0.0.1:8080/"))
	if st := e.waitExited(t, outsider); st.ExitCode == 0 {
		t.Errorf("a container of another pod reached the server: %q", e.logs(t, outsider))
	}

	// A hostNetwork pod sees the host's hostname.
	host := e.sandbox(t, "pod-host", SandboxOptions{HostNetwork: true})
	hn := e.start(t, host, app("hostname", "hostname"))
	e.waitExited(t, hn)
	want, _ := os.Hostname()
	if lines := e.logs(t, hn); !contains(lines, "stdout: "+want) {
		t.Errorf("hostNetwork hostname logs = %q, want %q", lines, want)
	}

	ctx := ctxFor(t, 60*time.Second)
	for _, uid := range []string{"pod-net", "pod-other", "pod-host"} {
		if err := e.rt.RemoveSandbox(ctx, uid); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean(t)
}

// TestSandboxNamespaces checks that the containers of one pod share its
// IPC, UTS and network namespaces, and that another pod and the host have
// their own.
func TestSandboxNamespaces(t *testing.T) {
	e := newEnv(t)
	nsOf := func(sb *Sandbox, name string) []string {
		t.Helper()
		id := e.start(t, sb, app(name, "ns"))
		if st := e.waitExited(t, id); st.ExitCode != 0 {
			t.Fatalf("%s: status = %+v, logs %q", name, st, e.logs(t, id))
		}
		lines := e.logs(t, id)
		if len(lines) != 3 {
			t.Fatalf("%s: logs = %q, want ipc, uts and net", name, lines)
		}
		return lines
	}
	host := hostNamespaces(t)
	pod := e.sandbox(t, "pod-ns", SandboxOptions{Hostname: "nspod"})
	other := e.sandbox(t, "pod-ns-other", SandboxOptions{Hostname: "nspod"})
	first, second, outsider := nsOf(pod, "first"), nsOf(pod, "second"), nsOf(other, "outsider")
	for i, kind := range []string{"ipc", "uts", "net"} {
		if !strings.HasPrefix(first[i], "stdout: "+kind+":[") {
			t.Fatalf("line %d = %q, want the %s namespace", i, first[i], kind)
		}
		if first[i] != second[i] {
			t.Errorf("%s namespace not shared within the pod: %q vs %q", kind, first[i], second[i])
		}
		if first[i] == outsider[i] {
			t.Errorf("%s namespace shared between two pods: %q", kind, first[i])
		}
		if first[i] == "stdout: "+host[i] {
			t.Errorf("%s namespace is the host's: %q", kind, host[i])
		}
	}
	// Making the sandboxes must leave every thread of this process in the
	// host's namespaces, the main thread included (Go parks a locked main
	// thread instead of ending it).
	for i, kind := range []string{"ipc", "uts", "net"} {
		if l, _ := os.Readlink("/proc/self/ns/" + kind); l != host[i] {
			t.Errorf("the process's main thread is in %s, not the host's %s", l, host[i])
		}
	}
	ctx := ctxFor(t, 60*time.Second)
	for _, uid := range []string{"pod-ns", "pod-ns-other"} {
		if err := e.rt.RemoveSandbox(ctx, uid); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean(t)
}

// hostNamespaces returns the ipc, uts and net namespace links of a thread
// of this process. Not /proc/self: that is the main thread, and when
// pinNamespaces' locked goroutine happened to run on it, Go parks the main
// thread for good instead of ending it, still in the sandbox's namespaces.
func hostNamespaces(t *testing.T) []string {
	t.Helper()
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	var out []string
	for _, kind := range []string{"ipc", "uts", "net"} {
		l, err := os.Readlink("/proc/thread-self/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

func TestLogRotation(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-logs", SandboxOptions{})
	// 30000 lines of ~90 bytes: ~2.7 MB through a 1 MiB limit, 3 files.
	id := e.start(t, sb, app("chatty", "lines", "30000"))
	if st := e.waitExited(t, id); st.ExitCode != 0 {
		t.Fatalf("status = %+v", st)
	}
	for _, p := range []string{e.rt.LogPath(id), e.rt.LogPath(id) + ".1", e.rt.LogPath(id) + ".2"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > e.cfg.LogMaxSize {
			t.Errorf("%s is %d bytes, over %d", p, fi.Size(), e.cfg.LogMaxSize)
		}
	}
	if _, err := os.Stat(e.rt.LogPath(id) + ".3"); err == nil {
		t.Errorf("more than LogMaxFiles files")
	}
	lines := e.logs(t, id)
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "stdout: line 029999 ") {
		t.Errorf("last line %q", last)
	}
}

// TestReadoption starts a container from another process that then exits
// (a worker restart), and checks that a new Runtime finds the container
// running, can exec into it and stop it, and reads the exit code its shim
// recorded.
func TestReadoption(t *testing.T) {
	e := newEnv(t)
	cfgJSON, _ := json.Marshal(helperConfig{
		DataDir: e.cfg.DataDir, StateDir: e.cfg.StateDir, CgroupParent: e.cfg.CgroupParent,
		StoreDir: fix.storeDir, Ref: fix.ref, PodUID: "pod-adopt",
	})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(cfgJSON))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	id := strings.TrimSpace(string(out))

	rt, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := rt.List()
	if err != nil || len(cs) != 1 || cs[0].ID != id || cs[0].State != StateRunning || cs[0].Pid == 0 || cs[0].Name != "adoptee" {
		t.Fatalf("List = %+v, %v", cs, err)
	}
	if err := unix.Kill(cs[0].Pid, 0); err != nil {
		t.Fatalf("container init not alive: %v", err)
	}
	sbs, err := rt.ListSandboxes()
	if err != nil || len(sbs) != 1 || sbs[0].PodUID != "pod-adopt" {
		t.Fatalf("ListSandboxes = %+v, %v", sbs, err)
	}
	e.waitLog(t, id, "stdout: ready")

	var stdout bytes.Buffer
	if code, err := rt.Exec(ctxFor(t, 30*time.Second), id, []string{testimage.AppPath, "out", "adopted"}, ExecIO{Stdout: &stdout}, false); err != nil || code != 0 || stdout.String() != "adopted\n" {
		t.Errorf("exec = %d %v %q", code, err, stdout.String())
	}
	if err := rt.Stop(ctxFor(t, 60*time.Second), id, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := rt.Status(id)
	if err != nil || st.State != StateExited || st.ExitCode != 7 || st.Reason != ReasonError {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if lines := e.logs(t, id); !contains(lines, "stdout: got SIGTERM") {
		t.Errorf("logs = %q", lines)
	}
	if err := rt.RemoveSandbox(ctxFor(t, 60*time.Second), "pod-adopt"); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t)
}

// TestShimDeath kills a running container's shim: the container keeps
// running and is reported so, Stop still stops it (recording an unknown
// exit), and Remove still cleans everything.
func TestShimDeath(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-orphan", SandboxOptions{})
	id := e.start(t, sb, app("orphan", "sleep", "1h"))
	ss, err := shim.ReadJSON[shim.State](filepath.Join(e.cfg.StateDir, "containers", id, "shim.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(ss.ShimPid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "shim death", func() bool { return !procAlive(ss.ShimPid, ss.ShimStartTime) })
	st, err := e.rt.Status(id)
	if err != nil || st.State != StateRunning || st.Message == "" || st.Pid != ss.InitPid {
		t.Fatalf("status with dead shim = %+v, %v", st, err)
	}
	if err := e.rt.Stop(ctxFor(t, 60*time.Second), id, 0); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.rt.Status(id); st.State != StateExited || st.Reason != ReasonUnknown || st.ExitCode != 137 {
		t.Errorf("status after stop = %+v", st)
	}
	if err := e.rt.RemoveSandbox(ctxFor(t, 60*time.Second), sb.PodUID); err != nil {
		t.Fatal(err)
	}
	e.assertClean(t)
}

// TestListPod: ListPod returns exactly the containers of one pod, with the
// statuses List gives: those of an older runtime (no summary, no pod index
// entry) too, once a runtime starts over their directories. An index entry
// whose container is gone is dropped, and removing the last container of a
// pod removes its index.
func TestListPod(t *testing.T) {
	e := newEnv(t)
	sbA := e.sandbox(t, "pod-list-a", SandboxOptions{})
	sbB := e.sandbox(t, "pod-list-b", SandboxOptions{})
	want := map[string][]string{
		sbA.PodUID:      {e.start(t, sbA, app("a1", "sleep", "1h")), e.start(t, sbA, app("a2", "exit", "3"))},
		sbB.PodUID:      {e.start(t, sbB, app("b1", "sleep", "1h"))},
		"pod-list-none": nil,
	}
	e.waitExited(t, want[sbA.PodUID][1])
	// b1 as an older runtime left it: no summary, not in the pod index.
	b1 := want[sbB.PodUID][0]
	for _, f := range []string{filepath.Join(e.rt.stateDir(b1), "summary.json"), filepath.Join(e.rt.podIndex(sbB.PodUID), b1)} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := e.rt.ListPod(sbB.PodUID); err != nil || len(got) != 0 {
		t.Fatalf("ListPod(%s) without an index entry = %+v, %v; want nothing (the index is the source)", sbB.PodUID, got, err)
	}
	rt, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.rt = rt
	// A cleanup that stopped between the state directory and the index.
	stale := filepath.Join(e.rt.podIndex(sbA.PodUID), "0123456789abcdef")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	all, err := e.rt.List()
	if err != nil || len(all) != 3 {
		t.Fatalf("List = %+v, %v", all, err)
	}
	listed := map[string]ContainerStatus{}
	for _, st := range all {
		listed[st.ID] = st
	}
	check := func() {
		t.Helper()
		for pod, ids := range want {
			got, err := e.rt.ListPod(pod)
			if err != nil {
				t.Fatal(err)
			}
			var gotIDs []string
			for _, st := range got {
				gotIDs = append(gotIDs, st.ID)
				if !reflect.DeepEqual(st, listed[st.ID]) {
					t.Errorf("ListPod(%s): %+v, List: %+v", pod, st, listed[st.ID])
				}
			}
			slices.Sort(gotIDs)
			slices.Sort(ids)
			if !slices.Equal(gotIDs, ids) {
				t.Errorf("ListPod(%s) = %v, want %v", pod, gotIDs, ids)
			}
		}
	}
	check()
	if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale index entry %s left: %v", stale, err)
	}

	for _, id := range want[sbA.PodUID] {
		if err := e.rt.Remove(ctxFor(t, 60*time.Second), id); err != nil {
			t.Fatal(err)
		}
	}
	want[sbA.PodUID] = nil
	check()
	if _, err := os.Lstat(e.rt.podIndex(sbA.PodUID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("index of pod %s without containers left: %v", sbA.PodUID, err)
	}
	if _, err := e.rt.ListPod("../x"); err == nil {
		t.Error("ListPod accepted an invalid pod UID")
	}
}

type helperConfig struct {
	DataDir, StateDir, CgroupParent, StoreDir, Ref, PodUID string
}

// helperMain plays a worker that starts one container and exits.
func helperMain() int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &hc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	icfg := image.DefaultConfig()
	icfg.DataDir = hc.StoreDir
	icfg.Logger = quietLogger()
	store, err := image.Open(icfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := DefaultConfig()
	cfg.DataDir, cfg.StateDir, cfg.CgroupParent = hc.DataDir, hc.StateDir, hc.CgroupParent
	cfg.Images = store
	cfg.Logger = quietLogger()
	rt, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := rt.CreateSandbox(ctx, hc.PodUID, SandboxOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c := &pb.Container{
		Name: "adoptee", Image: hc.Ref, ImagePullPolicy: image.PullNever,
		Command: []string{testimage.AppPath, "trap-term", "7", "out", "ready", "sleep", "1h"},
	}
	id, err := rt.StartContainer(ctx, sb, ContainerSpec{Container: c})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(id)
	return 0
}

// A container's rootfs overlay is mounted in its shim's mount namespace,
// which the container's starts as a copy of, and never in the node's:
// the node's mount table, which every process start reads, gains no
// overlay per pod.
func TestRootfsOnlyInShimNamespace(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-rootfs-ns", SandboxOptions{})
	id := e.start(t, sb, app("mnt", "sleep", "1h"))
	st, err := e.rt.Status(id)
	if err != nil || st.State != StateRunning {
		t.Fatalf("status %+v, %v", st, err)
	}
	target := filepath.Join(e.rt.stateDir(id), "rootfs")
	if mounted, err := mountinfo.Mounted(target); err != nil || mounted {
		t.Errorf("rootfs mounted in the node's namespace: %v, %v", mounted, err)
	}
	ss := e.rt.shimOf(id)
	if ss == nil {
		t.Fatal("no shim state")
	}
	overlayAt := func(mountinfoPath, at string) bool {
		t.Helper()
		f, err := os.Open(mountinfoPath)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESRCH) {
			// A thread that ended, or is ending: the kernel answers
			// EINVAL for the mount table of a task whose namespaces it
			// has already let go of (mounts_open_common), ENOENT once
			// the task is gone. Go ends a locked thread whose goroutine
			// returns, as libcontainer's namespace work does.
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ms, err := mountinfo.GetMountsFromReader(f, mountinfo.SingleEntryFilter(at))
		if err != nil {
			t.Fatal(err)
		}
		return len(ms) == 1 && ms[0].FSType == "overlay"
	}
	// Per thread: libcontainer joins the container's mount namespace from
	// a locked thread of the shim's while it sets mounts up, and when
	// that thread is the main one Go keeps it (parked) instead of ending
	// it, so /proc/PID/mountinfo may show the container's namespace.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/mountinfo", ss.ShimPid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("the shim's threads: %v", err)
	}
	if !slices.ContainsFunc(tasks, func(p string) bool { return overlayAt(p, target) }) {
		t.Errorf("no overlay at %s in the shim's (pid %d) namespace", target, ss.ShimPid)
	}
	// The kernel answers EINVAL for the mount table of a process that is
	// exiting or gone; "sleep 1h" should not be either (seen once in CI):
	// say what became of the container instead.
	containerMounts := fmt.Sprintf("/proc/%d/mountinfo", st.Pid)
	if f, err := os.Open(containerMounts); err != nil {
		now, serr := e.rt.Status(id)
		logs, _ := os.ReadFile(e.rt.LogPath(id))
		t.Fatalf("the container's mount table: %v; its status now %+v (%v); its log:\n%s", err, now, serr, logs)
	} else {
		f.Close()
	}
	if !overlayAt(containerMounts, "/") {
		t.Errorf("the container's (pid %d) root is not its overlay", st.Pid)
	}
}
