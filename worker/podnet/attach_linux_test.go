package podnet

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// linkNames records the name of every link a namespace announces
// (RTM_NEWLINK) from the moment it is called.
type linkNames struct {
	t    *testing.T
	path string
	h    *netlink.Handle

	mu   sync.Mutex
	seen map[string]bool
}

func watchLinks(t *testing.T, path string) *linkNames {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ch := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeAt(ns, ch, done); err != nil {
		t.Fatalf("subscribe to the links of %s: %v", path, err)
	}
	w := &linkNames{t: t, path: path, h: handleIn(t, path), seen: map[string]bool{}}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for u := range ch {
			if u.Header.Type == unix.RTM_NEWLINK {
				w.mu.Lock()
				w.seen[u.Attrs().Name] = true
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	return w
}

// names returns every name announced so far. A marker link (a bridge: no
// dummy module is needed) is created and
// deleted first and waited for: the namespace's events arrive in order,
// so every change made before the call is in the answer.
func (w *linkNames) names() map[string]bool {
	w.t.Helper()
	const marker = "skiffmark0"
	if err := w.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: marker}}); err != nil {
		w.t.Fatalf("marker link in %s: %v", w.path, err)
	}
	if l, err := w.h.LinkByName(marker); err == nil {
		_ = w.h.LinkDel(l)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		if w.seen[marker] {
			out := map[string]bool{}
			for n := range w.seen {
				if n != marker {
					out[n] = true
				}
			}
			delete(w.seen, marker)
			w.mu.Unlock()
			return out
		}
		w.mu.Unlock()
		if time.Now().After(deadline) {
			w.t.Fatalf("the link events of %s did not arrive", w.path)
		}
		<-tick.C
	}
}

// TestAttachCreatesThePodEndInPlace checks that the pod's end of the veth
// is created in the pod's namespace, named eth0, and never exists in the
// node's namespace. Moving a link between namespaces makes the kernel wait
// for RCU grace periods while it holds the RTNL lock, which every other
// pod's netlink change then waits for: a burst of attaches was serialised
// on it (~18 ms each).
func TestAttachCreatesThePodEndInPlace(t *testing.T) {
	needRoot(t)
	host, pod := newNetNS(t, "host"), newNetNS(t, "pod")
	n := mustNew(t, testConfig(t, host, "10.244.1.0/24"))
	hostLinks, podLinks := watchLinks(t, host), watchLinks(t, pod)
	ip, err := n.Attach(context.Background(), "pod-1", pod)
	if err != nil {
		t.Fatal(err)
	}
	hostVeth, _ := vethNames("pod-1")
	for name := range hostLinks.names() {
		if name != hostVeth && name != n.cfg.Bridge {
			t.Errorf("link %q appeared in the node's namespace: only %s (and the bridge) should", name, hostVeth)
		}
	}
	for name := range podLinks.names() {
		if name != podIfName && name != "lo" {
			t.Errorf("link %q appeared in the pod's namespace: only %s (and lo) should", name, podIfName)
		}
	}
	checkAttached(t, n, host, pod, "pod-1", ip)
}

// checkAttached checks the pod's eth0 (address, MTU, up, the peer of the
// host veth, default route) and the host veth (a port of the bridge with
// hairpin, up).
func checkAttached(t *testing.T, n *Network, hostPath, podPath, uid string, ip net.IP) {
	t.Helper()
	hh, ph := handleIn(t, hostPath), handleIn(t, podPath)
	hostVeth, _ := vethNames(uid)
	hv, err := hh.LinkByName(hostVeth)
	if err != nil {
		t.Fatalf("pod %s: host veth: %v", uid, err)
	}
	eth0, err := ph.LinkByName(podIfName)
	if err != nil {
		t.Fatalf("pod %s: %s: %v", uid, podIfName, err)
	}
	br, err := hh.LinkByName(n.cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if hv.Type() != "veth" || hv.Attrs().ParentIndex != eth0.Attrs().Index || eth0.Attrs().ParentIndex != hv.Attrs().Index {
		t.Errorf("pod %s: %s and %s are not a veth pair", uid, hostVeth, podIfName)
	}
	if pi, err := hh.LinkGetProtinfo(hv); hv.Attrs().MasterIndex != br.Attrs().Index || err != nil || !pi.Hairpin {
		t.Errorf("pod %s: host veth: master %d (bridge %d), protinfo %+v %v", uid, hv.Attrs().MasterIndex, br.Attrs().Index, pi, err)
	}
	if hv.Attrs().Flags&net.FlagUp == 0 || eth0.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("pod %s: host veth flags %v, eth0 flags %v: both should be up", uid, hv.Attrs().Flags, eth0.Attrs().Flags)
	}
	if hv.Attrs().MTU != n.MTU() || eth0.Attrs().MTU != n.MTU() {
		t.Errorf("pod %s: MTU %d (host) and %d (eth0), want %d", uid, hv.Attrs().MTU, eth0.Attrs().MTU, n.MTU())
	}
	addrs, _ := ph.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String()+"/24" {
		t.Errorf("pod %s: eth0 addresses %v, want %s/24", uid, addrs, ip)
	}
	routes, _ := ph.RouteList(nil, netlink.FAMILY_V4)
	def := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(n.Gateway()) {
			def = true
		}
	}
	if !def {
		t.Errorf("pod %s: no default route via %s: %v", uid, n.Gateway(), routes)
	}
}

// checkOneQueue: both ends of a new pod's veth were created with one
// transmit and one receive queue. Created without a count, a veth gets one
// per possible CPU and the kernel cuts it down to one under the RTNL lock,
// waiting for an expedited RCU grace period per end, which every other
// pod's attach then waits for.
func checkOneQueue(t *testing.T, hostPath, podPath, uid string) {
	t.Helper()
	hostVeth, _ := vethNames(uid)
	for _, l := range []struct{ path, name string }{{hostPath, hostVeth}, {podPath, podIfName}} {
		link, err := handleIn(t, l.path).LinkByName(l.name)
		if err != nil {
			t.Fatalf("pod %s: %s: %v", uid, l.name, err)
		}
		if a := link.Attrs(); a.NumTxQueues != 1 || a.NumRxQueues != 1 {
			t.Errorf("pod %s: %s has %d transmit and %d receive queues, want 1 and 1", uid, l.name, a.NumTxQueues, a.NumRxQueues)
		}
	}
}

// TestAttachBurst attaches 20 pods at once: each gets its own address and
// a complete configuration, nothing else is left behind, and pods reach
// each other.
func TestAttachBurst(t *testing.T) {
	needRoot(t)
	host := newNetNS(t, "host")
	n := mustNew(t, testConfig(t, host, "10.244.1.0/24"))
	const pods = 20
	paths := make([]string, pods)
	for i := range paths {
		paths[i] = newNetNS(t, fmt.Sprintf("b%d", i))
	}
	ips := make([]net.IP, pods)
	errs := make([]error, pods)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ips[i], errs[i] = n.Attach(context.Background(), fmt.Sprintf("pod-%d", i), paths[i])
		}()
	}
	wg.Wait()
	t.Logf("%d pods attached at once in %v", pods, time.Since(start))
	seen := map[string]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("attach pod-%d: %v", i, err)
		}
		if prev, dup := seen[ips[i].String()]; dup {
			t.Fatalf("pod-%d and pod-%d both got %s", prev, i, ips[i])
		}
		seen[ips[i].String()] = i
		checkAttached(t, n, host, paths[i], fmt.Sprintf("pod-%d", i), ips[i])
		checkOneQueue(t, host, paths[i], fmt.Sprintf("pod-%d", i))
	}
	// Only the pods' host veths, the bridge and lo in the node's
	// namespace; only lo and eth0 in each pod's.
	links, err := handleIn(t, host).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	veths := 0
	for _, l := range links {
		switch name := l.Attrs().Name; {
		case strings.HasPrefix(name, vethPrefix) && l.Type() == "veth":
			veths++
		case name != "lo" && name != n.cfg.Bridge:
			t.Errorf("unexpected link %s (%s) in the node's namespace", name, l.Type())
		}
	}
	if veths != pods {
		t.Errorf("%d pod veths in the node's namespace, want %d", veths, pods)
	}
	for _, p := range paths {
		links, err := handleIn(t, p).LinkList()
		if err != nil {
			t.Fatal(err)
		}
		if len(links) != 2 {
			t.Errorf("links in %s: %d, want lo and %s", p, len(links), podIfName)
		}
	}
	whoAmIServer(t, paths[pods-1], ips[pods-1].String()+":8080")
	if from := askFrom(t, paths[0], ips[pods-1].String()+":8080"); from != ips[0].String() {
		t.Errorf("pod-%d saw pod-0 as %s, want %s", pods-1, from, ips[0])
	}
}

// TestAttachRepairsLeftovers attaches pods whose namespaces hold what an
// interrupted attach (of this worker or of an older one, which created the
// pod end in the node's namespace as tmpName and moved it) can leave: the
// attach ends with one working pair and nothing else.
func TestAttachRepairsLeftovers(t *testing.T) {
	needRoot(t)
	host := newNetNS(t, "host")
	n := mustNew(t, testConfig(t, host, "10.244.1.0/24"))
	hh := handleIn(t, host)
	cases := []struct {
		name  string
		setup func(t *testing.T, uid, podPath string)
	}{
		{"pair still in the node", func(t *testing.T, uid, _ string) {
			hostName, tmpName := vethNames(uid)
			if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: tmpName}); err != nil {
				t.Fatal(err)
			}
		}},
		{"pod end moved, not renamed", func(t *testing.T, uid, podPath string) {
			hostName, tmpName := vethNames(uid)
			ns, err := netns.GetFromPath(podPath)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: tmpName, PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
				t.Fatal(err)
			}
		}},
		{"eth0 that is not a veth", func(t *testing.T, _, podPath string) {
			if err := handleIn(t, podPath).LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: podIfName}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"host end without its bridge port", func(t *testing.T, uid, podPath string) {
			hostName, _ := vethNames(uid)
			ns, err := netns.GetFromPath(podPath)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: podIfName, PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			uid := fmt.Sprintf("left-%d", i)
			p := newNetNS(t, fmt.Sprintf("l%d", i))
			c.setup(t, uid, p)
			ip, err := n.Attach(context.Background(), uid, p)
			if err != nil {
				t.Fatal(err)
			}
			checkAttached(t, n, host, p, uid, ip)
			_, tmpName := vethNames(uid)
			for _, h := range []*netlink.Handle{hh, handleIn(t, p)} {
				if l, err := h.LinkByName(tmpName); err == nil {
					t.Errorf("leftover %s (%s) is still there", tmpName, l.Type())
				}
			}
			if err := n.Detach(uid, p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// sysctlIn reads a sysctl of the namespace at path (key as under
// /proc/sys, e.g. net/ipv6/conf/eth0/disable_ipv6).
func sysctlIn(t *testing.T, path, key string) string {
	t.Helper()
	var v []byte
	if err := doIn(path, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + key)
		return err
	}); err != nil {
		t.Fatalf("read %s in %s: %v", key, path, err)
	}
	return strings.TrimSpace(string(v))
}

// writeSysctlIn writes a sysctl of the namespace at path.
func writeSysctlIn(t *testing.T, path, key, value string) {
	t.Helper()
	if err := doIn(path, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
	}); err != nil {
		t.Fatalf("write %s=%s in %s: %v", key, value, path, err)
	}
}

// waitOperUp waits until the link's carrier is on and the kernel has
// handled it: the host end of a veth has a carrier only once eth0 is up,
// and that is when the kernel would give it a link-local address.
func waitOperUp(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: operational state %v, want up", name, l.Attrs().OperState)
		}
		<-tick.C
	}
}

// checkNoIPv6 checks that IPv6 is off on both ends of a pod's veth (no
// address, disable_ipv6 is 1) and still on for the pod's lo (::1).
func checkNoIPv6(t *testing.T, hostPath, podPath, uid string) {
	t.Helper()
	hh, ph := handleIn(t, hostPath), handleIn(t, podPath)
	hostVeth, _ := vethNames(uid)
	hv := waitOperUp(t, hh, hostVeth)
	eth0 := waitOperUp(t, ph, podIfName)
	for _, c := range []struct {
		where, path string
		h           *netlink.Handle
		l           netlink.Link
	}{{"pod " + uid + " " + podIfName, podPath, ph, eth0}, {"host veth " + hostVeth, hostPath, hh, hv}} {
		addrs, err := c.h.AddrList(c.l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("%s: IPv6 addresses: %v", c.where, err)
		}
		if len(addrs) != 0 {
			t.Errorf("%s has IPv6 addresses %v, want none (the pod network is IPv4 only)", c.where, addrs)
		}
		if v := sysctlIn(t, c.path, "net/ipv6/conf/"+c.l.Attrs().Name+"/disable_ipv6"); v != "1" {
			t.Errorf("%s: disable_ipv6 is %s, want 1", c.where, v)
		}
	}
	lo, err := ph.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ph.AddrList(lo, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || !addrs[0].IP.Equal(net.IPv6loopback) {
		t.Errorf("pod %s: lo has IPv6 addresses %v, want ::1", uid, addrs)
	}
}

// echoOnce listens on addr inside the namespace at path with the given
// network, and dials it there for each of dials: each connection must
// carry a line there and back.
func echoOnce(t *testing.T, path, network, addr string, dials ...string) {
	t.Helper()
	var ln net.Listener
	if err := doIn(path, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s %s in the pod: %v", network, addr, err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, host := range dials {
		to := net.JoinHostPort(host, strconv.Itoa(port))
		if err := doIn(path, func() error {
			c, err := net.DialTimeout("tcp", to, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				return err
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err
			}
			if got != "ping\n" {
				return fmt.Errorf("echoed %q", got)
			}
			return nil
		}); err != nil {
			t.Errorf("in the pod, %s listening on %s: connect to %s: %v", network, addr, to, err)
		}
	}
}

// TestAttachTurnsIPv6Off checks that a pod's veth carries no IPv6, as on
// Docker's IPv4-only networks: the kernel would otherwise give both ends a
// link-local address and send duplicate-address probes, MLD reports and
// router solicitations that the bridge floods to every pod, and pods would
// have an fe80:: path between them that no IPv4 rule sees. IPv6 on the
// pod's lo stays, so programs that use [::1] or listen on "::" still work;
// IPv4 between pods is TestAttachBurst's and TestOneNode's.
func TestAttachTurnsIPv6Off(t *testing.T) {
	needRoot(t)
	host, pod := newNetNS(t, "host"), newNetNS(t, "pod")
	n := mustNew(t, testConfig(t, host, "10.244.1.0/24"))
	hostAddrs, podAddrs := watchAddrs(t, host), watchAddrs(t, pod)
	ip, err := n.Attach(context.Background(), "pod-1", pod)
	if err != nil {
		t.Fatal(err)
	}
	checkAttached(t, n, host, pod, "pod-1", ip)
	checkNoIPv6(t, host, pod, "pod-1")
	if v := sysctlIn(t, host, "net/ipv6/conf/"+n.cfg.Bridge+"/disable_ipv6"); v != "1" {
		t.Errorf("bridge %s: disable_ipv6 is %s, want 1", n.cfg.Bridge, v)
	}

	// IPv6 was off before either end had a carrier: neither ever had an
	// address, so neither sent a duplicate-address probe, an MLD report
	// or a router solicitation. (Turned off after eth0 went up, it races
	// the kernel's link watch, which adds the link-local addresses a
	// moment later: this catches the times it loses.)
	hostVeth, _ := vethNames("pod-1")
	for _, c := range []struct {
		w    *addrWatch
		link string
	}{{hostAddrs, hostVeth}, {podAddrs, podIfName}} {
		l, err := c.w.h.LinkByName(c.link)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range c.w.v6Added() {
			if a.LinkIndex == l.Attrs().Index {
				t.Errorf("%s had IPv6 address %s during the attach, want none ever", c.link, &a.LinkAddress)
			}
		}
	}

	echoOnce(t, pod, "tcp6", "[::1]:0", "::1")
	// A dual-stack listener (what "::" or ":port" gives Go, Java, nginx).
	echoOnce(t, pod, "tcp", "[::]:0", "::1", "127.0.0.1", ip.String())
}

// addrWatch records every IPv6 address a namespace announces from the
// moment it is called.
type addrWatch struct {
	t    *testing.T
	path string
	h    *netlink.Handle

	mu     sync.Mutex
	added  []netlink.AddrUpdate
	marked bool
}

// addrMarker is put on lo and taken off to know that every earlier
// address event has arrived: a namespace's events arrive in order.
var addrMarker = &net.IPNet{IP: net.IPv4(192, 0, 2, 1).To4(), Mask: net.CIDRMask(32, 32)}

func watchAddrs(t *testing.T, path string) *addrWatch {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ch := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeAt(ns, ch, done); err != nil {
		t.Fatalf("subscribe to the addresses of %s: %v", path, err)
	}
	w := &addrWatch{t: t, path: path, h: handleIn(t, path)}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for u := range ch {
			w.mu.Lock()
			switch {
			case u.NewAddr && u.LinkAddress.IP.Equal(addrMarker.IP):
				w.marked = true
			case u.NewAddr && u.LinkAddress.IP.To4() == nil:
				w.added = append(w.added, u)
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	return w
}

// v6Added returns every IPv6 address added in the namespace so far.
func (w *addrWatch) v6Added() []netlink.AddrUpdate {
	w.t.Helper()
	lo, err := w.h.LinkByName("lo")
	if err != nil {
		w.t.Fatal(err)
	}
	marker := &netlink.Addr{IPNet: addrMarker}
	if err := w.h.AddrAdd(lo, marker); err != nil {
		w.t.Fatalf("marker address in %s: %v", w.path, err)
	}
	_ = w.h.AddrDel(lo, marker)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		if w.marked {
			w.marked = false
			out := append([]netlink.AddrUpdate(nil), w.added...)
			w.mu.Unlock()
			return out
		}
		w.mu.Unlock()
		if time.Now().After(deadline) {
			w.t.Fatalf("the address events of %s did not arrive", w.path)
		}
		<-tick.C
	}
}

// TestAttachTurnsIPv6OffOnAttachedPods re-attaches a pod whose veth has
// IPv6 on (as an older worker left it, link-local addresses and all): the
// attach turns it off and the addresses go.
func TestAttachTurnsIPv6OffOnAttachedPods(t *testing.T) {
	needRoot(t)
	host, pod := newNetNS(t, "host"), newNetNS(t, "pod")
	n := mustNew(t, testConfig(t, host, "10.244.1.0/24"))
	ip, err := n.Attach(context.Background(), "pod-1", pod)
	if err != nil {
		t.Fatal(err)
	}
	hostVeth, _ := vethNames("pod-1")
	writeSysctlIn(t, host, "net/ipv6/conf/"+hostVeth+"/disable_ipv6", "0")
	writeSysctlIn(t, pod, "net/ipv6/conf/"+podIfName+"/disable_ipv6", "0")
	ph := handleIn(t, pod)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		eth0, err := ph.LinkByName(podIfName)
		if err != nil {
			t.Fatal(err)
		}
		if addrs, _ := ph.AddrList(eth0, netlink.FAMILY_V6); len(addrs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("eth0 got no IPv6 link-local address after IPv6 was turned back on")
		}
		<-tick.C
	}
	again, err := n.Attach(context.Background(), "pod-1", pod)
	if err != nil || !again.Equal(ip) {
		t.Fatalf("attaching an attached pod: %s %v, want %s", again, err, ip)
	}
	checkAttached(t, n, host, pod, "pod-1", ip)
	checkNoIPv6(t, host, pod, "pod-1")
}

// TestAttachWithoutIPv6OnTheLink attaches with an MTU under IPv6's minimum
// (1280): the kernel then has no IPv6 on the veth at all, no
// net.ipv6.conf.<link> to write, as on a kernel booted with ipv6.disable=1;
// the attach goes on without it.
func TestAttachWithoutIPv6OnTheLink(t *testing.T) {
	needRoot(t)
	host, p1, p2 := newNetNS(t, "host"), newNetNS(t, "p1"), newNetNS(t, "p2")
	cfg := testConfig(t, host, "10.244.1.0/24")
	cfg.MTU = 1200
	n := mustNew(t, cfg)
	var ips []net.IP
	for i, p := range []string{p1, p2} {
		uid := fmt.Sprintf("pod-%d", i)
		ip, err := n.Attach(context.Background(), uid, p)
		if err != nil {
			t.Fatal(err)
		}
		checkAttached(t, n, host, p, uid, ip)
		eth0, err := handleIn(t, p).LinkByName(podIfName)
		if err != nil {
			t.Fatal(err)
		}
		if addrs, _ := handleIn(t, p).AddrList(eth0, netlink.FAMILY_V6); len(addrs) != 0 {
			t.Errorf("%s: eth0 has IPv6 addresses %v", uid, addrs)
		}
		ips = append(ips, ip)
	}
	whoAmIServer(t, p2, ips[1].String()+":8080")
	if from := askFrom(t, p1, ips[1].String()+":8080"); from != ips[0].String() {
		t.Errorf("pod-1 saw pod-0 as %s, want %s", from, ips[0])
	}
}

// BenchmarkAttachDuringTeardown attaches 6 pods while 20 others are torn
// down at once (Detach, then the namespace released, as a worker removes
// a pod), as a rollout on a node does: the attaches' mean time
// (ms/attach) is what the teardown makes new pods wait, mostly for the
// RTNL lock. Root; e.g. go test -run '^$' -bench AttachDuringTeardown
// -benchtime 5x ./worker/podnet.
func BenchmarkAttachDuringTeardown(b *testing.B) {
	needRoot(b)
	host := newNetNS(b, "host")
	n := mustNew(b, testConfig(b, host, "10.244.0.0/16"))
	const old, fresh = 20, 6
	var total time.Duration
	for i := range b.N {
		b.StopTimer()
		olds := make([]string, old)
		for j := range olds {
			olds[j] = newNetNS(b, fmt.Sprintf("o%d-%d", i, j))
			if _, err := n.Attach(context.Background(), fmt.Sprintf("old-%d-%d", i, j), olds[j]); err != nil {
				b.Fatal(err)
			}
		}
		news := make([]string, fresh)
		for j := range news {
			news[j] = newNetNS(b, fmt.Sprintf("n%d-%d", i, j))
		}
		b.StartTimer()
		var wg sync.WaitGroup
		for j, p := range olds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.Detach(fmt.Sprintf("old-%d-%d", i, j), p); err != nil {
					b.Error(err)
				}
				endNetNS(b, p)
			}()
		}
		took := make([]time.Duration, fresh)
		for j, p := range news {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				if _, err := n.Attach(context.Background(), fmt.Sprintf("new-%d-%d", i, j), p); err != nil {
					b.Error(err)
				}
				took[j] = time.Since(t0)
			}()
		}
		wg.Wait()
		for _, d := range took {
			total += d
		}
		b.StopTimer()
		for j, p := range news {
			if err := n.Detach(fmt.Sprintf("new-%d-%d", i, j), p); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N*fresh), "ms/attach")
}
