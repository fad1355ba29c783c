// Package e2e holds black-box tests: they build the real skiff binary and
// run masters (and later workers) as separate processes on loopback, then
// kill, restart and talk to them the way an operator would.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// skiffBin is the binary under test, built once in TestMain.
var skiffBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skiff-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// skiff-shim beside skiff: the workers run their containers' shims
	// with it, as an installation does.
	skiffBin = filepath.Join(dir, "skiff")
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "../cmd/skiff", "../cmd/skiff-shim")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build skiff:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if s := chaosSummary(); s != "" {
		fmt.Print(s)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a port that is free for both TCP and UDP on 127.0.0.1
// (gossip uses both). It picks from below the kernel's ephemeral range
// (32768-60999 by default): a port the kernel hands out for port 0 can be
// taken as the source port of any outgoing connection before the master
// binds it, and masters restart on the same ports. Ports are never handed
// out twice in one test binary.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + mrand.IntN(12000)
		if portsUsed[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			portsUsed[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// master is one `skiff server` process.
type master struct {
	name                              string
	dataDir                           string
	raftAddr, apiAddr, gossip, httpAd string
	args                              []string
	logPath                           string
	// gid, when not zero, is the primary group the process runs with (it
	// stays uid 0): nftables matches it (meta skgid) to tell this master's
	// packets from the others' on the shared loopback (see chaosNet).
	gid uint32
	// cgroup, when set, is a cgroup directory the process starts in (a
	// shell moves itself there, then execs the master); env is added to
	// the environment.
	cgroup string
	env    []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// cluster is a set of masters started by a test; everything is stopped
// when the test ends, whatever its outcome.
type cluster struct {
	t       *testing.T
	masters []*master
	// token is the cluster token file every process is started with; ""
	// when the cluster runs with --insecure.
	token string
}

// secure gives the cluster a token (made now, so that every master and
// worker reads the same one); insecure leaves it plaintext.
func (c *cluster) secure(base string, insecure bool) {
	if insecure {
		return
	}
	c.token = filepath.Join(base, "token")
	if _, _, err := pki.LoadOrCreateTokenFile(c.token); err != nil {
		c.t.Fatal(err)
	}
}

// securityArgs are the flags that give a skiff process (master, worker or
// CLI) the cluster's credentials.
func (c *cluster) securityArgs() []string {
	if c.token == "" {
		return []string{"--insecure"}
	}
	return []string{"--token-file", c.token}
}

// clusterOptions tune startClusterWith; the zero value is what
// startCluster uses.
type clusterOptions struct {
	// gids runs each master with a group id of its own, so that a test can
	// cut it off from the others with nftables (needs root).
	gids bool
	// logLevel of the masters; "debug" if empty.
	logLevel string
	// insecure runs everything in plaintext (--insecure); by default the
	// cluster has a token and every connection is mutual TLS.
	insecure bool
	// cgroup, when set, is the cgroup directory every master starts in.
	cgroup string
}

// startCluster starts n masters with --bootstrap-expect n.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startClusterWith(t, n, clusterOptions{})
}

// startClusterWith starts n masters with --bootstrap-expect n.
func startClusterWith(t *testing.T, n int, opts clusterOptions) *cluster {
	t.Helper()
	if opts.logLevel == "" {
		opts.logLevel = "debug"
	}
	c := &cluster{t: t}
	base := t.TempDir()
	c.secure(base, opts.insecure)
	for i := 1; i <= n; i++ {
		m := &master{
			name:     fmt.Sprintf("m%d", i),
			dataDir:  filepath.Join(base, fmt.Sprintf("m%d", i)),
			raftAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			apiAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			gossip:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			httpAd:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			logPath:  filepath.Join(base, fmt.Sprintf("m%d.log", i)),
		}
		if opts.gids {
			m.gid = newGID()
		}
		m.cgroup = opts.cgroup
		c.masters = append(c.masters, m)
	}
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossip)
	}
	for _, m := range c.masters {
		m.args = []string{"server", "--name", m.name, "--data-dir", m.dataDir,
			"--raft-addr", m.raftAddr, "--api-addr", m.apiAddr, "--gossip-addr", m.gossip,
			"--http-addr", m.httpAd, "--bootstrap-expect", fmt.Sprint(n),
			"--join", strings.Join(joins, ","), "--log-level", opts.logLevel}
		m.args = append(m.args, c.securityArgs()...)
		c.start(m)
	}
	t.Cleanup(func() {
		for _, m := range c.masters {
			c.kill(m)
		}
		if t.Failed() {
			for _, m := range c.masters {
				data, _ := os.ReadFile(m.logPath)
				lines := strings.Split(string(data), "\n")
				if len(lines) > 60 {
					lines = lines[len(lines)-60:]
				}
				t.Logf("---- last log lines of %s ----\n%s", m.name, strings.Join(lines, "\n"))
			}
		}
	})
	return c
}

func (c *cluster) start(m *master) {
	c.t.Helper()
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(skiffBin, m.args...)
	if m.cgroup != "" {
		cmd = exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, m.cgroup, skiffBin}, m.args...)...)
	}
	if m.env != nil {
		cmd.Env = append(os.Environ(), m.env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if m.gid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: m.gid}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start %s: %v", m.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
}

// kill SIGKILLs the master's process (if running) and waits for it.
func (c *cluster) kill(m *master) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop sends SIGTERM and waits for a graceful exit.
func (c *cluster) stop(m *master, within time.Duration) {
	c.t.Helper()
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			c.t.Errorf("%s exited with code %d after SIGTERM", m.name, code)
		}
	case <-time.After(within):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		c.t.Errorf("%s did not stop within %s of SIGTERM", m.name, within)
	}
}

func (c *cluster) apiAddrs() []string {
	var out []string
	for _, m := range c.masters {
		out = append(out, m.apiAddr)
	}
	return out
}

// client returns a client for the given masters (all if none given).
func (c *cluster) client(ms ...*master) *client.Client {
	c.t.Helper()
	addrs := c.apiAddrs()
	if len(ms) > 0 {
		addrs = nil
		for _, m := range ms {
			addrs = append(addrs, m.apiAddr)
		}
	}
	cfg := client.DefaultConfig()
	cfg.Servers = addrs
	if c.token != "" {
		var err error
		if cfg.TLS, err = client.AdminTLS(c.token); err != nil {
			c.t.Fatal(err)
		}
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// waitLeader polls until the masters agree on a leader and returns it.
func (c *cluster) waitLeader(within time.Duration, among ...*master) *master {
	c.t.Helper()
	if len(among) == 0 {
		among = c.masters
	}
	cl := c.client(among...)
	var leader *master
	eventually(c.t, within, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		for _, m := range among {
			if m.name == st.GetLeader() {
				leader = m
				return nil
			}
		}
		return fmt.Errorf("leader is %q", st.GetLeader())
	})
	return leader
}

// eventually polls f every 100ms until it returns nil, failing the test
// with f's last error if within passes first.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		<-tick.C
	}
}

// cli runs the skiff binary as an operator would and returns its output.
func (c *cluster) cli(stdin string, args ...string) (string, error) {
	cmd := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(c.t.TempDir(), "none.yaml"))
	err := cmd.Run()
	return out.String(), err
}

// mustCLI is cli that fails the test, with the output, when skiff fails.
func (c *cluster) mustCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := c.cli(stdin, args...)
	if err != nil {
		t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func configMap(name string, data map[string]string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"},
		Data:     data,
	})
}
