package netproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// childEnv marks the copy of the test binary that runs inside a fresh
// network namespace; its value is the test to run there.
const childEnv = "SKIFF_NETPROXY_NETNS_TEST"

// inNetNS runs f in a copy of the test binary started in a new network
// namespace (CLONE_NEWNET). Every link, address, route, nftables table and
// socket the test makes lives in that namespace and dies with the child
// process, even if the test crashes: the host's own network is never
// touched. Only top-level tests can use it.
func inNetNS(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		mustBeFreshNetNS(t)
		f(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count=1", "-test.v"}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("the test in its own network namespace failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the child did not run %s", t.Name())
	}
}

// mustBeFreshNetNS refuses to go on unless this process sits in a network
// namespace of its own (only lo), and brings lo up.
func mustBeFreshNetNS(t *testing.T) {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Fatalf("refusing to run: link %s exists, so this is not a fresh network namespace", l.Attrs().Name)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// peer is a network namespace inside the test's namespace, joined to it by
// a veth pair on its own /24: the node side is NET.1, the peer NET.2 with
// a default route through the node. Packets between peers are routed by
// the node, as pods' are.
type peer struct {
	name string
	ns   netns.NsHandle
	ip   string // NET.2
	gw   string // NET.1, the node's side
}

// newPeer makes a namespace named for logs; subnet is e.g. "10.77.1".
func newPeer(t *testing.T, name, subnet string) *peer {
	t.Helper()
	ns, err := inThread(netns.None(), func() (netns.NsHandle, error) { return netns.New() })
	if err != nil {
		t.Fatalf("new network namespace for %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	p := &peer{name: name, ns: ns, ip: subnet + ".2", gw: subnet + ".1"}

	host := "v-" + name
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth for %s: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(host); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	hl, err := netlink.LinkByName(host)
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, nil, hl, p.gw+"/24")
	if err := netlink.LinkSetUp(hl); err != nil {
		t.Fatal(err)
	}

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, n := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatalf("%s in %s: %v", n, name, err)
		}
		if n == "eth0" {
			mustAddr(t, h, l, p.ip+"/24")
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.RouteAdd(&netlink.Route{Gw: net.ParseIP(p.gw)}); err != nil {
		t.Fatalf("default route in %s: %v", name, err)
	}
	return p
}

// defaultRoute routes the test namespace's unknown destinations to gw.
func defaultRoute(t *testing.T, gw string) {
	t.Helper()
	if err := netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("default route via %s: %v", gw, err)
	}
}

func mustAddr(t *testing.T, h *netlink.Handle, l netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		err = netlink.AddrAdd(l, a)
	} else {
		err = h.AddrAdd(l, a)
	}
	if err != nil {
		t.Fatalf("add %s to %s: %v", cidr, l.Attrs().Name, err)
	}
}

// inThread runs f on an OS thread that first joins ns (unless ns is
// netns.None()) and is then thrown away, so no other goroutine ever runs in
// a namespace it did not ask for. Sockets made by f stay in ns.
func inThread[T any](ns netns.NsHandle, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends with the goroutine.
		if ns != netns.None() {
			if err := netns.Set(ns); err != nil {
				var zero T
				ch <- result{zero, fmt.Errorf("setns: %w", err)}
				return
			}
		}
		v, err := f()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// serveName runs a TCP server in p's namespace on :port that writes the
// peer's name to every connection and closes it.
func (p *peer) serveName(t *testing.T, port int) {
	t.Helper()
	ln, err := inThread(p.ns, func() (net.Listener, error) { return net.Listen("tcp4", fmt.Sprintf(":%d", port)) })
	if err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, p.name+"\n")
			c.Close()
		}
	}()
}

// ask connects from p's namespace to addr and returns the first line it
// reads.
func (p *peer) ask(addr string) (string, error) {
	c, err := inThread(p.ns, func() (net.Conn, error) {
		return net.DialTimeout("tcp4", addr, 2*time.Second)
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}

// spread connects n times and counts the answers by name.
func (p *peer) spread(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, err := p.ask(addr)
		if err != nil {
			t.Fatalf("from %s to %s: %v", p.name, addr, err)
		}
		got[name]++
	}
	return got
}

// refused tells whether a connection from p to addr is refused at once.
func (p *peer) refused(addr string) bool {
	_, err := p.ask(addr)
	return err != nil && strings.Contains(err.Error(), unix.ECONNREFUSED.Error())
}
