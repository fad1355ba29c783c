package cli

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

// describeEvent is an Event about the object of kind/name/uid, recorded
// in ns, last seen at last.
func describeEvent(name, ns, kind, objName, uid, reason string, last time.Time) *pb.Object {
	return pb.Wrap(&pb.Event{
		Metadata:       &pb.ObjectMeta{Name: name, Namespace: ns},
		InvolvedObject: &pb.ObjectReference{Kind: kind, Name: objName, Uid: uid},
		Reason:         reason,
		Message:        reason + " happened",
		Type:           "Normal",
		Source:         &pb.EventSource{Component: "test-controller"},
		FirstTimestamp: timestamppb.New(last.Add(-time.Minute)),
		LastTimestamp:  timestamppb.New(last),
		Count:          1,
	})
}

func eventNames(evs []*pb.Object) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Meta().GetName())
	}
	return out
}

func TestDescribeEventsFor(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	deploy := pb.Wrap(&pb.Deployment{Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-web-2"}})
	node := pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "w1", Uid: "uid-node-w1"}})
	events := []*pb.Object{
		// Listed out of time order: eventsFor sorts by lastTimestamp.
		describeEvent("later", "default", "Deployment", "web", "uid-web-2", "ScalingReplicaSet", t0.Add(2*time.Minute)),
		describeEvent("earlier", "default", "Deployment", "web", "uid-web-2", "ScalingReplicaSet", t0),
		// A Deployment of the same name deleted and created again: its
		// events are not about this one.
		describeEvent("previous-incarnation", "default", "Deployment", "web", "uid-web-1", "ScalingReplicaSet", t0.Add(time.Minute)),
		// The ReplicaSet (or pod) sharing the name is another object.
		describeEvent("other-kind", "default", "ReplicaSet", "web", "uid-rs", "SuccessfulCreate", t0),
		describeEvent("other-name", "default", "Deployment", "api", "uid-api", "ScalingReplicaSet", t0),
		// A recorder that knew no UID: matched by kind and name alone.
		describeEvent("no-uid", "default", "Deployment", "web", "", "DeploymentRollback", t0.Add(time.Minute)),
		// Events about a cluster-scoped object are recorded in "default"
		// with no namespace in the reference.
		describeEvent("node-ready", "default", "Node", "w1", "uid-node-w1", "NodeReady", t0.Add(3*time.Minute)),
		describeEvent("node-old", "default", "Node", "w1", "uid-node-w1-old", "NodeNotReady", t0),
		describeEvent("node-nouid", "default", "Node", "w1", "", "RegisteredNode", t0.Add(-time.Minute)),
	}
	for _, tc := range []struct {
		name string
		obj  *pb.Object
		want []string
	}{
		{"deployment: by UID, kind and name, oldest first", deploy, []string{"earlier", "no-uid", "later"}},
		{"cluster-scoped node", node, []string{"node-nouid", "node-ready"}},
		{"an object nothing is about", pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "web-abc", Namespace: "default", Uid: "uid-pod"}}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := eventNames(eventsFor(tc.obj, events)); !slices.Equal(got, tc.want) {
				t.Errorf("eventsFor = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDescribeEventNamespace(t *testing.T) {
	for _, tc := range []struct {
		obj  *pb.Object
		want string
	}{
		{pb.Wrap(&pb.Deployment{Metadata: &pb.ObjectMeta{Name: "web", Namespace: "shop"}}), "shop"},
		// Nodes have no namespace; their events live in "default", where
		// describe must look for them.
		{pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "w1"}}), "default"},
	} {
		if got := eventNamespace(tc.obj); got != tc.want {
			t.Errorf("eventNamespace(%s %s) = %q, want %q", tc.obj.KindName(), tc.obj.Meta().GetName(), got, tc.want)
		}
	}
}

func TestDescribeShowsEvents(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 10, 0, 0, time.UTC)
	replicas := int32(3)
	d := pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-web",
			CreationTimestamp: timestamppb.New(now.Add(-10 * time.Minute))},
		Spec: &pb.DeploymentSpec{Replicas: &replicas},
	})
	scaled := describeEvent("web.1", "default", "Deployment", "web", "uid-web", "ScalingReplicaSet", now.Add(-2*time.Minute))
	scaled.GetEvent().Count = 3
	scaled.GetEvent().Message = "Scaled up replica set web-5d8f to 3"
	var buf bytes.Buffer
	if err := describe(&buf, d, nil, eventsFor(d, []*pb.Object{scaled}), now); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	_, events, ok := strings.Cut(out, "\nEvents:\n")
	if !ok {
		t.Fatalf("no Events section:\n%s", out)
	}
	// Type, reason, age with its count and span, source, message.
	line := regexp.MustCompile(`(?m)^  Normal\s+ScalingReplicaSet\s+2m \(x3 over 3m\)\s+test-controller\s+Scaled up replica set web-5d8f to 3$`)
	if !line.MatchString(events) {
		t.Errorf("the event line is missing or malformed under Events:\n%s", events)
	}
	if !strings.Contains(out, "Spec:\n  replicas: 3\n") {
		t.Errorf("spec not rendered as YAML:\n%s", out)
	}

	buf.Reset()
	if err := describe(&buf, d, nil, nil, now); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(buf.String(), "Events:\n  <none>\n") {
		t.Errorf("an object without events should say <none>:\n%s", buf.String())
	}
}

// A node is described with its Lease, as kubectl describe node does.
func TestDescribeNodeLease(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 10, 0, 0, time.UTC)
	n := pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "w1", CreationTimestamp: timestamppb.New(now.Add(-time.Hour))}})
	l := &pb.Lease{Metadata: &pb.ObjectMeta{Name: "w1", Namespace: pb.NamespaceNodeLease},
		Spec: &pb.LeaseSpec{HolderIdentity: "w1", RenewTime: timestamppb.New(now.Add(-4 * time.Second))}}
	var buf bytes.Buffer
	if err := describe(&buf, n, l, nil, now); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^Lease:\s*\n  HolderIdentity:\s+w1\n  AcquireTime:\s+<unset>\n  RenewTime:\s+Sat, 01 Mar 2025 12:09:56 UTC \(4s ago\)\n`)
	if !want.MatchString(buf.String()) {
		t.Errorf("no Lease block:\n%s", buf.String())
	}
	buf.Reset()
	if err := describe(&buf, n, nil, nil, now); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Lease:\s+<none>$`).MatchString(buf.String()) {
		t.Errorf("a node without a lease should say Lease: <none>:\n%s", buf.String())
	}
	if !regexp.MustCompile(`(?m)^Taints:\s+<none>\nUnschedulable:\s+false$`).MatchString(buf.String()) {
		t.Errorf("a node without taints should say Taints: <none>:\n%s", buf.String())
	}
}

// A node's taints head its description, one a line, as kubectl describe
// node shows them.
func TestDescribeNodeTaints(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 10, 0, 0, time.UTC)
	n := pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "w1"}, Spec: &pb.NodeSpec{Unschedulable: true, Taints: []*pb.Taint{
		{Key: "dedicated", Value: "db", Effect: "NoSchedule"},
		{Key: "node.kubernetes.io/unschedulable", Effect: "NoSchedule"},
	}}})
	var buf bytes.Buffer
	if err := describe(&buf, n, nil, nil, now); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^Taints:\s+dedicated=db:NoSchedule\n\s+node.kubernetes.io/unschedulable:NoSchedule\nUnschedulable:\s+true$`)
	if !want.MatchString(buf.String()) {
		t.Errorf("no Taints block:\n%s", buf.String())
	}
}
