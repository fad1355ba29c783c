package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func readyNode(name string) *pb.Object {
	return pb.Wrap(&pb.Node{
		Metadata: &pb.ObjectMeta{Name: name},
		Status: &pb.NodeStatus{
			Capacity:    map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110"},
			Allocatable: map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110"},
			Conditions:  []*pb.NodeCondition{{Type: "Ready", Status: "True", LastHeartbeatTime: timestamppb.Now()}},
		},
	})
}

// TestControllersRunOnTheLeader drives the built-in controllers through real
// masters: a Deployment becomes a ReplicaSet whose pods the scheduler binds,
// and after the leader is stopped the new leader's controllers carry on
// (scaling up) where the old ones left off.
func TestControllersRunOnTheLeader(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, testConfigs(t, 3, 3))
	leader := waitLeader(t, servers)
	c := followers(servers, leader)[0].cluster()

	for _, n := range []string{"n1", "n2"} {
		if _, err := c.Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: readyNode(n)}); err != nil {
			t.Fatal(err)
		}
		// Status is written separately from spec, as a worker would.
		if _, err := c.UpdateStatus(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: readyNode(n)}); err != nil {
			t.Fatal(err)
		}
	}
	replicas := int32(4)
	labels := map[string]string{"app": "web"}
	dep := pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: &pb.DeploymentSpec{
			Replicas: &replicas,
			Selector: &pb.LabelSelector{MatchLabels: labels},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: labels},
				Spec: &pb.PodSpec{Containers: []*pb.Container{{
					Name: "app", Image: "example/web:v1",
					Resources: &pb.ResourceRequirements{Requests: map[string]string{"cpu": "100m", "memory": "64Mi"}},
				}}},
			},
		},
	})
	if _, err := c.Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: dep}); err != nil {
		t.Fatal(err)
	}
	boundPods := func(want int) func() error {
		return func() error {
			resp, err := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: "Pod", Namespace: "default", LabelSelector: "app=web"}))
			if err != nil {
				return err
			}
			bound, nodes := 0, map[string]int{}
			for _, p := range resp.GetItems() {
				if n := p.GetPod().GetSpec().GetNodeName(); n != "" {
					bound++
					nodes[n]++
				}
			}
			if len(resp.GetItems()) != want || bound != want {
				return fmt.Errorf("%d pods, %d bound (%v), want %d bound", len(resp.GetItems()), bound, nodes, want)
			}
			if len(nodes) != 2 {
				return fmt.Errorf("pods not spread over both nodes: %v", nodes)
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, "4 pods bound", boundPods(4))

	// Stop the leader: the next leader's controllers take over.
	leader.stop()
	var rest []*testServer
	for _, s := range servers {
		if s != leader {
			rest = append(rest, s)
		}
	}
	newLeader := waitLeader(t, rest)
	c = newLeader.cluster()
	// The new leader's deployment controller writes the status meanwhile:
	// read-modify-write until no write came between (client-go's
	// RetryOnConflict).
	replicas = 6
	eventually(t, 10*time.Second, "scale to 6", func() error {
		got, err := c.Get(ctxT(t, 10*time.Second), &pb.GetRequest{Kind: "Deployment", Namespace: "default", Name: "web"})
		if err != nil {
			return err
		}
		got.GetObject().GetDeployment().GetSpec().Replicas = &replicas
		_, err = c.Update(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: got.GetObject()})
		if status.Code(err) != codes.Aborted && err != nil {
			t.Fatal(err)
		}
		return err
	})
	eventually(t, 20*time.Second, "6 pods bound after the leader change", boundPods(6))

	// Exactly one ReplicaSet: the new leader adopted the old one's work.
	resp, err := pb.CollectList(c.List(ctxT(t, 5*time.Second), &pb.ListRequest{Kind: "ReplicaSet", Namespace: "default"}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetItems()); n != 1 {
		t.Errorf("%d ReplicaSets, want 1", n)
	}
}
