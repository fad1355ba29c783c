package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// service builds a Service of type typ with clusterIP ip ("" for none).
func service(ns, name, typ, ip string, ports ...*pb.ServicePort) *pb.Object {
	return pb.Wrap(&pb.Service{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: name},
		Spec:     &pb.ServiceSpec{Type: typ, ClusterIp: ip, Ports: ports, Selector: map[string]string{"app": name}},
	})
}

func port(name string, p, nodePort int32) *pb.ServicePort {
	return &pb.ServicePort{Name: name, Port: p, Protocol: "TCP", TargetPort: "8080", NodePort: nodePort}
}

// wantAllocated checks res failed because field is held by another Service.
func wantAllocated(t *testing.T, res *fsm.Result, field string) {
	t.Helper()
	var ae *fsm.AllocationError
	if !errors.As(res.Err, &ae) || ae.Field != field {
		t.Fatalf("got %v, want an AllocationError on %s", res.Err, field)
	}
	if !errors.Is(res.Err, fsm.ErrAllocated) || !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("%v does not match ErrAllocated and ErrInvalid", res.Err)
	}
	if !strings.Contains(res.Err.Error(), field+": Invalid value: ") || !strings.Contains(res.Err.Error(), "is already allocated") {
		t.Fatalf("message %q does not name %s as Kubernetes does", res.Err, field)
	}
}

func TestServiceAllocationsAreUnique(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(namespace("team")))
	c.must(createCmd(service("default", "a", "NodePort", "10.96.0.5", port("http", 80, 30080))))

	for _, tc := range []struct {
		name  string
		obj   *pb.Object
		field string
	}{
		{"same IP", service("team", "b", "ClusterIP", "10.96.0.5", port("", 80, 0)), "spec.clusterIP"},
		{"same IP spelt as IPv4-mapped IPv6", service("team", "b", "ClusterIP", "::ffff:10.96.0.5", port("", 80, 0)), "spec.clusterIP"},
		{"same node port", service("team", "b", "NodePort", "10.96.0.6", port("dns", 53, 30053), port("web", 80, 30080)), "spec.ports[1].nodePort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []*pb.Command{createCmd(tc.obj), applyCmd(tc.obj)} {
				wantAllocated(t, c.run(cmd), tc.field)
				if _, err := c.f.Get("Service", "team", "b"); !errors.Is(err, fsm.ErrNotFound) {
					t.Fatalf("a refused service was stored: %v", err)
				}
			}
		})
	}

	// Headless services hold no IP, so any number of them coexist.
	c.must(createCmd(service("default", "h1", "ClusterIP", "None")))
	h2 := c.must(createCmd(service("default", "h2", "ClusterIP", "None"))).Object.GetService().GetSpec()
	if !slices.Equal(h2.GetClusterIps(), []string{"None"}) {
		t.Fatalf("headless clusterIPs = %q, want [None]", h2.GetClusterIps())
	}

	// Within one batch the second create sees the first.
	res := c.run(batchCmd(
		createCmd(service("team", "x", "ClusterIP", "10.96.0.7", port("", 80, 0))),
		createCmd(service("team", "y", "ClusterIP", "10.96.0.7", port("", 80, 0)))))
	if res.Err != nil || res.Batch[0].Err != nil {
		t.Fatalf("batch: %v, first: %v", res.Err, res.Batch[0].Err)
	}
	wantAllocated(t, res.Batch[1], "spec.clusterIP")

	// Updating a Service with the values it holds is no collision; taking
	// another's is.
	x := c.get("Service", "team", "x")
	c.must(updateCmd(edit(x, func(o *pb.Object) { o.Meta().Labels = map[string]string{"v": "2"} })))
	x = c.get("Service", "team", "x")
	wantAllocated(t, c.run(updateCmd(edit(x, func(o *pb.Object) {
		o.GetService().Spec.Type = "NodePort"
		o.GetService().Spec.Ports = append(o.GetService().Spec.Ports, port("other", 81, 30080))
		o.GetService().Spec.Ports[0].NodePort = 30081
	}))), "spec.ports[1].nodePort")
	// A's own ports move freely between its ports.
	a := c.get("Service", "default", "a")
	c.must(updateCmd(edit(a, func(o *pb.Object) {
		o.GetService().Spec.Ports = append(o.GetService().Spec.Ports, port("other", 81, 30080))
		o.GetService().Spec.Ports[0].NodePort = 30081
	})))

	// Deleting frees both the IP and the port.
	c.must(deleteCmd(&pb.DeleteOp{Kind: "Service", Namespace: "default", Name: "a"}))
	c.must(createCmd(service("team", "b", "NodePort", "10.96.0.5", port("web", 80, 30080))))
	v := c.f.ServiceAllocations()
	if h := v.ClusterIPHolder("10.96.0.5"); h != "team/b" {
		t.Fatalf("ClusterIPHolder = %q, want team/b", h)
	}
	if h := v.NodePortHolder(30080); h != "team/b" {
		t.Fatalf("NodePortHolder = %q, want team/b", h)
	}
	if h := v.ClusterIPHolder("10.96.0.99"); h != "" {
		t.Fatalf("free IP held by %q", h)
	}
}

func TestServiceUpdateKeepsAllocations(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	manifest := service("default", "web", "NodePort", "", port("http", 80, 0), port("https", 443, 0))
	// What the leader proposes after allocating.
	alloc := edit(manifest, func(o *pb.Object) {
		s := o.GetService().Spec
		s.ClusterIp, s.Ports[0].NodePort, s.Ports[1].NodePort = "10.96.3.4", 30001, 30002
	})
	created := c.must(createCmd(alloc)).Object.GetService().GetSpec()
	if !slices.Equal(created.GetClusterIps(), []string{"10.96.3.4"}) {
		t.Fatalf("clusterIPs = %q, want [10.96.3.4]", created.GetClusterIps())
	}

	// Re-applying the original manifest keeps everything allocated.
	res := c.must(applyCmd(manifest))
	if res.Action != fsm.ActionUnchanged {
		t.Fatalf("re-apply of the manifest: %s, want unchanged", res.Action)
	}
	s := c.get("Service", "default", "web").GetService().GetSpec()
	if s.GetClusterIp() != "10.96.3.4" || s.Ports[0].GetNodePort() != 30001 || s.Ports[1].GetNodePort() != 30002 {
		t.Fatalf("after re-apply: %v", s)
	}

	// Ports match by name: reordering keeps each its node port.
	res = c.must(applyCmd(edit(manifest, func(o *pb.Object) {
		p := o.GetService().Spec.Ports
		p[0], p[1] = p[1], p[0]
	})))
	s = res.Object.GetService().GetSpec()
	if s.Ports[0].GetName() != "https" || s.Ports[0].GetNodePort() != 30002 || s.Ports[1].GetNodePort() != 30001 {
		t.Fatalf("after reorder: %v", s)
	}

	// clusterIP is immutable, through update and apply alike.
	cur := c.get("Service", "default", "web")
	for _, cmd := range []*pb.Command{
		updateCmd(edit(cur, func(o *pb.Object) { o.GetService().Spec.ClusterIp = "10.96.3.5"; o.GetService().Spec.ClusterIps = nil })),
		applyCmd(edit(manifest, func(o *pb.Object) { o.GetService().Spec.ClusterIp = "None" })),
	} {
		res := c.run(cmd)
		if !errors.Is(res.Err, fsm.ErrInvalid) || !strings.Contains(res.Err.Error(), "spec.clusterIP: Invalid value: ") || !strings.Contains(res.Err.Error(), "field is immutable") {
			t.Fatalf("changing clusterIP: %v, want an immutability error", res.Err)
		}
	}

	// NodePort -> ClusterIP drops the node ports, which another Service
	// may then take.
	res = c.must(applyCmd(service("default", "web", "ClusterIP", "", port("http", 80, 0), port("https", 443, 0))))
	s = res.Object.GetService().GetSpec()
	if s.GetClusterIp() != "10.96.3.4" || s.Ports[0].GetNodePort() != 0 || s.Ports[1].GetNodePort() != 0 {
		t.Fatalf("after NodePort -> ClusterIP: %v", s)
	}
	c.must(createCmd(service("default", "other", "NodePort", "10.96.3.6", port("", 80, 30001))))
}

func TestServiceAllocationsDeterministicAndRestored(t *testing.T) {
	log := []*pb.Command{
		createCmd(namespace("default")),
		createCmd(service("default", "a", "NodePort", "10.96.0.10", port("", 80, 30010))),
		createCmd(service("default", "b", "NodePort", "10.96.0.10", port("", 80, 30011))), // refused
		createCmd(service("default", "c", "NodePort", "10.96.0.11", port("", 80, 30010))), // refused
		createCmd(service("default", "d", "NodePort", "10.96.0.12", port("", 80, 30012))),
	}
	replayAll := func() *cluster {
		c := newCluster(t, 0)
		for i, cmd := range log {
			res := c.run(cloneCmd(cmd))
			if refused := i == 2 || i == 3; refused != errors.Is(res.Err, fsm.ErrAllocated) {
				t.Fatalf("entry %d: %v", i, res.Err)
			}
		}
		return c
	}
	a, b := replayAll(), replayAll()
	if a.f.StateHash() != b.f.StateHash() {
		t.Fatal("the same log gave different states")
	}

	r := newCluster(t, 0)
	if err := r.f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	r.index = r.f.AppliedIndex()
	wantAllocated(t, r.run(createCmd(service("default", "e", "ClusterIP", "10.96.0.12", port("", 80, 0)))), "spec.clusterIP")
	wantAllocated(t, r.run(createCmd(service("default", "e", "NodePort", "10.96.0.13", port("", 80, 30010)))), "spec.ports[0].nodePort")
	r.must(deleteCmd(&pb.DeleteOp{Kind: "Service", Namespace: "default", Name: "a"}))
	r.must(createCmd(service("default", "e", "NodePort", "10.96.0.10", port("", 80, 30010))))
}

func TestMergeServiceUpdate(t *testing.T) {
	cur := &pb.ServiceSpec{Type: "NodePort", ClusterIp: "10.96.0.9", ClusterIps: []string{"10.96.0.9"},
		Ports: []*pb.ServicePort{{Port: 80, NodePort: 30080}}}
	// A second port is added and the first gets a name: matched by number.
	next := &pb.ServiceSpec{Type: "NodePort", Ports: []*pb.ServicePort{{Name: "http", Port: 80}, {Name: "dns", Port: 53, Protocol: "UDP"}}}
	if err := fsm.MergeServiceUpdate(cur, next); err != nil {
		t.Fatal(err)
	}
	if next.ClusterIp != "10.96.0.9" || next.Ports[0].NodePort != 30080 || next.Ports[1].NodePort != 0 {
		t.Fatalf("merged: %v", next)
	}
	// clusterIPs alone sets clusterIP; a different one is immutable.
	next = &pb.ServiceSpec{ClusterIps: []string{"10.96.0.8"}}
	if err := fsm.MergeServiceUpdate(cur, next); err == nil || !strings.Contains(err.Error(), `spec.clusterIP: Invalid value: "10.96.0.8": field is immutable`) {
		t.Fatalf("got %v", err)
	}
	// A node port the new spec gives another port is not reused.
	next = &pb.ServiceSpec{Type: "NodePort", Ports: []*pb.ServicePort{{Port: 80}, {Name: "b", Port: 81, NodePort: 30080}}}
	if err := fsm.MergeServiceUpdate(cur, next); err != nil || next.Ports[0].NodePort != 0 {
		t.Fatalf("got %v, %v", next, err)
	}
}

func cloneCmd(cmd *pb.Command) *pb.Command {
	b, err := fsm.EncodeCommand(cmd)
	if err != nil {
		panic(err)
	}
	out, err := fsm.DecodeCommand(b)
	if err != nil {
		panic(err)
	}
	return out
}
