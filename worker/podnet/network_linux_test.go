package podnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Every link, address, route and nftables table of these tests lives in
// network namespaces the test creates and deletes: the code under test
// runs with Config.NetNS set to a "host" namespace of the test's, and pods
// are namespaces of the test's too.

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests create network namespaces: run them as root")
	}
}

// newNetNS creates a named network namespace (pinned under /run/netns)
// that is deleted when the test ends, and returns its path.
func newNetNS(t testing.TB, what string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "skiff-pn-" + what + "-" + hex.EncodeToString(b)
	if err := newNamedNetNS(name); err != nil {
		t.Fatalf("create network namespace %s: %v", name, err)
	}
	path := filepath.Join("/run/netns", name)
	t.Cleanup(func() {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return // ended by the test (endNetNS)
		}
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	return path
}

// eventually polls cond until it returns nil, failing t with its last
// error after within.
func eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// eventuallyGone waits until the link name is gone from h's namespace.
func eventuallyGone(t testing.TB, h *netlink.Handle, name string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		_, err := h.LinkByName(name)
		var nf netlink.LinkNotFoundError
		switch {
		case errors.As(err, &nf):
			return nil
		case err != nil:
			t.Fatalf("look up %s: %v", name, err)
		}
		return fmt.Errorf("%s is still there after its pod's namespace ended", name)
	})
}

// endNetNS releases a namespace newNetNS made, as a sandbox's removal
// does: the kernel deletes it and its devices once nothing holds it.
func endNetNS(t testing.TB, path string) {
	t.Helper()
	if err := netns.DeleteNamed(filepath.Base(path)); err != nil {
		t.Fatalf("delete network namespace %s: %v", path, err)
	}
}

// doIn runs f on a thread inside the namespace at path.
func doIn(path string, f func() error) error { return InNetNS(path, f) }

// newNamedNetNS creates a network namespace pinned at /run/netns/name from a
// thread that then goes back to its own (see inNS).
func newNamedNetNS(name string) error {
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
	return <-errc
}

// handleIn is a netlink handle in the namespace at path.
func handleIn(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// whoAmIServer listens on addr inside the namespace at path and answers
// every connection with the address it came from.
func whoAmIServer(t *testing.T, path, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := doIn(path, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, c.RemoteAddr().(*net.TCPAddr).IP.String())
			c.Close()
		}
	}()
	return ln
}

// askFrom connects from inside the namespace at path to addr, retrying
// until the deadline, and returns what the server answered: the source
// address it saw.
func askFrom(t *testing.T, path, addr string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got string
		err := doIn(path, func() error {
			c, err := net.DialTimeout("tcp4", addr, time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(c)
			got = string(b)
			return err
		})
		if err == nil {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect from %s to %s: %v", path, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testConfig(t testing.TB, hostNS, podCIDR string) Config {
	cfg := DefaultConfig()
	cfg.PodCIDR = podCIDR
	cfg.NetNS = hostNS
	cfg.StateFile = filepath.Join(t.TempDir(), "podnet.db")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func mustNew(t testing.TB, cfg Config) *Network {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Setup(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOneNode attaches pods to one node's network: they reach each other
// and the gateway over TCP, addresses survive a reopen and are never
// duplicated, Detach releases, SetRoutes manages only its own routes, the
// table masquerades, and Teardown leaves nothing.
func TestOneNode(t *testing.T) {
	needRoot(t)
	host := newNetNS(t, "host")
	p1, p2, p3 := newNetNS(t, "p1"), newNetNS(t, "p2"), newNetNS(t, "p3")
	cfg := testConfig(t, host, "10.244.1.0/24")
	cfg.MTU = 1400
	n := mustNew(t, cfg)
	if err := n.Setup(); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if gw := n.Gateway(); gw.String() != "10.244.1.1" {
		t.Fatalf("gateway %s", gw)
	}
	ctx := context.Background()
	ip1, err := n.Attach(ctx, "pod-1", p1)
	if err != nil {
		t.Fatal(err)
	}
	ip2, err := n.Attach(ctx, "pod-2", p2)
	if err != nil {
		t.Fatal(err)
	}
	if ip1.Equal(ip2) || !n.PodCIDR().Contains(ip1) || !n.PodCIDR().Contains(ip2) || ip1.String() == "10.244.1.1" {
		t.Fatalf("pod IPs %s and %s", ip1, ip2)
	}
	if again, err := n.Attach(ctx, "pod-1", p1); err != nil || !again.Equal(ip1) {
		t.Fatalf("attaching an attached pod: %s %v, want %s", again, err, ip1)
	}

	// The pod's side: eth0 with the address and MTU, lo up, default route.
	ph := handleIn(t, p1)
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().MTU != 1400 || eth0.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0: mtu %d flags %v", eth0.Attrs().MTU, eth0.Attrs().Flags)
	}
	addrs, _ := ph.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != ip1.String()+"/24" {
		t.Errorf("eth0 addresses %v", addrs)
	}
	if lo, _ := ph.LinkByName("lo"); lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is not up in the pod")
	}
	routes, _ := ph.RouteList(nil, netlink.FAMILY_V4)
	var def bool
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(n.Gateway()) {
			def = true
		}
	}
	if !def {
		t.Errorf("no default route via %s in the pod: %v", n.Gateway(), routes)
	}
	// The host's side: the veth is a port of the bridge, hairpin on.
	hh := handleIn(t, host)
	br, err := hh.LinkByName("skiff0")
	if err != nil {
		t.Fatal(err)
	}
	hostVeth, _ := vethNames("pod-1")
	hv, err := hh.LinkByName(hostVeth)
	if err != nil {
		t.Fatal(err)
	}
	pi, err := hh.LinkGetProtinfo(hv)
	if hv.Attrs().MasterIndex != br.Attrs().Index || err != nil || !pi.Hairpin {
		t.Errorf("host veth: master %d (bridge %d), protinfo %+v %v", hv.Attrs().MasterIndex, br.Attrs().Index, pi, err)
	}

	// Pod to pod, and pod to the gateway (the node), over TCP.
	whoAmIServer(t, p2, ip2.String()+":8080")
	if from := askFrom(t, p1, ip2.String()+":8080"); from != ip1.String() {
		t.Errorf("pod 2 saw pod 1 as %s, want %s", from, ip1)
	}
	whoAmIServer(t, host, n.Gateway().String()+":53")
	if from := askFrom(t, p2, n.Gateway().String()+":53"); from != ip2.String() {
		t.Errorf("the node saw pod 2 as %s, want %s", from, ip2)
	}

	// The table: one masquerade rule for the pod CIDR, two forward rules;
	// Setup rebuilt it rather than adding copies.
	checkTable(t, host, true)

	// Reopen over the same file: same addresses, no duplicates.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = mustNew(t, cfg)
	allocs, _ := n.Allocations()
	if len(allocs) != 2 || !allocs["pod-1"].Equal(ip1) || !allocs["pod-2"].Equal(ip2) {
		t.Fatalf("allocations after reopening: %v", allocs)
	}
	if again, err := n.Attach(ctx, "pod-2", p2); err != nil || !again.Equal(ip2) {
		t.Fatalf("attach after reopening: %s %v, want %s", again, err, ip2)
	}
	ip3, err := n.Attach(ctx, "pod-3", p3)
	if err != nil || ip3.Equal(ip1) || ip3.Equal(ip2) {
		t.Fatalf("third pod: %s %v", ip3, err)
	}
	if from := askFrom(t, p3, ip2.String()+":8080"); from != ip3.String() {
		t.Errorf("pod 2 saw pod 3 as %s", from)
	}

	// Detach takes the address off the pod's eth0 and releases it; the
	// veth pair ends with the pod's namespace, which the caller releases
	// next.
	if err := n.Detach("pod-1", p1); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach("pod-1", p1); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	if eth0, err := ph.LinkByName("eth0"); err != nil {
		t.Errorf("eth0 of a detached pod before its namespace ends: %v", err)
	} else if addrs, err := ph.AddrList(eth0, netlink.FAMILY_V4); err != nil || len(addrs) != 0 {
		t.Errorf("eth0 of a detached pod still has %v (%v)", addrs, err)
	}
	if allocs, _ := n.Allocations(); len(allocs) != 2 || allocs["pod-1"] != nil {
		t.Errorf("allocations after Detach: %v", allocs)
	}
	ph.Close() // a netlink socket in the namespace holds it too
	endNetNS(t, p1)
	eventuallyGone(t, hh, hostVeth)
	// A pod whose namespace is gone detaches too, by the veth's name.
	hostVeth3, _ := vethNames("pod-3")
	if _, err := hh.LinkByName(hostVeth3); err != nil {
		t.Fatalf("pod-3's host veth: %v", err)
	}
	if err := n.Detach("pod-3", "/run/netns/no-such-namespace"); err != nil {
		t.Fatal(err)
	}
	if _, err := hh.LinkByName(hostVeth3); err == nil {
		t.Error("the host veth of a pod detached without its namespace is still there")
	}

	// SetRoutes replaces its own routes and leaves others alone.
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplink-peer"}); err != nil {
		t.Fatal(err)
	}
	up, _ := hh.LinkByName("uplink")
	if err := hh.AddrAdd(up, &netlink.Addr{IPNet: mustCIDR("10.250.0.1/24")}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"uplink", "uplink-peer"} {
		l, _ := hh.LinkByName(name)
		if err := hh.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	foreign := &netlink.Route{Dst: mustCIDR("10.99.0.0/16"), Gw: net.ParseIP("10.250.0.9"), Protocol: unix.RTPROT_STATIC}
	if err := hh.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	if err := n.SetRoutes([]Route{
		{CIDR: mustCIDR("10.244.2.0/24"), Via: net.ParseIP("10.250.0.2")},
		{CIDR: mustCIDR("10.244.3.0/24"), Via: net.ParseIP("10.250.0.3")},
	}); err != nil {
		t.Fatal(err)
	}
	checkRoutes(t, hh, map[string]string{"10.244.2.0/24": "10.250.0.2", "10.244.3.0/24": "10.250.0.3"})
	if err := n.SetRoutes([]Route{{CIDR: mustCIDR("10.244.3.0/24"), Via: net.ParseIP("10.250.0.4")}}); err != nil {
		t.Fatal(err)
	}
	checkRoutes(t, hh, map[string]string{"10.244.3.0/24": "10.250.0.4"})
	if err := n.SetRoutes([]Route{{CIDR: mustCIDR("10.244.1.0/25"), Via: net.ParseIP("10.250.0.4")}}); err == nil {
		t.Error("a route into the node's own pod CIDR was accepted")
	}
	if rs, _ := hh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign.Dst}, netlink.RT_FILTER_DST); len(rs) != 1 {
		t.Errorf("the foreign route: %v", rs)
	}

	// Teardown leaves nothing of ours.
	if err := n.Teardown(); err != nil {
		t.Fatal(err)
	}
	links, _ := hh.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, vethPrefix) || l.Attrs().Name == "skiff0" {
			t.Errorf("left after Teardown: %s", l.Attrs().Name)
		}
	}
	checkRoutes(t, hh, map[string]string{})
	if rs, _ := hh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign.Dst}, netlink.RT_FILTER_DST); len(rs) != 1 {
		t.Errorf("Teardown removed a foreign route: %v", rs)
	}
	checkTable(t, host, false)
	if allocs, _ := n.Allocations(); len(allocs) != 0 {
		t.Errorf("allocations after Teardown: %v", allocs)
	}
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip.To4()
	return n
}

func checkRoutes(t *testing.T, h *netlink.Handle, want map[string]string) {
	t.Helper()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rs {
		got[r.Dst.String()] = r.Gw.String()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("routes of protocol %d: %v, want %v", RouteProtocol, got, want)
	}
}

// checkTable lists the package's table in the namespace at path.
func checkTable(t *testing.T, path string, want bool) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var table *nftables.Table
	for _, tb := range tables {
		if tb.Name == TableName {
			table = tb
		}
	}
	if !want {
		if table != nil {
			t.Errorf("table %s is still there", TableName)
		}
		return
	}
	if table == nil {
		t.Fatalf("no table %s", TableName)
	}
	post, err := c.GetRules(table, &nftables.Chain{Name: "postrouting", Table: table})
	if err != nil {
		t.Fatal(err)
	}
	masq := 0
	for _, r := range post {
		for _, e := range r.Exprs {
			if _, ok := e.(*expr.Masq); ok {
				masq++
			}
		}
	}
	fwd, err := c.GetRules(table, &nftables.Chain{Name: "forward", Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if len(post) != 1 || masq != 1 || len(fwd) != 2 {
		t.Errorf("table %s: %d postrouting rules (%d masquerade), %d forward rules; want 1 (1), 2", TableName, len(post), masq, len(fwd))
	}
}

// TestTwoNodes joins two nodes' namespaces with a veth pair (their
// "uplink") and routes each one's pod CIDR to the other with SetRoutes
// (host-gw): a pod on node A reaches a pod on node B by its address, which
// B sees unchanged, while traffic to B's own address leaves the cluster
// CIDR and is masqueraded behind A's address.
func TestTwoNodes(t *testing.T) {
	needRoot(t)
	hostA, hostB := newNetNS(t, "a"), newNetNS(t, "b")
	podA, podB := newNetNS(t, "pa"), newNetNS(t, "pb")
	ha, hb := handleIn(t, hostA), handleIn(t, hostB)
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplink-b"}); err != nil {
		t.Fatal(err)
	}
	peer, err := ha.LinkByName("uplink-b")
	if err != nil {
		t.Fatal(err)
	}
	nsB, err := netns.GetFromPath(hostB)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	if err := ha.LinkSetNsFd(peer, int(nsB)); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr string
	}{{ha, "uplink", "10.250.0.1/24"}, {hb, "uplink-b", "10.250.0.2/24"}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := side.h.AddrAdd(l, &netlink.Addr{IPNet: mustCIDR(side.addr)}); err != nil {
			t.Fatal(err)
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	a := mustNew(t, testConfig(t, hostA, "10.244.1.0/24"))
	b := mustNew(t, testConfig(t, hostB, "10.244.2.0/24"))
	if a.MTU() != 1500 {
		t.Errorf("MTU without a default route: %d, want 1500", a.MTU())
	}
	ctx := context.Background()
	ipA, err := a.Attach(ctx, "pod-a", podA)
	if err != nil {
		t.Fatal(err)
	}
	ipB, err := b.Attach(ctx, "pod-b", podB)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetRoutes([]Route{{CIDR: mustCIDR("10.244.2.0/24"), Via: net.ParseIP("10.250.0.2")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetRoutes([]Route{{CIDR: mustCIDR("10.244.1.0/24"), Via: net.ParseIP("10.250.0.1")}}); err != nil {
		t.Fatal(err)
	}
	whoAmIServer(t, podB, ipB.String()+":9000")
	if from := askFrom(t, podA, ipB.String()+":9000"); from != ipA.String() {
		t.Errorf("the pod on B saw the pod on A as %s, want %s (no masquerade inside the cluster CIDR)", from, ipA)
	}
	whoAmIServer(t, podA, ipA.String()+":9000")
	if from := askFrom(t, podB, ipA.String()+":9000"); from != ipB.String() {
		t.Errorf("the pod on A saw the pod on B as %s, want %s", from, ipB)
	}
	whoAmIServer(t, hostB, "10.250.0.2:9001")
	if from := askFrom(t, podA, "10.250.0.2:9001"); from != "10.250.0.1" {
		t.Errorf("node B saw the pod on A as %s, want node A's 10.250.0.1 (masqueraded)", from)
	}

	// Without the route, B's pods are out of reach again.
	if err := a.SetRoutes(nil); err != nil {
		t.Fatal(err)
	}
	err = doIn(podA, func() error {
		c, err := net.DialTimeout("tcp4", ipB.String()+":9000", 500*time.Millisecond)
		if err == nil {
			c.Close()
			return errors.New("connected")
		}
		return nil
	})
	if err != nil {
		t.Errorf("the pod on A reached B without a route: %v", err)
	}
	for _, n := range []*Network{a, b} {
		if err := n.Teardown(); err != nil {
			t.Error(err)
		}
	}
}

// TestInNetNSLeavesNoThreadInside: after InNetNS, no thread of the process
// is in the namespace it entered, although some of the goroutines ran on
// the main thread, which Go never ends: a thread left in a pod's namespace
// would hold it, and the pod's veth, for the worker's life.
func TestInNetNSLeavesNoThreadInside(t *testing.T) {
	needRoot(t)
	p := newNetNS(t, "inns")
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	inside := fmt.Sprintf("net:[%d]", st.Ino)
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := InNetNS(p, func() error { return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	eventually(t, 5*time.Second, func() error {
		tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
		var in []string
		for _, task := range tasks {
			if l, err := os.Readlink(task); err == nil && l == inside {
				in = append(in, task)
			}
		}
		if len(in) > 0 {
			return fmt.Errorf("threads still in %s (%s): %v", p, inside, in)
		}
		return nil
	})
}
