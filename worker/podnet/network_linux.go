package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podIfName is the pod's interface in its network namespace.
const podIfName = "eth0"

// Network is a node's pod network. Create it with New, call Setup once
// (and again whenever in doubt: it is idempotent), then Attach and Detach
// pods. Safe for concurrent use.
type Network struct {
	cfg     Config
	log     *slog.Logger
	podCIDR *net.IPNet
	cluster *net.IPNet
	gw      net.IP
	mtu     int

	hostNS netns.NsHandle
	h      *netlink.Handle
	ipam   *Allocator

	// mu serialises the changes to the node's shared parts (bridge,
	// routes, table); pods are attached in parallel.
	mu     sync.Mutex
	closed bool
	setUp  bool // Setup succeeded once
}

// New opens the network's allocations and a netlink handle in its
// namespace. It changes nothing on the host: Setup does.
func New(cfg Config) (_ *Network, retErr error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Network{cfg: cfg, log: cfg.Logger.With("component", "podnet")}
	n.podCIDR, _ = parseCIDR(cfg.PodCIDR)
	n.cluster, _ = parseCIDR(cfg.ClusterCIDR)
	n.gw = Gateway(n.podCIDR)
	var closers []func()
	defer func() {
		if retErr != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	var err error
	if cfg.NetNS == "" {
		n.hostNS, err = netns.GetFromPath("/proc/self/ns/net")
	} else {
		n.hostNS, err = netns.GetFromPath(cfg.NetNS)
	}
	if err != nil {
		return nil, fmt.Errorf("pod network: open the node's network namespace %q: %w", cfg.NetNS, err)
	}
	closers = append(closers, func() { n.hostNS.Close() })
	if n.h, err = netlink.NewHandleAt(n.hostNS); err != nil {
		return nil, fmt.Errorf("pod network: netlink: %w", err)
	}
	closers = append(closers, n.h.Close)
	n.mtu = cfg.MTU
	if n.mtu == 0 {
		n.mtu = defaultRouteMTU(n.h)
	}
	if n.ipam, err = OpenAllocator(cfg.PodCIDR, cfg.StateFile); err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	return n, nil
}

// Gateway is the bridge's address: the first host of the pod CIDR, the
// pods' default route.
func (n *Network) Gateway() net.IP { return append(net.IP(nil), n.gw...) }

// PodCIDR is the node's pod CIDR.
func (n *Network) PodCIDR() *net.IPNet { return n.ipam.CIDR() }

// MTU is the MTU of the bridge and the pods' interfaces.
func (n *Network) MTU() int { return n.mtu }

// Setup makes the node's side of the network exist: IP forwarding on, the
// bridge up with the gateway address, and the nftables table (masquerade
// pod traffic that leaves the cluster CIDR, accept forwarding to and from
// the bridge), rebuilt as a whole in one batch.
func (n *Network) Setup() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := inNS(n.hostNS, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable IP forwarding: %w", err)
		}
		// Bridged traffic goes through the ip family's hooks, so Service
		// rules (DNAT) also see pod-to-pod traffic on one bridge. Without
		// br_netfilter in the kernel the file does not exist.
		err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1"), 0o644)
		if errors.Is(err, os.ErrNotExist) {
			n.log.Warn("net.bridge.bridge-nf-call-iptables is missing (no br_netfilter): Service rules will not see traffic between pods of one node")
		} else if err != nil {
			return fmt.Errorf("set net.bridge.bridge-nf-call-iptables: %w", err)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("pod network setup: %w", err)
	}
	br, err := n.ensureBridge()
	if err != nil {
		return fmt.Errorf("pod network setup: %w", err)
	}
	// The bridge is IPv4 only too, as the veths are (see disableIPv6).
	if err := inNS(n.hostNS, func() error { return writeDisableIPv6(br.Attrs().Name) }); err != nil {
		return fmt.Errorf("pod network setup: %w", err)
	}
	if err := n.writeTable(); err != nil {
		return fmt.Errorf("pod network setup: %w", err)
	}
	if !n.setUp {
		n.setUp = true
		n.log.Info("pod network set up", "bridge", br.Attrs().Name, "gateway", n.gw, "pod_cidr", n.podCIDR, "cluster_cidr", n.cluster, "mtu", n.mtu)
	}
	return nil
}

func (n *Network) ensureBridge() (netlink.Link, error) {
	name := n.cfg.Bridge
	l, err := n.h.LinkByName(name)
	switch {
	case isLinkNotFound(err):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.mtu, TxQLen: -1}}
		if err := n.h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = n.h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	case l.Type() != "bridge":
		return nil, fmt.Errorf("%s exists and is a %s, not a bridge: choose another bridge name", name, l.Type())
	}
	if l.Attrs().MTU != n.mtu {
		if err := n.h.LinkSetMTU(l, n.mtu); err != nil {
			return nil, fmt.Errorf("set the MTU of %s: %w", name, err)
		}
	}
	ones, _ := n.podCIDR.Mask.Size()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.gw, Mask: net.CIDRMask(ones, 32)}}
	if err := n.h.AddrReplace(l, addr); err != nil {
		return nil, fmt.Errorf("add %s to %s: %w", addr.IPNet, name, err)
	}
	// An address of an earlier pod CIDR would route some of the cluster's
	// pods into this bridge.
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return n.h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if !a.IP.Equal(n.gw) {
			n.log.Info("removing a stale address from the bridge", "bridge", name, "addr", a.IPNet)
			if err := n.h.AddrDel(l, &a); err != nil {
				return nil, fmt.Errorf("remove %s from %s: %w", a.IPNet, name, err)
			}
		}
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	return l, nil
}

// writeTable replaces the package's nftables table in one transaction:
// add (so the delete cannot fail), delete, add again with every chain and
// rule, so no moment exists without the rules or with two copies.
func (n *Network) writeTable() error {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.hostNS)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	// ip saddr <pod CIDR> ip daddr != <cluster CIDR> masquerade
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: n.podCIDR.Mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.podCIDR.IP.To4()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: n.cluster.Mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: n.cluster.IP.To4()},
		&expr.Counter{},
		&expr.Masq{},
	}})
	policy := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(n.cfg.Bridge)},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table %s: %w", TableName, err)
	}
	return nil
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// Attach connects the pod whose network namespace is pinned at netnsPath:
// it allocates the pod's address (the same one again for the same pod),
// creates a veth pair whose host end is a port of the bridge (with hairpin
// on, so a pod reaches itself through a Service) and whose other end is
// eth0 in the pod, with the address, the MTU and a default route via the
// gateway, and IPv6 off on both ends (see disableIPv6); loopback is set
// up too. Attaching an attached pod checks and repairs its configuration.
func (n *Network) Attach(ctx context.Context, podUID, netnsPath string) (_ net.IP, retErr error) {
	if netnsPath == "" {
		return nil, fmt.Errorf("attach pod %s: no network namespace (hostNetwork pods are not attached)", podUID)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ip, err := n.ipam.Allocate(podUID)
	if err != nil {
		return nil, fmt.Errorf("attach pod %s: %w", podUID, err)
	}
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("attach pod %s: open its network namespace: %w", podUID, err)
	}
	defer podNS.Close()
	// Only rtnetlink is used in the pod: one socket, not one per family.
	ph, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("attach pod %s: netlink in its namespace: %w", podUID, err)
	}
	defer ph.Close()
	br, err := n.h.LinkByName(n.cfg.Bridge)
	if err != nil {
		return nil, fmt.Errorf("attach pod %s: bridge %s: %w (was Setup called?)", podUID, n.cfg.Bridge, err)
	}
	hostName, _ := vethNames(podUID)

	host, _ := n.h.LinkByName(hostName)
	pod, _ := ph.LinkByName(podIfName)
	paired := host != nil && pod != nil && host.Type() == "veth" &&
		host.Attrs().ParentIndex == pod.Attrs().Index && pod.Attrs().ParentIndex == host.Attrs().Index
	if !paired {
		// Whatever a failed earlier attempt left. Deleting either end of a
		// veth deletes both, so this also removes the pod end of an
		// earlier pair wherever it is and whatever its name (workers
		// before this one moved it in from the host as tmpName).
		for _, del := range []struct {
			h     *netlink.Handle
			name  string
			found bool
		}{{n.h, hostName, host != nil}, {ph, podIfName, pod != nil}} {
			if !del.found {
				continue
			}
			if l, err := del.h.LinkByName(del.name); err == nil {
				if err := del.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
					return nil, fmt.Errorf("attach pod %s: remove stale %s: %w", podUID, del.name, err)
				}
			}
		}
		// One request creates the pair with the pod end already in the
		// pod's namespace, named eth0 (the bridge port is set right after
		// it by LinkAdd). Moving the pod end in
		// afterwards is what made a burst of attaches slow: the kernel
		// waits for RCU grace periods (synchronize_net, rcu_barrier)
		// while it holds the RTNL lock, so every other pod's netlink
		// change waited behind each move (20 pods attached at once took
		// ~350 ms, ~18 ms each, against ~25 ms in all this way).
		defer func() {
			// Also after a LinkAdd that failed half-way (it sets the
			// bridge port in a second request).
			if retErr != nil {
				if l, err := n.h.LinkByName(hostName); err == nil {
					_ = n.h.LinkDel(l)
				}
			}
		}()
		// One queue each way, on both ends, asked for explicitly: a veth
		// created without a count gets one per possible CPU, and the
		// kernel then cuts it down to one (the veth's default) with an
		// expedited RCU grace period per end while it holds the RTNL
		// lock (veth_init_queues); every other pod's netlink change and
		// namespace waited behind those in a burst.
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: hostName, MTU: n.mtu, TxQLen: -1, MasterIndex: br.Attrs().Index,
				NumTxQueues: 1, NumRxQueues: 1},
			PeerName: podIfName, PeerNamespace: netlink.NsFd(int(podNS)),
		}
		if err := n.h.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("attach pod %s: create veth %s: %w", podUID, hostName, err)
		}
		// LinkAdd filled in the host end's index; its master and MTU are
		// what was asked for. Every lookup saved is a wait less
		// on the RTNL lock in a burst.
		host = veth
		if host.Attrs().Index == 0 {
			if host, err = n.h.LinkByName(hostName); err != nil {
				return nil, fmt.Errorf("attach pod %s: %w", podUID, err)
			}
		}
		if pod, err = ph.LinkByName(podIfName); err != nil {
			return nil, fmt.Errorf("attach pod %s: veth peer in the pod: %w", podUID, err)
		}
	}

	// The rest is idempotent: it repairs an attached pod as well.
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.h.LinkSetMaster(host, br); err != nil {
			return nil, fmt.Errorf("attach pod %s: add %s to bridge %s: %w", podUID, hostName, n.cfg.Bridge, err)
		}
	}
	if err := n.h.LinkSetHairpin(host, true); err != nil {
		return nil, fmt.Errorf("attach pod %s: hairpin on %s: %w", podUID, hostName, err)
	}
	if pod.Attrs().MTU != n.mtu {
		if err := ph.LinkSetMTU(pod, n.mtu); err != nil {
			return nil, fmt.Errorf("attach pod %s: MTU: %w", podUID, err)
		}
	}
	ones, _ := n.podCIDR.Mask.Size()
	if err := ph.AddrReplace(pod, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(ones, 32)}}); err != nil {
		return nil, fmt.Errorf("attach pod %s: address %s: %w", podUID, ip, err)
	}
	// Before eth0 goes up: until then neither end is operational (the
	// host end has no carrier), so the kernel has given neither an IPv6
	// address nor sent a duplicate-address probe, an MLD report or a
	// router solicitation. On an attached pod this removes the addresses
	// an older worker left.
	if err := n.disableIPv6(podNS, hostName); err != nil {
		return nil, fmt.Errorf("attach pod %s: %w", podUID, err)
	}
	// The pod end goes up first, then the host end: the pair gets its
	// carrier as both are up. A host end up without a carrier (created up,
	// or up before the pod end) has the kernel stop its queues when it
	// handles the carrier change, with an expedited RCU grace period
	// under the RTNL lock (dev_deactivate); the netlink library's own
	// lookup right after LinkAdd handled it at once, and a burst's
	// attaches queued behind those.
	if err := ph.LinkSetUp(pod); err != nil {
		return nil, fmt.Errorf("attach pod %s: set %s up: %w", podUID, podIfName, err)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		if err := n.h.LinkSetUp(host); err != nil {
			return nil, fmt.Errorf("attach pod %s: set %s up: %w", podUID, hostName, err)
		}
	}
	// The runtime usually has set lo up already.
	if lo, err := ph.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := ph.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("attach pod %s: set lo up: %w", podUID, err)
		}
	}
	def := &netlink.Route{LinkIndex: pod.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: n.gw}
	if err := ph.RouteReplace(def); err != nil {
		return nil, fmt.Errorf("attach pod %s: default route via %s: %w", podUID, n.gw, err)
	}
	if !paired {
		n.log.Debug("pod attached", "pod_uid", podUID, "ip", ip, "veth", hostName)
	}
	return ip, nil
}

// Detach disconnects a pod and releases its address. Detaching a detached
// pod is a no-op.
//
// netnsPath is the pod's network namespace, which the caller is about to
// release (the sandbox's removal unlinks its pin, and with it every copy
// in the shims' mount namespaces): Detach then only takes the addresses
// off the pod's eth0, so that nothing answers for the address it
// releases, and leaves the veth pair to end with the namespace. The
// kernel deletes the devices of the namespaces that end together in one
// batch, while deleting a veth by itself holds the RTNL lock over several
// RCU grace periods (unregister_netdevice, the bridge port's handler):
// 20 pods detached at once held it about 430 ms here, and pods attaching
// meanwhile, a rollout's new pods, waited as long; through their
// namespaces' end the 20 pairs were gone after 50-60 ms and the attaches
// took 2-9 ms. With netnsPath "", a namespace that is gone, or no eth0 of
// ours in it, the pair is deleted by name.
func (n *Network) Detach(podUID, netnsPath string) error {
	hostName, tmpName := vethNames(podUID)
	if netnsPath != "" {
		left, err := n.unaddress(netnsPath)
		if err != nil {
			return fmt.Errorf("detach pod %s: %w", podUID, err)
		}
		if left {
			return n.ipam.Release(podUID)
		}
	}
	found := false
	for _, name := range []string{hostName, tmpName} {
		l, err := n.h.LinkByName(name)
		if isLinkNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("detach pod %s: %w", podUID, err)
		}
		found = true
		if err := n.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
			return fmt.Errorf("detach pod %s: delete %s: %w", podUID, name, err)
		}
	}
	if !found && netnsPath != "" {
		// The host end may be gone while the pod's is not (a half-done
		// Attach moved it): delete it there.
		if podNS, err := netns.GetFromPath(netnsPath); err == nil {
			if ph, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE); err == nil {
				for _, name := range []string{podIfName, tmpName} {
					if l, err := ph.LinkByName(name); err == nil && l.Type() == "veth" {
						_ = ph.LinkDel(l)
					}
				}
				ph.Close()
			}
			podNS.Close()
		}
	}
	return n.ipam.Release(podUID)
}

// unaddress removes the IPv4 addresses of the veth eth0 in the namespace at
// netnsPath, and tells whether there was one to leave to the namespace's
// end. Removing an address takes no grace period, unlike taking the link
// down or deleting it.
func (n *Network) unaddress(netnsPath string) (bool, error) {
	podNS, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return false, nil // gone: nothing is left in it
	}
	defer podNS.Close()
	ph, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("netlink in its namespace: %w", err)
	}
	defer ph.Close()
	l, err := ph.LinkByName(podIfName)
	if isLinkNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if l.Type() != "veth" {
		return false, nil
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return ph.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return false, fmt.Errorf("list the addresses of %s: %w", podIfName, err)
	}
	for _, a := range addrs {
		if err := ph.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return false, fmt.Errorf("remove %s from %s: %w", a.IPNet, podIfName, err)
		}
	}
	return true, nil
}

// Allocations returns the address of every pod that holds one, by pod UID,
// so the caller can release those of pods that are gone.
func (n *Network) Allocations() (map[string]net.IP, error) {
	return n.ipam.Allocations(), nil
}

// SetRoutes makes the routes this package installs (marked with
// RouteProtocol) exactly routes: others' routes are never touched. Routes
// into the node's own pod CIDR are refused. It goes on past a route that
// fails (a gateway not reachable yet) and reports every failure.
func (n *Network) SetRoutes(routes []Route) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	want := map[string]Route{}
	var errs []error
	for _, r := range routes {
		if r.CIDR == nil || r.CIDR.IP.To4() == nil || r.Via.To4() == nil {
			errs = append(errs, fmt.Errorf("route %v: only IPv4 CIDRs via IPv4 addresses", r))
			continue
		}
		dst := &net.IPNet{IP: r.CIDR.IP.To4().Mask(r.CIDR.Mask), Mask: r.CIDR.Mask}
		if dst.Contains(n.podCIDR.IP) || n.podCIDR.Contains(dst.IP) {
			errs = append(errs, fmt.Errorf("route %v overlaps this node's pod CIDR %s", r, n.podCIDR))
			continue
		}
		want[dst.String()] = Route{CIDR: dst, Via: r.Via.To4()}
	}
	have, err := n.ownRoutes()
	if err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	for _, r := range have {
		if w, ok := want[r.Dst.String()]; ok && w.Via.Equal(r.Gw) {
			delete(want, r.Dst.String())
			continue
		}
		if err := n.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s via %s: %w", r.Dst, r.Gw, err))
		}
	}
	for _, w := range want {
		r := &netlink.Route{Dst: w.CIDR, Gw: w.Via, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
		if err := n.h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", w, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("set pod routes: %w", err)
	}
	return nil
}

// Routes returns the routes SetRoutes installed.
func (n *Network) Routes() ([]Route, error) {
	have, err := n.ownRoutes()
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(have))
	for _, r := range have {
		out = append(out, Route{CIDR: r.Dst, Via: r.Gw})
	}
	return out, nil
}

func (n *Network) ownRoutes() ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
}

// Teardown removes the network for good: its routes, every pod veth on
// the bridge, the bridge, the nftables table, and every allocation.
func (n *Network) Teardown() error {
	var errs []error
	if err := n.SetRoutes(nil); err != nil {
		errs = append(errs, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	links, err := retryDump(n.h.LinkList)
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, vethPrefix) {
			if err := n.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
				errs = append(errs, fmt.Errorf("delete %s: %w", l.Attrs().Name, err))
			}
		}
	}
	if l, err := n.h.LinkByName(n.cfg.Bridge); err == nil && l.Type() == "bridge" {
		if err := n.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", n.cfg.Bridge, err))
		}
	}
	if c, err := nftables.New(nftables.WithNetNSFd(int(n.hostNS))); err != nil {
		errs = append(errs, err)
	} else {
		t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
		c.AddTable(t)
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("delete nftables table %s: %w", TableName, err))
		}
	}
	if err := n.ipam.ReleaseAll(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod network teardown: %w", err)
	}
	n.log.Info("pod network removed", "bridge", n.cfg.Bridge)
	return nil
}

// Close releases the network's handles and its allocation file; the
// network itself stays (pods keep running).
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.h.Close()
	err := n.ipam.Close()
	n.hostNS.Close()
	return err
}

// vethNames returns the name of the host end of a pod's veth and the
// temporary name of its pod end (before it becomes eth0 in the pod).
func vethNames(podUID string) (host, tmp string) {
	sum := sha256.Sum256([]byte(podUID))
	h := hex.EncodeToString(sum[:])[:11]
	return vethPrefix + h, "skt" + h
}

// inNS runs f on a locked OS thread inside the network namespace ns, and
// moves the thread back to the namespace it came from before unlocking
// it. A thread must not be left in a pod's namespace when its goroutine
// ends: Go ends such a thread, but never the main thread, which it parks
// for good instead, and a main thread parked in a pod's namespace would
// hold that namespace, and its veth, for the worker's life. A thread that
// cannot go back stays locked, and Go retires it.
func inNS(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the network namespace: %w", err)
			return
		}
		ferr := f()
		if unix.Setns(int(orig), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// InNetNS runs f on an OS thread inside the network namespace pinned at
// path; the thread goes back to its own namespace afterwards (see inNS).
// Sockets f creates stay in that namespace, and work from any thread.
func InNetNS(path string, f func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	return inNS(ns, f)
}

// disableIPv6 turns IPv6 off on the host end of a pod's veth (in the
// node's namespace) and on eth0 (in the pod's), as Docker does on an
// IPv4-only network. The pod network is IPv4 only, yet the kernel would
// give both ends a link-local address, and its duplicate-address probes,
// MLD reports and router solicitations are multicast that the bridge
// copies to every port (in a 70-pod test, 470 packets became 25,618
// deliveries); it would also be a path between pods (fe80::) that the
// IPv4-only Service and masquerade rules never see. The pod's lo keeps
// IPv6, so [::1] and dual-stack listeners work inside the pod.
//
// A sysctl of another namespace can only be written from a thread inside
// it (netlink cannot set this one), so one thread does both (inNS).
func (n *Network) disableIPv6(podNS netns.NsHandle, hostVeth string) error {
	return inNS(n.hostNS, func() error {
		if err := writeDisableIPv6(hostVeth); err != nil {
			return err
		}
		if err := unix.Setns(int(podNS), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("turn IPv6 off on %s: enter the pod's network namespace: %w", podIfName, err)
		}
		return writeDisableIPv6(podIfName)
	})
}

// writeDisableIPv6 sets net.ipv6.conf.<ifName>.disable_ipv6 to 1 in the
// calling thread's network namespace. A missing file means the kernel has
// no IPv6 (ipv6.disable=1) or the link has none (an MTU under 1280):
// there is nothing to turn off.
func writeDisableIPv6(ifName string) error {
	f, err := os.OpenFile("/proc/sys/net/ipv6/conf/"+ifName+"/disable_ipv6", os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		_, err = f.Write([]byte("1"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("turn IPv6 off on %s: set net.ipv6.conf.%s.disable_ipv6: %w", ifName, ifName, err)
	}
	return nil
}

// defaultRouteMTU is the MTU of the interface of the default route, or
// 1500.
func defaultRouteMTU(h *netlink.Handle) int {
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return 1500
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex == 0 {
			continue
		}
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU >= 576 {
			return l.Attrs().MTU
		}
	}
	return 1500
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// retryDump repeats a netlink dump that the kernel interrupted (the table
// changed while it was read).
func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 10 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
