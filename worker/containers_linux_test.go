package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/internal/testimage"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// These tests run real containers through the whole path: masters, the
// node agent, libcontainer, an image pulled from a registry on 127.0.0.1.
// They need root, cgroups, overlayfs and namespaces.

// realEnv is a real runtime over fresh directories and a fresh cgroup
// parent; whatever a test leaves behind is torn down when it ends.
type realEnv struct {
	rt       *wrt.Runtime
	base     string
	cgParent string
	dataDir  string
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("runs real containers: run the tests as root")
	}
	fix.once.Do(fix.init)
	if fix.err != nil {
		t.Fatalf("test image: %v", fix.err)
	}
	base, err := os.MkdirTemp("", "skiff-worker-")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	e := &realEnv{base: base, cgParent: "/skiff-wtest-" + hex.EncodeToString(b), dataDir: filepath.Join(base, "worker")}
	cfg := wrt.DefaultConfig()
	cfg.DataDir = filepath.Join(e.dataDir, "runtime")
	cfg.StateDir = filepath.Join(e.dataDir, "state")
	cfg.CgroupParent = e.cgParent
	cfg.Images = fix.store
	cfg.Logger = testLogger(t)
	if e.rt, err = wrt.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.teardown(t) })
	return e
}

// options makes an agent use the env's runtime and data dir.
func (e *realEnv) options() agentOptions {
	return func(c *Config) {
		c.Runtime, c.Images = e.rt, fix.store
		c.DataDir = e.dataDir
	}
}

func (e *realEnv) teardown(t *testing.T) {
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
	for _, dir := range cgroupDirs(e.cgParent) {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(procs)) {
				var pid int
				fmt.Sscan(f, &pid)
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	for _, m := range mountsBelow(e.base) {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		removeCgroupDirs(e.cgParent)
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
}

// assertClean waits until no container, sandbox, mount, pod cgroup or pod
// directory is left (a pod deleted by the API may still be being cleaned
// up by its worker).
func (e *realEnv) assertClean(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, "nothing left", e.leftovers)
}

func (e *realEnv) leftovers() error {
	var left []string
	if m := mountsBelow(e.base); len(m) > 0 {
		left = append(left, fmt.Sprintf("mounts %v", m))
	}
	for _, dir := range cgroupDirs(e.cgParent) {
		if filepath.Base(dir) != filepath.Base(e.cgParent) {
			left = append(left, "cgroup "+dir)
		}
	}
	for _, d := range []string{
		filepath.Join(e.dataDir, "state", "containers"), filepath.Join(e.dataDir, "state", "sandboxes"),
		filepath.Join(e.dataDir, "state", "libcontainer"), filepath.Join(e.dataDir, "runtime", "containers"),
		filepath.Join(e.dataDir, "pods"),
	} {
		if entries, _ := os.ReadDir(d); len(entries) > 0 {
			left = append(left, fmt.Sprintf("%s: %d entries", d, len(entries)))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left: %v", left)
	}
	return nil
}

// cgroupDirs lists the cgroup directories at and below parent in every
// hierarchy.
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

func app(name string, args ...string) *pb.Container {
	return &pb.Container{Name: name, Image: fix.ref, Command: []string{testimage.AppPath}, Args: args, ImagePullPolicy: "IfNotPresent"}
}

func probeOf(h func(*pb.Probe)) *pb.Probe {
	p := &pb.Probe{PeriodSeconds: 1, TimeoutSeconds: 2, FailureThreshold: 2, SuccessThreshold: 1}
	h(p)
	return p
}

// TestRealContainers runs pods of real containers on one worker and checks
// what users see through the API: completion and exit codes, restarts with
// backoff, OOM kills, every probe kind, volumes, logs (with --previous and
// --follow) and exec through the masters, graceful deletion, and that
// nothing is left once the pods are gone.
func TestRealContainers(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	tc := startCluster(t, clusterOptions{})
	tc.startAgent(t, "w1", e.options(), func(c *Config) {
		c.BackoffBase, c.BackoffMax = 500*time.Millisecond, 2*time.Second
	})
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)

	// Pod start latency: created -> Running.
	start := time.Now()
	web := app("web", "serve", "127.0.0.1:8080", "out", "ready", "sleep", "1h")
	web.Ports = []*pb.ContainerPort{{Name: "http", ContainerPort: 8080}}
	web.ReadinessProbe = probeOf(func(p *pb.Probe) { p.HttpGet = &pb.HTTPGetAction{Path: "/", Port: "http"} })
	web.LivenessProbe = probeOf(func(p *pb.Probe) { p.TcpSocket = &pb.TCPSocketAction{Port: "8080"} })
	web.StartupProbe = probeOf(func(p *pb.Probe) { p.Exec = &pb.ExecAction{Command: []string{testimage.AppPath, "exit", "0"}} })
	tc.create(t, testPod("web", "w1", web))
	tc.waitPod(t, "web", 60*time.Second, "running", phaseIs("Running"))
	t.Logf("first pod: created -> Running: %v (the image is in the store already)", time.Since(start).Round(time.Millisecond))
	tc.waitPod(t, "web", 30*time.Second, "ready (startup exec, readiness httpGet, liveness tcpSocket)", readyIs("True"))
	t.Logf("created -> Ready: %v", time.Since(start).Round(time.Millisecond))

	// And with the image present: created -> Running, one pod at a time.
	var lat []time.Duration
	for i := range 5 {
		name := fmt.Sprintf("lat%d", i)
		begin := time.Now()
		tc.create(t, testPod(name, "w1", app("main", "sleep", "1h")))
		tc.waitPod(t, name, 60*time.Second, "running", phaseIs("Running"))
		lat = append(lat, time.Since(begin).Round(time.Millisecond))
	}
	t.Logf("pod start latency with the image present (created -> Running as read back through the API): %v", lat)

	start = time.Now()
	done := app("done", "out", "finished", "exit", "0")
	failed := app("failed", "err", "bad things", "exit", "3")
	for name, c := range map[string]*pb.Container{"done": done, "failed": failed} {
		obj := testPod(name, "w1", c)
		obj.GetPod().Spec.RestartPolicy = "Never"
		tc.create(t, obj)
	}
	p := tc.waitPod(t, "done", 60*time.Second, "Succeeded", phaseIs("Succeeded"))
	t.Logf("created -> Succeeded (image cached): %v", time.Since(start).Round(time.Millisecond))
	if term := containerStatusOf(p, "done").GetState().GetTerminated(); term.GetExitCode() != 0 || term.GetReason() != "Completed" {
		t.Errorf("done: %v", containerStatusOf(p, "done"))
	}
	p = tc.waitPod(t, "failed", 60*time.Second, "Failed", phaseIs("Failed"))
	if term := containerStatusOf(p, "failed").GetState().GetTerminated(); term.GetExitCode() != 3 || term.GetReason() != "Error" || term.GetFinishedAt() == nil {
		t.Errorf("failed: %v", containerStatusOf(p, "failed"))
	}

	crashy := testPod("crashy", "w1", app("crashy", "out", "about to fail", "exit", "1"))
	crashy.GetPod().Spec.RestartPolicy = "OnFailure"
	tc.create(t, crashy)
	oom := app("hog", "oom")
	oom.Resources = &pb.ResourceRequirements{Limits: map[string]string{"memory": "32Mi"}}
	hog := testPod("hog", "w1", oom)
	hog.GetPod().Spec.RestartPolicy = "Never"
	tc.create(t, hog)
	notReady := app("deaf", "sleep", "1h")
	notReady.ReadinessProbe = probeOf(func(p *pb.Probe) { p.HttpGet = &pb.HTTPGetAction{Port: "9999"} })
	tc.create(t, testPod("deaf", "w1", notReady))
	dying := app("dying", "sleep", "1h")
	dying.LivenessProbe = probeOf(func(p *pb.Probe) {
		p.Exec = &pb.ExecAction{Command: []string{testimage.AppPath, "exit", "1"}}
		p.TerminationGracePeriodSeconds = gproto.Int64(1)
	})
	tc.create(t, testPod("dying", "w1", dying))

	sawBackoff := false
	p = tc.waitPod(t, "crashy", 60*time.Second, "restarts with backoff", func(p *pb.Pod) error {
		cs := containerStatusOf(p, "crashy")
		if cs.GetState().GetWaiting().GetReason() == "CrashLoopBackOff" {
			sawBackoff = true
		}
		if cs.GetRestartCount() < 2 || !sawBackoff {
			return fmt.Errorf("restartCount %d, backoff seen %v", cs.GetRestartCount(), sawBackoff)
		}
		return nil
	})
	if lt := containerStatusOf(p, "crashy").GetLastState().GetTerminated(); lt.GetExitCode() != 1 {
		t.Errorf("crashy lastState %v", containerStatusOf(p, "crashy").GetLastState())
	}
	if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "crashy", Previous: true}); err != nil || out != "about to fail\n" {
		t.Errorf("logs --previous = %q, %v", out, err)
	}

	p = tc.waitPod(t, "hog", 60*time.Second, "OOMKilled", phaseIs("Failed"))
	if term := containerStatusOf(p, "hog").GetState().GetTerminated(); term.GetReason() != "OOMKilled" || term.GetExitCode() != 137 {
		t.Errorf("hog: %v", containerStatusOf(p, "hog"))
	}

	p = tc.waitPod(t, "deaf", 30*time.Second, "running, not ready", func(p *pb.Pod) error {
		if err := phaseIs("Running")(p); err != nil {
			return err
		}
		return readyIs("False")(p)
	})
	if n := containerStatusOf(p, "deaf").GetRestartCount(); n != 0 {
		t.Errorf("a failing readiness probe restarted the container %d times", n)
	}
	tc.waitPod(t, "dying", 60*time.Second, "restarted by its liveness probe", func(p *pb.Pod) error {
		if n := containerStatusOf(p, "dying").GetRestartCount(); n < 1 {
			return fmt.Errorf("restartCount %d", n)
		}
		return nil
	})

	// Logs through the masters.
	out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "web"})
	if err != nil || out != "listening on 127.0.0.1:8080\nready\n" {
		t.Errorf("logs web = %q, %v", out, err)
	}
	if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "web", TailLines: gproto.Int64(1), Timestamps: true}); err != nil || !strings.HasSuffix(out, " ready\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("logs --tail 1 --timestamps = %q, %v", out, err)
	}
	if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "failed"}); err != nil || out != "bad things\n" {
		t.Errorf("logs failed = %q, %v", out, err)
	}
	if _, err := tc.logsOf(t, &pb.LogsRequest{Pod: "web", Previous: true}); err == nil || !strings.Contains(err.Error(), "previous terminated container") {
		t.Errorf("logs --previous of a never restarted container: %v", err)
	}
	if _, err := tc.logsOf(t, &pb.LogsRequest{Pod: "nosuchpod"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("logs of a missing pod: %v", err)
	}
	// --follow streams until the container exits.
	follow := testPod("follow", "w1", app("follow", "out", "one", "sleep", "1500ms", "out", "two", "exit", "0"))
	follow.GetPod().Spec.RestartPolicy = "Never"
	tc.create(t, follow)
	tc.waitPod(t, "follow", 60*time.Second, "started", func(p *pb.Pod) error {
		if containerStatusOf(p, "follow").GetContainerId() == "" {
			return fmt.Errorf("not started")
		}
		return nil
	})
	fstart := time.Now()
	out, err = tc.logsOf(t, &pb.LogsRequest{Pod: "follow", Follow: true})
	if err != nil || out != "one\ntwo\n" {
		t.Errorf("logs -f = %q, %v", out, err)
	}
	t.Logf("logs -f returned %v after it began, when the container exited", time.Since(fstart).Round(10*time.Millisecond))

	// Exec through the masters.
	code, stdout, stderr, err := tc.execIn(t, "web", nil, testimage.AppPath, "out", "hi", "err", "there", "exit", "7")
	if err != nil || code != 7 || stdout != "hi\n" || stderr != "there\n" {
		t.Errorf("exec = %d %q %q %v", code, stdout, stderr, err)
	}
	code, stdout, _, err = tc.execIn(t, "web", strings.NewReader("piped"), testimage.AppPath, "stdin")
	if err != nil || code != 0 || stdout != "piped" {
		t.Errorf("exec with stdin = %d %q %v", code, stdout, err)
	}
	code, stdout, _, err = tc.execIn(t, "web", nil, testimage.AppPath, "get-once", "http://127.0.0.1:8080/")
	if err != nil || code != 0 || !strings.HasPrefix(stdout, "hello from web") {
		t.Errorf("exec reaching the pod's own server = %d %q %v", code, stdout, err)
	}
	var ttyOut bytes.Buffer
	code, err = tc.api.Exec(ctxFor(t, 30*time.Second), &pb.ExecStart{Namespace: "default", Pod: "web", Tty: true,
		Size: &pb.TerminalSize{Width: 100, Height: 40}, Command: []string{testimage.AppPath, "tty", "winsize", "exit", "4"}}, client.ExecIO{Stdout: &ttyOut})
	if err != nil || code != 4 || !strings.Contains(ttyOut.String(), "tty=true") || !strings.Contains(ttyOut.String(), "size=100x40") {
		t.Errorf("exec with a tty = %d %q %v", code, ttyOut.String(), err)
	}
	if _, _, _, err := tc.execIn(t, "done", nil, testimage.AppPath); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("exec in a finished container: %v", err)
	}

	// Graceful deletion: SIGTERM, the grace period, SIGKILL.
	stubborn := testPod("stubborn", "w1", app("stubborn", "ignore-term", "out", "ready", "sleep", "1h"))
	stubborn.GetPod().Spec.TerminationGracePeriodSeconds = gproto.Int64(2)
	tc.create(t, stubborn)
	polite := testPod("polite", "w1", app("polite", "trap-term", "0", "out", "ready", "sleep", "1h"))
	tc.create(t, polite)
	for _, name := range []string{"stubborn", "polite"} {
		eventually(t, 60*time.Second, name+" ready", func() error {
			out, err := tc.logsOf(t, &pb.LogsRequest{Pod: name})
			if err != nil || !strings.Contains(out, "ready") {
				return fmt.Errorf("logs %q %v", out, err)
			}
			return nil
		})
	}
	begin := time.Now()
	tc.deletePod(t, "stubborn", nil)
	tc.deletePod(t, "polite", nil)
	tc.waitPodGone(t, "polite", 30*time.Second)
	politeTook := time.Since(begin)
	tc.waitPodGone(t, "stubborn", 30*time.Second)
	stubbornTook := time.Since(begin)
	t.Logf("deletion: a container that exits on SIGTERM took %v; one that ignores it, with a 2s grace period, %v",
		politeTook.Round(10*time.Millisecond), stubbornTook.Round(10*time.Millisecond))
	if politeTook > 10*time.Second {
		t.Errorf("a container exiting on SIGTERM took %v to delete (grace 30s)", politeTook)
	}
	if stubbornTook < 2*time.Second || stubbornTook > 15*time.Second {
		t.Errorf("a container ignoring SIGTERM took %v to delete, want the 2s grace period", stubbornTook)
	}

	// Delete everything: nothing may be left.
	objs, _, err := tc.api.List(ctxFor(t, 10*time.Second), "Pod", client.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		tc.deletePod(t, o.Meta().GetName(), gproto.Int64(1))
	}
	for _, o := range objs {
		tc.waitPodGone(t, o.Meta().GetName(), 60*time.Second)
	}
	eventually(t, 30*time.Second, "all containers removed", func() error {
		cs, _ := e.rt.List()
		sbs, _ := e.rt.ListSandboxes()
		if len(cs)+len(sbs) > 0 {
			return fmt.Errorf("%d containers, %d sandboxes", len(cs), len(sbs))
		}
		return nil
	})
	e.assertClean(t)
}

// TestTwoContainerPod reads logs of and execs into each container of a
// two-container pod by name (skiff logs/exec -c), and checks that leaving
// the container out is an error that lists the choices.
func TestTwoContainerPod(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	tc := startCluster(t, clusterOptions{})
	tc.startAgent(t, "w1", e.options())
	a, b := app("a", "out", "from a", "sleep", "1h"), app("b", "out", "from b", "sleep", "1h")
	a.Env = []*pb.EnvVar{{Name: "WHO", Value: "a"}}
	b.Env = []*pb.EnvVar{{Name: "WHO", Value: "b"}}
	tc.create(t, testPod("duo", "w1", a, b))
	tc.waitPod(t, "duo", 60*time.Second, "running", phaseIs("Running"))

	for _, c := range []string{"a", "b"} {
		eventually(t, 30*time.Second, "logs -c "+c, func() error {
			out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "duo", Container: c})
			if err != nil || out != "from "+c+"\n" {
				return fmt.Errorf("logs -c %s = %q, %v", c, out, err)
			}
			return nil
		})
	}
	var out, errOut bytes.Buffer
	code, err := tc.api.Exec(ctxFor(t, 30*time.Second), &pb.ExecStart{Namespace: "default", Pod: "duo", Container: "b",
		Command: []string{testimage.AppPath, "env", "exit", "6"}}, client.ExecIO{Stdout: &out, Stderr: &errOut})
	if err != nil || code != 6 || !strings.Contains(out.String(), "\nWHO=b\n") {
		t.Errorf("exec -c b = %d %q %q %v, want WHO=b", code, out.String(), errOut.String(), err)
	}

	const choose = "a container name must be specified for pod duo, choose one of: [a b]"
	if _, err := tc.logsOf(t, &pb.LogsRequest{Pod: "duo"}); err == nil || !strings.Contains(err.Error(), choose) {
		t.Errorf("logs without -c: %v, want %q", err, choose)
	}
	if _, _, _, err := tc.execIn(t, "duo", nil, testimage.AppPath, "out", "x"); err == nil || !strings.Contains(err.Error(), choose) {
		t.Errorf("exec without -c: %v, want %q", err, choose)
	}
	if _, err := tc.logsOf(t, &pb.LogsRequest{Pod: "duo", Container: "c"}); err == nil || !strings.Contains(err.Error(), "container c is not valid for pod duo") {
		t.Errorf("logs -c c: %v", err)
	}

	tc.deletePod(t, "duo", gproto.Int64(1))
	tc.waitPodGone(t, "duo", 30*time.Second)
	e.assertClean(t)
}

// TestVolumes mounts emptyDir, hostPath, configMap and secret volumes.
func TestVolumes(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	tc := startCluster(t, clusterOptions{})
	tc.startAgent(t, "w1", e.options())
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "from-host"), []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	tc.create(t, pb.Wrap(&pb.ConfigMap{ApiVersion: "v1", Kind: "ConfigMap", Metadata: &pb.ObjectMeta{Name: "cfg", Namespace: "default"},
		Data: map[string]string{"color": "blue", "size": "L"}}))
	tc.create(t, pb.Wrap(&pb.Secret{ApiVersion: "v1", Kind: "Secret", Metadata: &pb.ObjectMeta{Name: "sec", Namespace: "default"},
		Data: map[string][]byte{"password": []byte("s3cret")}}))
	c := app("main", "cat", "/cfg/color", "cat", "/sec/nested/pw", "write", "/scratch/x", "written", "cat", "/scratch/x",
		"cat", "/host/from-host", "write", "/host/from-pod", "pod data", "write", "/mem/y", "in memory", "cat", "/mem/y")
	c.VolumeMounts = []*pb.VolumeMount{
		{Name: "cfg", MountPath: "/cfg"}, {Name: "sec", MountPath: "/sec"}, {Name: "scratch", MountPath: "/scratch"},
		{Name: "host", MountPath: "/host"}, {Name: "mem", MountPath: "/mem"},
	}
	obj := testPod("vols", "w1", c)
	obj.GetPod().Spec.RestartPolicy = "Never"
	obj.GetPod().Spec.Volumes = []*pb.Volume{
		{Name: "cfg", ConfigMap: &pb.ConfigMapVolumeSource{Name: "cfg"}},
		{Name: "sec", Secret: &pb.SecretVolumeSource{SecretName: "sec", Items: []*pb.KeyToPath{{Key: "password", Path: "nested/pw"}}}},
		{Name: "scratch", EmptyDir: &pb.EmptyDirVolumeSource{}},
		{Name: "host", HostPath: &pb.HostPathVolumeSource{Path: hostDir, Type: "Directory"}},
		{Name: "mem", EmptyDir: &pb.EmptyDirVolumeSource{Medium: "Memory", SizeLimit: "1Mi"}},
	}
	tc.create(t, obj)
	p := tc.waitPod(t, "vols", 60*time.Second, "finished", func(p *pb.Pod) error {
		if ph := p.GetStatus().GetPhase(); ph != "Succeeded" && ph != "Failed" {
			return fmt.Errorf("phase %s", ph)
		}
		return nil
	})
	out, _ := tc.logsOf(t, &pb.LogsRequest{Pod: "vols"})
	if p.GetStatus().GetPhase() != "Succeeded" || out != "blues3cretwrittenhost datain memory\n" {
		t.Errorf("phase %s, output %q", p.GetStatus().GetPhase(), out)
	}
	if b, err := os.ReadFile(filepath.Join(hostDir, "from-pod")); err != nil || string(b) != "pod data" {
		t.Errorf("hostPath write: %q %v", b, err)
	}
	// The memory emptyDir and the secret are tmpfs mounts, the secret's so
	// that its keys never reach the node's disk; the rest is on the disk.
	vols := filepath.Join(e.dataDir, "pods", p.GetMetadata().GetUid(), "volumes")
	for name, want := range map[string]bool{"mem": true, "sec": true, "cfg": false, "scratch": false} {
		if got := onTmpfs(t, filepath.Join(vols, name)); got != want || mounted(filepath.Join(vols, name)) != want {
			t.Errorf("volume %s on a tmpfs of its own: %v, want %v (mounts %v)", name, got, want, mountsBelow(vols))
		}
	}
	tc.deletePod(t, "vols", nil)
	tc.waitPodGone(t, "vols", 30*time.Second)
	eventually(t, 30*time.Second, "pod removed", func() error {
		if sbs, _ := e.rt.ListSandboxes(); len(sbs) > 0 {
			return fmt.Errorf("%d sandboxes", len(sbs))
		}
		return nil
	})
	e.assertClean(t)
}

// TestWorkerRestartReadoption stops a worker (its containers keep running),
// deletes one of its pods and lets two containers exit meanwhile, and starts
// a new worker over the same directories: the running container is adopted
// (same container, not restarted, exec works), the deleted pod's container
// is stopped and removed, a restartPolicy Never container that exited is
// reported Failed with its exit code and not started again, an Always one
// is restarted once with its exit as lastState and its log as --previous,
// and nothing leaks.
func TestWorkerRestartReadoption(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	tc := startCluster(t, clusterOptions{})
	a := tc.startAgent(t, "w1", e.options())
	tc.create(t, testPod("keep", "w1", app("keep", "out", "started", "sleep", "1h")))
	tc.create(t, testPod("drop", "w1", app("drop", "sleep", "1h")))
	// These two exit (SIGTERM makes them exit with 3 and 5) while no
	// worker runs.
	never := testPod("never", "w1", app("never", "trap-term", "3", "out", "started", "sleep", "1h"))
	never.GetPod().Spec.RestartPolicy = "Never"
	tc.create(t, never)
	tc.create(t, testPod("always", "w1", app("always", "trap-term", "5", "out", "started", "sleep", "1h")))
	p := tc.waitPod(t, "keep", 60*time.Second, "running", phaseIs("Running"))
	dropUID := tc.waitPod(t, "drop", 60*time.Second, "running", phaseIs("Running")).GetMetadata().GetUid()
	keepID := strings.TrimPrefix(containerStatusOf(p, "keep").GetContainerId(), containerIDPrefix)
	before, err := e.rt.Status(keepID)
	if err != nil {
		t.Fatal(err)
	}
	exitIDs := map[string]string{}
	for _, name := range []string{"never", "always"} {
		p := tc.waitPod(t, name, 60*time.Second, "running", phaseIs("Running"))
		exitIDs[name] = strings.TrimPrefix(containerStatusOf(p, name).GetContainerId(), containerIDPrefix)
		// "started" comes after the SIGTERM handler is in place.
		eventually(t, 30*time.Second, name+" started", func() error {
			if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: name}); err != nil || out != "started\n" {
				return fmt.Errorf("logs %q %v", out, err)
			}
			return nil
		})
	}
	a.stop(t)
	if st, err := e.rt.Status(keepID); err != nil || st.State != wrt.StateRunning || st.Pid != before.Pid {
		t.Fatalf("container after the worker stopped: %+v %v", st, err)
	}

	for name, code := range map[string]int{"never": 3, "always": 5} {
		st, err := e.rt.Status(exitIDs[name])
		if err != nil || st.State != wrt.StateRunning {
			t.Fatalf("%s after the worker stopped: %+v %v", name, st, err)
		}
		if err := unix.Kill(st.Pid, unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, name+" exited while the worker is down", func() error {
			st, err := e.rt.Status(exitIDs[name])
			if err != nil || st.State != wrt.StateExited || st.ExitCode != code {
				return fmt.Errorf("%+v %v", st, err)
			}
			return nil
		})
	}
	tc.deletePod(t, "drop", gproto.Int64(0))
	tc.waitPodGone(t, "drop", 10*time.Second)

	tc.startAgent(t, "w1", e.options())
	eventually(t, 30*time.Second, "the deleted pod's container removed", func() error {
		cs, _ := e.rt.List()
		for _, c := range cs {
			if c.PodUID == dropUID {
				return fmt.Errorf("container %s of the deleted pod is still there", c.ID)
			}
		}
		sbs, _ := e.rt.ListSandboxes()
		for _, sb := range sbs {
			if sb.PodUID == dropUID {
				return fmt.Errorf("the deleted pod's sandbox is still there")
			}
		}
		return nil
	})
	st, err := e.rt.Status(keepID)
	if err != nil || st.State != wrt.StateRunning || st.Pid != before.Pid {
		t.Errorf("adopted container: %+v %v (was pid %d)", st, err, before.Pid)
	}
	// The status the new worker writes keeps the same container.
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)
	p = must(tc.pod(t, "keep"))
	if cs := containerStatusOf(p, "keep"); cs.GetRestartCount() != 0 || cs.GetContainerId() != containerIDPrefix+keepID || cs.GetState().GetRunning() == nil {
		t.Errorf("status after readoption: %v", cs)
	}
	if code, out, _, err := tc.execIn(t, "keep", nil, testimage.AppPath, "out", "adopted"); err != nil || code != 0 || out != "adopted\n" {
		t.Errorf("exec after readoption = %d %q %v", code, out, err)
	}
	if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "keep"}); err != nil || out != "started\n" {
		t.Errorf("logs after readoption = %q %v", out, err)
	}

	// Always: restarted once; the exit while the worker was down is the
	// last state, and its log is --previous.
	p = tc.waitPod(t, "always", 60*time.Second, "restarted once", func(p *pb.Pod) error {
		cs := containerStatusOf(p, "always")
		if cs.GetRestartCount() != 1 || cs.GetState().GetRunning() == nil {
			return fmt.Errorf("restartCount %d, state %v", cs.GetRestartCount(), cs.GetState())
		}
		return nil
	})
	cs := containerStatusOf(p, "always")
	if lt := cs.GetLastState().GetTerminated(); lt.GetExitCode() != 5 || lt.GetReason() != "Error" || lt.GetContainerId() != containerIDPrefix+exitIDs["always"] {
		t.Errorf("always: lastState %v, want terminated with exit code 5 of container %s", cs.GetLastState(), exitIDs["always"])
	}
	if cs.GetContainerId() == containerIDPrefix+exitIDs["always"] {
		t.Errorf("always: still reports the exited container %s", exitIDs["always"])
	}
	if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "always", Previous: true}); err != nil || out != "started\ngot SIGTERM\n" {
		t.Errorf("always: logs --previous = %q, %v", out, err)
	}
	eventually(t, 30*time.Second, "the restarted container's log", func() error {
		if out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "always"}); err != nil || out != "started\n" {
			return fmt.Errorf("logs %q %v", out, err)
		}
		return nil
	})

	// Never: Failed with the exit code; by now the new worker has acted on
	// both exits, and it did not start this one again.
	p = tc.waitPod(t, "never", 60*time.Second, "Failed", phaseIs("Failed"))
	cs = containerStatusOf(p, "never")
	if term := cs.GetState().GetTerminated(); term.GetExitCode() != 3 || term.GetReason() != "Error" || cs.GetContainerId() != containerIDPrefix+exitIDs["never"] || cs.GetRestartCount() != 0 {
		t.Errorf("never: status %v, want terminated with exit code 3 in container %s, no restart", cs, exitIDs["never"])
	}
	neverUID := p.GetMetadata().GetUid()
	all, _ := e.rt.List()
	for _, c := range all {
		if c.PodUID == neverUID && c.ID != exitIDs["never"] {
			t.Errorf("never: a new container %s was started (%v)", c.ID, c.State)
		}
	}

	for _, name := range []string{"keep", "never", "always"} {
		tc.deletePod(t, name, gproto.Int64(1))
	}
	for _, name := range []string{"keep", "never", "always"} {
		tc.waitPodGone(t, name, 30*time.Second)
	}
	eventually(t, 30*time.Second, "all removed", func() error {
		cs, _ := e.rt.List()
		sbs, _ := e.rt.ListSandboxes()
		if len(cs)+len(sbs) > 0 {
			return fmt.Errorf("%d containers, %d sandboxes", len(cs), len(sbs))
		}
		return nil
	})
	e.assertClean(t)
}
