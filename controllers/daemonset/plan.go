package daemonset

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/scheduler"
	pb "github.com/skiff-sh/skiff/proto"
)

// This file is the controller's decision code: nodes, pods and the
// DaemonSet go in, the pods to create and delete and the status come out.
// No I/O.

// Taint keys daemon pods tolerate (Kubernetes' AddOrUpdateDaemonPodTolerations).
const (
	taintNotReady           = "node.kubernetes.io/not-ready"
	taintUnreachable        = "node.kubernetes.io/unreachable"
	taintDiskPressure       = "node.kubernetes.io/disk-pressure"
	taintMemoryPressure     = "node.kubernetes.io/memory-pressure"
	taintPIDPressure        = "node.kubernetes.io/pid-pressure"
	taintUnschedulable      = "node.kubernetes.io/unschedulable"
	taintNetworkUnavailable = "node.kubernetes.io/network-unavailable"
)

// DaemonTolerations returns spec's tolerations plus the ones every daemon
// pod gets, as Kubernetes adds them: it keeps running on a node that is not
// ready or unreachable (NoExecute, forever), and lands on nodes under
// pressure or cordoned.
func DaemonTolerations(spec *pb.PodSpec) []*pb.Toleration {
	out := slices.Clone(spec.GetTolerations())
	add := func(key, effect string) {
		for _, t := range out {
			if t.GetKey() == key && t.GetEffect() == effect && (t.GetOperator() == "Exists" || t.GetOperator() == "") && t.TolerationSeconds == nil {
				return
			}
		}
		out = append(out, &pb.Toleration{Key: key, Operator: "Exists", Effect: effect})
	}
	add(taintNotReady, "NoExecute")
	add(taintUnreachable, "NoExecute")
	add(taintDiskPressure, "NoSchedule")
	add(taintMemoryPressure, "NoSchedule")
	add(taintPIDPressure, "NoSchedule")
	add(taintUnschedulable, "NoSchedule")
	if spec.GetHostNetwork() {
		add(taintNetworkUnavailable, "NoSchedule")
	}
	return out
}

// ShouldRun is Kubernetes' NodeShouldRunDaemonPod: whether a new daemon
// pod belongs on node (nodeName, nodeSelector and required node affinity
// match, every NoSchedule and NoExecute taint tolerated), and whether a
// daemon pod already there may stay (the same, but only NoExecute taints
// matter). A node that is not Ready or is cordoned counts as tainted
// not-ready or unschedulable NoSchedule, as the scheduler sees it. pod is
// the daemon pod as it would be created (with DaemonTolerations).
// Resources are not checked: daemon pods are placed whatever else runs.
func ShouldRun(pod *pb.Pod, node *pb.Node) (shouldRun, shouldContinue bool) {
	if n := pod.GetSpec().GetNodeName(); n != "" && n != node.GetMetadata().GetName() {
		return false, false
	}
	if !scheduler.MatchesNode(pod, node) {
		return false, false
	}
	taints := slices.Clone(node.GetSpec().GetTaints())
	ready := false
	for _, c := range node.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			ready = c.GetStatus() == "True"
		}
	}
	if !ready {
		taints = append(taints, &pb.Taint{Key: taintNotReady, Effect: "NoSchedule"})
	}
	if node.GetSpec().GetUnschedulable() {
		taints = append(taints, &pb.Taint{Key: taintUnschedulable, Effect: "NoSchedule"})
	}
	shouldRun, shouldContinue = true, true
	for _, t := range taints {
		if t.GetEffect() != "NoSchedule" && t.GetEffect() != "NoExecute" {
			continue
		}
		if scheduler.Tolerates(pod.GetSpec().GetTolerations(), t) {
			continue
		}
		shouldRun = false
		if t.GetEffect() == "NoExecute" {
			shouldContinue = false
		}
	}
	return shouldRun, shouldContinue
}

// TemplateHash hashes a pod template into a short label value of
// Kubernetes' safe alphabet.
func TemplateHash(t *pb.PodTemplateSpec) string {
	h := fnv.New32a()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	h.Write(b)
	const alphanums = "bcdfghjklmnpqrstvwxz2456789"
	s := strconv.FormatUint(uint64(h.Sum32()), 10)
	out := make([]byte, len(s))
	for i := range []byte(s) {
		out[i] = alphanums[int(s[i])%len(alphanums)]
	}
	return string(out)
}

// fenceposts resolves the rolling update's maxUnavailable and maxSurge
// against the number of nodes that should run a pod, rounding up as
// Kubernetes does for DaemonSets. OnDelete returns ok false.
func fenceposts(ds *pb.DaemonSet, desired int) (maxUnavailable, maxSurge int, ok bool, err error) {
	us := ds.GetSpec().GetUpdateStrategy()
	if us.GetType() == "OnDelete" {
		return 0, 0, false, nil
	}
	ru := us.GetRollingUpdate()
	mu, ms := ru.GetMaxUnavailable(), ru.GetMaxSurge()
	if mu == "" {
		mu = "1"
	}
	if ms == "" {
		ms = "0"
	}
	if maxSurge, err = scaled(ms, desired); err != nil {
		return 0, 0, false, fmt.Errorf("spec.updateStrategy.rollingUpdate.maxSurge: %w", err)
	}
	if maxUnavailable, err = scaled(mu, desired); err != nil {
		return 0, 0, false, fmt.Errorf("spec.updateStrategy.rollingUpdate.maxUnavailable: %w", err)
	}
	if maxSurge == 0 && maxUnavailable == 0 {
		maxUnavailable = 1 // validation forbids it; never stall a rollout
	}
	return maxUnavailable, maxSurge, true, nil
}

func scaled(v string, total int) (int, error) {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid percentage %q", v)
		}
		return int(math.Ceil(float64(n) * float64(total) / 100)), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid value %q: not a non-negative integer or percentage", v)
	}
	return n, nil
}

// Plan is what a reconcile should do.
type Plan struct {
	// Create lists the nodes that get a new pod, sorted.
	Create []string
	// Delete lists the pods to delete, each with the reason.
	Delete []Deletion
	// Status is the DaemonSet's status as it stands (before the writes).
	Status *pb.DaemonSetStatus
	// RequeueAfter, when positive, is when a ready pod becomes available.
	RequeueAfter time.Duration
}

// Deletion is one pod to delete.
type Deletion struct {
	Pod    *pb.Pod
	Reason string
}

// nodePods are one node's live daemon pods, oldest first.
type nodePods struct {
	node                      *pb.Node
	shouldRun, shouldContinue bool
	live                      []*pb.Pod
}

// MakePlan decides, for a DaemonSet, its owned pods (deleting ones included)
// and the cluster's nodes, which pods to create and delete. hash is the
// current template's hash.
func MakePlan(ds *pb.DaemonSet, nodes []*pb.Node, pods []*pb.Pod, hash string, now time.Time) (Plan, error) {
	var p Plan
	tmpl := &pb.Pod{Metadata: ds.GetSpec().GetTemplate().GetMetadata(), Spec: proto.Clone(ds.GetSpec().GetTemplate().GetSpec()).(*pb.PodSpec)}
	if tmpl.Spec == nil {
		tmpl.Spec = &pb.PodSpec{}
	}
	tmpl.Spec.Tolerations = DaemonTolerations(tmpl.Spec)
	minReady := ds.GetSpec().GetMinReadySeconds()

	byNode := map[string][]*pb.Pod{}
	failedOn := map[string]bool{}
	for _, pod := range pods {
		if pod.GetMetadata().GetDeletionTimestamp() != nil {
			continue // going already
		}
		n := pod.GetSpec().GetNodeName()
		if controllers.IsPodTerminal(pod) {
			// A daemon pod that ended is replaced (restartPolicy is
			// Always, so it failed): delete it; its node gets a new one on
			// the look after the deletion.
			p.Delete = append(p.Delete, Deletion{pod, "failed"})
			failedOn[n] = true
			continue
		}
		byNode[n] = append(byNode[n], pod)
	}
	known := map[string]bool{}
	states := make([]*nodePods, 0, len(nodes))
	sorted := slices.Clone(nodes)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetMetadata().GetName() < sorted[j].GetMetadata().GetName() })
	for _, n := range sorted {
		name := n.GetMetadata().GetName()
		known[name] = true
		st := &nodePods{node: n, live: byNode[name]}
		st.shouldRun, st.shouldContinue = ShouldRun(tmpl, n)
		sortOldestFirst(st.live)
		states = append(states, st)
	}
	// Pods on nodes that are gone (or never bound: not ours to place).
	var goneNodes []string
	for name := range byNode {
		if !known[name] {
			goneNodes = append(goneNodes, name)
		}
	}
	sort.Strings(goneNodes)
	for _, name := range goneNodes {
		for _, pod := range byNode[name] {
			p.Delete = append(p.Delete, Deletion{pod, "node is gone"})
		}
	}

	maxUnavailable, maxSurge, rolling, err := fenceposts(ds, countShouldRun(states))
	if err != nil {
		return Plan{}, err
	}

	// Per node: create where one is missing, delete where none may stay,
	// and remove duplicates.
	for _, st := range states {
		name := st.node.GetMetadata().GetName()
		switch {
		case !st.shouldContinue:
			for _, pod := range st.live {
				p.Delete = append(p.Delete, Deletion{pod, "node no longer fits"})
			}
			st.live = nil
		case st.shouldRun && len(st.live) == 0:
			if !failedOn[name] {
				p.Create = append(p.Create, name)
			}
		case len(st.live) > 1:
			keep := keepOnNode(st.live, hash, rolling && maxSurge > 0)
			for _, pod := range st.live {
				if !slices.Contains(keep, pod) {
					p.Delete = append(p.Delete, Deletion{pod, "duplicate"})
				}
			}
			st.live = keep
			sortOldestFirst(st.live) // status counts the oldest
		}
	}

	if rolling {
		p.Create, p.Delete = rollingUpdate(states, hash, maxUnavailable, maxSurge, minReady, now, p.Create, p.Delete)
	}
	p.Status, p.RequeueAfter = status(ds, states, hash, now)
	sortDeletions(p.Delete)
	return p, nil
}

func countShouldRun(states []*nodePods) int {
	n := 0
	for _, st := range states {
		if st.shouldRun {
			n++
		}
	}
	return n
}

func sortOldestFirst(pods []*pb.Pod) {
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i].GetMetadata().GetCreationTimestamp().AsTime(), pods[j].GetMetadata().GetCreationTimestamp().AsTime()
		if !a.Equal(b) {
			return a.Before(b)
		}
		return pods[i].GetMetadata().GetName() < pods[j].GetMetadata().GetName()
	})
}

func isNew(pod *pb.Pod, hash string) bool {
	return pod.GetMetadata().GetLabels()[RevisionHashLabel] == hash
}

// keepOnNode picks the pods a node keeps out of several: the oldest of the
// current template, and while surging also the oldest old one.
func keepOnNode(live []*pb.Pod, hash string, surge bool) []*pb.Pod {
	var newest, old *pb.Pod
	for _, pod := range live {
		if isNew(pod, hash) {
			if newest == nil {
				newest = pod
			}
		} else if old == nil {
			old = pod
		}
	}
	switch {
	case newest != nil && old != nil && surge:
		return []*pb.Pod{old, newest}
	case newest != nil:
		return []*pb.Pod{newest}
	}
	return []*pb.Pod{old}
}

func available(pod *pb.Pod, minReady int32, now time.Time) bool {
	ok, _ := controllers.PodAvailableIn(pod, minReady, now)
	return ok
}

// rollingUpdate replaces old pods within the bounds, as Kubernetes'
// DaemonSet rolling update does: without surge, old pods are deleted (and
// replaced on the next look) while no more than maxUnavailable nodes lack an
// available pod; with surge, a new pod starts next to the old one on at
// most maxSurge nodes at once and the old one goes once the new one is
// available.
func rollingUpdate(states []*nodePods, hash string, maxUnavailable, maxSurge int, minReady int32, now time.Time, create []string, del []Deletion) ([]string, []Deletion) {
	if maxSurge == 0 {
		unavailable := 0
		var replace, candidates []*pb.Pod
		for _, st := range states {
			if !st.shouldRun {
				continue
			}
			var newPod, oldPod *pb.Pod
			for _, pod := range st.live {
				if isNew(pod, hash) {
					newPod = pod
				} else {
					oldPod = pod
				}
			}
			switch {
			case newPod == nil && oldPod == nil:
				unavailable++ // being created
			case newPod != nil:
				if !available(newPod, minReady, now) {
					unavailable++
				}
			case !available(oldPod, minReady, now):
				replace = append(replace, oldPod) // serves nothing: replace at once
			default:
				candidates = append(candidates, oldPod)
			}
		}
		budget := max(maxUnavailable-unavailable, 0)
		budget = min(budget, len(candidates))
		for _, pod := range append(replace, candidates[:budget]...) {
			del = append(del, Deletion{pod, "rolling update"})
		}
		return create, del
	}
	surged := 0
	var must, may []string // nodes that need a new pod now / may get one
	for _, st := range states {
		if !st.shouldRun {
			continue
		}
		var newPod, oldPod *pb.Pod
		for _, pod := range st.live {
			if isNew(pod, hash) {
				newPod = pod
			} else {
				oldPod = pod
			}
		}
		switch {
		case oldPod == nil:
			// Nothing to replace (a missing pod is created above).
		case newPod == nil && !available(oldPod, minReady, now):
			must = append(must, st.node.GetMetadata().GetName()) // the old one serves nothing
			surged++
		case newPod == nil:
			may = append(may, st.node.GetMetadata().GetName())
		case !available(newPod, minReady, now):
			surged++ // waiting for the new one
		default:
			del = append(del, Deletion{oldPod, "rolling update"})
		}
	}
	for _, n := range may {
		if surged >= maxSurge {
			break
		}
		surged++
		must = append(must, n)
	}
	create = append(create, must...)
	sort.Strings(create)
	return create, del
}

// status counts per node that should run a pod, as Kubernetes does, looking
// at the node's oldest pod: during a surge the old pod serves until it is
// gone, and only then does the node count as updated (so rollout status
// does not finish while old pods still run).
func status(ds *pb.DaemonSet, states []*nodePods, hash string, now time.Time) (*pb.DaemonSetStatus, time.Duration) {
	minReady := ds.GetSpec().GetMinReadySeconds()
	st := &pb.DaemonSetStatus{ObservedGeneration: ds.GetMetadata().GetGeneration(), Conditions: ds.GetStatus().GetConditions()}
	var requeue time.Duration
	for _, s := range states {
		if !s.shouldRun {
			if len(s.live) > 0 {
				st.NumberMisscheduled++
			}
			continue
		}
		st.DesiredNumberScheduled++
		if len(s.live) == 0 {
			continue
		}
		st.CurrentNumberScheduled++
		pod := s.live[0] // oldest first (sortOldestFirst)
		if isNew(pod, hash) {
			st.UpdatedNumberScheduled++
		}
		if controllers.IsPodReady(pod) {
			st.NumberReady++
			if ok, _ := controllers.PodAvailableIn(pod, minReady, now); ok {
				st.NumberAvailable++
			}
		}
		// Look again when any pod of the node becomes available: the
		// count, or the rolling update waiting for a new pod, moves then.
		for _, p := range s.live {
			if !controllers.IsPodReady(p) {
				continue
			}
			if ok, wait := controllers.PodAvailableIn(p, minReady, now); !ok && (requeue == 0 || wait < requeue) {
				requeue = wait
			}
		}
	}
	st.NumberUnavailable = st.DesiredNumberScheduled - st.NumberAvailable
	return st, requeue
}
