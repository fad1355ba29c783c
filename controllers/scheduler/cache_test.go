package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// render describes a snapshot as placement sees it, so snapshots built in
// different ways compare: every node with what it offers and what its pods
// take (resources and owners that count zero are left out, ports sorted).
func render(s *Snapshot) string {
	var b strings.Builder
	for _, ni := range s.nodes {
		ports := make([]string, 0, len(ni.ports))
		for _, p := range ni.ports {
			ports = append(ports, fmt.Sprintf("%s/%s:%d", p.protocol, p.ip, p.port))
		}
		sort.Strings(ports)
		fmt.Fprintf(&b, "%s ready=%v unsched=%v max=%d alloc=%s taints=%d labels=%d | req=%s nonzero=%s pods=%d owners=%s ports=%v\n",
			ni.Name, ni.ready, ni.unschedulable, ni.maxPods, renderResources(ni.allocatable), len(ni.taints), len(ni.labels),
			renderResources(ni.requested), renderResources(ni.nonZero), ni.pods, renderCounts(ni.owners), ports)
	}
	return b.String()
}

func renderResources(r resources) string {
	other := map[string]int32{}
	for k, v := range r.other {
		other[k] = int32(v)
	}
	return fmt.Sprintf("cpu=%d,mem=%d,%s", r.milliCPU, r.memory, renderCounts(other))
}

func renderCounts(m map[string]int32) string {
	var parts []string
	for k, v := range m {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// cacheModel is the cluster the cache is fed: the truth a snapshot built
// from scratch (as the scheduler did before it had a cache) is made of.
type cacheModel struct {
	nodes map[string]*pb.Node
	pods  map[string]*pb.Pod
	infos map[string]*podInfo // what the scheduler's info cache would hand out, by pod key
}

func (m *cacheModel) scratch(t *testing.T) *Snapshot {
	var nodes []*pb.Node
	for _, n := range m.nodes {
		nodes = append(nodes, n)
	}
	s := NewSnapshot(nodes)
	for _, p := range m.pods {
		if n := p.GetSpec().GetNodeName(); n != "" {
			if err := s.AddPod(p, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// feed tells the cache about pod key as the scheduler's handlers do.
func (m *cacheModel) feed(c *nodeCache, key string) {
	p := m.pods[key]
	if p == nil || p.GetSpec().GetNodeName() == "" || controllers.IsPodTerminal(p) {
		c.setPod(key, "", nil)
		return
	}
	c.setPod(key, p.GetSpec().GetNodeName(), m.infos[key])
}

func randomNode(r *rand.Rand, name string) *pb.Node {
	opts := []nodeOpt{label("zone", fmt.Sprintf("z%d", r.IntN(3)))}
	if r.IntN(4) == 0 {
		opts = append(opts, taint("dedicated", "db", "NoSchedule"))
	}
	if r.IntN(5) == 0 {
		opts = append(opts, notReady)
	}
	if r.IntN(6) == 0 {
		opts = append(opts, func(n *pb.Node) { n.Status.Allocatable["example.com/gpu"] = "4" })
	}
	return node(name, fmt.Sprint(4+r.IntN(4)), fmt.Sprintf("%dGi", 8+r.IntN(8)), opts...)
}

func randomPod(r *rand.Rand, name, nodeName string) *pb.Pod {
	var opts []podOpt
	if r.IntN(2) == 0 {
		opts = append(opts, ownedBy(fmt.Sprintf("rs-%d", r.IntN(3))))
	}
	if r.IntN(4) == 0 {
		opts = append(opts, hostPortOpt(int32(8000+r.IntN(3))))
	}
	if r.IntN(5) == 0 {
		opts = append(opts, func(p *pb.Pod) { p.Spec.Containers[0].Resources.Requests["example.com/gpu"] = "1" })
	}
	cpu := []string{"", "100m", "250m"}[r.IntN(3)]
	p := pod(name, cpu, "64Mi", opts...)
	p.Spec.NodeName = nodeName
	return p
}

// TestNodeCacheMatchesSnapshotFromScratch feeds the cache random node and
// pod events (nodes coming, changing, going and coming back; pods bound,
// finishing, deleted, replaced, and the same state told again as resyncs
// do) and checks that every snapshot equals one built from scratch. It
// also holds snapshots across later events and changes them as a batch
// does: neither the cache's nor the snapshot's changes may show in the
// other.
func TestNodeCacheMatchesSnapshotFromScratch(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			m := &cacheModel{nodes: map[string]*pb.Node{}, pods: map[string]*pb.Pod{}, infos: map[string]*podInfo{}}
			c := newNodeCache()
			nodeNames := []string{"n0", "n1", "n2", "n3", "n4", "n5"}
			type held struct {
				snap *Snapshot
				want *Snapshot // the same, built from scratch, with the same additions
			}
			var holding []held
			podSeq := 0
			for step := range 400 {
				switch op := r.IntN(10); {
				case op < 2: // a node appears or changes
					name := nodeNames[r.IntN(len(nodeNames))]
					n := randomNode(r, name)
					if old := m.nodes[name]; old != nil && r.IntN(2) == 0 {
						n = old // a heartbeat: nothing placement sees changes
					}
					m.nodes[name] = n
					c.setNode(name, n)
				case op == 2: // a node goes
					name := nodeNames[r.IntN(len(nodeNames))]
					delete(m.nodes, name)
					c.setNode(name, nil)
				case op < 6: // a pod is bound, maybe to a node that does not exist
					podSeq++
					name := fmt.Sprintf("p%d", podSeq)
					if r.IntN(3) == 0 && len(m.pods) > 0 {
						name = anyKey(r, m.pods) // deleted and created again
						name = name[strings.IndexByte(name, '/')+1:]
						c.setPod("default/"+name, "", nil)
					}
					p := randomPod(r, name, nodeNames[r.IntN(len(nodeNames))])
					p.Metadata.Uid = fmt.Sprintf("uid-%d", podSeq)
					key := p.GetMetadata().Key()
					pi, err := newPodInfo(p)
					if err != nil {
						t.Fatal(err)
					}
					m.pods[key], m.infos[key] = p, pi
					m.feed(c, key)
				case op == 6 && len(m.pods) > 0: // a pod finishes
					key := anyKey(r, m.pods)
					p := m.pods[key]
					p.Status.Phase = []string{"Succeeded", "Failed", "Running"}[r.IntN(3)]
					m.feed(c, key)
				case op == 7 && len(m.pods) > 0: // a pod is deleted
					key := anyKey(r, m.pods)
					delete(m.pods, key)
					m.feed(c, key)
				case op == 8 && len(m.pods) > 0: // a resync tells the same again
					key := anyKey(r, m.pods)
					m.feed(c, key)
				case op == 9: // a batch: snapshot and place pods on it
					s := c.snapshot()
					want := m.scratch(t)
					if got, w := render(s), render(want); got != w {
						t.Fatalf("step %d: cache snapshot\n%s\nwant (from scratch)\n%s", step, got, w)
					}
					for range r.IntN(4) {
						if len(s.nodes) == 0 {
							break
						}
						p := randomPod(r, fmt.Sprintf("placed-%d", step), "")
						pi, err := newPodInfo(p)
						if err != nil {
							t.Fatal(err)
						}
						node := s.nodes[r.IntN(len(s.nodes))].Name
						s.addPodInfo(pi, node)
						want.addPodInfo(pi, node)
					}
					holding = append(holding, held{s, want})
				}
				for i, h := range holding {
					if got, w := render(h.snap), render(h.want); got != w {
						t.Fatalf("step %d: snapshot %d changed under its holder\n%s\nwant\n%s", step, i, got, w)
					}
				}
				if len(holding) > 3 {
					holding = holding[1:]
				}
			}
			if got, want := render(c.snapshot()), render(m.scratch(t)); got != want {
				t.Fatalf("final cache snapshot\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func anyKey[V any](r *rand.Rand, m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[r.IntN(len(keys))]
}
