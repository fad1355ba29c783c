package builtin_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/builtin"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func ptr[T any](v T) *T { return &v }

func node(name string) *pb.Object {
	return pb.Wrap(&pb.Node{
		Metadata: &pb.ObjectMeta{Name: name},
		Spec:     &pb.NodeSpec{},
		Status: &pb.NodeStatus{
			Allocatable: map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110"},
			Conditions:  []*pb.NodeCondition{{Type: "Ready", Status: "True"}},
		},
	})
}

// TestDeploymentToRunningPods runs the built-in controllers under a
// Manager against a Fake with a fake kubelet: a Deployment becomes a
// ReplicaSet, pods, bindings spread over the nodes, and an available
// Deployment; a template change rolls out.
func TestDeploymentToRunningPods(t *testing.T) {
	fake := controllertest.NewFake(nil, node("n1"), node("n2"), node("n3"))
	fake.Add(pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default", Generation: 1},
		Spec: &pb.DeploymentSpec{
			Replicas: ptr(int32(6)),
			Selector: &pb.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "web:v1",
					Resources: &pb.ResourceRequirements{Requests: map[string]string{"cpu": "100m", "memory": "64Mi"}}}}},
			},
		},
	}))

	// Every write the controllers make must pass the API server's checks.
	fake.PrependReactor(func(a controllertest.Action) (bool, error) {
		if a.Object == nil || (a.Verb != "create" && a.Verb != "update") {
			return false, nil
		}
		o := a.Object.Clone()
		pb.SetDefaults(o)
		if err := pb.Validate(o); err != nil {
			t.Errorf("%s: invalid: %v", a, err)
			return true, status.Error(codes.InvalidArgument, err.Error())
		}
		return false, nil
	})

	cfg := controllers.DefaultConfig()
	cfg.Cluster = fake
	cfg.Registrations = builtin.Registrations(builtin.DefaultConfig())
	cfg.RetryMaxDelay = 100 * time.Millisecond
	m, err := controllers.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// The kubelet runs every pod bound to a node.
	ctx, cancel := context.WithCancel(context.Background())
	kubelet := controllers.NewInformerFactory(fake, nil, 0)
	var kubelets sync.WaitGroup
	run := func(o *pb.Object) {
		p := o.GetPod()
		if p.GetSpec().GetNodeName() == "" || p.GetStatus().GetPhase() != "Pending" {
			return
		}
		ns, name := o.Meta().GetNamespace(), o.Meta().GetName()
		kubelets.Go(func() {
			_ = fake.Mutate("Pod", ns, name, func(o *pb.Object) {
				st := o.GetPod().Status
				st.Phase = "Running"
				st.Conditions = append(st.Conditions, &pb.PodCondition{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.Now()})
			})
		})
	}
	kubelet.For("Pod").AddHandler(controllers.HandlerFuncs{AddFunc: run, UpdateFunc: func(_, o *pb.Object) { run(o) }})
	kubelet.Start(ctx)

	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
		kubelet.Wait()
		kubelets.Wait()
	}()

	available := func(image string) func() bool {
		return func() bool {
			d := fake.Get("Deployment", "default", "web").GetDeployment()
			st := d.GetStatus()
			if st.GetObservedGeneration() != d.GetMetadata().GetGeneration() || st.GetAvailableReplicas() != 6 || st.GetUpdatedReplicas() != 6 || st.GetReplicas() != 6 {
				return false
			}
			n := 0
			for _, o := range fake.Objects("Pod") {
				if p := o.GetPod(); controllers.IsPodActive(p) && p.GetSpec().GetContainers()[0].GetImage() == image && p.GetSpec().GetNodeName() != "" {
					n++
				}
			}
			return n == 6
		}
	}
	controllertest.Eventually(t, 20*time.Second, available("web:v1"), "6 available pods of web:v1")
	perNode := map[string]int{}
	for _, o := range fake.Objects("Pod") {
		perNode[o.GetPod().GetSpec().GetNodeName()]++
	}
	if fmt.Sprint(perNode) != "map[n1:2 n2:2 n3:2]" {
		t.Errorf("pods per node = %v, want 2 each", perNode)
	}

	if err := fake.Mutate("Deployment", "default", "web", func(o *pb.Object) {
		o.GetDeployment().Spec.Template.Spec.Containers[0].Image = "web:v2"
		o.Meta().Generation++
	}); err != nil {
		t.Fatal(err)
	}
	controllertest.Eventually(t, 20*time.Second, available("web:v2"), "the rollout of web:v2")
	controllertest.Eventually(t, 5*time.Second, func() bool {
		for _, o := range fake.Objects("Event") {
			if o.GetEvent().GetReason() == "ScalingReplicaSet" {
				return true
			}
		}
		return false
	}, "events to be written")
}

func TestRegistrations(t *testing.T) {
	cfg := builtin.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	var names []string
	for _, r := range builtin.Registrations(cfg) {
		names = append(names, r.Name)
	}
	if !slices.Contains(names, "endpoints") || len(names) == 0 || names[0] != "nodeipam" {
		t.Fatalf("registrations = %q, want nodeipam first and endpoints among them", names)
	}
	if i, j := slices.Index(names, "replicaset"), slices.Index(names, "endpoints"); i < 0 || j < i {
		t.Fatalf("registrations = %q, want endpoints after replicaset", names)
	}
	cfg.NodeIPAM.NodeCIDRMaskSize = 8
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "NodeCIDRMaskSize") {
		t.Fatalf("Validate with a bad node mask size = %v, want an error naming NodeCIDRMaskSize", err)
	}
}

// TestServiceEndpointsAndPodCIDRs runs the built-ins under a Manager: nodes
// get distinct pod CIDRs, and a Service in front of a Deployment lists its
// pods once a fake kubelet has started them.
func TestServiceEndpointsAndPodCIDRs(t *testing.T) {
	fake := controllertest.NewFake(nil, node("n1"), node("n2"), node("n3"))
	fake.Add(pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default", Generation: 1},
		Spec: &pb.DeploymentSpec{
			Replicas: ptr(int32(3)),
			Selector: &pb.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "web:v1",
					Ports: []*pb.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}}}}},
			},
		},
	}))
	fake.Add(pb.Wrap(&pb.Service{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: &pb.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIp: "10.96.0.10", Type: "ClusterIP",
			Ports: []*pb.ServicePort{{Name: "http", Port: 80, TargetPort: "http", Protocol: "TCP"}}},
	}))

	cfg := controllers.DefaultConfig()
	cfg.Cluster = fake
	cfg.Registrations = builtin.Registrations(builtin.DefaultConfig())
	cfg.RetryMaxDelay = 100 * time.Millisecond
	m, err := controllers.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// The kubelet runs every pod bound to a node and gives it an address.
	ctx, cancel := context.WithCancel(context.Background())
	kubelet := controllers.NewInformerFactory(fake, nil, 0)
	var kubelets sync.WaitGroup
	var ips atomic.Int32
	run := func(o *pb.Object) {
		p := o.GetPod()
		if p.GetSpec().GetNodeName() == "" || p.GetStatus().GetPhase() != "Pending" {
			return
		}
		ns, name := o.Meta().GetNamespace(), o.Meta().GetName()
		ip := fmt.Sprintf("10.244.9.%d", ips.Add(1))
		kubelets.Go(func() {
			_ = fake.Mutate("Pod", ns, name, func(o *pb.Object) {
				st := o.GetPod().Status
				st.Phase, st.PodIp = "Running", ip
				st.Conditions = append(st.Conditions, &pb.PodCondition{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.Now()})
			})
		})
	}
	kubelet.For("Pod").AddHandler(controllers.HandlerFuncs{AddFunc: run, UpdateFunc: func(_, o *pb.Object) { run(o) }})
	kubelet.Start(ctx)

	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
		kubelet.Wait()
		kubelets.Wait()
	}()

	controllertest.Eventually(t, 20*time.Second, func() bool {
		seen := map[string]bool{}
		for _, o := range fake.Objects("Node") {
			c := o.GetNode().GetSpec().GetPodCidr()
			if c == "" || seen[c] {
				return false
			}
			seen[c] = true
		}
		return true
	}, "three nodes with distinct pod CIDRs")
	controllertest.Eventually(t, 20*time.Second, func() bool {
		ep := fake.Get("Endpoints", "default", "web").GetEndpoints()
		if len(ep.GetSubsets()) != 1 {
			return false
		}
		ss := ep.GetSubsets()[0]
		return len(ss.GetAddresses()) == 3 && len(ss.GetNotReadyAddresses()) == 0 &&
			len(ss.GetPorts()) == 1 && ss.GetPorts()[0].GetPort() == 8080
	}, "web's endpoints to list the three ready pods on port 8080")
}
