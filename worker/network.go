package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/podnet"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// The pod network, as a kubelet with a bridge CNI plugin and flannel's
// host-gw backend would run it. With PodNetwork "bridge" the agent follows
// the Nodes (list, then watch, and a full resync every netResync): once its
// own Node has a spec.podCIDR (the leader's node IPAM controller assigns
// it after registration) it sets up the bridge, and from then on keeps a
// route to every other node's pod CIDR via that node's InternalIP. Pods
// that are not hostNetwork wait, Pending with their containers in
// ContainerCreating and a "network is not ready" message, until the
// network is up; each is attached (veth, IP) after its sandbox is created
// and before its containers start, and detached before its sandbox is
// removed. Hollow nodes create nothing: they give their pods addresses
// from an in-memory allocator over the pod CIDR once the Node has one.

// Pod network modes (Config.PodNetwork).
const (
	PodNetworkBridge = "bridge"
	PodNetworkNone   = "none"
)

const (
	// netResync is how often the agent lists the Nodes again and rebuilds
	// its routes and table, repairing whatever someone else changed.
	netResync = 30 * time.Second
	// netRetry bounds the wait before another setup attempt.
	netRetry = 2 * time.Second
	// netNotReady is the message of a pod that waits for the network.
	netNotReady = "network is not ready: the node's pod network is not set up yet (waiting for the node's spec.podCIDR)"
)

// ErrNoPodNetwork is returned by PodGateway when the node runs no pod
// network (PodNetwork "none", or a hollow node).
var ErrNoPodNetwork = errors.New("this node runs no pod network")

// podNetwork is the agent's side of the pod network.
type podNetwork struct {
	ready chan struct{} // closed once n is set up

	mu     sync.Mutex
	n      *podnet.Network
	cidr   string            // the node's pod CIDR once known
	hollow *podnet.Allocator // hollow nodes: in memory
	// routes is what SetRoutes was last given successfully.
	routes string
	// warnedCIDR is a pod CIDR change already complained about.
	warnedCIDR string
}

func newPodNetwork() *podNetwork { return &podNetwork{ready: make(chan struct{})} }

// podNetworkOn reports whether this agent gives pods their own network.
func (a *Agent) podNetworkOn() bool { return a.cfg.PodNetwork == PodNetworkBridge }

// needsNetwork reports whether pod must be attached to the bridge before
// its containers start.
func (a *Agent) needsNetwork(pod *pb.Pod) bool {
	return a.podNetworkOn() && !a.cfg.Hollow && !pod.GetSpec().GetHostNetwork()
}

// network returns the pod network once it is set up.
func (a *Agent) network() *podnet.Network {
	a.net.mu.Lock()
	defer a.net.mu.Unlock()
	return a.net.n
}

// PodCIDR is the node's pod CIDR, "" until the Node has one (and always
// with PodNetwork "none").
func (a *Agent) PodCIDR() string {
	a.net.mu.Lock()
	defer a.net.mu.Unlock()
	return a.net.cidr
}

// PodGateway waits until the pod network is set up and returns the
// gateway address: the bridge's, which every pod routes through and
// reaches the node on (a DNS server for the pods listens there).
func (a *Agent) PodGateway(ctx context.Context) (net.IP, error) {
	if !a.podNetworkOn() || a.cfg.Hollow {
		return nil, ErrNoPodNetwork
	}
	select {
	case <-a.net.ready:
		return a.network().Gateway(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// APIClient returns the agent's current client of the masters, waiting
// until a master is known. The client may be replaced when the set of
// masters changes: ask again rather than keeping it for long.
func (a *Agent) APIClient(ctx context.Context) (*client.Client, error) {
	return a.api.get(ctx)
}

// netLoop follows the Nodes until ctx ends: it sets the network up once
// the node has a pod CIDR and keeps the host-gw routes to the other nodes.
func (a *Agent) netLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		c, err := a.api.get(ctx)
		if err != nil {
			return
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		items, rv, err := c.List(lctx, "Node", client.ListOptions{Stale: true})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("list nodes for the pod network; retrying", "err", err, "in", backoff)
			}
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		nodes := map[string]*pb.Node{}
		for _, o := range items {
			if n := o.GetNode(); n != nil {
				nodes[n.GetMetadata().GetName()] = n
			}
		}
		a.netSync(nodes, true)
		// Watch until the next full resync; sooner while the network is
		// not up, so a failed setup is retried.
		window := netResync
		if a.network() == nil {
			window = netRetry
		}
		wctx, wcancel := context.WithTimeout(ctx, window)
		w, err := c.Watch(wctx, "Node", client.WatchOptions{ResourceVersion: rv, BookmarkSeconds: 60})
		if err != nil {
			wcancel()
			if ctx.Err() == nil && wctx.Err() == nil {
				a.log.Warn("watch nodes for the pod network; listing again", "err", err)
				sleep(ctx, backoff)
			}
			continue
		}
		for {
			ev, err := w.Next(wctx)
			if err != nil {
				break
			}
			n := ev.GetObject().GetNode()
			if n == nil {
				continue
			}
			if ev.GetType() == "DELETED" {
				delete(nodes, n.GetMetadata().GetName())
			} else {
				nodes[n.GetMetadata().GetName()] = n
			}
			a.netSync(nodes, false)
		}
		w.Close()
		wcancel()
	}
}

// netSync acts on the Nodes: sets the network up when this node's pod CIDR
// appears, and gives SetRoutes the other nodes' pod CIDRs when they
// changed (or always, with full, which also re-runs Setup and releases
// the addresses of pods that no longer have a sandbox).
func (a *Agent) netSync(nodes map[string]*pb.Node, full bool) {
	own := nodes[a.cfg.Name].GetSpec().GetPodCidr()
	n := a.network()
	if n == nil {
		if own == "" {
			return
		}
		var err error
		if n, err = a.setupNetwork(own); err != nil {
			a.log.Error("set up the pod network; retrying", "pod_cidr", own, "err", err)
			return
		}
		full = true
	} else if full {
		if err := n.Setup(); err != nil {
			a.log.Warn("repair the pod network", "err", err)
		}
		a.releaseLeaked(n)
	}
	a.net.mu.Lock()
	if own != "" && own != a.net.cidr && own != a.net.warnedCIDR {
		a.net.warnedCIDR = own
		a.log.Warn("the node's pod CIDR changed; the pod network keeps the one it was set up with until the worker restarts",
			"was", a.net.cidr, "now", own)
	}
	a.net.mu.Unlock()

	routes := nodeRoutes(a.cfg.Name, nodes, n.PodCIDR())
	key := fmt.Sprint(routes)
	a.net.mu.Lock()
	same := key == a.net.routes
	a.net.mu.Unlock()
	if same && !full {
		return
	}
	err := n.SetRoutes(routes)
	a.net.mu.Lock()
	if err == nil {
		if key != a.net.routes {
			a.log.Info("pod routes", "routes", key)
		}
		a.net.routes = key
	} else {
		a.net.routes = "" // retried on the next change or resync
	}
	a.net.mu.Unlock()
	if err != nil {
		a.log.Warn("set routes to other nodes' pods", "err", err)
	}
}

// nodeRoutes returns a host-gw route to every other node that has a pod
// CIDR and an InternalIP, sorted. Nodes whose CIDR overlaps this node's
// are left out (SetRoutes would refuse them).
func nodeRoutes(self string, nodes map[string]*pb.Node, own *net.IPNet) []podnet.Route {
	var out []podnet.Route
	for name, n := range nodes {
		if name == self {
			continue
		}
		_, cidr, err := net.ParseCIDR(n.GetSpec().GetPodCidr())
		if err != nil || cidr.IP.To4() == nil {
			continue
		}
		if own != nil && (own.Contains(cidr.IP) || cidr.Contains(own.IP)) {
			continue
		}
		var via net.IP
		for _, addr := range n.GetStatus().GetAddresses() {
			if addr.GetType() == "InternalIP" {
				if ip := net.ParseIP(addr.GetAddress()); ip != nil && ip.To4() != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
					via = ip.To4()
					break
				}
			}
		}
		if via == nil {
			continue
		}
		out = append(out, podnet.Route{CIDR: cidr, Via: via})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CIDR.String() < out[j].CIDR.String() })
	return out
}

// setupNetwork creates and sets up the pod network over cidr, releases
// the addresses of pods whose sandbox is gone, and lets the pods go.
func (a *Agent) setupNetwork(cidr string) (*podnet.Network, error) {
	cfg := podnet.DefaultConfig()
	cfg.PodCIDR = cidr
	cfg.ClusterCIDR = a.cfg.ClusterCIDR
	cfg.Bridge = a.cfg.Bridge
	cfg.StateFile = filepath.Join(a.cfg.DataDir, "podnet.db")
	cfg.NetNS = a.cfg.podNetNS
	cfg.Logger = a.log
	n, err := podnet.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.Setup(); err != nil {
		n.Close()
		return nil, err
	}
	// Before any pod worker attaches: whatever the allocations hold for a
	// pod without a sandbox leaked (a crash between removing the sandbox
	// and releasing its address).
	a.releaseLeaked(n)
	a.net.mu.Lock()
	a.net.n, a.net.cidr = n, cidr
	a.net.mu.Unlock()
	close(a.net.ready)
	return n, nil
}

// releaseLeaked releases the address of every pod that has no sandbox.
// Allocations are read before the sandboxes: a pod is attached only after
// its sandbox exists and detached before it is removed, so an allocation
// without a sandbox at the later read is a leak.
func (a *Agent) releaseLeaked(n *podnet.Network) {
	allocs, err := n.Allocations()
	if err != nil || len(allocs) == 0 {
		return
	}
	sbs, err := a.rt.ListSandboxes()
	if err != nil {
		a.log.Warn("list sandboxes to release leaked pod IPs", "err", err)
		return
	}
	has := map[string]bool{}
	for _, sb := range sbs {
		has[sb.PodUID] = true
	}
	for uid, ip := range allocs {
		if has[uid] {
			continue
		}
		if err := n.Detach(uid, ""); err != nil {
			a.log.Warn("release a leaked pod IP", "pod_uid", uid, "ip", ip, "err", err)
			continue
		}
		a.log.Info("released the IP of a pod that no longer has a sandbox", "pod_uid", uid, "ip", ip)
	}
}

// hollowCIDRLoop learns a hollow node's pod CIDR by reading its Node, ever
// less often, until it has one.
func (a *Agent) hollowCIDRLoop(ctx context.Context) {
	wait := 500 * time.Millisecond
	for sleep(ctx, wait) {
		wait = min(2*wait, 30*time.Second)
		c := a.api.current()
		if c == nil {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		obj, err := c.Get(gctx, "Node", "", a.cfg.Name, client.ReadOptions{Stale: true})
		cancel()
		if err != nil {
			continue
		}
		cidr := obj.GetNode().GetSpec().GetPodCidr()
		if cidr == "" {
			continue
		}
		alloc, err := podnet.NewAllocator(cidr)
		if err != nil {
			a.log.Warn("hollow pod IPs", "pod_cidr", cidr, "err", err)
			return
		}
		a.net.mu.Lock()
		a.net.hollow, a.net.cidr = alloc, cidr
		a.net.mu.Unlock()
		a.pods.wakeAll() // pods that run without an address get one now
		return
	}
}

// hollowIP gives a hollow pod an address once the node has a pod CIDR.
func (a *Agent) hollowIP(uid string) net.IP {
	a.net.mu.Lock()
	alloc := a.net.hollow
	a.net.mu.Unlock()
	if alloc == nil {
		return nil
	}
	ip, err := alloc.Allocate(uid)
	if err != nil {
		return nil
	}
	return ip
}

func (a *Agent) releaseHollowIP(uid string) {
	a.net.mu.Lock()
	alloc := a.net.hollow
	a.net.mu.Unlock()
	if alloc != nil {
		_ = alloc.Release(uid)
	}
}

// teardownNetwork removes the pod network for good (StopPodsOnExit).
func (a *Agent) teardownNetwork() {
	if n := a.network(); n != nil {
		if err := n.Teardown(); err != nil {
			a.log.Warn("remove the pod network", "err", err)
		}
	}
}

func (a *Agent) closeNetwork() {
	if n := a.network(); n != nil {
		if err := n.Close(); err != nil {
			a.log.Warn("close the pod network", "err", err)
		}
	}
}

// Pod /etc files: every container of a pod with its own network gets
// /etc/hosts (localhost and the pod's hostname -> its IP) and
// /etc/resolv.conf (the DNS server on the gateway, Kubernetes' search
// path); hostNetwork pods get a copy of the node's /etc/resolv.conf. They
// are written into the pod's directory and bind-mounted read-only, unless
// a container mounts a volume on that path itself.

const (
	etcHosts  = "/etc/hosts"
	etcResolv = "/etc/resolv.conf"
)

// clusterDomain is the DNS domain of the cluster.
const clusterDomain = "cluster.local"

// writePodEtc writes the pod's /etc files and returns them by the path
// they are mounted on (nil when the pod gets none).
func (a *Agent) writePodEtc(pod *pb.Pod, hostname string, ip, gateway net.IP) (map[string]string, error) {
	if a.cfg.DataDir == "" {
		return nil, nil
	}
	dir := filepath.Join(a.podDir(pod.GetMetadata().GetUid()), "etc")
	files := map[string][]byte{}
	switch {
	case pod.GetSpec().GetHostNetwork():
		b, err := os.ReadFile(etcResolv)
		if err != nil {
			return nil, nil // the host has none: neither does the pod
		}
		files[etcResolv] = b
	case ip != nil:
		files[etcHosts] = hostsFile(hostname, ip)
		files[etcResolv] = resolvConf(pod.GetMetadata().GetNamespace(), gateway)
	default:
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for target, body := range files {
		p := filepath.Join(dir, filepath.Base(target))
		// Rewritten in place (same inode) only when it differs, so running
		// containers' bind mounts see the change.
		if old, err := os.ReadFile(p); err != nil || !bytes.Equal(old, body) {
			if err := os.WriteFile(p, body, 0o644); err != nil {
				return nil, fmt.Errorf("write the pod's %s: %w", target, err)
			}
		}
		out[target] = p
	}
	return out, nil
}

func hostsFile(hostname string, ip net.IP) []byte {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file (skiff).\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	return []byte(b.String())
}

func resolvConf(namespace string, nameserver net.IP) []byte {
	return fmt.Appendf(nil, "search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n",
		namespace, clusterDomain, clusterDomain, clusterDomain, nameserver)
}

// etcMounts returns the read-only mounts of the pod's /etc files that c
// does not cover with a volume of its own.
func etcMounts(c *pb.Container, files map[string]string) []wrt.Mount {
	var out []wrt.Mount
	for _, target := range []string{etcHosts, etcResolv} {
		p, ok := files[target]
		if !ok {
			continue
		}
		own := false
		for _, vm := range c.GetVolumeMounts() {
			if filepath.Clean(vm.GetMountPath()) == target {
				own = true
			}
		}
		if !own {
			out = append(out, wrt.Mount{HostPath: p, ContainerPath: target, ReadOnly: true})
		}
	}
	return out
}
