package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	wrt "github.com/skiff-sh/skiff/worker/runtime"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// TestWorkerEndToEnd is the workers issue's end-to-end acceptance: three
// `skiff server` processes and one `skiff worker` process. A pod applied
// with the CLI runs a real container from an image served by a registry on
// 127.0.0.1; `skiff get pod -o wide` shows it Running, `skiff logs` and
// `skiff exec` reach it through the masters. The worker is SIGKILLed (the
// node turns NotReady after the grace period, the container keeps
// running), restarted (it re-adopts the container), and finally stopped
// gracefully (the node is marked NotReady at once).
func TestWorkerEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("runs real containers: run the e2e suite as root")
	}
	imageRef := demoImage(t)
	c := startClusterArgs(t, 3, "--node-monitor-grace-period", "3s")
	c.waitLeader(60 * time.Second)
	w := startWorker(t, c, imageRef)

	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "w1", "Ready") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		return nil
	})
	// The worker heartbeats by renewing its Lease, as a kubelet does; the
	// masters keep the lease namespace.
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "leases", "-n", "kube-node-lease")
		if err != nil || !regexpLine(out, "NAME", "HOLDER", "AGE") || !regexpLine(out, "w1", "w1") {
			return fmt.Errorf("get leases: %v\n%s", err, out)
		}
		return nil
	})
	if out, err := c.cli("", "describe", "node", "w1"); err != nil || !regexpLine(out, "HolderIdentity:", "w1") || !strings.Contains(out, "RenewTime:") {
		t.Errorf("describe node w1 shows no lease: %v\n%s", err, out)
	}
	if out, err := c.cli("", "delete", "namespace", "kube-node-lease"); err == nil || !strings.Contains(out, `namespace "kube-node-lease" cannot be deleted`) {
		t.Errorf("delete namespace kube-node-lease: %v\n%s", err, out)
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: s3cret-e2e
---
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  nodeName: w1
  terminationGracePeriodSeconds: 5
  containers:
  - name: hello
    image: %s
    env:
    - {name: GREETING, value: hello from e2e}
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 60
    volumeMounts:
    - {name: creds, mountPath: /etc/creds}
  volumes:
  - name: creds
    secret: {secretName: creds}
`, imageRef)
	created := time.Now()
	if out, err := c.cli(manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// Ready well within the probe's period of 60s: a readiness probe that
	// fails before the container was ever ready (the program not yet
	// listening) is retried within a second, not a period later.
	eventually(t, 45*time.Second, func() error {
		out, err := c.cli("", "get", "pod", "hello", "-o", "wide")
		if err != nil || !regexpLine(out, "hello", "1/1", "Running", "w1") {
			return fmt.Errorf("get pod: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("pod applied -> 1/1 Running (ready) in %v", time.Since(created).Round(time.Millisecond))
	// skiff-shim lies beside skiff, from the same build: the container's
	// shim runs it, not the whole skiff binary.
	assertShimBinary(t, w.dataDir, filepath.Join(filepath.Dir(skiffBin), shim.Binary))
	// The worker and its shims wake less often (--timer-slack); the
	// container's program keeps the kernel's timer slack.
	assertWorkerTimerSlack(t, w)
	// Its records live on the tmpfs the worker mounted for them
	// (--state-tmpfs, on by default).
	if ours, err := wrt.OnStateTmpfs(filepath.Join(w.dataDir, "state")); err != nil || !ours {
		t.Errorf("the worker's state dir is not on its %s tmpfs (%v)", wrt.StateTmpfsSource, err)
	}
	out, _ := c.cli("", "get", "pod", "hello", "-o", "wide")
	t.Logf("skiff get pod hello -o wide:\n%s", out)
	// For scripts: the row alone.
	if out, err := c.cli("", "get", "pods", "--no-headers"); err != nil || !strings.HasPrefix(out, "hello ") || strings.Count(out, "\n") != 1 {
		t.Errorf("get pods --no-headers: %v\n%s", err, out)
	}
	assertSecretVolumeInMemory(t, c, w, "hello", "creds", "/etc/creds/password", "s3cret-e2e")
	assertWorkerEvents(t, c, imageRef)

	out, err := c.cli("", "logs", "hello")
	if err != nil || !strings.Contains(out, "hello from e2e from hello") || !strings.Contains(out, "listening on :8080") {
		t.Errorf("logs: %v\n%s", err, out)
	}
	out, err = c.cli("", "exec", "hello", "--", "/hello", "get", "http://127.0.0.1:8080/")
	if err != nil || out != "hello from e2e from hello\n" {
		t.Errorf("exec: %v\n%q", err, out)
	}
	assertLogsSinceAndLimit(t, c)
	_, err = c.cli("", "exec", "hello", "--", "/hello", "no-such-command")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("exec of a failing command: %v, want exit code 2", err)
	}
	out, err = c.cli("GREETING\n", "exec", "-i", "hello", "--", "/hello", "env")
	if err != nil || !strings.Contains(out, "GREETING=hello from e2e") {
		t.Errorf("exec env: %v\n%s", err, out)
	}
	containerID := podField(t, c, "hello", "containerID")

	// exec -it from a terminal: the command runs on a terminal of the
	// user's size. The remote terminal's line discipline turns "\n" into
	// "\r\n", and the CLI's own terminal is raw (no second translation).
	out, err = execUnderPTY(t, c, 91, 37, "exec", "-it", "hello", "--", "/hello", "tty")
	if err != nil || !strings.Contains(out, "stdin-terminal=true stdout-terminal=true size=91x37\r\n") {
		t.Errorf("exec -it from a 91x37 terminal: %v\n%q", err, out)
	}
	// A resize of the user's terminal reaches the command (SIGWINCH and
	// the new size), as kubectl exec -it does.
	out, err = execUnderPTYResize(t, c, 91, 37, "size=91x37", 120, 40, "exec", "-it", "hello", "--", "/hello", "tty-resize")
	if err != nil || !strings.Contains(out, "resized=120x40\r\n") {
		t.Errorf("exec -it through a terminal resize to 120x40: %v\n%q", err, out)
	}
	// Without a terminal, -it falls back to plain pipes and says so.
	out, err = c.cli("", "exec", "-it", "hello", "--", "/hello", "tty")
	if err != nil || !strings.Contains(out, "Unable to use a TTY") || !strings.Contains(out, "stdin-terminal=false stdout-terminal=false\n") {
		t.Errorf("exec -it without a terminal: %v\n%q", err, out)
	}

	// The node reports the host's capacity.
	out, err = c.cli("", "get", "node", "w1", "-o", "yaml")
	if err != nil {
		t.Fatalf("get node w1 -o yaml: %v\n%s", err, out)
	}
	execCheckCapacity(t, out)

	// SIGKILL the worker: the node turns NotReady after the grace period,
	// the container keeps running.
	killed := time.Now()
	w.kill()
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "w1", "NotReady") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		// The condition says why: heartbeats stopped (Unknown), not a
		// graceful leave.
		out, err = c.cli("", "get", "node", "w1", "-o", "yaml")
		if err != nil || !strings.Contains(out, "status: Unknown") {
			return fmt.Errorf("get node -o yaml: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("killed worker's node marked Unknown after %v (grace 3s)", time.Since(killed).Round(10*time.Millisecond))

	// Restart it: it re-adopts the running container.
	w.start()
	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "w1", "Ready") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		return nil
	})
	if id := podField(t, c, "hello", "containerID"); id != containerID {
		t.Errorf("container after the worker restart: %s, was %s (restarted instead of adopted)", id, containerID)
	}
	if out, err := c.cli("", "exec", "hello", "--", "/hello", "get", "http://127.0.0.1:8080/healthz"); err != nil || out != "ok\n" {
		t.Errorf("exec after readoption: %v %q", err, out)
	}

	// Delete: the pod disappears once the worker confirms, and delete
	// waits for that, as kubectl's.
	if out, err := c.cli("", "delete", "pod", "hello"); err != nil || out != "pod/hello deletion started\n" {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, err := c.cli("", "get", "pod", "hello"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("pod hello still there after delete returned: %v\n%s", err, out)
	}

	// A graceful stop marks the node NotReady at once.
	w.stop(t, 30*time.Second)
	eventually(t, 20*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "w1", "NotReady") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		return nil
	})

	// The node's Lease belongs to its Node: deleting the Node collects it.
	if out, err := c.cli("", "delete", "node", "w1"); err != nil {
		t.Fatalf("delete node w1: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "leases", "-n", "kube-node-lease")
		if err != nil || strings.Contains(out, "w1") {
			return fmt.Errorf("get leases after deleting the node: %v\n%s", err, out)
		}
		return nil
	})
}

// assertSecretVolumeInMemory checks a pod's secret volume: the container
// reads the key through `skiff exec`, and on the node the volume is a tmpfs
// of its own, so the secret never reaches the worker's disk.
func assertSecretVolumeInMemory(t *testing.T, c *cluster, w *workerProc, pod, volume, file, want string) {
	t.Helper()
	if out, err := c.cli("", "exec", pod, "--", "/hello", "cat", file); err != nil || out != want {
		t.Errorf("exec cat %s: %v %q, want %q", file, err, out, want)
	}
	out, err := c.cli("", "get", "pod", pod, "-o", "json")
	if err != nil {
		t.Fatalf("get pod: %v\n%s", err, out)
	}
	var p struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Metadata.UID == "" {
		t.Fatalf("pod json: %v\n%s", err, out)
	}
	dir := filepath.Join(w.dataDir, "pods", p.Metadata.UID, "volumes", volume)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Type != 0x01021994 { // TMPFS_MAGIC
		t.Errorf("secret volume %s: filesystem type %#x, %v; want a tmpfs", dir, st.Type, err)
	}
}

// regexpLine reports whether some line of out has all fields, in order.
func regexpLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		i := 0
		for _, x := range f {
			if i < len(fields) && x == fields[i] {
				i++
			}
		}
		if i == len(fields) {
			return true
		}
	}
	return false
}

// podField returns a field of the pod's first container status.
func podField(t *testing.T, c *cluster, pod, field string) string {
	t.Helper()
	out, err := c.cli("", "get", "pod", pod, "-o", "json")
	if err != nil {
		t.Fatalf("get pod: %v\n%s", err, out)
	}
	var p struct {
		Status struct {
			ContainerStatuses []map[string]any `json:"containerStatuses"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod json: %v\n%s", err, out)
	}
	return fmt.Sprint(p.Status.ContainerStatuses[0][field])
}

// startClusterArgs is startCluster with extra flags for every master.
func startClusterArgs(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	base := t.TempDir()
	// --insecure among the extra flags runs the whole cluster plaintext
	// (hollow nodes need it); otherwise it gets a token.
	c.secure(base, slices.Contains(extra, "--insecure"))
	if c.token != "" {
		extra = append(extra, c.securityArgs()...)
	}
	for i := 1; i <= n; i++ {
		c.masters = append(c.masters, &master{
			name:     fmt.Sprintf("m%d", i),
			dataDir:  filepath.Join(base, fmt.Sprintf("m%d", i)),
			raftAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			apiAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			gossip:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			httpAd:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			logPath:  filepath.Join(base, fmt.Sprintf("m%d.log", i)),
		})
	}
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossip)
	}
	for _, m := range c.masters {
		m.args = append([]string{"server", "--name", m.name, "--data-dir", m.dataDir,
			"--raft-addr", m.raftAddr, "--api-addr", m.apiAddr, "--gossip-addr", m.gossip,
			"--http-addr", m.httpAd, "--bootstrap-expect", fmt.Sprint(n),
			"--join", strings.Join(joins, ","), "--log-level", "debug"}, extra...)
		c.start(m)
	}
	t.Cleanup(func() {
		for _, m := range c.masters {
			c.kill(m)
		}
		if t.Failed() {
			for _, m := range c.masters {
				t.Logf("---- last log lines of %s ----\n%s", m.name, tailFile(m.logPath, 40))
			}
		}
	})
	return c
}

func tailFile(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// workerProc is one `skiff worker` process.
type workerProc struct {
	t       *testing.T
	args    []string
	logPath string
	dataDir string
	cmd     *exec.Cmd
	done    chan struct{}
}

func startWorker(t *testing.T, c *cluster, imageRef string) *workerProc {
	t.Helper()
	return startNamedWorker(t, c, "w1", imageRef)
}

// startNamedWorker starts a real `skiff worker` named name, with extra
// flags. Its containers live under a cgroup parent and data dir of its
// own, removed when the test ends, so several can run side by side.
func startNamedWorker(t *testing.T, c *cluster, name, imageRef string, extra ...string) *workerProc {
	t.Helper()
	dir := t.TempDir()
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossip)
	}
	host := strings.Split(imageRef, "/")[0]
	cgParent := fmt.Sprintf("/skiff-e2e-%d-%s", os.Getpid(), name)
	w := &workerProc{t: t, logPath: filepath.Join(dir, name+".log"), dataDir: filepath.Join(dir, name), args: []string{
		"worker", "--name", name, "--data-dir", filepath.Join(dir, name), "--join", strings.Join(joins, ","),
		"--listen-addr", "127.0.0.1:0", "--insecure-registry", host, "--heartbeat-interval", "1s",
		"--cgroup-parent", cgParent, "--log-level", "debug",
		// This worker runs in the machine's own network namespace: no pod
		// bridge or tables there (the netlab tests run the pod network
		// inside namespaces of their own).
		"--pod-network", "none", "--proxy-mode", "none",
	}}
	w.args = append(append(w.args, c.securityArgs()...), extra...)
	t.Cleanup(func() {
		w.kill()
		cleanupRuntime(t, filepath.Join(dir, name), cgParent)
		if t.Failed() {
			t.Logf("---- last log lines of worker %s ----\n%s", name, tailFile(w.logPath, 60))
		}
	})
	w.start()
	return w
}

func (w *workerProc) start() {
	w.t.Helper()
	logf, err := os.OpenFile(w.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	cmd := exec.Command(skiffBin, w.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		w.t.Fatalf("start worker: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	w.cmd, w.done = cmd, done
}

// kill SIGKILLs the worker process only (its containers' shims run in
// their own sessions and survive, as they would in production).
func (w *workerProc) kill() {
	if w.cmd == nil {
		return
	}
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
	w.cmd = nil
}

func (w *workerProc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	if w.cmd == nil {
		return
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
		if code := w.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("worker exited with %d after SIGTERM", code)
		}
	case <-time.After(within):
		t.Errorf("worker did not stop within %s", within)
		_ = w.cmd.Process.Signal(syscall.SIGKILL)
		<-w.done
	}
	w.cmd = nil
}

// assertShimBinary checks that every running container shim of the worker
// with data dir dataDir runs binary want, and that there is one.
func assertShimBinary(t *testing.T, dataDir, want string) {
	t.Helper()
	states, _ := filepath.Glob(filepath.Join(dataDir, "state", "containers", "*", "shim.json"))
	if len(states) == 0 {
		t.Fatalf("no container shim state under %s", dataDir)
	}
	for _, p := range states {
		ss, err := shim.ReadJSON[shim.State](p)
		if err != nil {
			t.Fatal(err)
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", ss.ShimPid))
		if err != nil || exe != want {
			t.Errorf("shim %d of %s runs %q (%v), want %s", ss.ShimPid, filepath.Dir(p), exe, err, want)
		}
	}
}

// cleanupRuntime removes whatever containers and sandboxes the worker left
// in dataDir (a failed test, or a killed worker), and its cgroups.
func cleanupRuntime(t *testing.T, dataDir, cgParent string) {
	cfg := wrt.DefaultConfig()
	cfg.DataDir = filepath.Join(dataDir, "runtime")
	cfg.StateDir = filepath.Join(dataDir, "state")
	cfg.CgroupParent = cgParent
	cfg.ShimCommand = []string{skiffBin, shim.Subcommand}
	cfg.Logger = quietLogger()
	rt, err := wrt.New(cfg)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if cs, err := rt.List(); err == nil {
		for _, c := range cs {
			if err := rt.Remove(ctx, c.ID); err != nil {
				t.Errorf("cleanup: remove container %s: %v", c.ID, err)
			}
		}
	}
	if sbs, err := rt.ListSandboxes(); err == nil {
		for _, sb := range sbs {
			if err := rt.RemoveSandbox(ctx, sb.PodUID); err != nil {
				t.Errorf("cleanup: remove sandbox %s: %v", sb.PodUID, err)
			}
		}
	}
	// The worker's tmpfs for its runtime state (--state-tmpfs), which a
	// killed worker or one stopped without --cleanup-on-exit leaves.
	if err := wrt.UnmountStateTmpfs(cfg.StateDir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	// Pods' volumes (a secret's tmpfs) that a failed test left mounted,
	// deepest first.
	if data, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var points []string
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dataDir+"/") {
				points = append(points, f[1])
			}
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, p := range points {
			if err := syscall.Unmount(p, 0); err != nil {
				t.Errorf("cleanup: unmount %s: %v", p, err)
			}
		}
	}
	// The pod cgroups are gone with their sandboxes; remove the parent.
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range roots {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(r, cgParent), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

// assertLogsSinceAndLimit checks logs --since-time and --limit-bytes on
// the pod hello, which printed its greeting and "listening on :8080" at
// start and logs a line per request to / (the exec just made one). The
// time to start from is that request line's own, read with --timestamps.
func assertLogsSinceAndLimit(t *testing.T, c *cluster) {
	t.Helper()
	var first string // the first request's line, with its time
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "logs", "hello", "--timestamps")
		if err != nil {
			return fmt.Errorf("logs hello --timestamps: %v\n%s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "GET / from ") {
				first = line
				return nil
			}
		}
		return fmt.Errorf("logs hello --timestamps has no request line yet:\n%s", out)
	})
	since, _, _ := strings.Cut(first, " ")
	out, err := c.cli("", "logs", "hello", "--timestamps", "--since-time="+since)
	if err != nil || !strings.HasPrefix(out, first+"\n") || strings.Contains(out, "listening on :8080") || strings.Contains(out, "hello from e2e") {
		t.Errorf("logs hello --since-time=%s: %v, want it to start at %q, without the lines before:\n%s", since, err, first, out)
	}
	out, err = c.cli("", "logs", "hello", "--limit-bytes=5")
	if err != nil || out != "hello" {
		t.Errorf("logs hello --limit-bytes=5: %v, got %q, want the first 5 bytes %q", err, out, "hello")
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// demoImage builds examples/hello, packs it into an image and serves it
// from a registry on 127.0.0.1 for the test's lifetime.
func demoImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hello")
	build := exec.Command("go", "build", "-o", bin, "../examples/hello")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/hello: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, h := range []*tar.Header{
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: mtime},
		{Name: "hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{"/hello"}, WorkingDir: "/"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	ref := u.Host + "/hello:v1"
	tag, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

// execUnderPTY runs the CLI with a new pseudo-terminal of cols x rows as
// its controlling terminal and stdio, as a person at a terminal would, and
// returns what it wrote there.
func execUnderPTY(t *testing.T, c *cluster, cols, rows uint16, args ...string) (string, error) {
	t.Helper()
	return execUnderPTYResize(t, c, cols, rows, "", 0, 0, args...)
}

// execUnderPTYResize is execUnderPTY that, once the output shows marker,
// resizes the terminal to newCols x newRows (the kernel then sends the CLI
// SIGWINCH, as when a person resizes a terminal window).
func execUnderPTYResize(t *testing.T, c *cluster, cols, rows uint16, marker string, newCols, newRows uint16, args ...string) (string, error) {
	t.Helper()
	ptm, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer ptm.Close()
	if err := ptm.Resize(console.WinSize{Width: cols, Height: rows}); err != nil {
		t.Fatalf("size the pseudo-terminal: %v", err)
	}
	pts, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", slavePath, err)
	}
	cmd := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), args...)...)
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	pts.Close() // the CLI holds the only other end: reads end (EIO) when it exits
	if err != nil {
		t.Fatalf("start skiff %s: %v", strings.Join(args, " "), err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	resized := marker == ""
wait:
	for {
		select {
		case err = <-exited:
			break wait
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("skiff %s on a terminal did not finish within 30s", strings.Join(args, " "))
		case <-tick.C:
			mu.Lock()
			seen := strings.Contains(out.String(), marker)
			mu.Unlock()
			if !resized && seen {
				resized = true
				if err := ptm.Resize(console.WinSize{Width: newCols, Height: newRows}); err != nil {
					t.Fatalf("resize the pseudo-terminal: %v", err)
				}
			}
		}
	}
	<-copied
	mu.Lock()
	defer mu.Unlock()
	return out.String(), err
}

// execCheckCapacity checks a Node's YAML reports this host's CPUs and
// memory and the worker's default pod limit.
func execCheckCapacity(t *testing.T, nodeYAML string) {
	t.Helper()
	var node struct {
		Status struct {
			Capacity map[string]any `json:"capacity"`
		} `json:"status"`
	}
	if err := yaml.Unmarshal([]byte(nodeYAML), &node); err != nil {
		t.Fatalf("node yaml: %v\n%s", err, nodeYAML)
	}
	capacity := map[string]string{}
	for k, v := range node.Status.Capacity {
		capacity[k] = fmt.Sprint(v) // "2" and 2 alike
	}
	if got, want := capacity["cpu"], strconv.Itoa(runtime.NumCPU()); got != want {
		t.Errorf("capacity cpu = %q, want %s (the host's CPUs)\n%s", got, want, nodeYAML)
	}
	if got := capacity["pods"]; got != "110" {
		t.Errorf("capacity pods = %q, want 110 (the default --max-pods)\n%s", got, nodeYAML)
	}
	mem, err := resource.ParseQuantity(capacity["memory"])
	if want := execMemTotal(t); err != nil || mem.Value() != want {
		t.Errorf("capacity memory = %q (%v), want %d bytes (MemTotal)\n%s", capacity["memory"], err, want, nodeYAML)
	}
}

// execMemTotal is the host's memory in bytes, from /proc/meminfo.
func execMemTotal(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			kib, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib * 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// assertWorkerEvents checks the Events the worker records, as the kubelet
// does: `skiff describe pod` shows how hello's image and container came to
// run, and a pod whose readiness probe keeps failing shows one Unhealthy
// event whose count grows (the worker updates its event: a node may).
func assertWorkerEvents(t *testing.T, c *cluster, imageRef string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "describe", "pod", "hello")
		for _, want := range [][]string{
			{"Normal", "Pulling", "worker", "Pulling", "image", strconv.Quote(imageRef)},
			{"Normal", "Pulled", "worker", "Successfully", "pulled", "image", strconv.Quote(imageRef)},
			{"Normal", "Created", "worker", "Created", "container", "hello"},
			{"Normal", "Started", "worker", "Started", "container", "hello"},
		} {
			if err != nil || !regexpLine(out, want...) {
				return fmt.Errorf("describe pod hello: no event %q: %v\n%s", want, err, out)
			}
		}
		return nil
	})
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: unready
  labels: {app: unready}
spec:
  nodeName: w1
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    readinessProbe:
      tcpSocket: {port: 9}
      periodSeconds: 1
  - name: second
    image: %s
    env: [{name: PORT, value: "8081"}]
`, imageRef, imageRef)
	if out, err := c.cli(manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	folded := regexp.MustCompile(`Warning\s+Unhealthy\s+\S+ \(x(\d+) over \S+\)\s+worker\s+Readiness probe failed: tcp probe: .*connection refused`)
	eventually(t, 45*time.Second, func() error {
		out, err := c.cli("", "describe", "pod", "unready")
		n := 0
		if m := folded.FindStringSubmatch(out); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		if err != nil || n < 3 {
			return fmt.Errorf("describe pod unready: no Unhealthy event counted 3 times: %v\n%s", err, out)
		}
		return nil
	})
	out, err := c.cli("", "get", "events", "--no-headers")
	unhealthy := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "unready") && strings.Contains(line, "Unhealthy") {
			unhealthy++
		}
	}
	if err != nil || unhealthy != 1 {
		t.Errorf("the repeats of Unhealthy are not one event (%d): %v\n%s", unhealthy, err, out)
	}
	// The logs of every pod a selector matches, each line naming its pod
	// and container; without -c, a pod's first container, said on stderr.
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "logs", "-l", "app=unready", "--prefix", "--all-containers")
		if err != nil || !strings.Contains(out, "[pod/unready/app] listening on :8080") || !strings.Contains(out, "[pod/unready/second] listening on :8081") {
			return fmt.Errorf("logs -l app=unready --prefix --all-containers: %v\n%s", err, out)
		}
		return nil
	})
	if out, err := c.cli("", "logs", "unready"); err != nil || !strings.Contains(out, `Defaulted container "app" out of: app, second`) || !strings.Contains(out, "listening on :8080") || strings.Contains(out, ":8081") {
		t.Errorf("logs of a two-container pod without -c: %v\n%s", err, out)
	}
	// A workload's name stands for one of its pods.
	rs := fmt.Sprintf(`apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      nodeName: w1
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: %s
        env: [{name: GREETING, value: echo}]
`, imageRef)
	if out, err := c.cli(rs, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "logs", "replicaset/echo")
		if err != nil || !strings.Contains(out, "Found 2 pods, using pod/echo-") || !strings.Contains(out, "listening on :8080") {
			return fmt.Errorf("logs replicaset/echo: %v\n%s", err, out)
		}
		return nil
	})
	if out, err := c.cli("", "delete", "replicaset", "echo"); err != nil {
		t.Fatalf("delete replicaset echo: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, func() error {
		if out, err := c.cli("", "get", "pods", "-l", "app=echo", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("the echo pods are still there: %v\n%s", err, out)
		}
		return nil
	})
	if out, err := c.cli("", "delete", "pod", "unready"); err != nil {
		t.Fatalf("delete pod unready: %v\n%s", err, out)
	}
	eventually(t, 30*time.Second, func() error {
		if out, err := c.cli("", "get", "pod", "unready"); err == nil {
			return fmt.Errorf("pod unready still there:\n%s", out)
		}
		return nil
	})
}
