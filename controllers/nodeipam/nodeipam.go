// Package nodeipam gives every Node a pod CIDR, as the range allocator of
// Kubernetes' node IPAM controller does. The cluster CIDR (10.244.0.0/16 by
// default) is split into subnets of NodeCIDRMaskSize bits (/24); a Node
// without spec.podCIDR gets the lowest free one, written to spec.podCIDR and
// spec.podCIDRs. Workers then hand out pod addresses from their node's
// subnet and route to the other nodes' subnets.
//
// Never handing out one subnet twice rests on three things:
//
//   - The set of used subnets is rebuilt from the Node cache when a
//     controller starts (on every leadership change) and follows every
//     Node change, so a new leader knows what earlier leaders assigned.
//   - Before a subnet is handed out, the cache's index of recorded pod
//     CIDRs is asked whether any Node already holds it (a change the
//     handlers have not seen yet).
//   - The write is an Update carrying the cached resourceVersion: a
//     decision taken on a stale view of the Node fails with a conflict and
//     is taken again on fresher data. A subnet stays reserved for its node
//     across such retries, so retries do not drift to other subnets.
//
// A subnet is free again once its Node is deleted. Nodes whose podCIDR lies
// outside the cluster CIDR are left alone (and logged): someone else
// manages them.
package nodeipam

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "nodeipam"

// ReasonCIDRNotAvailable is the reason of the Warning event recorded on a
// Node when the cluster CIDR has no free subnet left (Kubernetes' reason).
const ReasonCIDRNotAvailable = "CIDRNotAvailable"

// indexCIDR maps a canonical pod CIDR to the nodes that record it.
const indexCIDR = "nodeipam/podCIDR"

// exhaustedRetry is how often a node waiting for a subnet looks again
// without being told that one was freed (a safety net).
const exhaustedRetry = time.Minute

// maxSubnetBits bounds how many node subnets one cluster CIDR may hold
// (2^16), as Kubernetes does.
const maxSubnetBits = 16

// Config tunes the controller; the server's --cluster-cidr and
// --node-cidr-mask-size flags set it.
type Config struct {
	// ClusterCIDR is the IPv4 range pods get their addresses from.
	ClusterCIDR string
	// NodeCIDRMaskSize is the prefix length of each node's subnet.
	NodeCIDRMaskSize int
}

// DefaultConfig returns 10.244.0.0/16 split into /24s (256 nodes of up to
// 254 pods each).
func DefaultConfig() Config {
	return Config{ClusterCIDR: "10.244.0.0/16", NodeCIDRMaskSize: 24}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	_, err := newCIDRSet(c)
	return err
}

// cidrSet is the arithmetic of a cluster CIDR split into equal subnets,
// numbered from 0 at the bottom of the range.
type cidrSet struct {
	cluster  netip.Prefix
	maskSize int
	count    int
}

func newCIDRSet(c Config) (cidrSet, error) {
	p, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil {
		return cidrSet{}, fmt.Errorf("nodeipam config: ClusterCIDR %q is not a CIDR (for example 10.244.0.0/16): %w", c.ClusterCIDR, err)
	}
	if !p.Addr().Is4() {
		return cidrSet{}, fmt.Errorf("nodeipam config: ClusterCIDR %q: only IPv4 cluster CIDRs are supported", c.ClusterCIDR)
	}
	if p != p.Masked() {
		return cidrSet{}, fmt.Errorf("nodeipam config: ClusterCIDR %q has host bits set; did you mean %s?", c.ClusterCIDR, p.Masked())
	}
	switch {
	case c.NodeCIDRMaskSize <= p.Bits():
		return cidrSet{}, fmt.Errorf("nodeipam config: NodeCIDRMaskSize %d must be larger than the prefix length of ClusterCIDR %s (/%d)", c.NodeCIDRMaskSize, p, p.Bits())
	case c.NodeCIDRMaskSize > 30:
		return cidrSet{}, fmt.Errorf("nodeipam config: NodeCIDRMaskSize %d must be at most 30, leaving a node room for pod addresses", c.NodeCIDRMaskSize)
	case c.NodeCIDRMaskSize-p.Bits() > maxSubnetBits:
		return cidrSet{}, fmt.Errorf("nodeipam config: NodeCIDRMaskSize %d splits ClusterCIDR %s into more than %d node subnets; use a mask size of at most %d or a smaller ClusterCIDR",
			c.NodeCIDRMaskSize, p, 1<<maxSubnetBits, p.Bits()+maxSubnetBits)
	}
	return cidrSet{cluster: p, maskSize: c.NodeCIDRMaskSize, count: 1 << (c.NodeCIDRMaskSize - p.Bits())}, nil
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// subnet returns subnet number i.
func (s cidrSet) subnet(i int) netip.Prefix {
	base := addr4(s.cluster.Addr())
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], base+uint32(i)<<(32-s.maskSize))
	return netip.PrefixFrom(netip.AddrFrom4(b), s.maskSize)
}

// span is a range of subnet numbers, lo to hi inclusive.
type span struct{ lo, hi int }

// spanOf returns the subnets p covers, or ok=false when p does not lie
// inside the cluster CIDR. A prefix longer than the node mask occupies the
// subnet holding it; a shorter one every subnet it covers.
func (s cidrSet) spanOf(p netip.Prefix) (span, bool) {
	p = p.Masked()
	if !p.Addr().Is4() || p.Bits() < s.cluster.Bits() || !s.cluster.Contains(p.Addr()) {
		return span{}, false
	}
	off := addr4(p.Addr()) - addr4(s.cluster.Addr())
	lo := int(off >> (32 - s.maskSize))
	if p.Bits() >= s.maskSize {
		return span{lo, lo}, true
	}
	return span{lo, lo + 1<<(s.maskSize-p.Bits()) - 1}, true
}

// nodeCIDR is the CIDR a node records: podCIDR, or the first of podCIDRs.
func nodeCIDR(n *pb.Node) string {
	if c := n.GetSpec().GetPodCidr(); c != "" {
		return c
	}
	if cs := n.GetSpec().GetPodCidrs(); len(cs) > 0 {
		return cs[0]
	}
	return ""
}

// NewRegistration returns the controller's Registration with cfg.
func NewRegistration(cfg Config) controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		c, err := New(env, cfg)
		if err != nil {
			return nil, err
		}
		return c.Loop, nil
	}}
}

// Controller assigns pod CIDRs to nodes (queue keys are node names).
type Controller struct {
	*controllers.Loop
	env   controllers.Env
	set   cidrSet
	nodes *controllers.Informer

	mu      sync.Mutex
	rebuilt bool
	// owner maps a used subnet to the node that holds (or is being given)
	// it; byName is the reverse.
	owner  map[int]string
	byName map[string]span
	// low: no subnet below it is free, so the search for the lowest free
	// one starts there.
	low int
	// told holds the nodes already reported (log and Event) as waiting
	// for a subnet: a waiting node is looked at again on each of its
	// heartbeats, and 1,000 nodes over a full range would otherwise log
	// an error dozens of times a second.
	told map[string]bool
}

// New builds the controller for one run; its set of used subnets starts
// empty and is filled from the Node cache.
func New(env controllers.Env, cfg Config) (*Controller, error) {
	set, err := newCIDRSet(cfg)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		env: env, set: set,
		nodes:  env.Informers.For("Node"),
		owner:  map[int]string{},
		byName: map[string]span{},
		told:   map[string]bool{},
	}
	c.nodes.AddIndexer(indexCIDR, func(o *pb.Object) []string {
		if p, err := netip.ParsePrefix(nodeCIDR(o.GetNode())); err == nil {
			return []string{p.Masked().String()}
		}
		return nil
	})
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.nodes}})
	c.nodes.AddHandler(controllers.HandlerFuncs{
		AddFunc: func(o *pb.Object) {
			c.observe(o)
			c.Queue().Add(controllers.KeyOf(o))
		},
		UpdateFunc: func(old, o *pb.Object) {
			c.observe(o)
			// Heartbeats change nodes all the time; only a node that
			// needs a subnet, or whose subnet changed, needs a look.
			if nodeCIDR(o.GetNode()) == "" || nodeCIDR(o.GetNode()) != nodeCIDR(old.GetNode()) {
				c.Queue().Add(controllers.KeyOf(o))
			}
		},
		DeleteFunc: func(o *pb.Object) {
			c.mu.Lock()
			freed := c.release(o.Meta().GetName())
			c.mu.Unlock()
			if freed {
				c.enqueueWaiting()
			}
		},
	})
	return c, nil
}

// ClusterCIDR is the range the controller splits.
func (c *Controller) ClusterCIDR() netip.Prefix { return c.set.cluster }

// observe records the subnet a cached node holds.
func (c *Controller) observe(o *pb.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observeLocked(o)
}

func (c *Controller) observeLocked(o *pb.Object) {
	name := o.Meta().GetName()
	cidr := nodeCIDR(o.GetNode())
	if cidr == "" {
		// Keep a reservation: a retried assignment reuses it.
		return
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return // Reconcile logs it
	}
	sp, ok := c.set.spanOf(p)
	if !ok {
		c.release(name)
		return
	}
	if cur, ok := c.byName[name]; ok && cur == sp {
		return
	}
	c.release(name)
	c.byName[name] = sp
	for i := sp.lo; i <= sp.hi; i++ {
		if other, taken := c.owner[i]; taken && other != name {
			c.env.Logger.Warn("two nodes record the same pod CIDR; the cluster's pod network is broken until one of them is deleted or changed",
				"podCIDR", c.set.subnet(i), "node", name, "other", other)
			continue
		}
		c.owner[i] = name
	}
}

// release frees the subnets held by name and reports whether any was
// freed. A subnet that another node also records (a conflict someone else
// made) passes to that node instead. The caller holds mu.
func (c *Controller) release(name string) bool {
	delete(c.told, name)
	sp, ok := c.byName[name]
	if !ok {
		return false
	}
	delete(c.byName, name)
	freed := false
	for i := sp.lo; i <= sp.hi; i++ {
		if c.owner[i] != name {
			continue
		}
		delete(c.owner, i)
		for _, o := range c.nodes.ByIndex(indexCIDR, c.set.subnet(i).String()) {
			if other := o.Meta().GetName(); other != name {
				c.owner[i] = other
				if _, ok := c.byName[other]; !ok {
					c.byName[other] = span{i, i}
				}
				break
			}
		}
		if _, taken := c.owner[i]; !taken {
			freed = true
			c.low = min(c.low, i)
		}
	}
	return freed
}

// allocate reserves the lowest free subnet for name (or returns the one
// already reserved for it). The caller holds mu.
func (c *Controller) allocate(name string) (netip.Prefix, bool) {
	if sp, ok := c.byName[name]; ok {
		return c.set.subnet(sp.lo), true
	}
	for i := c.low; i < c.set.count; i++ {
		if _, taken := c.owner[i]; taken {
			continue
		}
		// A node the handlers have not told about yet may hold it.
		if holders := c.nodes.ByIndex(indexCIDR, c.set.subnet(i).String()); len(holders) > 0 {
			for _, o := range holders {
				c.observeLocked(o)
			}
			if _, taken := c.owner[i]; taken {
				continue
			}
		}
		c.owner[i] = name
		c.byName[name] = span{i, i}
		c.low = i + 1
		return c.set.subnet(i), true
	}
	c.low = c.set.count
	return netip.Prefix{}, false
}

// rebuildLocked records every cached node's subnet, once per run: the
// first reconcile runs with a synced cache, so a new leader starts from
// what every earlier leader assigned.
func (c *Controller) rebuildLocked() {
	if c.rebuilt {
		return
	}
	c.rebuilt = true
	nodes := c.nodes.List()
	for _, o := range nodes {
		c.observeLocked(o)
	}
	c.env.Logger.Debug("rebuilt used pod CIDRs from the node cache", "nodes", len(nodes), "used", len(c.owner), "clusterCIDR", c.set.cluster)
}

// enqueueWaiting enqueues every cached node that has no subnet yet.
func (c *Controller) enqueueWaiting() {
	for _, o := range c.nodes.List() {
		if nodeCIDR(o.GetNode()) == "" {
			c.Queue().Add(controllers.KeyOf(o))
		}
	}
}

// Reconcile implements controllers.Reconciler: name is a node's name.
func (c *Controller) Reconcile(ctx context.Context, name string) (controllers.Result, error) {
	c.mu.Lock()
	c.rebuildLocked()
	c.mu.Unlock()

	obj, ok := c.nodes.Get(name)
	if !ok {
		c.mu.Lock()
		freed := c.release(name)
		c.mu.Unlock()
		if freed {
			c.enqueueWaiting()
		}
		return controllers.Result{}, nil
	}
	log := c.env.Logger.With("node", name)
	if cidr := nodeCIDR(obj.GetNode()); cidr != "" {
		p, err := netip.ParsePrefix(cidr)
		switch {
		case err != nil:
			log.Warn("node's podCIDR is not a CIDR; leaving it alone", "podCIDR", cidr, "err", err)
		case !c.set.cluster.Overlaps(p):
			log.Info("node's podCIDR is outside the cluster CIDR; not managed by nodeipam", "podCIDR", cidr, "clusterCIDR", c.set.cluster)
		default:
			if _, inside := c.set.spanOf(p); !inside {
				log.Warn("node's podCIDR overlaps the cluster CIDR without lying inside it; not managed by nodeipam, and pod addresses may clash",
					"podCIDR", cidr, "clusterCIDR", c.set.cluster)
			}
			c.observe(obj)
		}
		return controllers.Result{}, nil
	}

	c.mu.Lock()
	subnet, ok := c.allocate(name)
	told := c.told[name]
	c.told[name] = !ok
	c.mu.Unlock()
	if !ok {
		msg := fmt.Sprintf("no free /%d left in cluster CIDR %s: remove nodes or widen --cluster-cidr", c.set.maskSize, c.set.cluster)
		if told {
			log.Debug("still no pod CIDR: "+msg, "nodes", c.nodes.Len())
		} else {
			log.Error("cannot assign a pod CIDR: "+msg, "nodes", c.nodes.Len())
			c.env.Recorder.Event(obj, controllers.EventTypeWarning, ReasonCIDRNotAvailable, msg)
		}
		return controllers.Result{RequeueAfter: exhaustedRetry}, nil
	}

	next := obj.Clone()
	n := next.GetNode()
	if n.Spec == nil {
		n.Spec = &pb.NodeSpec{}
	}
	n.Spec.PodCidr = subnet.String()
	n.Spec.PodCidrs = []string{subnet.String()}
	// The cached resourceVersion is a precondition: if the node changed
	// since (perhaps another leader gave it a subnet), this fails and the
	// retry decides again on fresher data. The reservation stays.
	if _, err := c.env.Cluster.Update(ctx, next); err != nil {
		if controllers.IsNotFound(err) {
			c.mu.Lock()
			if _, still := c.nodes.Get(name); !still {
				c.release(name)
			}
			c.mu.Unlock()
		}
		return controllers.Result{}, fmt.Errorf("assign pod CIDR %s to node %s: %w", subnet, name, err)
	}
	log.Info("assigned pod CIDR", "podCIDR", subnet.String())
	return controllers.Result{}, nil
}
