package worker

// Test harness: in-process masters (package server), agents over a fake or
// the real runtime, and helpers to poll the API.
//
// Package worker's production code never imports package server (see
// design.md); its tests do, to run the node agent against real masters.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/server"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

func TestMain(m *testing.M) {
	// The test binary doubles as libcontainer's init and as the shim.
	shim.Init()
	if len(os.Args) > 1 && os.Args[1] == shim.Subcommand {
		os.Exit(shim.Main(os.Args[2:]))
	}
	// Shims orphaned by a stopped agent are re-parented to us.
	setSubreaper()
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	code := m.Run()
	fix.close()
	os.Exit(code)
}

// syncBuffer collects a test's log; it is printed only when the test fails
// (or with SKIFF_TEST_LOG set).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if os.Getenv("SKIFF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// testCluster is a set of in-process masters.
type testCluster struct {
	t       *testing.T
	log     *slog.Logger
	cfgs    []server.Config
	servers []*server.Server
	cancels []context.CancelFunc
	dones   []chan error
	api     *client.Client
	// token is the cluster token file; "" when the cluster is insecure.
	token string
}

type clusterOptions struct {
	masters int
	grace   time.Duration // node monitor grace period
	// insecure runs the masters in plaintext (hollow nodes need it);
	// by default they share a token and everything is mutual TLS.
	insecure bool
}

func startCluster(t *testing.T, o clusterOptions) *testCluster {
	t.Helper()
	if o.masters == 0 {
		o.masters = 1
	}
	if o.grace == 0 {
		o.grace = 50 * time.Second
	}
	tc := &testCluster{t: t, log: testLogger(t)}
	if !o.insecure {
		tc.token = filepath.Join(t.TempDir(), "token")
	}
	var gossip []string
	for i := range o.masters {
		c := server.DefaultConfig()
		c.Name = fmt.Sprintf("m%d", i+1)
		c.DataDir = t.TempDir()
		c.RaftAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		c.APIAddr = "127.0.0.1:0"
		c.GossipAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		c.HTTPAddr = ""
		c.BootstrapExpect = o.masters
		c.Logger = tc.log
		c.Version = "test"
		c.JoinRetryInterval = 100 * time.Millisecond
		c.RaftMultiplier = 2
		c.NodeMonitorGracePeriod = o.grace
		c.NodeMonitorPeriod = 200 * time.Millisecond
		c.Controllers = nil
		c.TokenFile, c.Insecure = tc.token, tc.token == ""
		tc.cfgs = append(tc.cfgs, c)
		gossip = append(gossip, c.GossipAddr)
	}
	var apis []string
	for i := range tc.cfgs {
		tc.cfgs[i].Join = gossip
		srv, err := server.New(tc.cfgs[i])
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		tc.servers = append(tc.servers, srv)
		tc.cancels = append(tc.cancels, cancel)
		tc.dones = append(tc.dones, done)
		apis = append(apis, srv.APIAddr())
	}
	t.Cleanup(tc.stop)
	cfg := client.DefaultConfig()
	cfg.Servers = apis
	if tc.token != "" {
		cfg.TLS = adminTLS(t, tc.token)
	}
	var err error
	if tc.api, err = client.New(cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a leader", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := tc.api.Get(ctx, "Namespace", "", "default", client.ReadOptions{})
		return err
	})
	return tc
}

func (tc *testCluster) stopServer(i int) {
	if tc.cancels[i] == nil {
		return
	}
	tc.cancels[i]()
	tc.cancels[i] = nil
	select {
	case <-tc.dones[i]:
	case <-time.After(30 * time.Second):
		tc.t.Errorf("master %d did not stop; the masters' goroutines:\n%s", i, mastersGoroutines())
	}
}

// mastersGoroutines is the stacks of this process's goroutines that run
// master code (the server, raft, gossip, gRPC serving), for a master that
// does not stop.
func mastersGoroutines() string {
	var all bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&all, 2)
	var out strings.Builder
	for _, g := range strings.Split(all.String(), "\n\n") {
		if strings.Contains(g, "skiff/server.") || strings.Contains(g, "hashicorp/raft") ||
			strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "grpc.(*Server)") {
			out.WriteString(g)
			out.WriteString("\n\n")
		}
		if out.Len() > 512<<10 {
			out.WriteString("(truncated)\n")
			break
		}
	}
	return out.String()
}

func (tc *testCluster) stop() {
	for i := range tc.servers {
		tc.stopServer(i)
	}
	if tc.api != nil {
		tc.api.Close()
	}
}

func (tc *testCluster) gossip() []string {
	var out []string
	for _, c := range tc.cfgs {
		out = append(out, c.GossipAddr)
	}
	return out
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (tc *testCluster) pod(t *testing.T, name string) (*pb.Pod, error) {
	t.Helper()
	obj, err := tc.api.Get(ctxFor(t, 10*time.Second), "Pod", "default", name, client.ReadOptions{})
	if err != nil {
		return nil, err
	}
	return obj.GetPod(), nil
}

func (tc *testCluster) node(t *testing.T, name string) (*pb.Node, error) {
	t.Helper()
	obj, err := tc.api.Get(ctxFor(t, 10*time.Second), "Node", "", name, client.ReadOptions{})
	if err != nil {
		return nil, err
	}
	return obj.GetNode(), nil
}

// lease reads the node's Lease in kube-node-lease.
func (tc *testCluster) lease(t *testing.T, name string) (*pb.Lease, error) {
	t.Helper()
	obj, err := tc.api.Get(ctxFor(t, 10*time.Second), "Lease", pb.NamespaceNodeLease, name, client.ReadOptions{})
	if err != nil {
		return nil, err
	}
	return obj.GetLease(), nil
}

func (tc *testCluster) create(t *testing.T, obj *pb.Object) {
	t.Helper()
	if _, err := tc.api.Create(ctxFor(t, 10*time.Second), obj); err != nil {
		t.Fatalf("create %s: %v", obj.Meta().GetName(), err)
	}
}

func (tc *testCluster) deletePod(t *testing.T, name string, grace *int64) {
	t.Helper()
	if _, err := tc.api.Delete(ctxFor(t, 10*time.Second), &pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: name, GracePeriodSeconds: grace}); err != nil {
		t.Fatalf("delete pod %s: %v", name, err)
	}
}

// waitPod polls the pod until check returns nil.
func (tc *testCluster) waitPod(t *testing.T, name string, d time.Duration, what string, check func(*pb.Pod) error) *pb.Pod {
	t.Helper()
	var last *pb.Pod
	eventually(t, d, fmt.Sprintf("pod %s: %s", name, what), func() error {
		p, err := tc.pod(t, name)
		if err != nil {
			return err
		}
		last = p
		return check(p)
	})
	return last
}

func (tc *testCluster) waitPodGone(t *testing.T, name string, d time.Duration) {
	t.Helper()
	eventually(t, d, "pod "+name+" deleted", func() error {
		_, err := tc.pod(t, name)
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("still there")
	})
}

func phaseIs(phase string) func(*pb.Pod) error {
	return func(p *pb.Pod) error {
		if got := p.GetStatus().GetPhase(); got != phase {
			return fmt.Errorf("phase %q", got)
		}
		return nil
	}
}

func readyIs(want string) func(*pb.Pod) error {
	return func(p *pb.Pod) error {
		for _, c := range p.GetStatus().GetConditions() {
			if c.GetType() == "Ready" {
				if c.GetStatus() == want {
					return nil
				}
				return fmt.Errorf("Ready=%s (%s)", c.GetStatus(), c.GetMessage())
			}
		}
		return fmt.Errorf("no Ready condition")
	}
}

func containerStatusOf(p *pb.Pod, name string) *pb.ContainerStatus {
	for _, cs := range append(append([]*pb.ContainerStatus{}, p.GetStatus().GetInitContainerStatuses()...), p.GetStatus().GetContainerStatuses()...) {
		if cs.GetName() == name {
			return cs
		}
	}
	return nil
}

// testPod returns a pod bound to node with the given containers.
func testPod(name, node string, containers ...*pb.Container) *pb.Object {
	p := &pb.Pod{ApiVersion: "v1", Kind: "Pod", Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"},
		Spec: &pb.PodSpec{NodeName: node, Containers: containers}}
	return pb.Wrap(p)
}

// agentOptions adjust the agent's Config.
type agentOptions func(*Config)

type testAgent struct {
	*Agent
	cancel context.CancelFunc
	done   chan error
}

// startAgent starts an agent named name joined to tc.
func (tc *testCluster) startAgent(t *testing.T, name string, opts ...agentOptions) *testAgent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.DataDir = t.TempDir()
	cfg.Join = tc.gossip()
	cfg.NodeIP = "127.0.0.1"
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = 500 * time.Millisecond
	cfg.SyncInterval = 100 * time.Millisecond
	cfg.BackoffBase = 200 * time.Millisecond
	cfg.BackoffMax = 2 * time.Second
	cfg.JoinRetryInterval = 100 * time.Millisecond
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Logger = tc.log
	cfg.Version = "test"
	// The bridge network needs a namespace of the test's and the Node's
	// pod CIDR: tests that want it ask for it (withPodNetwork).
	cfg.PodNetwork = PodNetworkNone
	cfg.TokenFile, cfg.Insecure = tc.token, tc.token == ""
	for _, o := range opts {
		o(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("new agent %s: %v", name, err)
	}
	return runAgent(t, a)
}

func runAgent(t *testing.T, a *Agent) *testAgent {
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

// stop stops the agent gracefully and waits for Run to return.
func (ta *testAgent) stop(t *testing.T) {
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	ta.cancel = nil
	select {
	case err := <-ta.done:
		if err != nil {
			t.Errorf("agent %s: Run returned %v", ta.cfg.Name, err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("agent %s did not stop within 60s", ta.cfg.Name)
	}
}

// crash stops the agent the way a SIGKILL would look to the cluster: gossip
// goes silent without leaving, heartbeats stop, containers keep running.
func (ta *testAgent) crash(t *testing.T) {
	ta.gossip.shutdown()
	ta.stop(t)
}

func (tc *testCluster) waitNodeReady(t *testing.T, name, want string, d time.Duration) *pb.Node {
	t.Helper()
	var last *pb.Node
	eventually(t, d, fmt.Sprintf("node %s Ready=%s", name, want), func() error {
		n, err := tc.node(t, name)
		if err != nil {
			return err
		}
		last = n
		c := readyCondition(n)
		if c.GetStatus() != want {
			return fmt.Errorf("Ready=%s (%s: %s)", c.GetStatus(), c.GetReason(), c.GetMessage())
		}
		return nil
	})
	return last
}

func readyCondition(n *pb.Node) *pb.NodeCondition {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c
		}
	}
	return nil
}

// logsOf reads a container's log through the masters' Pods service.
func (tc *testCluster) logsOf(t *testing.T, req *pb.LogsRequest) (string, error) {
	t.Helper()
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	var b bytes.Buffer
	err := tc.api.Logs(ctxFor(t, 30*time.Second), req, &b)
	return b.String(), err
}

// execIn runs a command through the masters' Pods service.
func (tc *testCluster) execIn(t *testing.T, pod string, stdin io.Reader, cmd ...string) (int, string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	start := &pb.ExecStart{Namespace: "default", Pod: pod, Command: cmd, Stdin: stdin != nil}
	code, err := tc.api.Exec(ctxFor(t, 30*time.Second), start, client.ExecIO{Stdin: stdin, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String(), err
}
