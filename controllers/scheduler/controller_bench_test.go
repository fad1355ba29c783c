package scheduler

import (
	"fmt"
	"testing"

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
