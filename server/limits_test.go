package server

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// A List may return far more than one object's size limit: three objects
// near the limit come back in one response.
func TestListLargerThanObjectLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	big := strings.Repeat("x", pb.MaxObjectBytes-4096)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := ts.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(name, map[string]string{"data": big})}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	resp, err := pb.CollectList(ts.cluster().List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "ConfigMap", Namespace: "default"},
		grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatalf("list of 3 large objects: %v", err)
	}
	if n := len(resp.GetItems()); n != 3 {
		t.Errorf("listed %d objects, want 3", n)
	}
}

func dialAPI(t *testing.T, ts *testServer) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient("passthrough:///"+ts.srv.APIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// One client over its request rate gets ResourceExhausted saying what to
// do; another client is not affected.
func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	cfg.MaxRequestsPerSecond, cfg.MaxRequestBurst = 2, 5
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 20*time.Second)
	get := func(c *grpc.ClientConn) error {
		_, err := pb.NewClusterClient(c).Get(ctx, &pb.GetRequest{Kind: "Namespace", Name: "default"})
		return err
	}

	greedy, other := dialAPI(t, ts), dialAPI(t, ts)
	var limited error
	for i := 0; i < 50 && limited == nil; i++ {
		if err := get(greedy); status.Code(err) == codes.ResourceExhausted {
			limited = err
		} else if err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, limited, codes.ResourceExhausted, "rate limit of 2 requests/s exceeded for 127.0.0.1:",
		"slow down or raise --max-requests-per-second")
	if wait, ok := pb.RetryAfter(limited); !ok || wait != 500*time.Millisecond {
		t.Fatalf("RetryAfter = %v, %v; want the time one token takes, 500ms", wait, ok)
	}
	for range 3 {
		if err := get(other); err != nil {
			t.Fatalf("another client: %v", err)
		}
	}
	// Writes count too, and a refused one stores nothing.
	for i := 0; ; i++ {
		name := fmt.Sprintf("w-%d", i)
		_, err := pb.NewClusterClient(greedy).Create(ctx, &pb.WriteRequest{Object: configMap(name, nil)})
		if err == nil {
			continue
		}
		wantStatus(t, err, codes.ResourceExhausted, "rate limit of 2 requests/s")
		_, err = pb.NewClusterClient(other).Get(ctx, &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: name})
		wantStatus(t, err, codes.NotFound)
		break
	}
	if n := counterVecValue(t, ts.srv.metrics.reg, "skiff_api_rejected_total", "rate"); n < 2 {
		t.Fatalf("skiff_api_rejected_total{limit=rate} = %v", n)
	}
}

// Watches are capped per client and per master; a closed watch frees its
// slot.
func TestWatchLimits(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	cfg.MaxWatchesPerClient, cfg.MaxWatches = 2, 3
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 20*time.Second)

	// An accepted watch "from now" starts with a BOOKMARK; a refused one
	// ends with the error.
	open := func(c *grpc.ClientConn) (cancel func(), err error) {
		wctx, cancel := context.WithCancel(ctx)
		s, err := pb.NewClusterClient(c).Watch(wctx, &pb.WatchRequest{Kind: "ConfigMap"})
		if err == nil {
			var ev *pb.WatchEvent
			if ev, err = s.Recv(); err == nil && ev.GetType() != "BOOKMARK" {
				err = fmt.Errorf("first event %v, want a BOOKMARK", ev)
			}
		}
		if err != nil {
			cancel()
			return nil, err
		}
		return cancel, nil
	}
	a, b, c := dialAPI(t, ts), dialAPI(t, ts), dialAPI(t, ts)
	var closeA []func()
	for range 2 {
		cl, err := open(a)
		if err != nil {
			t.Fatal(err)
		}
		closeA = append(closeA, cl)
	}
	_, err := open(a)
	wantStatus(t, err, codes.ResourceExhausted, "already has 2 watches open on this master", "--max-watches-per-client")
	closeB, err := open(b)
	if err != nil {
		t.Fatalf("another client's watch: %v", err)
	}
	defer closeB()
	_, err = open(c)
	wantStatus(t, err, codes.ResourceExhausted, "this master already serves 3 watches", "--max-watches")

	closeA[0]()
	eventually(t, 10*time.Second, "a closed watch frees its slot", func() error {
		cl, err := open(c)
		if err != nil {
			return err
		}
		cl()
		return nil
	})
	closeA[1]()
}

// A List response far over gRPC's default 4 MiB comes through the Go client.
func TestLargeListThroughClient(t *testing.T) {
	t.Parallel()
	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 60*time.Second)
	big := strings.Repeat("y", 900<<10)
	for i := range 6 {
		if _, err := ts.cluster().Create(ctx, &pb.WriteRequest{Object: configMap(fmt.Sprintf("big-%d", i), map[string]string{"data": big})}); err != nil {
			t.Fatal(err)
		}
	}
	ccfg := client.DefaultConfig()
	ccfg.Servers = []string{ts.srv.APIAddr()}
	c, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	items, _, err := c.List(ctx, "ConfigMap", client.ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatalf("list of about 5.4 MB: %v", err)
	}
	size := gproto.Size(&pb.ListResponse{Items: items})
	if len(items) != 6 || size < 5<<20 {
		t.Fatalf("listed %d objects, %d bytes", len(items), size)
	}
}

// counterVecValue reads one labelled counter from reg.
func counterVecValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Calls another master forwarded were limited where the client connected:
// the leader does not limit the follower's connection as one client.
func TestLimiterUnit(t *testing.T) {
	s := &Server{limits: newLimiter(limitsConfig{rps: 1, burst: 1}, prometheus.NewRegistry())}
	now := time.Unix(1000, 0)
	s.limits.now = func() time.Time { return now }
	follower := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}})
	forwarded := metadata.NewIncomingContext(follower, metadata.Pairs(forwardedKey, "m2"))
	info := &grpc.UnaryServerInfo{FullMethod: pb.Cluster_Create_FullMethodName}
	ok := func(context.Context, any) (any, error) { return "done", nil }
	for i := range 10 {
		if _, err := s.limitUnary(forwarded, nil, info, ok); err != nil {
			t.Fatalf("forwarded call %d: %v", i, err)
		}
	}
	if _, err := s.limitUnary(follower, nil, info, ok); err != nil {
		t.Fatal(err)
	}
	_, err := s.limitUnary(follower, nil, info, ok)
	wantStatus(t, err, codes.ResourceExhausted, "rate limit of 1 requests/s exceeded for 127.0.0.1:4000")

	// Idle clients are forgotten (their buckets would be full again), but
	// not while they hold a watch.
	release, err := s.limits.acquireWatch("watcher")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * idleEvict)
	if err := s.limits.allow("new"); err != nil {
		t.Fatal(err)
	}
	s.limits.mu.Lock()
	_, idle := s.limits.clients["127.0.0.1:4000"]
	_, watcher := s.limits.clients["watcher"]
	s.limits.mu.Unlock()
	if idle || !watcher {
		t.Fatalf("after the idle period: idle client kept %v, watcher kept %v", idle, watcher)
	}
	release()
	release() // twice is harmless
	if s.limits.watches != 0 {
		t.Fatalf("%d watches counted after release", s.limits.watches)
	}
}

func TestLimitsAndAuditConfig(t *testing.T) {
	good := DefaultConfig()
	good.Name, good.DataDir, good.BootstrapExpect = "m1", t.TempDir(), 1
	good.Insecure = true
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"MaxRequestsPerSecond", func(c *Config) { c.MaxRequestsPerSecond = -1 }},
		{"MaxRequestBurst", func(c *Config) { c.MaxRequestBurst = 0 }},
		{"MaxWatchesPerClient", func(c *Config) { c.MaxWatchesPerClient = -1 }},
		{"MaxWatches", func(c *Config) { c.MaxWatches = -1 }},
		{"AuditLogMaxBytes", func(c *Config) { c.AuditLogFile, c.AuditLogMaxBytes = "/tmp/audit", 10 }},
		{"EncryptionKeyFile", func(c *Config) { c.EncryptionKeyFile = "/nonexistent/keys" }},
	} {
		c := good
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v, want an error naming it", tc.field, err)
		}
	}
	off := good
	off.MaxRequestsPerSecond, off.MaxRequestBurst, off.MaxWatches, off.MaxWatchesPerClient = 0, 0, 0, 0
	if err := off.Validate(); err != nil {
		t.Fatalf("limits off: %v", err)
	}
}

// TestRateLimitedClientWaits: the Go client waits as a rate-limited answer
// tells it and retries, so a client over its rate slows down instead of
// failing.
func TestRateLimitedClientWaits(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	cfg.MaxRequestsPerSecond, cfg.MaxRequestBurst = 10, 2
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	ccfg := client.DefaultConfig()
	ccfg.Servers = []string{ts.srv.APIAddr()}
	c, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t, 30*time.Second)
	// 30 reads at 10/s: far faster than that unless the server slows them.
	for i := range 30 {
		if _, err := c.Get(ctx, "Namespace", "", "default", client.ReadOptions{}); err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
	}
	if n := counterVecValue(t, ts.srv.metrics.reg, "skiff_api_rejected_total", "rate"); n < 1 {
		t.Fatalf("skiff_api_rejected_total{limit=rate} = %v: the client was never limited", n)
	}
}
