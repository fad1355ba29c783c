package scheduler

import (
	"maps"
	"slices"
	"sort"

	pb "github.com/skiff-sh/skiff/proto"
)

// nodeCache is the scheduler's running account of the nodes and of the
// unfinished pods bound to each, kept up to date from informer events as
// kube-scheduler's cache is. A batch's Snapshot then costs one pointer per
// node instead of a walk over every bound pod (a third of the leader's CPU
// while bare pods were scheduled, before it existed).
//
// Snapshots share the cache's NodeInfos copy-on-write. Taking a snapshot
// bumps gen; the cache changes a NodeInfo in place only if it was made
// since the last snapshot (its gen is current) and replaces it with a copy
// otherwise, and a snapshot copies a NodeInfo before it first changes it.
// So neither writes what the other may be reading. The Scheduler's mu
// guards the cache; snapshots are used outside it.
type nodeCache struct {
	// infos holds every node by name, and the names pods are bound to that
	// no node has (yet, or any more), which snapshots leave out.
	infos map[string]*NodeInfo
	// sorted are the existing nodes by name, the order placement breaks
	// ties in; nil after a node came or went.
	sorted []*NodeInfo
	// index is each node's position in sorted. Snapshots share it, so it
	// is replaced, never changed.
	index map[string]int
	// pods are the pods counted, by key.
	pods map[string]cachedPod
	gen  uint64
}

type cachedPod struct {
	node string
	info *podInfo
}

func newNodeCache() *nodeCache {
	return &nodeCache{infos: make(map[string]*NodeInfo), pods: make(map[string]cachedPod)}
}

// setNode records node under name; nil means it was deleted. It reports
// whether anything placement looks at changed (heartbeats change nothing).
func (c *nodeCache) setNode(name string, node *pb.Node) bool {
	old := c.infos[name]
	if node == nil {
		if old == nil || !old.exists {
			return false
		}
		c.sorted = nil
		if old.pods == 0 {
			delete(c.infos, name)
		} else {
			// Its pods stay counted in case the node comes back.
			c.infos[name] = &NodeInfo{Name: name, usage: old.usage.clone(), gen: c.gen}
		}
		return true
	}
	ni := newNodeInfo(node)
	if old != nil && old.exists && sameNode(old, ni) {
		return false
	}
	ni.Name, ni.exists, ni.gen = name, true, c.gen
	if old != nil {
		ni.usage = old.usage.clone()
	}
	c.infos[name] = ni
	if old != nil && old.exists && c.sorted != nil {
		c.sorted[c.index[name]] = ni
	} else {
		c.sorted = nil
	}
	return true
}

// setPod counts the pod with key on node, with what pi requests; an empty
// node (or nil pi) stops counting it.
func (c *nodeCache) setPod(key, node string, pi *podInfo) {
	if node == "" || pi == nil {
		node, pi = "", nil
	}
	prev, had := c.pods[key]
	if had && prev.node == node && prev.info == pi {
		return
	}
	if had {
		ni := c.writable(prev.node)
		ni.usage.remove(prev.info)
		if !ni.exists && ni.pods == 0 {
			delete(c.infos, prev.node)
		}
		delete(c.pods, key)
	}
	if node == "" {
		return
	}
	c.writable(node).usage.add(pi)
	c.pods[key] = cachedPod{node: node, info: pi}
}

// writable returns name's NodeInfo to change in place, copying it first if
// a snapshot may hold it.
func (c *nodeCache) writable(name string) *NodeInfo {
	ni := c.infos[name]
	switch {
	case ni == nil:
		ni = &NodeInfo{Name: name, gen: c.gen}
		c.infos[name] = ni
	case ni.gen != c.gen:
		ni = ni.clone()
		ni.gen = c.gen
		c.infos[name] = ni
		if ni.exists && c.sorted != nil {
			c.sorted[c.index[name]] = ni
		}
	}
	return ni
}

// snapshot returns the placement view of the cache.
func (c *nodeCache) snapshot() *Snapshot {
	if c.sorted == nil {
		c.sorted = make([]*NodeInfo, 0, len(c.infos))
		for _, ni := range c.infos {
			if ni.exists {
				c.sorted = append(c.sorted, ni)
			}
		}
		sort.Slice(c.sorted, func(i, j int) bool { return c.sorted[i].Name < c.sorted[j].Name })
		c.index = make(map[string]int, len(c.sorted))
		for i, ni := range c.sorted {
			c.index[ni.Name] = i
		}
	}
	c.gen++
	return &Snapshot{nodes: slices.Clone(c.sorted), index: c.index, owned: make([]bool, len(c.sorted))}
}

// usage is what the pods on a node take of it.
type usage struct {
	requested resources
	nonZero   resources
	pods      int64
	owners    map[string]int32 // controller owner UID -> pods
	ports     []hostPort
}

func (u *usage) add(pi *podInfo) {
	u.requested.add(pi.req)
	u.nonZero.add(pi.nonZero)
	u.pods++
	if pi.owner != "" {
		if u.owners == nil {
			u.owners = make(map[string]int32)
		}
		u.owners[pi.owner]++
	}
	u.ports = append(u.ports, pi.ports...)
}

// remove takes back what add(pi) added.
func (u *usage) remove(pi *podInfo) {
	u.requested.sub(pi.req)
	u.nonZero.sub(pi.nonZero)
	u.pods--
	if pi.owner != "" {
		if u.owners[pi.owner]--; u.owners[pi.owner] <= 0 {
			delete(u.owners, pi.owner)
		}
	}
	for _, p := range pi.ports {
		if i := slices.Index(u.ports, p); i >= 0 {
			u.ports = slices.Delete(u.ports, i, i+1)
		}
	}
}

// clone returns a copy that shares nothing that add or remove change.
func (u usage) clone() usage {
	u.requested.other = maps.Clone(u.requested.other)
	u.nonZero.other = maps.Clone(u.nonZero.other)
	u.owners = maps.Clone(u.owners)
	u.ports = slices.Clone(u.ports)
	return u
}

func (ni *NodeInfo) clone() *NodeInfo {
	c := *ni
	c.usage = ni.usage.clone()
	return &c
}

// sameNode reports whether a and b (parsed from two versions of one node)
// place pods alike.
func sameNode(a, b *NodeInfo) bool {
	if a.ready != b.ready || a.unschedulable != b.unschedulable || a.maxPods != b.maxPods ||
		a.allocatable.milliCPU != b.allocatable.milliCPU || a.allocatable.memory != b.allocatable.memory ||
		len(a.taints) != len(b.taints) || !maps.Equal(a.labels, b.labels) || !maps.Equal(a.allocatable.other, b.allocatable.other) {
		return false
	}
	for i, t := range a.taints {
		u := b.taints[i]
		if t.GetKey() != u.GetKey() || t.GetValue() != u.GetValue() || t.GetEffect() != u.GetEffect() {
			return false
		}
	}
	return true
}
