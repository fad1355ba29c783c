package worker

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// TestHollowNodes runs many hollow nodes in one process against secure
// masters: each gets its own certificate, registers, turns Ready, runs its
// pods through Pending -> Running, confirms their deletion, and is marked
// not ready at once when the process stops. The shared NodeAgent serves a
// node certificate the masters accept.
func TestHollowNodes(t *testing.T) {
	t.Parallel()
	const count = 25
	tc := startCluster(t, clusterOptions{})
	cfg := DefaultConfig()
	cfg.Name = "hollow"
	cfg.TokenFile = tc.token
	cfg.Join = tc.gossip()
	cfg.NodeIP = "127.0.0.1"
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = time.Second
	cfg.Logger = tc.log
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunHollow(ctx, cfg, count) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunHollow: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("hollow nodes did not stop")
		}
	}
	t.Cleanup(stop)

	start := time.Now()
	names := make([]string, count)
	for i := range names {
		names[i] = fmt.Sprintf("hollow-%04d", i+1)
	}
	waitAll := func(what string, check func(*pb.Node) error) {
		eventually(t, 60*time.Second, what, func() error {
			objs, _, err := tc.api.List(ctxFor(t, 10*time.Second), "Node", client.ListOptions{})
			if err != nil {
				return err
			}
			ok := 0
			for _, o := range objs {
				if slices.Contains(names, o.Meta().GetName()) && check(o.GetNode()) == nil {
					ok++
				}
			}
			if ok != count {
				return fmt.Errorf("%d of %d", ok, count)
			}
			return nil
		})
	}
	waitAll("hollow nodes Ready", func(n *pb.Node) error {
		if readyCondition(n).GetStatus() != "True" || n.GetMetadata().GetLabels()["skiff.sh/hollow"] != "true" {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	t.Logf("%d hollow nodes registered and Ready in %v", count, time.Since(start).Round(10*time.Millisecond))

	for i, n := range names {
		c := ctr("app", "run")
		c.ReadinessProbe = &pb.Probe{TcpSocket: &pb.TCPSocketAction{Port: "80"}, PeriodSeconds: 1}
		tc.create(t, testPod(fmt.Sprintf("p%d", i), n, c))
	}
	for i := range names {
		tc.waitPod(t, fmt.Sprintf("p%d", i), 30*time.Second, "running and ready", readyIs("True"))
	}
	for i := range names {
		tc.deletePod(t, fmt.Sprintf("p%d", i), nil)
	}
	for i := range names {
		tc.waitPodGone(t, fmt.Sprintf("p%d", i), 30*time.Second)
	}
	// Logs and exec are not available on a hollow node.
	tc.create(t, testPod("quiet", names[0], ctr("app", "run")))
	tc.waitPod(t, "quiet", 30*time.Second, "running", phaseIs("Running"))
	// The error comes from the node, so the master's mutual TLS connection
	// to the shared NodeAgent worked.
	if _, err := tc.logsOf(t, &pb.LogsRequest{Pod: "quiet"}); err == nil || !strings.Contains(err.Error(), "not supported on a hollow node") {
		t.Errorf("logs from a hollow node: %v, want the node's refusal", err)
	}
	// Nor is usage: a hollow node has no cgroups to read.
	if _, err := tc.api.Stats(ctxFor(t, 10*time.Second), &pb.StatsRequest{NodeName: names[0]}); status.Code(err) != codes.Unimplemented ||
		!strings.Contains(err.Error(), "is hollow: it runs no containers and reports no usage") {
		t.Errorf("stats of a hollow node: %v, want Unimplemented", err)
	}
	checkHollowAgentCert(t, tc, names[0])

	stop()
	waitAll("hollow nodes left", func(n *pb.Node) error {
		if c := readyCondition(n); c.GetStatus() != "False" || c.GetReason() != "Left" {
			return fmt.Errorf("%v", c)
		}
		return nil
	})
}

// TestMasterFailover joins a worker through the leader only: it learns the
// other masters from gossip and keeps heartbeating and running pods when the
// leader goes away.
func TestMasterFailover(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{masters: 3})
	leader := -1
	eventually(t, 30*time.Second, "a leader", func() error {
		for i, s := range tc.servers {
			if s.IsLeader() {
				leader = i
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	rt := newFakeRuntime()
	a := tc.startAgent(t, "w1", withFakes(rt, newFakeProber()), func(c *Config) { c.Join = []string{tc.cfgs[leader].GossipAddr} })
	tc.waitNodeReady(t, "w1", "True", 30*time.Second)
	eventually(t, 30*time.Second, "the worker knows every master", func() error {
		a.api.mu.Lock()
		defer a.api.mu.Unlock()
		if len(a.api.addrs) != 3 {
			return fmt.Errorf("knows %v", a.api.addrs)
		}
		return nil
	})
	tc.create(t, testPod("before", "w1", ctr("main", "run")))
	tc.waitPod(t, "before", 30*time.Second, "running", phaseIs("Running"))

	// Stop the leader, the only master the worker was told about.
	tc.stopServer(leader)
	rest := tc.apiOf(t, leader)
	var hb time.Time
	eventually(t, 30*time.Second, "heartbeats after the failover", func() error {
		o, err := rest.Get(ctxFor(t, 10*time.Second), "Lease", pb.NamespaceNodeLease, "w1", client.ReadOptions{})
		if err != nil {
			return err
		}
		now := o.GetLease().GetSpec().GetRenewTime().AsTime()
		if hb.IsZero() {
			hb = now
		}
		if !now.After(hb) {
			return fmt.Errorf("lease renewed last at %v", now)
		}
		return nil
	})
	if _, err := rest.Create(ctxFor(t, 30*time.Second), testPod("after", "w1", ctr("main", "run"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a pod created after the failover runs", func() error {
		o, err := rest.Get(ctxFor(t, 10*time.Second), "Pod", "default", "after", client.ReadOptions{})
		if err != nil {
			return err
		}
		return phaseIs("Running")(o.GetPod())
	})
}

// checkHollowAgentCert connects to node's NodeAgent as a master would and
// checks that it serves a node certificate of one of the hollow nodes.
func checkHollowAgentCert(t *testing.T, tc *testCluster, node string) {
	t.Helper()
	o, err := tc.api.Get(ctxFor(t, 10*time.Second), "Node", "", node, client.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := o.GetNode().GetStatus().GetDaemonEndpoints().GetKubeletEndpoint().GetPort()
	tok, err := pki.ReadTokenFile(tc.token)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tok.CA()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	master, err := ca.IssueKeyPair(key, pki.Leaf{CommonName: pki.MasterCNPrefix + "test", Organization: pki.OrgMaster, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := pki.ClientConfig(ca.Pool(), pki.NewReloader(master), pki.NodeServerName, pki.OrgNode)
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), cfg)
	if err != nil {
		t.Fatalf("TLS to the hollow NodeAgent: %v", err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; !strings.HasPrefix(cn, pki.NodeCNPrefix+"hollow-") {
		t.Errorf("the hollow NodeAgent serves %q, want a hollow node's certificate", cn)
	}
	// Only masters may call it.
	admin := adminTLS(t, tc.token)
	admin.ServerName = pki.NodeServerName
	admin.VerifyConnection = nil
	if c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), admin); err == nil {
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if err == nil {
			t.Errorf("the hollow NodeAgent accepted an admin certificate")
		}
	}
}

// apiOf returns a client for the masters other than the skipped ones.
func (tc *testCluster) apiOf(t *testing.T, skip ...int) *client.Client {
	t.Helper()
	var addrs []string
	for i, s := range tc.servers {
		if !slices.Contains(skip, i) {
			addrs = append(addrs, s.APIAddr())
		}
	}
	cfg := client.DefaultConfig()
	cfg.Servers = addrs
	if tc.token != "" {
		cfg.TLS = adminTLS(t, tc.token)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
