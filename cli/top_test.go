package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

func TestUsageCells(t *testing.T) {
	for _, tc := range []struct {
		u        usage
		cpu, mem string
	}{
		// kubectl rounds CPU up to a millicore and memory down to a MiB.
		{usage{nanoCores: 329087452, memory: 7*1024*1024 + 900*1024}, "330m", "7Mi"},
		{usage{nanoCores: 1e9, memory: 1 << 30}, "1000m", "1024Mi"},
		{usage{nanoCores: 1, memory: 1}, "1m", "0Mi"},
		{usage{}, "0m", "0Mi"},
	} {
		if cpu, mem := tc.u.cpuString(), tc.u.memString(); cpu != tc.cpu || mem != tc.mem {
			t.Errorf("%+v: %s %s, want %s %s", tc.u, cpu, mem, tc.cpu, tc.mem)
		}
	}
}

func topRows() []podTop {
	return []podTop{
		{namespace: "prod", name: "web", containers: []containerTop{
			{name: "app", usage: usage{nanoCores: 250e6, memory: 40 << 20}},
			{name: "sidecar", usage: usage{nanoCores: 5e6, memory: 90 << 20}},
		}},
		{namespace: "default", name: "db", containers: []containerTop{{name: "db", usage: usage{nanoCores: 100e6, memory: 300 << 20}}}},
		{namespace: "default", name: "cache", containers: []containerTop{{name: "redis", usage: usage{nanoCores: 2e6, memory: 20 << 20}}}},
	}
}

func TestTopPodsTable(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		containers, withNS, noHead bool
		sortBy                     string
		sum                        bool
		want                       string
	}{
		{name: "sum", sum: true, want: `NAME    CPU(cores)   MEMORY(bytes)
cache   2m           20Mi
db      100m         300Mi
web     255m         130Mi
        ________     ________
        357m         450Mi
`},
		{name: "containers, all namespaces, sum", containers: true, withNS: true, sum: true, noHead: true, want: `default   cache   redis     2m         20Mi
default   db      db        100m       300Mi
prod      web     app       250m       40Mi
prod      web     sidecar   5m         90Mi
                            ________   ________
                            357m       450Mi
`},
		{name: "by name", want: `NAME    CPU(cores)   MEMORY(bytes)
cache   2m           20Mi
db      100m         300Mi
web     255m         130Mi
`},
		{name: "all namespaces", withNS: true, want: `NAMESPACE   NAME    CPU(cores)   MEMORY(bytes)
default     cache   2m           20Mi
default     db      100m         300Mi
prod        web     255m         130Mi
`},
		{name: "by cpu", sortBy: "cpu", want: `NAME    CPU(cores)   MEMORY(bytes)
web     255m         130Mi
db      100m         300Mi
cache   2m           20Mi
`},
		{name: "by memory, no headers", sortBy: "memory", noHead: true, want: `db      100m   300Mi
web     255m   130Mi
cache   2m     20Mi
`},
		{name: "containers", containers: true, want: `POD     NAME      CPU(cores)   MEMORY(bytes)
cache   redis     2m           20Mi
db      db        100m         300Mi
web     app       250m         40Mi
web     sidecar   5m           90Mi
`},
		{name: "containers by memory, all namespaces", containers: true, withNS: true, sortBy: "memory", want: `NAMESPACE   POD     NAME      CPU(cores)   MEMORY(bytes)
default     db      db        100m         300Mi
prod        web     sidecar   5m           90Mi
prod        web     app       250m         40Mi
default     cache   redis     2m           20Mi
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			opts := topPodsOptions{containers: tc.containers, allNamespaces: tc.withNS, noHeaders: tc.noHead, sortBy: tc.sortBy, sum: tc.sum}
			if err := printTopPods(&out, topRows(), opts); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}
}

func TestTopNodesTable(t *testing.T) {
	q := resource.MustParse
	nodes := func() []nodeTop {
		return []nodeTop{
			{name: "w2", known: true, usage: usage{nanoCores: 1500e6, memory: 6 << 30}, cpu: q("2"), memory: q("8Gi"), hasCPU: true, hasMem: true},
			{name: "gone", cpu: q("2"), memory: q("8Gi"), hasCPU: true, hasMem: true},
			{name: "w1", known: true, usage: usage{nanoCores: 333e6, memory: 1 << 30}, cpu: q("4"), memory: q("16Gi"), hasCPU: true, hasMem: true},
			{name: "h1"},
			{name: "odd", known: true, usage: usage{nanoCores: 1e6, memory: 1 << 20}},
		}
	}
	var out bytes.Buffer
	if err := printTopNodes(&out, nodes(), false, ""); err != nil {
		t.Fatal(err)
	}
	// 333m of 4 cores is 8.3%, kubectl truncates; nodes without usage come
	// last, by name.
	want := `NAME   CPU(cores)   CPU(%)      MEMORY(bytes)   MEMORY(%)
odd    1m           <unknown>   1Mi             <unknown>
w1     333m         8%          1024Mi          6%
w2     1500m        75%         6144Mi          75%
gone   <unknown>    <unknown>   <unknown>       <unknown>
h1     <unknown>    <unknown>   <unknown>       <unknown>
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if err := printTopNodes(&out, nodes(), true, "cpu"); err != nil {
		t.Fatal(err)
	}
	want = `w2     1500m       75%         6144Mi      75%
w1     333m        8%          1024Mi      6%
odd    1m          <unknown>   1Mi         <unknown>
gone   <unknown>   <unknown>   <unknown>   <unknown>
h1     <unknown>   <unknown>   <unknown>   <unknown>
`
	if out.String() != want {
		t.Errorf("--sort-by=cpu --no-headers: got\n%s\nwant\n%s", out.String(), want)
	}
}

// fakeTop serves pods and nodes, and each node's stats or error.
type fakeTop struct {
	pods  []*pb.Pod
	nodes []*pb.Node
	stats map[string]*pb.StatsResponse
	errs  map[string]error

	mu   sync.Mutex
	reqs []*pb.StatsRequest
}

func (f *fakeTop) Get(_ context.Context, kind, ns, name string, _ client.ReadOptions) (*pb.Object, error) {
	for _, p := range f.pods {
		if kind == "Pod" && p.GetMetadata().GetNamespace() == ns && p.GetMetadata().GetName() == name {
			return pb.Wrap(p), nil
		}
	}
	for _, n := range f.nodes {
		if kind == "Node" && n.GetMetadata().GetName() == name {
			return pb.Wrap(n), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "not found: %ss %q", strings.ToLower(kind), name)
}

func (f *fakeTop) List(_ context.Context, kind string, opts client.ListOptions) ([]*pb.Object, uint64, error) {
	var out []*pb.Object
	if kind == "Node" {
		for _, n := range f.nodes {
			if opts.LabelSelector == "" || n.GetMetadata().GetLabels()["pool"] == strings.TrimPrefix(opts.LabelSelector, "pool=") {
				out = append(out, pb.Wrap(n))
			}
		}
		return out, 1, nil
	}
	for _, p := range f.pods {
		node, onNode := strings.CutPrefix(opts.FieldSelector, "spec.nodeName=")
		if (opts.Namespace == "" || p.GetMetadata().GetNamespace() == opts.Namespace) &&
			(opts.FieldSelector == "" || onNode && p.GetSpec().GetNodeName() == node) {
			out = append(out, pb.Wrap(p))
		}
	}
	return out, 1, nil
}

func (f *fakeTop) Stats(_ context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if err := f.errs[req.GetNodeName()]; err != nil {
		return nil, err
	}
	resp := f.stats[req.GetNodeName()]
	if req.GetNodeOnly() {
		return &pb.StatsResponse{Node: resp.GetNode()}, nil
	}
	out := &pb.StatsResponse{Node: resp.GetNode()}
	for _, p := range resp.GetPods() {
		if (req.GetNamespace() == "" || p.GetNamespace() == req.GetNamespace()) && (req.GetPod() == "" || p.GetName() == req.GetPod()) {
			out.Pods = append(out.Pods, p)
		}
	}
	if req.GetPod() != "" && len(out.Pods) == 0 {
		return nil, status.Errorf(codes.NotFound, "pod %s/%s is not running on node %s", req.GetNamespace(), req.GetPod(), req.GetNodeName())
	}
	return out, nil
}

func topPod(ns, name, node, phase string) *pb.Pod {
	return &pb.Pod{Metadata: &pb.ObjectMeta{Namespace: ns, Name: name, Uid: "uid-" + name},
		Spec: &pb.PodSpec{NodeName: node}, Status: &pb.PodStatus{Phase: phase}}
}

func podUsage(ns, name string, containers ...*pb.ContainerUsage) *pb.PodUsage {
	return &pb.PodUsage{Namespace: ns, Name: name, Uid: "uid-" + name, Containers: containers}
}

func ctrUsage(name string, milli, mib uint64) *pb.ContainerUsage {
	return &pb.ContainerUsage{Name: name, Usage: &pb.ResourceUsage{UsageNanoCores: milli * 1e6, MemoryWorkingSetBytes: mib << 20}}
}

func topNode(name, cpu, memory string) *pb.Node {
	return &pb.Node{Metadata: &pb.ObjectMeta{Name: name, Labels: map[string]string{"pool": "a"}},
		Status: &pb.NodeStatus{Allocatable: map[string]string{"cpu": cpu, "memory": memory}, Capacity: map[string]string{"cpu": "8", "memory": "32Gi"}}}
}

func newFakeTop() *fakeTop {
	return &fakeTop{
		pods: []*pb.Pod{
			topPod("default", "web", "w1", "Running"),
			topPod("default", "api", "w1", "Running"),
			topPod("default", "crashing", "w1", "Running"), // no running container: not in w1's answer
			topPod("default", "far", "w2", "Running"),
			topPod("default", "ghost", "h1", "Running"),
			topPod("default", "pending", "", "Pending"),
			topPod("default", "done", "w1", "Succeeded"),
			topPod("prod", "db", "w1", "Running"),
		},
		nodes: []*pb.Node{topNode("w1", "2", "4Gi"), topNode("w2", "2", "4Gi"), topNode("h1", "2", "4Gi")},
		stats: map[string]*pb.StatsResponse{"w1": {
			Node: &pb.ResourceUsage{UsageNanoCores: 500e6, MemoryWorkingSetBytes: 1 << 30},
			Pods: []*pb.PodUsage{
				podUsage("default", "web", ctrUsage("app", 200, 64), ctrUsage("log", 1, 8)),
				podUsage("default", "api", ctrUsage("api", 50, 32)),
				podUsage("prod", "db", ctrUsage("db", 120, 512)),
			},
		}},
		errs: map[string]error{
			"w2": pb.NodeUnreachableError("cannot reach the worker of node w2 at 10.0.0.2:10250: connection refused"),
			"h1": status.Error(codes.Unimplemented, "node h1 is hollow: it runs no containers and reports no usage"),
		},
	}
}

func TestRunTopPods(t *testing.T) {
	f := newFakeTop()
	var out, errOut bytes.Buffer
	if err := runTopPods(context.Background(), f, topPodsOptions{namespace: "default"}, "", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	want := `NAME   CPU(cores)   MEMORY(bytes)
api    50m          32Mi
web    201m         72Mi
`
	if out.String() != want {
		t.Errorf("top pods: got\n%s\nwant\n%s", out.String(), want)
	}
	wantErr := "warning: no usage from node w2 (1 pod left out): cannot reach the worker of node w2 at 10.0.0.2:10250: connection refused\n" +
		"warning: no usage from hollow nodes (they run no containers): h1\n"
	if errOut.String() != wantErr {
		t.Errorf("warnings: got\n%s\nwant\n%s", errOut.String(), wantErr)
	}
	// One request per node of a pod that may run: not the pending or the
	// finished pod's.
	if len(f.reqs) != 3 {
		t.Errorf("stats requests: %v, want one for each of w1, w2, h1", f.reqs)
	}
	for _, r := range f.reqs {
		if r.GetNamespace() != "default" || r.GetNodeOnly() || r.GetPod() != "" {
			t.Errorf("request %v, want the default namespace's pods", r)
		}
	}

	out.Reset()
	errOut.Reset()
	if err := runTopPods(context.Background(), f, topPodsOptions{allNamespaces: true, containers: true, sortBy: "memory"}, "", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	want = `NAMESPACE   POD   NAME   CPU(cores)   MEMORY(bytes)
prod        db    db     120m         512Mi
default     web   app    200m         64Mi
default     web   log    1m           8Mi
default     api   api    50m          32Mi
`
	if out.String() != want {
		t.Errorf("top pods -A --containers --sort-by=memory: got\n%s\nwant\n%s", out.String(), want)
	}

	// The pods on one node: only w1's are asked for and shown.
	f.reqs = nil
	out.Reset()
	errOut.Reset()
	if err := runTopPods(context.Background(), f, topPodsOptions{allNamespaces: true, fieldSelector: "spec.nodeName=w1"}, "", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "far") || errOut.Len() != 0 || len(f.reqs) != 1 || f.reqs[0].GetNodeName() != "w1" {
		t.Errorf("top pods --field-selector spec.nodeName=w1: requests %v\n%s%s", f.reqs, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "web ") {
		t.Errorf("top pods --field-selector spec.nodeName=w1: no row for web:\n%s", out.String())
	}

	// One pod by name.
	f.reqs = nil
	out.Reset()
	if err := runTopPods(context.Background(), f, topPodsOptions{namespace: "default", containers: true}, "web", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if want := "POD   NAME   CPU(cores)   MEMORY(bytes)\nweb   app    200m         64Mi\nweb   log    1m           8Mi\n"; out.String() != want {
		t.Errorf("top pod web --containers: got\n%s\nwant\n%s", out.String(), want)
	}
	if len(f.reqs) != 1 || f.reqs[0].GetPod() != "web" || f.reqs[0].GetNodeName() != "w1" {
		t.Errorf("requests for one pod: %v", f.reqs)
	}

	// A named pod without usage says why, and what to look at.
	for _, tc := range []struct{ pod, want string }{
		{"crashing", "metrics not available yet: pod default/crashing has no running container on node w1 (skiff describe pod crashing shows why)"},
		{"pending", "metrics not available yet: pod default/pending is not scheduled to a node (skiff describe pod pending shows why)"},
		{"done", "pod default/done has succeeded: it runs no containers"},
		{"ghost", "no usage for pod default/ghost: node h1 is hollow: it runs no containers and reports no usage"},
		{"far", "no usage for pod default/far: cannot reach the worker of node w2"},
		{"nope", `pods "nope"`},
	} {
		err := runTopPods(context.Background(), f, topPodsOptions{namespace: "default"}, tc.pod, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("top pod %s: %v, want %q", tc.pod, err, tc.want)
		}
	}

	// Pods, but none with usage.
	f.stats = map[string]*pb.StatsResponse{"w1": {Node: f.stats["w1"].GetNode()}}
	out.Reset()
	err := runTopPods(context.Background(), f, topPodsOptions{namespace: "default"}, "", &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "metrics not available yet") || out.Len() != 0 {
		t.Errorf("top pods without usage: %v\n%s", err, out.String())
	}
	// No pods at all.
	errOut.Reset()
	if err := runTopPods(context.Background(), f, topPodsOptions{namespace: "empty"}, "", &out, &errOut); err != nil || errOut.String() != "No pods found in namespace empty.\n" {
		t.Errorf("top pods -n empty: %v %q", err, errOut.String())
	}
}

func TestRunTopNodes(t *testing.T) {
	f := newFakeTop()
	var out, errOut bytes.Buffer
	if err := runTopNodes(context.Background(), f, topNodesOptions{}, "", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	want := `NAME   CPU(cores)   CPU(%)      MEMORY(bytes)   MEMORY(%)
w1     500m         25%         1024Mi          25%
h1     <unknown>    <unknown>   <unknown>       <unknown>
w2     <unknown>    <unknown>   <unknown>       <unknown>
`
	if out.String() != want {
		t.Errorf("top nodes: got\n%s\nwant\n%s", out.String(), want)
	}
	if !strings.Contains(errOut.String(), "warning: no usage from node w2: cannot reach the worker") ||
		!strings.Contains(errOut.String(), "warning: no usage from hollow nodes (they run no containers): h1\n") {
		t.Errorf("warnings: %q", errOut.String())
	}
	for _, r := range f.reqs {
		if !r.GetNodeOnly() {
			t.Errorf("request %v asks for pods", r)
		}
	}

	out.Reset()
	if err := runTopNodes(context.Background(), f, topNodesOptions{showCapacity: true, noHeaders: true}, "w1", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if want := "w1   500m   6%   1024Mi   3%\n"; out.String() != want {
		t.Errorf("top node w1 --show-capacity: got %q, want %q", out.String(), want)
	}
	if err := runTopNodes(context.Background(), f, topNodesOptions{}, "w9", &out, &errOut); err == nil || !strings.Contains(err.Error(), `nodes "w9"`) {
		t.Errorf("top node w9: %v", err)
	}
}

func TestTopRefusesBadArgumentsBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `--sort-by "name": use cpu or memory`, "top", "pods", "--sort-by", "name")
	refusedBeforeConnecting(t, `--sort-by "mem": use cpu or memory`, "top", "nodes", "--sort-by=mem")
	refusedBeforeConnecting(t, "only one of NAME or --selector can be provided", "top", "pod", "web", "-l", "app=web")
	refusedBeforeConnecting(t, "only one of NAME or --field-selector can be provided", "top", "pod", "web", "--field-selector", "spec.nodeName=w1")
	refusedBeforeConnecting(t, "only one of NAME or --selector can be provided", "top", "node", "w1", "-l", "pool=a")
	refusedBeforeConnecting(t, "a pod cannot be named across all namespaces", "top", "po", "web", "-A")
}
