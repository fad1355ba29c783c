package scheduler

import (
	"fmt"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
)

func benchCluster(nodes, podsPerNode int) ([]*pb.Node, map[string][]*pb.Pod) {
	ns := make([]*pb.Node, nodes)
	bound := make(map[string][]*pb.Pod, nodes)
	for i := range ns {
		name := fmt.Sprintf("node-%04d", i)
		opts := []nodeOpt{label("zone", fmt.Sprintf("z%d", i%3))}
		if i%10 == 0 {
			opts = append(opts, taint("dedicated", "db", "NoSchedule"))
		}
		ns[i] = node(name, "64", "256Gi", opts...)
		for j := range podsPerNode {
			bound[name] = append(bound[name], pod(fmt.Sprintf("%s-p%d", name, j), "250m", "512Mi", ownedBy(fmt.Sprintf("rs-%d", j%20))))
		}
	}
	return ns, bound
}

func newBenchSnapshot(b *testing.B, nodes []*pb.Node, bound map[string][]*pb.Pod) *Snapshot {
	s := NewSnapshot(nodes)
	for n, ps := range bound {
		for _, p := range ps {
			if err := s.AddPod(p, n); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s
}

// BenchmarkSchedule places pods one after another on 1,000 nodes already
// running 10 pods each, accounting every placement as the controller does
// within a batch.
func BenchmarkSchedule(b *testing.B) {
	nodes, bound := benchCluster(1000, 10)
	pods := make([]*pb.Pod, 1000)
	for i := range pods {
		pods[i] = pod(fmt.Sprintf("new-%d", i), "100m", "128Mi", ownedBy(fmt.Sprintf("rs-%d", i%50)), affinity("zone In z0,z1"))
	}
	s := newBenchSnapshot(b, nodes, bound)
	b.ReportAllocs()
	b.ResetTimer()
	placed := 0
	for i := 0; i < b.N; i++ {
		if placed == 20000 { // keep the cluster from filling up
			b.StopTimer()
			s, placed = newBenchSnapshot(b, nodes, bound), 0
			b.StartTimer()
		}
		p := pods[i%len(pods)]
		res := s.Schedule(p, DefaultPolicy())
		if res.Node == "" {
			b.Fatalf("unschedulable: %s", res.Message)
		}
		if err := s.AddPod(p, res.Node); err != nil {
			b.Fatal(err)
		}
		placed++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pods/s")
}

// BenchmarkScheduleBatch is one scheduler batch end to end: build the
// snapshot of 1,000 nodes and 10,000 bound pods, then place 500 pods.
func BenchmarkScheduleBatch(b *testing.B) {
	nodes, bound := benchCluster(1000, 10)
	pods := make([]*pb.Pod, 500)
	for i := range pods {
		pods[i] = pod(fmt.Sprintf("new-%d", i), "100m", "128Mi", ownedBy(fmt.Sprintf("rs-%d", i%50)))
	}
	b.ReportAllocs()
	for b.Loop() {
		s := newBenchSnapshot(b, nodes, bound)
		for _, p := range pods {
			res := s.Schedule(p, DefaultPolicy())
			if res.Node == "" {
				b.Fatalf("unschedulable: %s", res.Message)
			}
			if err := s.AddPod(p, res.Node); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkScheduleUnschedulable measures the slow path: every node is
// filtered out and the message is built.
func BenchmarkScheduleUnschedulable(b *testing.B) {
	nodes, bound := benchCluster(1000, 10)
	s := newBenchSnapshot(b, nodes, bound)
	p := pod("huge", "100", "1Ti")
	b.ReportAllocs()
	for b.Loop() {
		if res := s.Schedule(p, DefaultPolicy()); res.Node != "" {
			b.Fatal("scheduled a pod that fits nowhere")
		}
	}
}
