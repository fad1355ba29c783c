//go:build linux

package e2e

// The network lab: a multi-host cluster on one machine. Every "host" is a
// network namespace the test creates, so the pod network, host-gw routes and
// nftables rules of each worker are real and separate, and nothing touches
// the machine's own interfaces, routes or tables:
//
//	lab namespace  (skl-ID)   bridge br0 10.250.X.1/24; the masters and the
//	                          image registry listen there
//	worker i       (skwI-ID)  eth0 10.250.X.(10+i)/24, a veth whose other
//	                          end (vwI-ID) is a port of br0 in the lab
//	                          namespace; default route via 10.250.X.1
//
// Processes join a namespace by being started from an OS thread that
// entered it (setns) and stays locked: a child inherits the network
// namespace of the thread that forks it. Unlike `ip netns exec`, this keeps
// the process in the host's mount namespace, which a worker needs: `ip netns
// exec` remounts /sys, and with it the cgroup hierarchies under
// /sys/fs/cgroup disappear. The test process itself stays in the host
// namespace and reaches the lab through sockets created inside it (dial,
// listen).

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/pki"
)

// ipBin is iproute2's ip, used to build the lab's namespaces and links.
const ipBin = "/usr/sbin/ip"

// netLabOptions shape a lab; zero fields take the defaults of startNetLab.
type netLabOptions struct {
	// Masters is the number of `skiff server` processes (default 1: the lab
	// tests the network, not Raft, and CI has two cores).
	Masters int
	// Workers is the number of worker hosts (default 2).
	Workers int
	// MasterArgs and WorkerArgs are appended to every master's and worker's
	// command line.
	MasterArgs []string
	WorkerArgs []string
}

// netLab is one multi-host cluster in network namespaces; see the comment
// at the top of the file. Everything is torn down in t.Cleanup.
type netLab struct {
	t    *testing.T
	id   string // random suffix of every namespace and link name
	base string // the test's directory: data dirs and logs
	// subnet is X in 10.250.X.0/24.
	subnet int
	labNS  string
	gw     string // the lab bridge's address, 10.250.X.1
	// imageRef is the demo app (examples/hello) in the lab's registry.
	imageRef string

	// token is the lab cluster's token file: every master, worker and CLI
	// call uses it.
	token string

	masters []*labMaster
	workers []*labWorker
	// nsInodes identify the lab's namespaces, to find processes left in
	// them after the test.
	nsInodes map[uint64]string
}

// labMaster is one `skiff server` in the lab namespace.
type labMaster struct {
	name, apiAddr, gossipAddr, logPath string
	args                               []string
	proc                               *nsProc
}

// labWorker is one `skiff worker` host: a namespace and the process in it.
type labWorker struct {
	lab                                 *netLab
	name, ns, ip, dataDir, cgroupParent string
	logPath                             string
	args                                []string

	mu   sync.Mutex
	proc *nsProc
}

// startNetLab builds the namespaces, starts the registry, the masters and
// the workers, and waits until every worker's node is Ready.
func startNetLab(t *testing.T, opts netLabOptions) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the network lab creates network namespaces and runs containers: run the e2e tests as root")
	}
	if opts.Masters == 0 {
		opts.Masters = 1
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	img := netlabImage(t)
	// First, so that it is removed after every other cleanup has run.
	base := t.TempDir()
	l := &netLab{
		t:        t,
		id:       fmt.Sprintf("%06x", mrand.IntN(1<<24)),
		base:     base,
		subnet:   1 + mrand.IntN(250),
		nsInodes: map[uint64]string{},
	}
	l.labNS = "skl-" + l.id
	l.gw = l.addr(1)
	l.token = filepath.Join(base, "token")
	if _, _, err := pki.LoadOrCreateTokenFile(l.token); err != nil {
		t.Fatal(err)
	}
	hostTables := nftTables(t, "")
	t.Cleanup(func() { l.checkNothingLeft(hostTables) })

	l.buildNamespaces(opts.Workers)

	registryAddr := l.serveRegistry(img)
	l.imageRef = registryAddr + "/hello:v1"

	for i := 1; i <= opts.Masters; i++ {
		l.masters = append(l.masters, &labMaster{
			name:       fmt.Sprintf("m%d", i),
			apiAddr:    fmt.Sprintf("%s:%d", l.gw, 7100+i),
			gossipAddr: fmt.Sprintf("%s:%d", l.gw, 7200+i),
			logPath:    filepath.Join(base, fmt.Sprintf("m%d.log", i)),
		})
	}
	var joins []string
	for _, m := range l.masters {
		joins = append(joins, m.gossipAddr)
	}
	t.Cleanup(func() {
		for _, m := range l.masters {
			m.proc.kill()
		}
		if t.Failed() {
			for _, m := range l.masters {
				t.Logf("---- last log lines of master %s ----\n%s", m.name, tailFile(m.logPath, 40))
			}
		}
	})
	for i, m := range l.masters {
		m.args = append([]string{"server", "--name", m.name,
			"--data-dir", filepath.Join(base, m.name),
			"--raft-addr", fmt.Sprintf("%s:%d", l.gw, 7001+i),
			"--api-addr", m.apiAddr, "--gossip-addr", m.gossipAddr,
			"--http-addr", fmt.Sprintf("%s:%d", l.gw, 7301+i),
			"--bootstrap-expect", strconv.Itoa(opts.Masters),
			"--join", strings.Join(joins, ","), "--log-level", "debug", "--token-file", l.token}, opts.MasterArgs...)
		p, err := startInNetNS(l.labNS, m.logPath, skiffBin, m.args...)
		if err != nil {
			t.Fatalf("start master %s: %v", m.name, err)
		}
		m.proc = p
	}

	for i := 1; i <= opts.Workers; i++ {
		w := &labWorker{
			lab:          l,
			name:         fmt.Sprintf("w%d", i),
			ns:           l.workerNS(i),
			ip:           l.addr(10 + i),
			dataDir:      filepath.Join(base, fmt.Sprintf("w%d", i)),
			cgroupParent: fmt.Sprintf("/skiff-netlab-%s-w%d", l.id, i),
			logPath:      filepath.Join(base, fmt.Sprintf("w%d.log", i)),
		}
		// Without --stop-pods-on-exit: a worker restarted by a test
		// re-adopts its pods, as in production. Cleanup removes them.
		w.args = append([]string{"worker", "--name", w.name, "--data-dir", w.dataDir,
			"--join", strings.Join(joins, ","), "--node-ip", w.ip,
			"--listen-addr", w.ip + ":10250", "--insecure-registry", registryAddr,
			"--heartbeat-interval", "1s", "--cgroup-parent", w.cgroupParent,
			"--log-level", "debug", "--token-file", l.token}, opts.WorkerArgs...)
		l.workers = append(l.workers, w)
		t.Cleanup(func() {
			w.stop(t, 30*time.Second)
			cleanupRuntime(t, w.dataDir, w.cgroupParent)
			if t.Failed() {
				t.Logf("---- last log lines of worker %s ----\n%s", w.name, tailFile(w.logPath, 60))
			}
		})
		w.start()
	}
	t.Logf("netlab %s: lab namespace %s, bridge %s/24, registry %s, masters %v, workers %s",
		l.id, l.labNS, l.gw, registryAddr, l.apiAddrs(), l.workerSummary())
	l.waitNodesReady(90 * time.Second)
	return l
}

// addr returns 10.250.X.host.
func (l *netLab) addr(host int) string { return fmt.Sprintf("10.250.%d.%d", l.subnet, host) }

func (l *netLab) workerNS(i int) string { return fmt.Sprintf("skw%d-%s", i, l.id) }

func (l *netLab) workerSummary() string {
	var s []string
	for _, w := range l.workers {
		s = append(s, fmt.Sprintf("%s=%s(%s)", w.name, w.ip, w.ns))
	}
	return strings.Join(s, " ")
}

func (l *netLab) apiAddrs() []string {
	var out []string
	for _, m := range l.masters {
		out = append(out, m.apiAddr)
	}
	return out
}

// worker returns the worker named name.
func (l *netLab) worker(name string) *labWorker {
	l.t.Helper()
	for _, w := range l.workers {
		if w.name == name {
			return w
		}
	}
	l.t.Fatalf("no worker %s in the lab", name)
	return nil
}

// buildNamespaces creates the lab namespace with its bridge and one
// namespace per worker joined to the bridge by a veth pair. Every link is
// created inside the lab's namespaces, never in the host's.
func (l *netLab) buildNamespaces(workers int) {
	t := l.t
	t.Helper()
	names := []string{l.labNS}
	for i := 1; i <= workers; i++ {
		names = append(names, l.workerNS(i))
	}
	// Deleting a namespace deletes its links, and a veth goes with either
	// end.
	t.Cleanup(func() {
		for _, ns := range names {
			if out, err := exec.Command(ipBin, "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete network namespace %s: %v: %s", ns, err, out)
			}
		}
	})
	t.Cleanup(l.checkNoProcessLeft)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range names {
		run("netns", "add", ns)
		var st syscall.Stat_t
		if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
			t.Fatalf("stat network namespace %s: %v", ns, err)
		}
		l.nsInodes[st.Ino] = ns
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", l.labNS, "link", "add", "br0", "type", "bridge")
	run("-n", l.labNS, "addr", "add", l.gw+"/24", "dev", "br0")
	run("-n", l.labNS, "link", "set", "br0", "up")
	for i := 1; i <= workers; i++ {
		ns, port := l.workerNS(i), fmt.Sprintf("vw%d-%s", i, l.id)
		run("-n", l.labNS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run("-n", l.labNS, "link", "set", port, "master", "br0", "up")
		run("-n", ns, "addr", "add", l.addr(10+i)+"/24", "dev", "eth0")
		run("-n", ns, "link", "set", "eth0", "up")
		run("-n", ns, "route", "add", "default", "via", l.gw)
	}
}

// serveRegistry serves an image registry on the lab bridge (workers pull
// from there) and pushes img to it; it returns the registry's HOST:PORT.
func (l *netLab) serveRegistry(img v1.Image) string {
	t := l.t
	t.Helper()
	addr := l.gw + ":5000"
	var ln net.Listener
	err := inNetNS(l.labNS, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("registry: listen on %s in %s: %v", addr, l.labNS, err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ref, err := name.ParseReference(addr+"/hello:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: l.dial}
	defer tr.CloseIdleConnections()
	if err := remote.Write(ref, img, remote.WithTransport(tr)); err != nil {
		t.Fatalf("push the demo image to the lab registry: %v", err)
	}
	return addr
}

// dial connects to addr from inside the lab namespace. It is what a Go
// client of the masters needs (the masters listen on lab addresses only).
func (l *netLab) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetNS(l.labNS, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// httpGet fetches url from the lab namespace (as a machine on the lab
// network that is no node), on a fresh connection every time.
func (l *netLab) httpGet(url string) (string, error) {
	tr := &http.Transport{DialContext: l.dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), nil
}

// cli runs the skiff CLI in the lab namespace, as an operator on the lab
// network would, and returns its combined output.
func (l *netLab) cli(stdin string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(skiffBin, append([]string{"--server", strings.Join(l.apiAddrs(), ","), "--token-file", l.token}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(l.base, "no-cli-config.yaml"))
	err := runInNetNS(l.labNS, cmd)
	return out.String(), err
}

// mustCLI is cli that fails the test on an error.
func (l *netLab) mustCLI(stdin string, args ...string) string {
	l.t.Helper()
	out, err := l.cli(stdin, args...)
	if err != nil {
		l.t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// inWorker runs a command (nft, ip, ...) in worker w's namespace.
func (l *netLab) inWorker(w *labWorker, name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runInNetNS(w.ns, cmd)
	return out.String(), err
}

// waitNodesReady polls `skiff get nodes -o wide` until every worker is
// Ready with its lab address as INTERNAL-IP.
func (l *netLab) waitNodesReady(within time.Duration) {
	l.t.Helper()
	start := time.Now()
	eventually(l.t, within, func() error {
		out, err := l.cli("", "get", "nodes", "-o", "wide")
		if err != nil {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		for _, w := range l.workers {
			if !regexpLine(out, w.name, "Ready", w.ip) {
				return fmt.Errorf("%s is not Ready at %s:\n%s", w.name, w.ip, out)
			}
		}
		return nil
	})
	l.t.Logf("netlab %s: %d nodes Ready after %v", l.id, len(l.workers), time.Since(start).Round(10*time.Millisecond))
}

// labPod is the part of a pod's JSON the network tests read.
type labPod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp string            `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		NodeName    string `json:"nodeName"`
		HostNetwork bool   `json:"hostNetwork"`
	} `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		PodIP             string `json:"podIP"`
		ContainerStatuses []struct {
			Ready       bool   `json:"ready"`
			ContainerID string `json:"containerID"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// ready reports a running pod whose containers are all ready.
func (p labPod) ready() bool {
	if p.Status.Phase != "Running" || len(p.Status.ContainerStatuses) == 0 || p.Metadata.DeletionTimestamp != "" {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if !cs.Ready {
			return false
		}
	}
	return true
}

// pods lists the default namespace's pods (matching selector, if not
// empty) by name.
func (l *netLab) pods(selector string) (map[string]labPod, error) {
	args := []string{"get", "pods", "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	out, err := l.cli("", args...)
	if err != nil {
		return nil, fmt.Errorf("get pods: %v\n%s", err, out)
	}
	var list struct {
		Items []labPod `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get pods -o json: %v\n%s", err, out)
	}
	m := map[string]labPod{}
	for _, p := range list.Items {
		m[p.Metadata.Name] = p
	}
	return m, nil
}

// waitPodsReady polls until the named pods are Running, ready and have an
// IP, and returns them.
func (l *netLab) waitPodsReady(within time.Duration, names ...string) map[string]labPod {
	l.t.Helper()
	var got map[string]labPod
	eventually(l.t, within, func() error {
		pods, err := l.pods("")
		if err != nil {
			return err
		}
		for _, n := range names {
			p, ok := pods[n]
			if !ok {
				return fmt.Errorf("no pod %s", n)
			}
			if !p.ready() || p.Status.PodIP == "" {
				return fmt.Errorf("pod %s: phase %q, podIP %q, containers %+v", n, p.Status.Phase, p.Status.PodIP, p.Status.ContainerStatuses)
			}
		}
		got = pods
		return nil
	})
	return got
}

// execGet runs `hello get URL` in pod and returns the body.
func (l *netLab) execGet(pod, url string) (string, error) {
	out, err := l.cli("", "exec", pod, "--", "/hello", "get", url)
	if err != nil {
		return out, fmt.Errorf("skiff exec %s -- /hello get %s: %v: %s", pod, url, err, strings.TrimSpace(out))
	}
	return out, nil
}

// podCIDRs returns each node's spec.podCIDR.
func (l *netLab) podCIDRs() (map[string]string, error) {
	out, err := l.cli("", "get", "nodes", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("get nodes: %v\n%s", err, out)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				PodCIDR string `json:"podCIDR"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get nodes -o json: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, n := range list.Items {
		m[n.Metadata.Name] = n.Spec.PodCIDR
	}
	return m, nil
}

func (w *labWorker) start() {
	t := w.lab.t
	t.Helper()
	p, err := startInNetNS(w.ns, w.logPath, skiffBin, w.args...)
	if err != nil {
		t.Fatalf("start worker %s: %v", w.name, err)
	}
	w.mu.Lock()
	w.proc = p
	w.mu.Unlock()
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after within).
func (w *labWorker) stop(t *testing.T, within time.Duration) {
	t.Helper()
	w.mu.Lock()
	p := w.proc
	w.proc = nil
	w.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.terminate(within); err != nil {
		t.Errorf("worker %s: %v", w.name, err)
	}
}

// nsProc is a process started in a network namespace.
type nsProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed
}

// startInNetNS starts bin with its output appended to logPath, in network
// namespace ns (a name under /run/netns), and in its own process group.
func startInNetNS(ns, logPath, bin string, args ...string) (*nsProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := spawnInNetNS(ns, cmd)
	if err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		<-p.done
		logf.Close()
	}()
	return p, nil
}

// runInNetNS runs cmd in network namespace ns and waits for it.
func runInNetNS(ns string, cmd *exec.Cmd) error {
	p, err := spawnInNetNS(ns, cmd)
	if err != nil {
		return err
	}
	<-p.done
	return p.err
}

// spawnInNetNS starts cmd from an OS thread that entered namespace ns. The
// thread stays locked, waiting for the child, until the child exits: the
// child's parent-death signal (SIGKILL, so nothing outlives a crashed test
// binary) fires when the thread that forked it ends, so that thread must
// outlive the child; and no other goroutine ever runs on it.
func spawnInNetNS(ns string, cmd *exec.Cmd) (*nsProc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &nsProc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread is in ns and ends with this goroutine.
		if err := enterNetNS(ns); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s in network namespace %s: %w", cmd.Path, ns, err)
	}
	return p, nil
}

// terminate sends SIGTERM and waits; a process still running after within
// is killed and reported.
func (p *nsProc) terminate(within time.Duration) error {
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("exited with code %d after SIGTERM", code)
		}
		return nil
	case <-time.After(within):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("did not stop within %s of SIGTERM; killed", within)
	}
}

// kill SIGKILLs the process and waits for it.
func (p *nsProc) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// inNetNS runs f on an OS thread that entered network namespace ns; the
// sockets f creates belong to ns and keep working from any thread.
func inNetNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread is in ns and ends with this goroutine.
		if err := enterNetNS(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// enterNetNS moves the calling (locked) thread into network namespace ns.
func enterNetNS(ns string) error {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	return nil
}

// checkNoProcessLeft fails the test if a process still runs in one of the
// lab's namespaces once the masters and workers are stopped and the
// workers' containers removed (a shim or container the worker lost track
// of), and kills it: they descend from the test's own workers.
func (l *netLab) checkNoProcessLeft() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "net:["), "]"), 10, 64)
		if err != nil {
			continue
		}
		if ns, ok := l.nsInodes[ino]; ok {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			l.t.Errorf("process %d (%s) still runs in network namespace %s after the test", pid,
				strings.ReplaceAll(strings.TrimSpace(string(cmdline)), "\x00", " "), ns)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// checkNothingLeft runs after the namespaces are deleted: no namespace, link
// or mount of the lab remains, and the host has no nftables table it did not
// have before.
func (l *netLab) checkNothingLeft(hostTablesBefore []string) {
	t := l.t
	if out, err := exec.Command(ipBin, "netns", "list").CombinedOutput(); err != nil {
		t.Errorf("ip netns list: %v: %s", err, out)
	} else if strings.Contains(string(out), l.id) {
		t.Errorf("network namespaces of the lab left behind:\n%s", out)
	}
	if out, err := exec.Command(ipBin, "-o", "link", "show").CombinedOutput(); err != nil {
		t.Errorf("ip link show: %v: %s", err, out)
	} else {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, l.id) {
				t.Errorf("link of the lab left in the host's namespace: %s", line)
			}
		}
	}
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, l.base) || strings.Contains(line, "/run/netns/skl-"+l.id) {
				t.Errorf("mount of the lab left behind: %s", line)
			}
		}
	}
	before := map[string]bool{}
	for _, tb := range hostTablesBefore {
		before[tb] = true
	}
	for _, tb := range nftTables(t, "") {
		// The chaos tests' own partition tables come and go in the host.
		if !before[tb] && !strings.Contains(tb, nftPrefix) {
			t.Errorf("nftables table %q appeared in the host's namespace during the test", tb)
		}
	}
}

// nftTables lists "family name" of every nftables table, sorted, in the host's
// namespace (ns "") or in the lab namespace ns.
func nftTables(t *testing.T, ns string) []string {
	t.Helper()
	cmd := exec.Command("nft", "list", "tables")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var err error
	if ns == "" {
		err = cmd.Run()
	} else {
		err = runInNetNS(ns, cmd)
	}
	if err != nil {
		t.Errorf("nft list tables: %v: %s", err, out.String())
		return nil
	}
	var tables []string
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	sort.Strings(tables)
	return tables
}

var (
	netlabImageOnce sync.Once
	netlabImageVal  v1.Image
	netlabImageErr  error
)

// netlabImage is examples/hello packed into an image, built once per test
// binary (each lab pushes it to its own registry).
func netlabImage(t *testing.T) v1.Image {
	t.Helper()
	netlabImageOnce.Do(func() { netlabImageVal, netlabImageErr = buildHelloImage() })
	if netlabImageErr != nil {
		t.Fatal(netlabImageErr)
	}
	return netlabImageVal
}

func buildHelloImage() (v1.Image, error) {
	dir, err := os.MkdirTemp("", "skiff-netlab-hello-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "hello")
	build := exec.Command("go", "build", "-o", bin, "../examples/hello")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build examples/hello: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, h := range []*tar.Header{
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: mtime},
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime},
		{Name: "hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{"/hello"}, WorkingDir: "/"}
	return mutate.ConfigFile(img, cf)
}
