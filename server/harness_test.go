package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/skiff-sh/skiff/proto"
)

// syncBuffer collects log output of a test; it is printed only if the test
// fails (or SKIFF_TEST_LOG is set), so passing runs stay quiet.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if os.Getenv("SKIFF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			defer b.mu.Unlock()
			t.Logf("server logs:\n%s", b.buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// freePort returns a loopback port that is free for both TCP and UDP (gossip
// uses both).
// freePort returns a port below the ephemeral range (so no outgoing
// connection takes it between the check and the bind) and apart from the
// e2e harness's 20000-32000, as both packages' tests run at once.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 12000 + mrand.IntN(8000)
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

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// countingTask is a LeaderTask that records how many instances run at once
// across all masters that share it.
type countingTask struct {
	mu      sync.Mutex
	running map[string]int // master name -> running instances
	starts  int
}

func newCountingTask() *countingTask { return &countingTask{running: map[string]int{}} }

func (c *countingTask) forMaster(name string) LeaderTask { return &masterTask{c: c, name: name} }

func (c *countingTask) snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.running {
		if v != 0 {
			out[k] = v
		}
	}
	return out, c.starts
}

type masterTask struct {
	c    *countingTask
	name string
}

func (m *masterTask) Name() string { return "counting" }

func (m *masterTask) Run(ctx context.Context) error {
	m.c.mu.Lock()
	m.c.running[m.name]++
	m.c.starts++
	m.c.mu.Unlock()
	<-ctx.Done()
	m.c.mu.Lock()
	m.c.running[m.name]--
	m.c.mu.Unlock()
	return nil
}

// testServer is one master running in the test process.
type testServer struct {
	t      *testing.T
	cfg    Config
	srv    *Server
	cancel context.CancelFunc
	done   chan error
	conn   *grpc.ClientConn
}

func (ts *testServer) cluster() pb.ClusterClient   { return pb.NewClusterClient(ts.conn) }
func (ts *testServer) operator() pb.OperatorClient { return pb.NewOperatorClient(ts.conn) }

// testConfigs returns configs for n masters that join each other. Ports are
// fixed up front so a master can be restarted on the same addresses.
func testConfigs(t *testing.T, n, expect int) []Config {
	t.Helper()
	log := testLogger(t)
	var gossip []string
	cfgs := make([]Config, n)
	for i := range cfgs {
		c := DefaultConfig()
		c.Name = fmt.Sprintf("m%d", i+1)
		c.DataDir = t.TempDir()
		c.RaftAddr = addr(freePort(t))
		c.APIAddr = "127.0.0.1:0"
		c.GossipAddr = addr(freePort(t))
		c.HTTPAddr = "127.0.0.1:0"
		c.BootstrapExpect = expect
		// secureConfigs (tls_test.go) turns this into a token.
		c.Insecure = true
		c.Logger = log
		c.Version = "test"
		c.JoinRetryInterval = 100 * time.Millisecond
		c.ReconcileInterval = time.Second
		// Loaded 2-core CI with -race: keep elections rare but failover
		// quick enough for the tests.
		c.RaftMultiplier = 2
		cfgs[i] = c
		gossip = append(gossip, c.GossipAddr)
	}
	for i := range cfgs {
		cfgs[i].Join = gossip
	}
	return cfgs
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{t: t, cfg: cfg, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Run(ctx) }()
	creds := insecure.NewCredentials()
	if cfg.TokenFile != "" {
		creds = adminCredentials(t, cfg.TokenFile)
	}
	ts.conn, err = grpc.NewClient("passthrough:///"+srv.APIAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.stop() })
	return ts
}

// stop shuts the master down gracefully and checks Run returned nil.
func (ts *testServer) stop() {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.cancel = nil
	select {
	case err := <-ts.done:
		if err != nil {
			ts.t.Errorf("%s: Run returned %v", ts.cfg.Name, err)
		}
	case <-time.After(30 * time.Second):
		// Where it hangs: every goroutine of the test process.
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		ts.t.Errorf("%s: Run did not return within 30s of cancel; goroutines:\n%s", ts.cfg.Name, buf.String())
	}
	ts.conn.Close()
}

func startCluster(t *testing.T, cfgs []Config) []*testServer {
	t.Helper()
	out := make([]*testServer, len(cfgs))
	for i, c := range cfgs {
		out[i] = startServer(t, c)
	}
	return out
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLeader waits until exactly one of the running masters leads, every one
// of them agrees on it, and it is ready to serve.
func waitLeader(t *testing.T, servers []*testServer) *testServer {
	t.Helper()
	var leader *testServer
	eventually(t, 20*time.Second, "one ready leader", func() error {
		leader = nil
		for _, ts := range servers {
			if ts.srv.IsLeader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.cfg.Name, ts.cfg.Name)
				}
				leader = ts
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader")
		}
		if !leader.srv.isReady() {
			return fmt.Errorf("leader %s not ready", leader.cfg.Name)
		}
		for _, ts := range servers {
			if l := ts.srv.Leader(); l != leader.cfg.Name {
				return fmt.Errorf("%s thinks the leader is %q", ts.cfg.Name, l)
			}
		}
		return nil
	})
	return leader
}

func followers(servers []*testServer, leader *testServer) []*testServer {
	var out []*testServer
	for _, ts := range servers {
		if ts != leader {
			out = append(out, ts)
		}
	}
	return out
}

func raftConfigOf(t *testing.T, ts *testServer) []string {
	t.Helper()
	f := ts.srv.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		out = append(out, fmt.Sprintf("%s@%s/%s", s.ID, s.Address, map[raft.ServerSuffrage]string{raft.Voter: "voter", raft.Nonvoter: "nonvoter", raft.Staging: "staging"}[s.Suffrage]))
	}
	sort.Strings(out)
	return out
}

func configMap(name string, data map[string]string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{ApiVersion: "v1", Kind: "ConfigMap", Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"}, Data: data})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
