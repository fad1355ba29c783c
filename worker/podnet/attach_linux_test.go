package podnet

import (
	"context"
	"fmt"
	"net"
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
