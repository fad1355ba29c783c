// Package scheduler assigns pending pods to nodes. Placement (this file) is
// pure: a Snapshot of nodes and the pods already on them goes in, a node
// name or the reason no node fits comes out, with Kubernetes' filters,
// scores and messages. The controller around it (controller.go) feeds it
// from the informer cache, binds in batches through Cluster.Bind, and
// reports pods that fit nowhere.
package scheduler

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Strategy chooses how resource usage scores a node.
type Strategy string

const (
	// LeastAllocated prefers the emptiest node: load spreads out.
	LeastAllocated Strategy = "LeastAllocated"
	// MostAllocated prefers the fullest node that fits: bin packing.
	MostAllocated Strategy = "MostAllocated"
)

// Policy weighs the scores. Each score is 0-100 per node.
type Policy struct {
	Strategy Strategy
	// ResourceWeight multiplies the resource score (Strategy).
	ResourceWeight int64
	// SpreadWeight multiplies the spreading score: fewer pods of the same
	// controller (ReplicaSet, Job, ...) on a node scores higher.
	SpreadWeight int64
	// PercentageOfNodesToScore is Kubernetes' setting of that name: in a
	// cluster of more than 100 nodes, the scheduler stops filtering once
	// this share of the nodes (and at least 100) fit the pod, and scores
	// only those; the next pod starts where this one stopped, so every
	// node gets its turn. 0 is Kubernetes' adaptive default, 50 % less 1 %
	// per 125 nodes, at least 5 % (420 of 1,000 nodes); 100 considers
	// every node. A pod that fits nowhere is checked against every node.
	PercentageOfNodesToScore int32
}

// DefaultPolicy is least-allocated with spreading weighted twice, as
// Kubernetes weighs PodTopologySpread against NodeResourcesFit.
func DefaultPolicy() Policy {
	return Policy{Strategy: LeastAllocated, ResourceWeight: 1, SpreadWeight: 2}
}

// Validate reports the first invalid field.
func (p Policy) Validate() error {
	switch {
	case p.Strategy != LeastAllocated && p.Strategy != MostAllocated:
		return fmt.Errorf("scheduler policy: Strategy %q is not %s or %s", p.Strategy, LeastAllocated, MostAllocated)
	case p.ResourceWeight < 0 || p.SpreadWeight < 0:
		return fmt.Errorf("scheduler policy: weights must not be negative (ResourceWeight %d, SpreadWeight %d)", p.ResourceWeight, p.SpreadWeight)
	case p.PercentageOfNodesToScore < 0 || p.PercentageOfNodesToScore > 100:
		return fmt.Errorf("scheduler policy: PercentageOfNodesToScore must be 0 (adaptive) to 100, got %d", p.PercentageOfNodesToScore)
	}
	return nil
}

// Kubernetes' bounds of the nodes to find (numFeasibleNodesToFind).
const (
	minFeasibleNodesToFind           = 100
	minFeasibleNodesPercentageToFind = 5
)

// feasibleNodesToFind is how many fitting nodes end the search among n
// nodes, as Kubernetes' scheduler computes it.
func feasibleNodesToFind(n int, percentage int32) int {
	if n < minFeasibleNodesToFind {
		return n
	}
	if percentage == 0 {
		percentage = max(int32(50-n/125), minFeasibleNodesPercentageToFind)
	}
	return max(n*int(percentage)/100, minFeasibleNodesToFind)
}

// Kubernetes' defaults, used when a node or pod does not say.
const (
	// defaultMaxPods is the kubelet's default pod limit, assumed for a node
	// whose allocatable and capacity omit "pods".
	defaultMaxPods = 110
	// Requests assumed for a container that sets none, when scoring only
	// (filtering uses the real, zero, request).
	defaultMilliCPU = 100
	defaultMemory   = 200 << 20

	maxScore = 100
)

// Taint keys the scheduler itself stands for (Kubernetes' well-known ones),
// so a pod that tolerates them may land on such a node anyway.
const (
	TaintNotReady      = "node.kubernetes.io/not-ready"
	TaintUnschedulable = "node.kubernetes.io/unschedulable"
)

// The taints a NotReady or cordoned node stands for.
var (
	notReadyTaint      = &pb.Taint{Key: TaintNotReady, Effect: "NoSchedule"}
	unschedulableTaint = &pb.Taint{Key: TaintUnschedulable, Effect: "NoSchedule"}
)

// Reasons a node is filtered out, worded as Kubernetes' scheduler does.
const (
	ReasonNotReady      = "node(s) were not ready"
	ReasonUnschedulable = "node(s) were unschedulable"
	ReasonAffinity      = "node(s) didn't match Pod's node affinity/selector"
	ReasonPorts         = "node(s) didn't have free ports for the requested pod ports"
	ReasonTooManyPods   = "Too many pods"
	ReasonNoNodes       = "no nodes available to schedule pods"
)

// resources are amounts in base units: millicores, bytes, and counts for
// any other (extended) resource.
type resources struct {
	milliCPU int64
	memory   int64
	other    map[string]int64 // ephemeral-storage, extended resources
}

func (r *resources) add(o resources) {
	r.milliCPU += o.milliCPU
	r.memory += o.memory
	for k, v := range o.other {
		if r.other == nil {
			r.other = make(map[string]int64)
		}
		r.other[k] += v
	}
}

// sub takes back what add(o) added; amounts that reach zero go.
func (r *resources) sub(o resources) {
	r.milliCPU -= o.milliCPU
	r.memory -= o.memory
	for k, v := range o.other {
		if r.other[k] -= v; r.other[k] == 0 {
			delete(r.other, k)
		}
	}
}

func (r *resources) max(o resources) {
	r.milliCPU = max(r.milliCPU, o.milliCPU)
	r.memory = max(r.memory, o.memory)
	for k, v := range o.other {
		if r.other == nil {
			r.other = make(map[string]int64)
		}
		r.other[k] = max(r.other[k], v)
	}
}

// parseResources reads a resource list. Node amounts that fail to parse
// count as zero; a pod's are an error.
func parseResources(list map[string]string) (resources, error) {
	var r resources
	for name, s := range list {
		q, err := pb.ParseQuantity(s)
		if err != nil {
			return resources{}, fmt.Errorf("%s: %q: %w", name, s, err)
		}
		switch name {
		case "cpu":
			r.milliCPU = q.MilliValue()
		case "memory":
			r.memory = q.Value()
		case "pods":
			// Counted separately.
		default:
			if r.other == nil {
				r.other = make(map[string]int64)
			}
			r.other[name] = q.Value()
		}
	}
	return r, nil
}

// podInfo is what placement needs of a pod, parsed once.
type podInfo struct {
	key     string
	uid     string
	owner   string // controller owner's UID
	req     resources
	nonZero resources // req with Kubernetes' defaults for unset requests
	ports   []hostPort
}

type hostPort struct {
	protocol string
	ip       string
	port     int32
}

func newPodInfo(pod *pb.Pod) (*podInfo, error) {
	pi := &podInfo{key: pod.GetMetadata().Key(), uid: pod.GetMetadata().GetUid()}
	if ref := controllers.ControllerOf(pod.GetMetadata()); ref != nil {
		pi.owner = ref.GetUid()
	}
	spec := pod.GetSpec()
	for _, c := range spec.GetContainers() {
		r, err := parseResources(c.GetResources().GetRequests())
		if err != nil {
			return nil, fmt.Errorf("container %s: resources.requests.%w", c.GetName(), err)
		}
		pi.req.add(r)
		pi.nonZero.add(withDefaults(r, c.GetResources().GetRequests()))
		for _, p := range c.GetPorts() {
			if p.GetHostPort() > 0 {
				proto := p.GetProtocol()
				if proto == "" {
					proto = "TCP"
				}
				pi.ports = append(pi.ports, hostPort{protocol: proto, ip: p.GetHostIp(), port: p.GetHostPort()})
			}
		}
	}
	for _, c := range spec.GetInitContainers() {
		r, err := parseResources(c.GetResources().GetRequests())
		if err != nil {
			return nil, fmt.Errorf("init container %s: resources.requests.%w", c.GetName(), err)
		}
		pi.req.max(r)
		pi.nonZero.max(withDefaults(r, c.GetResources().GetRequests()))
	}
	return pi, nil
}

func withDefaults(r resources, list map[string]string) resources {
	if _, ok := list["cpu"]; !ok {
		r.milliCPU = defaultMilliCPU
	}
	if _, ok := list["memory"]; !ok {
		r.memory = defaultMemory
	}
	return r
}

// NodeInfo is one node with the pods placed on it.
type NodeInfo struct {
	Name string

	labels        map[string]string
	taints        []*pb.Taint // NoSchedule and NoExecute only: the ones that filter
	taintReasons  []string    // the message for each of taints
	ready         bool
	unschedulable bool
	allocatable   resources
	maxPods       int64

	usage

	// exists is false for a name pods are bound to but no node has.
	exists bool
	// gen is the nodeCache generation this NodeInfo was made in.
	gen uint64
}

func newNodeInfo(node *pb.Node) *NodeInfo {
	st := node.GetStatus()
	ni := &NodeInfo{
		Name:          node.GetMetadata().GetName(),
		labels:        node.GetMetadata().GetLabels(),
		unschedulable: node.GetSpec().GetUnschedulable(),
		maxPods:       defaultMaxPods,
		exists:        true,
	}
	for _, t := range node.GetSpec().GetTaints() {
		if t.GetEffect() == "NoSchedule" || t.GetEffect() == "NoExecute" {
			ni.taints = append(ni.taints, t)
			ni.taintReasons = append(ni.taintReasons, fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.GetKey(), t.GetValue()))
		}
	}
	for _, c := range st.GetConditions() {
		if c.GetType() == "Ready" {
			ni.ready = c.GetStatus() == "True"
		}
	}
	alloc := st.GetAllocatable()
	if len(alloc) == 0 {
		alloc = st.GetCapacity()
	}
	ni.allocatable, _ = parseResources(alloc) // a node's bad quantity counts as none
	if s, ok := alloc["pods"]; ok {
		if q, err := pb.ParseQuantity(s); err == nil {
			ni.maxPods = q.Value()
		}
	}
	return ni
}

// Snapshot is the cluster as placement sees it: nodes and what is already
// placed on them. It is not safe for concurrent use.
type Snapshot struct {
	nodes []*NodeInfo
	index map[string]int // position in nodes by name
	// owned marks the nodes this Snapshot may change; the others are
	// shared with the scheduler's cache and copied before they change.
	// nil: it owns all.
	owned []bool

	// next is where the next pod's search starts (Policy's
	// PercentageOfNodesToScore): the node after the last one checked.
	next int

	// scratch space reused across Schedule calls
	feasible []*NodeInfo
	scores   []int64
}

// NewSnapshot returns a Snapshot of nodes with nothing placed on them yet;
// add the pods already bound with AddPod.
func NewSnapshot(nodes []*pb.Node) *Snapshot {
	s := &Snapshot{nodes: make([]*NodeInfo, 0, len(nodes)), index: make(map[string]int, len(nodes))}
	for _, n := range nodes {
		s.nodes = append(s.nodes, newNodeInfo(n))
	}
	// Node order decides nothing but ties; keep it stable.
	sort.Slice(s.nodes, func(i, j int) bool { return s.nodes[i].Name < s.nodes[j].Name })
	for i, ni := range s.nodes {
		s.index[ni.Name] = i
	}
	return s
}

// Node returns the named node's info, or nil.
func (s *Snapshot) Node(name string) *NodeInfo {
	if i, ok := s.index[name]; ok {
		return s.nodes[i]
	}
	return nil
}

// AddPod accounts pod on node (a pod already bound, or one just placed).
// Terminated pods hold nothing and are ignored. It fails only on a pod
// whose requests do not parse.
func (s *Snapshot) AddPod(pod *pb.Pod, node string) error {
	if controllers.IsPodTerminal(pod) {
		return nil
	}
	pi, err := newPodInfo(pod)
	if err != nil {
		return err
	}
	s.addPodInfo(pi, node)
	return nil
}

func (s *Snapshot) addPodInfo(pi *podInfo, node string) {
	i, ok := s.index[node]
	if !ok {
		return
	}
	if s.owned != nil && !s.owned[i] {
		s.nodes[i] = s.nodes[i].clone()
		s.owned[i] = true
	}
	s.nodes[i].add(pi)
}

// Result is a placement decision.
type Result struct {
	// Node is where the pod goes; empty when it fits nowhere.
	Node string
	// Message says why no node fits, as Kubernetes words it: "0/3 nodes
	// are available: 1 Insufficient cpu, 2 node(s) had untolerated taint
	// {dedicated: db}."
	Message string
	// Reasons counts the nodes filtered out per reason.
	Reasons map[string]int
}

// Schedule picks a node for pod, or says why none fits. It does not change
// the Snapshot; call AddPod with the result to account the placement.
func (s *Snapshot) Schedule(pod *pb.Pod, p Policy) Result {
	pi, err := newPodInfo(pod)
	if err != nil {
		return Result{Message: fmt.Sprintf("invalid pod: %v", err)}
	}
	return s.schedule(pod, pi, p)
}

func (s *Snapshot) schedule(pod *pb.Pod, pi *podInfo, p Policy) Result {
	if len(s.nodes) == 0 {
		return Result{Message: ReasonNoNodes}
	}
	f := newPodFilter(pod)
	s.feasible = s.feasible[:0]
	var reasons map[string]int
	var fail []string
	n := len(s.nodes)
	enough := feasibleNodesToFind(n, p.PercentageOfNodesToScore)
	start := s.next % n
	for i := range n {
		if len(s.feasible) == enough {
			s.next = (start + i) % n
			break
		}
		ni := s.nodes[(start+i)%n]
		fail = f.check(ni, pi, fail[:0])
		if len(fail) == 0 {
			s.feasible = append(s.feasible, ni)
			continue
		}
		if reasons == nil {
			reasons = make(map[string]int)
		}
		for _, r := range fail {
			reasons[r]++
		}
	}
	if len(s.feasible) == 0 {
		return Result{Message: fitMessage(len(s.nodes), reasons), Reasons: reasons}
	}
	return Result{Node: s.pick(pi, p).Name, Reasons: reasons}
}

// pick scores the feasible nodes and returns the best; ties go to a node
// chosen by a hash of the pod's UID, so equal nodes share the load without
// randomness.
func (s *Snapshot) pick(pi *podInfo, p Policy) *NodeInfo {
	var maxOwned int32
	if pi.owner != "" && p.SpreadWeight > 0 {
		for _, ni := range s.feasible {
			maxOwned = max(maxOwned, ni.owners[pi.owner])
		}
	}
	s.scores = s.scores[:0]
	best := int64(-1)
	ties := 0
	for _, ni := range s.feasible {
		score := p.ResourceWeight * resourceScore(ni, pi, p.Strategy)
		if p.SpreadWeight > 0 {
			spread := int64(maxScore)
			if maxOwned > 0 {
				spread = int64(maxScore) * int64(maxOwned-ni.owners[pi.owner]) / int64(maxOwned)
			}
			score += p.SpreadWeight * spread
		}
		s.scores = append(s.scores, score)
		switch {
		case score > best:
			best, ties = score, 1
		case score == best:
			ties++
		}
	}
	h := fnv.New32a()
	h.Write([]byte(pi.uid))
	h.Write([]byte(pi.key))
	n := int(h.Sum32() % uint32(ties))
	for i, ni := range s.feasible {
		if s.scores[i] == best {
			if n == 0 {
				return ni
			}
			n--
		}
	}
	return s.feasible[0] // unreachable
}

// resourceScore is Kubernetes' NodeResourcesFit score over cpu and memory,
// equally weighted, using requests with defaults for unset ones.
func resourceScore(ni *NodeInfo, pi *podInfo, strategy Strategy) int64 {
	cpu := ratio(ni.nonZero.milliCPU+pi.nonZero.milliCPU, ni.allocatable.milliCPU, strategy)
	mem := ratio(ni.nonZero.memory+pi.nonZero.memory, ni.allocatable.memory, strategy)
	return (cpu + mem) / 2
}

func ratio(requested, capacity int64, strategy Strategy) int64 {
	if capacity <= 0 || requested > capacity {
		return 0
	}
	if strategy == MostAllocated {
		return requested * maxScore / capacity
	}
	return (capacity - requested) * maxScore / capacity
}

// fitMessage words the reasons as Kubernetes' FitError does: counts before
// reasons, sorted, then a full stop.
func fitMessage(nodes int, reasons map[string]int) string {
	parts := make([]string, 0, len(reasons))
	for r, n := range reasons {
		parts = append(parts, strconv.Itoa(n)+" "+r)
	}
	sort.Strings(parts)
	return fmt.Sprintf("0/%d nodes are available: %s.", nodes, strings.Join(parts, ", "))
}

// podFilter holds a pod's placement constraints, prepared once per pod.
type podFilter struct {
	tolerations  []*pb.Toleration
	nodeSelector map[string]string
	required     *pb.NodeSelector
}

func newPodFilter(pod *pb.Pod) podFilter {
	spec := pod.GetSpec()
	return podFilter{
		tolerations:  spec.GetTolerations(),
		nodeSelector: spec.GetNodeSelector(),
		required:     spec.GetAffinity().GetNodeAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution(),
	}
}

// check appends to fail the reasons ni cannot take the pod; none means it
// can. Filters run in Kubernetes' order and stop at the first that fails;
// the resource filter reports every resource that is short.
func (f *podFilter) check(ni *NodeInfo, pi *podInfo, fail []string) []string {
	if !ni.ready && !f.tolerates(notReadyTaint) {
		return append(fail, ReasonNotReady)
	}
	if ni.unschedulable && !f.tolerates(unschedulableTaint) {
		return append(fail, ReasonUnschedulable)
	}
	for i, t := range ni.taints {
		if !f.tolerates(t) {
			return append(fail, ni.taintReasons[i])
		}
	}
	if !f.matchesNode(ni) {
		return append(fail, ReasonAffinity)
	}
	if portsConflict(ni.ports, pi.ports) {
		return append(fail, ReasonPorts)
	}
	if ni.pods+1 > ni.maxPods {
		fail = append(fail, ReasonTooManyPods)
	}
	if pi.req.milliCPU > 0 && pi.req.milliCPU > ni.allocatable.milliCPU-ni.requested.milliCPU {
		fail = append(fail, "Insufficient cpu")
	}
	if pi.req.memory > 0 && pi.req.memory > ni.allocatable.memory-ni.requested.memory {
		fail = append(fail, "Insufficient memory")
	}
	if len(pi.req.other) > 0 {
		names := make([]string, 0, len(pi.req.other))
		for name, v := range pi.req.other {
			if v > 0 && v > ni.allocatable.other[name]-ni.requested.other[name] {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			fail = append(fail, "Insufficient "+name)
		}
	}
	return fail
}

// tolerates is Kubernetes' ToleratesTaint over the pod's tolerations.
func (f *podFilter) tolerates(t *pb.Taint) bool {
	for _, tol := range f.tolerations {
		if tol.GetEffect() != "" && tol.GetEffect() != t.GetEffect() {
			continue
		}
		if tol.GetKey() != "" && tol.GetKey() != t.GetKey() {
			continue
		}
		switch tol.GetOperator() {
		case "Exists":
			return true
		case "", "Equal":
			if tol.GetKey() == "" {
				continue // an empty key requires Exists
			}
			if tol.GetValue() == t.GetValue() {
				return true
			}
		}
	}
	return false
}

// matchesNode applies nodeSelector and required node affinity: every
// nodeSelector label, and any one of the terms (each term's expressions
// and fields all hold).
func (f *podFilter) matchesNode(ni *NodeInfo) bool {
	for k, v := range f.nodeSelector {
		if got, ok := ni.labels[k]; !ok || got != v {
			return false
		}
	}
	if f.required == nil {
		return true
	}
	for _, term := range f.required.GetNodeSelectorTerms() {
		if len(term.GetMatchExpressions())+len(term.GetMatchFields()) == 0 {
			continue // an empty term matches nothing
		}
		if matchTerm(term, ni) {
			return true
		}
	}
	return false
}

func matchTerm(term *pb.NodeSelectorTerm, ni *NodeInfo) bool {
	for _, r := range term.GetMatchExpressions() {
		v, ok := ni.labels[r.GetKey()]
		if !matchRequirement(r, v, ok) {
			return false
		}
	}
	for _, r := range term.GetMatchFields() {
		if r.GetKey() != "metadata.name" || !matchRequirement(r, ni.Name, true) {
			return false
		}
	}
	return true
}

// matchRequirement applies one node selector requirement to a label value
// (present says whether the label exists).
func matchRequirement(r *pb.NodeSelectorRequirement, v string, present bool) bool {
	switch r.GetOperator() {
	case "In":
		return present && contains(r.GetValues(), v)
	case "NotIn":
		return !present || !contains(r.GetValues(), v)
	case "Exists":
		return present
	case "DoesNotExist":
		return !present
	case "Gt", "Lt":
		if !present || len(r.GetValues()) != 1 {
			return false
		}
		have, err1 := strconv.ParseInt(v, 10, 64)
		want, err2 := strconv.ParseInt(r.GetValues()[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if r.GetOperator() == "Gt" {
			return have > want
		}
		return have < want
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func portsConflict(used, want []hostPort) bool {
	for _, w := range want {
		for _, u := range used {
			if u.port == w.port && u.protocol == w.protocol &&
				(u.ip == w.ip || u.ip == "" || w.ip == "" || u.ip == "0.0.0.0" || w.ip == "0.0.0.0") {
				return true
			}
		}
	}
	return false
}

// Schedule is the one-shot form of Snapshot.Schedule: place pod given the
// nodes and the pods already bound to each (by node name).
func Schedule(pod *pb.Pod, nodes []*pb.Node, podsByNode map[string][]*pb.Pod, p Policy) Result {
	s := NewSnapshot(nodes)
	for node, pods := range podsByNode {
		for _, q := range pods {
			if err := s.AddPod(q, node); err != nil {
				continue // a bound pod with unparsable requests holds nothing we can count
			}
		}
	}
	return s.Schedule(pod, p)
}
