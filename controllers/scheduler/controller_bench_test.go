package scheduler

import (
	"fmt"
	"testing"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// BenchmarkSchedulerBinds5000Pods runs the controller end to end against
// the in-memory Fake: 5,000 pending pods on 1,000 nodes, bound in batches.
func BenchmarkSchedulerBinds5000Pods(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		var items []*pb.Object
		for i := range 1000 {
			items = append(items, pb.Wrap(node(fmt.Sprintf("node-%04d", i), "64", "256Gi")))
		}
		for i := range 5000 {
			items = append(items, pb.Wrap(pod(fmt.Sprintf("p%05d", i), "100m", "128Mi", ownedBy(fmt.Sprintf("rs-%d", i%100)))))
		}
		h := controllertest.NewHarness(b, items...)
		b.StartTimer()
		s := runSchedulerB(b, h)
		h.Eventually(func() bool {
			for _, o := range h.Fake.Objects("Pod") {
				if o.GetPod().GetSpec().GetNodeName() == "" {
					return false
				}
			}
			return true
		}, "all pods bound")
		_ = s
	}
}

// BenchmarkSchedulerSmallBatch is one batch as bare pods arrive a few at a
// time: the placement view of 1,000 nodes running 10,000 pods, and 5 pods
// placed on it.
func BenchmarkSchedulerSmallBatch(b *testing.B) {
	nodes, bound := benchCluster(1000, 10)
	var items []*pb.Object
	for _, n := range nodes {
		items = append(items, pb.Wrap(n))
	}
	for name, ps := range bound {
		for _, p := range ps {
			p.Spec.NodeName, p.Status.Phase = name, "Running"
			items = append(items, pb.Wrap(p))
		}
	}
	h := controllertest.NewHarness(b, items...)
	s, err := New(h.Env(Name), DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	h.Start()
	if !controllers.WaitForSync(h.Context(), s.pods, s.nodes) {
		b.Fatal("informers did not sync")
	}
	pods := make([]*pb.Pod, 5)
	infos := make([]*podInfo, len(pods))
	for i := range pods {
		pods[i] = pod(fmt.Sprintf("new-%d", i), "100m", "128Mi")
		if infos[i], err = newPodInfo(pods[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		snap, _ := s.snapshot()
		for i, p := range pods {
			res := snap.schedule(p, infos[i], DefaultPolicy())
			if res.Node == "" {
				b.Fatalf("unschedulable: %s", res.Message)
			}
			snap.addPodInfo(infos[i], res.Node)
		}
	}
}
