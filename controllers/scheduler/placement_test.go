package scheduler

import (
	"fmt"
	"strings"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
)

type nodeOpt func(*pb.Node)

func node(name, cpu, mem string, opts ...nodeOpt) *pb.Node {
	n := &pb.Node{
		Metadata: &pb.ObjectMeta{Name: name, Uid: "node-" + name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Spec:     &pb.NodeSpec{},
		Status: &pb.NodeStatus{
			Allocatable: map[string]string{"cpu": cpu, "memory": mem, "pods": "110"},
			Conditions:  []*pb.NodeCondition{{Type: "Ready", Status: "True"}},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func notReady(n *pb.Node)      { n.Status.Conditions[0].Status = "False" }
func cordoned(n *pb.Node)      { n.Spec.Unschedulable = true }
func maxPods(p string) nodeOpt { return func(n *pb.Node) { n.Status.Allocatable["pods"] = p } }
func label(k, v string) nodeOpt {
	return func(n *pb.Node) { n.Metadata.Labels[k] = v }
}
func taint(k, v, effect string) nodeOpt {
	return func(n *pb.Node) { n.Spec.Taints = append(n.Spec.Taints, &pb.Taint{Key: k, Value: v, Effect: effect}) }
}

type podOpt func(*pb.Pod)

func pod(name, cpu, mem string, opts ...podOpt) *pb.Pod {
	req := map[string]string{}
	if cpu != "" {
		req["cpu"] = cpu
	}
	if mem != "" {
		req["memory"] = mem
	}
	p := &pb.Pod{
		Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Uid: "uid-" + name},
		Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "c", Image: "img", Resources: &pb.ResourceRequirements{Requests: req}}}},
		Status:   &pb.PodStatus{Phase: "Pending"},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func selector(k, v string) podOpt {
	return func(p *pb.Pod) {
		if p.Spec.NodeSelector == nil {
			p.Spec.NodeSelector = map[string]string{}
		}
		p.Spec.NodeSelector[k] = v
	}
}

func tolerate(key, op, value, effect string) podOpt {
	return func(p *pb.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, &pb.Toleration{Key: key, Operator: op, Value: value, Effect: effect})
	}
}

// affinity adds one required term made of "key op v1,v2" expressions.
func affinity(exprs ...string) podOpt {
	return func(p *pb.Pod) {
		term := &pb.NodeSelectorTerm{}
		for _, e := range exprs {
			f := strings.Fields(e)
			r := &pb.NodeSelectorRequirement{Key: f[0], Operator: f[1]}
			if len(f) > 2 {
				r.Values = strings.Split(f[2], ",")
			}
			term.MatchExpressions = append(term.MatchExpressions, r)
		}
		if p.Spec.Affinity == nil {
			p.Spec.Affinity = &pb.Affinity{NodeAffinity: &pb.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &pb.NodeSelector{}}}
		}
		req := p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		req.NodeSelectorTerms = append(req.NodeSelectorTerms, term)
	}
}

func ownedBy(uid string) podOpt {
	return func(p *pb.Pod) {
		t := true
		p.Metadata.OwnerReferences = []*pb.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Uid: uid, Controller: &t}}
	}
}

func hostPortOpt(port int32) podOpt {
	return func(p *pb.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, &pb.ContainerPort{ContainerPort: 80, HostPort: port})
	}
}

func TestScheduleFilters(t *testing.T) {
	tests := []struct {
		name    string
		nodes   []*pb.Node
		bound   map[string][]*pb.Pod
		pod     *pb.Pod
		want    string // node, or "" when unschedulable
		wantMsg string
	}{
		{name: "fits", nodes: []*pb.Node{node("n1", "2", "4Gi")}, pod: pod("p", "1", "1Gi"), want: "n1"},
		{name: "no nodes", pod: pod("p", "1", "1Gi"), wantMsg: "no nodes available to schedule pods"},
		{name: "not ready", nodes: []*pb.Node{node("n1", "2", "4Gi", notReady)}, pod: pod("p", "1", "1Gi"),
			wantMsg: "0/1 nodes are available: 1 node(s) were not ready."},
		{name: "not ready tolerated", nodes: []*pb.Node{node("n1", "2", "4Gi", notReady)},
			pod: pod("p", "1", "1Gi", tolerate(TaintNotReady, "Exists", "", "")), want: "n1"},
		{name: "cordoned", nodes: []*pb.Node{node("n1", "2", "4Gi", cordoned)}, pod: pod("p", "1", "1Gi"),
			wantMsg: "0/1 nodes are available: 1 node(s) were unschedulable."},
		{name: "insufficient cpu and memory", nodes: []*pb.Node{node("n1", "500m", "512Mi")}, pod: pod("p", "1", "1Gi"),
			wantMsg: "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."},
		{name: "requests of bound pods count", nodes: []*pb.Node{node("n1", "2", "4Gi")},
			bound: map[string][]*pb.Pod{"n1": {pod("a", "1500m", "1Gi")}}, pod: pod("p", "1", "1Gi"),
			wantMsg: "0/1 nodes are available: 1 Insufficient cpu."},
		{name: "finished pods do not count", nodes: []*pb.Node{node("n1", "2", "4Gi")},
			bound: map[string][]*pb.Pod{"n1": {func() *pb.Pod { p := pod("a", "2", "1Gi"); p.Status.Phase = "Succeeded"; return p }()}},
			pod:   pod("p", "1", "1Gi"), want: "n1"},
		{name: "too many pods", nodes: []*pb.Node{node("n1", "2", "4Gi", maxPods("1"))},
			bound: map[string][]*pb.Pod{"n1": {pod("a", "", "")}}, pod: pod("p", "", ""),
			wantMsg: "0/1 nodes are available: 1 Too many pods."},
		{name: "no requests fit anywhere", nodes: []*pb.Node{node("n1", "0", "0")}, pod: pod("p", "", ""), want: "n1"},
		{name: "init containers take the max", nodes: []*pb.Node{node("n1", "2", "4Gi")},
			pod: func() *pb.Pod {
				p := pod("p", "1", "1Gi")
				p.Spec.InitContainers = []*pb.Container{{Name: "init", Resources: &pb.ResourceRequirements{Requests: map[string]string{"cpu": "3"}}}}
				return p
			}(), wantMsg: "0/1 nodes are available: 1 Insufficient cpu."},
		{name: "extended resource", nodes: []*pb.Node{node("n1", "2", "4Gi")},
			pod: func() *pb.Pod {
				p := pod("p", "1", "1Gi")
				p.Spec.Containers[0].Resources.Requests["example.com/gpu"] = "1"
				return p
			}(), wantMsg: "0/1 nodes are available: 1 Insufficient example.com/gpu."},
		{name: "invalid request", nodes: []*pb.Node{node("n1", "2", "4Gi")}, pod: pod("p", "lots", ""),
			wantMsg: `invalid pod: container c: resources.requests.cpu: "lots": *`},
		{name: "nodeSelector", nodes: []*pb.Node{node("n1", "2", "4Gi"), node("n2", "2", "4Gi", label("disk", "ssd"))},
			pod: pod("p", "1", "1Gi", selector("disk", "ssd")), want: "n2"},
		{name: "nodeSelector matches nothing", nodes: []*pb.Node{node("n1", "2", "4Gi"), node("n2", "2", "4Gi", label("disk", "hdd"))},
			pod: pod("p", "1", "1Gi", selector("disk", "ssd")), wantMsg: "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."},
		{name: "affinity In", nodes: []*pb.Node{node("n1", "2", "4Gi", label("zone", "a")), node("n2", "2", "4Gi", label("zone", "b"))},
			pod: pod("p", "1", "1Gi", affinity("zone In b,c")), want: "n2"},
		{name: "affinity NotIn", nodes: []*pb.Node{node("n1", "2", "4Gi", label("zone", "a")), node("n2", "2", "4Gi", label("zone", "b"))},
			pod: pod("p", "1", "1Gi", affinity("zone NotIn a")), want: "n2"},
		{name: "affinity NotIn matches a missing label", nodes: []*pb.Node{node("n1", "2", "4Gi", label("zone", "a")), node("n2", "2", "4Gi")},
			pod: pod("p", "1", "1Gi", affinity("zone NotIn a")), want: "n2"},
		{name: "affinity Exists", nodes: []*pb.Node{node("n1", "2", "4Gi"), node("n2", "2", "4Gi", label("gpu", ""))},
			pod: pod("p", "1", "1Gi", affinity("gpu Exists")), want: "n2"},
		{name: "affinity DoesNotExist", nodes: []*pb.Node{node("n1", "2", "4Gi", label("gpu", "")), node("n2", "2", "4Gi")},
			pod: pod("p", "1", "1Gi", affinity("gpu DoesNotExist")), want: "n2"},
		{name: "affinity Gt", nodes: []*pb.Node{node("n1", "2", "4Gi", label("gen", "3")), node("n2", "2", "4Gi", label("gen", "5"))},
			pod: pod("p", "1", "1Gi", affinity("gen Gt 4")), want: "n2"},
		{name: "affinity Lt", nodes: []*pb.Node{node("n1", "2", "4Gi", label("gen", "3")), node("n2", "2", "4Gi", label("gen", "5"))},
			pod: pod("p", "1", "1Gi", affinity("gen Lt 4")), want: "n1"},
		{name: "affinity Gt on a non-number", nodes: []*pb.Node{node("n1", "2", "4Gi", label("gen", "x"))},
			pod: pod("p", "1", "1Gi", affinity("gen Gt 4")), wantMsg: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."},
		{name: "affinity expressions are ANDed", nodes: []*pb.Node{node("n1", "2", "4Gi", label("zone", "a")), node("n2", "2", "4Gi", label("zone", "a"), label("disk", "ssd"))},
			pod: pod("p", "1", "1Gi", affinity("zone In a", "disk In ssd")), want: "n2"},
		{name: "affinity terms are ORed", nodes: []*pb.Node{node("n1", "2", "4Gi", label("zone", "a")), node("n2", "2", "4Gi", label("zone", "b"))},
			pod: pod("p", "1", "1Gi", affinity("zone In x"), affinity("zone In b")), want: "n2"},
		{name: "NoSchedule taint", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("dedicated", "db", "NoSchedule"))},
			pod: pod("p", "1", "1Gi"), wantMsg: "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."},
		{name: "NoExecute taint", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("bad", "", "NoExecute"))},
			pod: pod("p", "1", "1Gi"), wantMsg: "0/1 nodes are available: 1 node(s) had untolerated taint {bad: }."},
		{name: "PreferNoSchedule is not a filter", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("meh", "", "PreferNoSchedule"))},
			pod: pod("p", "1", "1Gi"), want: "n1"},
		{name: "toleration Equal", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("dedicated", "db", "NoSchedule"))},
			pod: pod("p", "1", "1Gi", tolerate("dedicated", "Equal", "db", "NoSchedule")), want: "n1"},
		{name: "toleration Equal other value", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("dedicated", "db", "NoSchedule"))},
			pod: pod("p", "1", "1Gi", tolerate("dedicated", "Equal", "web", "")), wantMsg: "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."},
		{name: "toleration other effect", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("dedicated", "db", "NoSchedule"))},
			pod: pod("p", "1", "1Gi", tolerate("dedicated", "Exists", "", "NoExecute")), wantMsg: "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."},
		{name: "toleration Exists any key", nodes: []*pb.Node{node("n1", "2", "4Gi", taint("a", "1", "NoSchedule"), taint("b", "2", "NoExecute"))},
			pod: pod("p", "1", "1Gi", tolerate("", "Exists", "", "")), want: "n1"},
		{name: "host port in use", nodes: []*pb.Node{node("n1", "2", "4Gi"), node("n2", "2", "4Gi")},
			bound: map[string][]*pb.Pod{"n1": {pod("a", "", "", hostPortOpt(8080))}}, pod: pod("p", "", "", hostPortOpt(8080)), want: "n2"},
		{name: "mixed reasons", nodes: []*pb.Node{
			node("n1", "4", "1Gi"), node("n2", "4", "1Gi"), node("n3", "4", "8Gi", taint("key", "value", "NoSchedule")),
		}, pod: pod("p", "1", "2Gi"),
			wantMsg: "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient memory."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Schedule(tc.pod, tc.nodes, tc.bound, DefaultPolicy())
			if res.Node != tc.want {
				t.Fatalf("node = %q (message %q), want %q", res.Node, res.Message, tc.want)
			}
			if prefix, ok := strings.CutSuffix(tc.wantMsg, "*"); ok {
				if !strings.HasPrefix(res.Message, prefix) {
					t.Errorf("message:\n got %s\nwant %s...", res.Message, prefix)
				}
				return
			}
			if tc.want == "" && res.Message != tc.wantMsg {
				t.Errorf("message:\n got %s\nwant %s", res.Message, tc.wantMsg)
			}
		})
	}
}

func TestScheduleScores(t *testing.T) {
	nodes := []*pb.Node{node("small", "2", "4Gi"), node("big", "8", "16Gi")}
	bound := map[string][]*pb.Pod{"small": {pod("a", "500m", "1Gi")}}
	if got := Schedule(pod("p", "500m", "512Mi"), nodes, bound, DefaultPolicy()).Node; got != "big" {
		t.Errorf("LeastAllocated chose %s, want big", got)
	}
	most := Policy{Strategy: MostAllocated, ResourceWeight: 1, SpreadWeight: 2}
	if got := Schedule(pod("p", "500m", "512Mi"), nodes, bound, most).Node; got != "small" {
		t.Errorf("MostAllocated chose %s, want small", got)
	}
}

func TestScheduleSpreadsOwnersPods(t *testing.T) {
	s := NewSnapshot([]*pb.Node{node("n1", "8", "16Gi"), node("n2", "8", "16Gi"), node("n3", "8", "16Gi")})
	// Another owner's pods make n1 busier; spreading still dominates for rs-1.
	counts := map[string]int{}
	for i := range 6 {
		p := pod(fmt.Sprintf("p%d", i), "100m", "128Mi", ownedBy("rs-1"))
		res := s.Schedule(p, DefaultPolicy())
		if res.Node == "" {
			t.Fatalf("pod %d unschedulable: %s", i, res.Message)
		}
		if err := s.AddPod(p, res.Node); err != nil {
			t.Fatal(err)
		}
		counts[res.Node]++
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if counts[n] != 2 {
			t.Errorf("pods per node = %v, want 2 each", counts)
		}
	}
}

func TestSnapshotAccountsPlacedPods(t *testing.T) {
	s := NewSnapshot([]*pb.Node{node("n1", "1", "4Gi")})
	var got []string
	for i := range 3 {
		p := pod(fmt.Sprintf("p%d", i), "400m", "", nil...)
		res := s.Schedule(p, DefaultPolicy())
		if res.Node != "" {
			if err := s.AddPod(p, res.Node); err != nil {
				t.Fatal(err)
			}
		}
		got = append(got, res.Node+"|"+res.Message)
	}
	want := []string{"n1|", "n1|", "|0/1 nodes are available: 1 Insufficient cpu."}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFeasibleNodesToFind(t *testing.T) {
	for _, tc := range []struct {
		nodes      int
		percentage int32
		want       int
	}{
		{3, 0, 3}, {99, 0, 99}, {99, 10, 99}, {100, 0, 100}, {200, 0, 100}, {500, 0, 230}, {1000, 0, 420},
		{5000, 0, 500}, {10000, 0, 500}, {1000, 100, 1000}, {1000, 30, 300}, {1000, 1, 100},
	} {
		if got := feasibleNodesToFind(tc.nodes, tc.percentage); got != tc.want {
			t.Errorf("feasibleNodesToFind(%d, %d) = %d, want %d", tc.nodes, tc.percentage, got, tc.want)
		}
	}
}

// In a large cluster the search stops once enough nodes fit (420 of 1,000
// by default), and the next pod searches on from there: the emptiest node,
// past the first window, is found by the third pod, or by the first when
// every node is scored. A pod that fits nowhere is checked everywhere.
func TestScheduleSamplesLargeClusters(t *testing.T) {
	var nodes []*pb.Node
	bound := map[string][]*pb.Pod{}
	for i := range 1000 {
		name := fmt.Sprintf("n%04d", i)
		nodes = append(nodes, node(name, "8", "16Gi"))
		if i != 900 {
			bound[name] = []*pb.Pod{pod("busy-"+name, "2", "4Gi")}
		}
	}
	for _, tc := range []struct {
		percentage int32
		want       []string
	}{
		{0, []string{"", "", "n0900"}},
		{100, []string{"n0900"}},
	} {
		s := NewSnapshot(nodes)
		for n, pods := range bound {
			for _, p := range pods {
				if err := s.AddPod(p, n); err != nil {
					t.Fatal(err)
				}
			}
		}
		policy := DefaultPolicy()
		policy.PercentageOfNodesToScore = tc.percentage
		for i, want := range tc.want {
			p := pod(fmt.Sprintf("p%d", i), "100m", "128Mi")
			res := s.Schedule(p, policy)
			if res.Node == "" {
				t.Fatalf("percentage %d, pod %d: unschedulable: %s", tc.percentage, i, res.Message)
			}
			if (want == "") == (res.Node == "n0900") || want != "" && res.Node != want {
				t.Errorf("percentage %d, pod %d: placed on %s, want %q (empty: any node but n0900)", tc.percentage, i, res.Node, want)
			}
		}
		if res := s.Schedule(pod("huge", "64", "1Gi"), policy); res.Node != "" || !strings.HasPrefix(res.Message, "0/1000 nodes are available: 1000 Insufficient cpu") {
			t.Errorf("percentage %d: a pod that fits nowhere: %+v", tc.percentage, res)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := (Policy{Strategy: "Random"}).Validate(); err == nil || !strings.Contains(err.Error(), "Strategy") {
		t.Errorf("Validate = %v, want an error naming Strategy", err)
	}
	for _, pct := range []int32{-1, 101} {
		p := DefaultPolicy()
		p.PercentageOfNodesToScore = pct
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "PercentageOfNodesToScore") {
			t.Errorf("Validate with PercentageOfNodesToScore %d = %v, want an error naming it", pct, err)
		}
	}
	if err := DefaultPolicy().Validate(); err != nil {
		t.Errorf("DefaultPolicy().Validate() = %v", err)
	}
}
