package worker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/internal/testimage"
	"github.com/skiff-sh/skiff/worker/podnet"
)

// newTestNetNS creates a named network namespace that is deleted when the
// test ends and returns its path. The worker's pod network (bridge,
// routes, table) goes there instead of into the machine's namespace.
func newTestNetNS(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "skiff-wtest-" + hex.EncodeToString(b)
	// From a thread that goes back to its own namespace: one left in the
	// new namespace could be the main thread, which Go never ends.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create network namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	return filepath.Join("/run/netns", name)
}

// withPodNetwork runs the agent's bridge network inside the namespace at
// nsPath.
func withPodNetwork(nsPath string) agentOptions {
	return func(c *Config) {
		c.PodNetwork = PodNetworkBridge
		c.podNetNS = nsPath
	}
}

// setPodCIDR does what the leader's node IPAM controller does: it records
// the node's pod CIDR in its spec.
func (tc *testCluster) setPodCIDR(t *testing.T, node, cidr string) {
	t.Helper()
	eventually(t, 20*time.Second, "set the pod CIDR of "+node, func() error {
		n, err := tc.node(t, node)
		if err != nil {
			return err
		}
		if n.Spec == nil {
			n.Spec = &pb.NodeSpec{}
		}
		n.Spec.PodCidr, n.Spec.PodCidrs = cidr, []string{cidr}
		_, err = tc.api.Update(ctxFor(t, 10*time.Second), pb.Wrap(n))
		return err
	})
}

func podIPIn(cidr string) func(*pb.Pod) error {
	_, n, _ := net.ParseCIDR(cidr)
	return func(p *pb.Pod) error {
		if err := phaseIs("Running")(p); err != nil {
			return err
		}
		ip := net.ParseIP(p.GetStatus().GetPodIp())
		if ip == nil || !n.Contains(ip) || len(p.GetStatus().GetPodIps()) != 1 || p.GetStatus().GetPodIps()[0].GetIp() != ip.String() {
			return fmt.Errorf("podIP %q podIPs %v, want one address in %s", p.GetStatus().GetPodIp(), p.GetStatus().GetPodIps(), cidr)
		}
		return nil
	}
}

func vethsIn(t *testing.T, nsPath string) []string {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "veth" || l.Type() == "bridge" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func tablesIn(t *testing.T, nsPath string) []string {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range tables {
		out = append(out, tb.Name)
	}
	return out
}

// TestPodNetwork runs real pods on a worker whose pod network lives in a
// namespace of the test's: pods wait for the network until the node has a
// pod CIDR (a hostNetwork pod does not), then get addresses from it that
// their status shows, reach each other over TCP, and have /etc/hosts and
// /etc/resolv.conf; a restarted worker keeps their addresses and hands out
// no duplicate; deleted pods release theirs; a worker stopping for good
// removes the network.
func TestPodNetwork(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	hostNS := newTestNetNS(t)
	tc := startCluster(t, clusterOptions{})
	opts := []agentOptions{e.options(), withPodNetwork(hostNS)}
	a := tc.startAgent(t, "w1", opts...)
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)

	web := app("web", "serve", "0.0.0.0:8080", "sleep", "1h")
	tc.create(t, testPod("web", "w1", web))
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatalf("this test compares a hostNetwork pod's /etc/resolv.conf with the node's: %v", err)
	}
	hn := testPod("hostnet", "w1", app("hostnet", "cat", "/etc/resolv.conf", "sleep", "1h"))
	hn.GetPod().Spec.HostNetwork = true
	tc.create(t, hn)

	// No pod CIDR yet: the pod waits, the hostNetwork pod runs.
	tc.waitPod(t, "web", 30*time.Second, "waiting for the network", func(p *pb.Pod) error {
		w := containerStatusOf(p, "web").GetState().GetWaiting()
		if p.GetStatus().GetPhase() != "Pending" || w.GetReason() != "ContainerCreating" || !strings.Contains(w.GetMessage(), "network is not ready") {
			return fmt.Errorf("phase %s, waiting %v", p.GetStatus().GetPhase(), w)
		}
		if c := podCondition(p.GetStatus(), "PodScheduled"); c.GetStatus() != "True" {
			return fmt.Errorf("PodScheduled %v", c)
		}
		return nil
	})
	tc.waitPod(t, "hostnet", 60*time.Second, "running without the pod network", phaseIs("Running"))
	eventually(t, 30*time.Second, "the hostNetwork pod sees the node's resolv.conf", func() error {
		out, err := tc.logsOf(t, &pb.LogsRequest{Pod: "hostnet"})
		if err != nil || out != string(hostResolv) {
			return fmt.Errorf("logs %q %v", out, err)
		}
		return nil
	})
	if p := must(tc.pod(t, "web")); containerStatusOf(p, "web").GetContainerId() != "" {
		t.Fatalf("a container started before the network was ready: %v", containerStatusOf(p, "web"))
	}
	if cidr := a.PodCIDR(); cidr != "" {
		t.Errorf("PodCIDR before the node has one: %q", cidr)
	}

	const cidr = "10.244.3.0/24"
	tc.setPodCIDR(t, "w1", cidr)
	gw, err := a.PodGateway(ctxFor(t, 30*time.Second))
	if err != nil || gw.String() != "10.244.3.1" || a.PodCIDR() != cidr {
		t.Fatalf("PodGateway = %v %v, PodCIDR %q", gw, err, a.PodCIDR())
	}
	if c, err := a.APIClient(ctxFor(t, 5*time.Second)); err != nil || c == nil {
		t.Fatalf("APIClient: %v", err)
	}
	p := tc.waitPod(t, "web", 60*time.Second, "running with an IP from the node's pod CIDR", podIPIn(cidr))
	webIP := p.GetStatus().GetPodIp()
	if p := must(tc.pod(t, "hostnet")); p.GetStatus().GetPodIp() != "127.0.0.1" {
		t.Errorf("the hostNetwork pod's IP %q, want the node's", p.GetStatus().GetPodIp())
	}
	tc.create(t, testPod("client", "w1", app("client", "sleep", "1h")))
	p = tc.waitPod(t, "client", 60*time.Second, "running with an IP", podIPIn(cidr))
	clientIP := p.GetStatus().GetPodIp()
	if clientIP == webIP {
		t.Fatalf("two pods share %s", webIP)
	}

	reach := func(what string) {
		t.Helper()
		eventually(t, 30*time.Second, what, func() error {
			code, out, errOut, err := tc.execIn(t, "client", nil, testimage.AppPath, "get-once", "http://"+webIP+":8080/")
			if err != nil || code != 0 || out != "hello from web\n" {
				return fmt.Errorf("exit %d, %q %q %v", code, out, errOut, err)
			}
			return nil
		})
	}
	reach("the client pod reaches the web pod by its IP")

	wantResolv := "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.244.3.1\noptions ndots:5\n"
	if code, out, _, err := tc.execIn(t, "client", nil, testimage.AppPath, "cat", "/etc/resolv.conf"); err != nil || code != 0 || out != wantResolv {
		t.Errorf("the pod's resolv.conf = %q %v, want %q", out, err, wantResolv)
	}
	if code, out, _, err := tc.execIn(t, "client", nil, testimage.AppPath, "cat", "/etc/hosts"); err != nil || code != 0 ||
		!strings.Contains(out, "127.0.0.1\tlocalhost\n") || !strings.Contains(out, clientIP+"\tclient\n") {
		t.Errorf("the pod's hosts = %q %v", out, err)
	}
	if code, _, _, err := tc.execIn(t, "client", nil, testimage.AppPath, "write", "/etc/resolv.conf", "x"); err != nil || code == 0 {
		t.Errorf("the pod could write its resolv.conf: exit %d %v", code, err)
	}

	// A restarted worker keeps the pods' addresses and network.
	a.stop(t)
	a = tc.startAgent(t, "w1", append(opts, func(c *Config) { c.StopPodsOnExit = true })...)
	tc.create(t, testPod("late", "w1", app("late", "sleep", "1h")))
	p = tc.waitPod(t, "late", 60*time.Second, "running with an IP", podIPIn(cidr))
	if ip := p.GetStatus().GetPodIp(); ip == webIP || ip == clientIP {
		t.Fatalf("a pod started after the restart got %s, which a running pod has", ip)
	}
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)
	for name, ip := range map[string]string{"web": webIP, "client": clientIP} {
		if p := must(tc.pod(t, name)); p.GetStatus().GetPodIp() != ip {
			t.Errorf("%s: IP %q after the restart, had %s", name, p.GetStatus().GetPodIp(), ip)
		}
	}
	reach("the client pod reaches the web pod after the restart")
	n := a.network()
	if n == nil {
		t.Fatal("the restarted worker has no network")
	}
	allocs, _ := n.Allocations()
	if len(allocs) != 3 {
		t.Errorf("allocations after the restart: %v", allocs)
	}

	// Deleted pods release their addresses and veths.
	tc.deletePod(t, "late", gproto.Int64(0))
	tc.deletePod(t, "client", gproto.Int64(0))
	tc.waitPodGone(t, "late", 30*time.Second)
	tc.waitPodGone(t, "client", 30*time.Second)
	eventually(t, 30*time.Second, "addresses released", func() error {
		allocs, _ := n.Allocations()
		if len(allocs) != 1 || allocs[must(tc.pod(t, "web")).GetMetadata().GetUid()].String() != webIP {
			return fmt.Errorf("allocations %v", allocs)
		}
		if links := vethsIn(t, hostNS); len(links) != 2 { // the bridge and web's veth
			return fmt.Errorf("links %v", links)
		}
		return nil
	})

	// Stopping for good (StopPodsOnExit) removes the network.
	a.stop(t)
	if links := vethsIn(t, hostNS); len(links) != 0 {
		t.Errorf("links left after the worker stopped for good: %v", links)
	}
	if tables := tablesIn(t, hostNS); len(tables) != 0 {
		t.Errorf("nftables tables left: %v", tables)
	}
	for _, name := range []string{"web", "hostnet"} {
		tc.deletePod(t, name, gproto.Int64(0))
	}
	e.assertClean(t)
}

// TestHollowPodIPs: hollow nodes create no network, but once their Node
// has a pod CIDR their pods get distinct addresses from it.
func TestHollowPodIPs(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	tc.startAgent(t, "h1", func(c *Config) {
		c.Hollow = true
		c.PodNetwork = PodNetworkBridge
	})
	tc.waitNodeReady(t, "h1", "True", 20*time.Second)
	tc.create(t, testPod("before", "h1", &pb.Container{Name: "c", Image: "img"}))
	tc.waitPod(t, "before", 30*time.Second, "running", phaseIs("Running"))
	const cidr = "10.244.9.0/24"
	tc.setPodCIDR(t, "h1", cidr)
	tc.create(t, testPod("after", "h1", &pb.Container{Name: "c", Image: "img"}))
	a := tc.waitPod(t, "after", 60*time.Second, "an IP", podIPIn(cidr))
	b := tc.waitPod(t, "before", 60*time.Second, "an IP once the node has a pod CIDR", podIPIn(cidr))
	if a.GetStatus().GetPodIp() == b.GetStatus().GetPodIp() {
		t.Errorf("two hollow pods share %s", a.GetStatus().GetPodIp())
	}
	objs, _, err := tc.api.List(ctxFor(t, 10*time.Second), "Pod", client.ListOptions{Namespace: "default"})
	if err != nil || len(objs) != 2 {
		t.Fatalf("pods: %d %v", len(objs), err)
	}
}

// TestNodeRoutes: a route to every other node with a pod CIDR and a usable
// InternalIP, none to this node or overlapping its CIDR.
func TestNodeRoutes(t *testing.T) {
	node := func(cidr, ip string) *pb.Node {
		return &pb.Node{Spec: &pb.NodeSpec{PodCidr: cidr},
			Status: &pb.NodeStatus{Addresses: []*pb.NodeAddress{{Type: "Hostname", Address: "x"}, {Type: "InternalIP", Address: ip}}}}
	}
	nodes := map[string]*pb.Node{
		"self":     node("10.244.1.0/24", "192.0.2.1"),
		"b":        node("10.244.2.0/24", "192.0.2.2"),
		"a":        node("10.244.0.0/24", "192.0.2.3"),
		"nocidr":   node("", "192.0.2.4"),
		"loopback": node("10.244.5.0/24", "127.0.0.1"),
		"overlap":  node("10.244.1.0/25", "192.0.2.6"),
		"v6":       node("fd00::/64", "192.0.2.7"),
		"noaddr":   {Spec: &pb.NodeSpec{PodCidr: "10.244.8.0/24"}},
	}
	_, own, _ := net.ParseCIDR("10.244.1.0/24")
	got := fmt.Sprint(nodeRoutes("self", nodes, own))
	if want := "[10.244.0.0/24 via 192.0.2.3 10.244.2.0/24 via 192.0.2.2]"; got != want {
		t.Errorf("routes %s, want %s", got, want)
	}
}

func TestPodNetworkConfig(t *testing.T) {
	base := DefaultConfig()
	base.Name, base.DataDir, base.Join = "w1", "/var/lib/skiff", []string{"127.0.0.1:7946"}
	base.Insecure = true
	if err := base.Validate(); err != nil || base.PodNetwork != PodNetworkBridge {
		t.Fatalf("default config: %v (PodNetwork %q)", err, base.PodNetwork)
	}
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"PodNetwork", func(c *Config) { c.PodNetwork = "flannel" }},
		{"PodNetwork", func(c *Config) { c.PodNetwork = "" }},
		{"ClusterCIDR", func(c *Config) { c.ClusterCIDR = "10.244.0.0" }},
		{"ClusterCIDR", func(c *Config) { c.ClusterCIDR = "10.244.0.1/16" }},
		{"ClusterCIDR", func(c *Config) { c.ClusterCIDR = "fd00::/48" }},
		{"Bridge", func(c *Config) { c.Bridge = "" }},
		{"Bridge", func(c *Config) { c.Bridge = "much-too-long-for-linux" }},
	} {
		c := base
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
	none := base
	none.PodNetwork, none.ClusterCIDR, none.Bridge = PodNetworkNone, "", ""
	if err := none.Validate(); err != nil {
		t.Errorf("PodNetwork none needs no CIDR or bridge: %v", err)
	}
}

// TestHostGWRoutes: the agent keeps a route to every other node's pod
// CIDR via its InternalIP, inside the namespace of its pod network, and
// follows the Nodes as they change and go.
func TestHostGWRoutes(t *testing.T) {
	t.Parallel()
	hostNS := newTestNetNS(t)
	ns, err := netns.GetFromPath(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The node's uplink, on which the other nodes are reachable.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplink-peer"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"uplink", "uplink-peer"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "uplink" {
			_, ipnet, _ := net.ParseCIDR("10.250.0.0/24")
			ipnet.IP = net.ParseIP("10.250.0.1")
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipnet}); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	routes := func() string {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: podnet.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err.Error()
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Dst.String()+" via "+r.Gw.String())
		}
		return strings.Join(out, ", ")
	}

	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	tc.startAgent(t, "w1", withFakes(rt, newFakeProber()), withPodNetwork(hostNS))
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)
	tc.setPodCIDR(t, "w1", "10.244.3.0/24")

	// Another node, as a registration and heartbeat would leave it.
	other := &pb.Node{ApiVersion: "v1", Kind: "Node", Metadata: &pb.ObjectMeta{Name: "w2"},
		Spec: &pb.NodeSpec{PodCidr: "10.244.4.0/24", PodCidrs: []string{"10.244.4.0/24"}}}
	tc.create(t, pb.Wrap(other))
	setAddr := func(ip string) {
		t.Helper()
		st := &pb.Node{ApiVersion: "v1", Kind: "Node", Metadata: &pb.ObjectMeta{Name: "w2"},
			Status: &pb.NodeStatus{Addresses: []*pb.NodeAddress{{Type: "InternalIP", Address: ip}}}}
		if _, err := tc.api.UpdateStatus(ctxFor(t, 10*time.Second), pb.Wrap(st)); err != nil {
			t.Fatal(err)
		}
	}
	setAddr("10.250.0.2")
	eventually(t, 20*time.Second, "a route to w2's pods", func() error {
		if got := routes(); got != "10.244.4.0/24 via 10.250.0.2" {
			return fmt.Errorf("routes %q", got)
		}
		return nil
	})
	setAddr("10.250.0.3")
	eventually(t, 20*time.Second, "the route follows w2's address", func() error {
		if got := routes(); got != "10.244.4.0/24 via 10.250.0.3" {
			return fmt.Errorf("routes %q", got)
		}
		return nil
	})
	if _, err := tc.api.Delete(ctxFor(t, 10*time.Second), &pb.DeleteOp{Kind: "Node", Name: "w2"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "no route once w2 is gone", func() error {
		if got := routes(); got != "" {
			return fmt.Errorf("routes %q", got)
		}
		return nil
	})
}
