package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func nodeWithReady(name string, status string, heartbeat time.Time) *pb.Node {
	nd := &pb.Node{Metadata: &pb.ObjectMeta{Name: name, ResourceVersion: 7}, Status: &pb.NodeStatus{}}
	if status != "" {
		nd.Status.Conditions = []*pb.NodeCondition{{
			Type: "Ready", Status: status, Reason: "KubeletReady",
			LastHeartbeatTime: timestamppb.New(heartbeat), LastTransitionTime: timestamppb.New(heartbeat.Add(-time.Hour)),
		}}
	}
	return nd
}

func TestPlanNodeRegistration(t *testing.T) {
	now := time.Unix(100000, 0)
	members := []Member{
		{Name: "m1", Role: RoleServer, Status: "alive", APIAddr: "127.0.0.1:1"},
		{Name: "new", Role: RoleWorker, Status: "alive", AgentAddr: "127.0.0.1:2"},
		{Name: "noaddr", Role: RoleWorker, Status: "alive"},
		{Name: "deadnew", Role: RoleWorker, Status: "dead", AgentAddr: "127.0.0.1:3"},
		{Name: "known", Role: RoleWorker, Status: "alive", AgentAddr: "127.0.0.1:4"},
	}
	nodes := []*pb.Node{nodeWithReady("known", "True", now)}
	tr := newHeartbeatTracker()
	tr.observe(now, nodes, nil)
	plan := planNodes(now, time.Minute, members, nodes, tr)
	if len(plan.register) != 1 || plan.register[0].Name != "new" || len(plan.updates) != 0 {
		t.Errorf("plan = %+v", plan)
	}
}

func TestPlanNodeReadiness(t *testing.T) {
	const grace = 50 * time.Second
	t0 := time.Unix(100000, 0)
	worker := func(name, status string) Member {
		return Member{Name: name, Role: RoleWorker, Status: status, AgentAddr: "127.0.0.1:9"}
	}
	for _, tt := range []struct {
		name    string
		member  *Member
		node    *pb.Node
		elapsed time.Duration // since the tracker first saw the node
		want    string        // "" no change, else status/reason
		msg     string
	}{
		{"fresh heartbeat", ptr(worker("a", "alive")), nodeWithReady("a", "True", t0), 10 * time.Second, "", ""},
		{"within grace, gossip dead", ptr(worker("a", "dead")), nodeWithReady("a", "True", t0), grace, "", ""},
		{"grace passed, gossip dead", ptr(worker("a", "dead")), nodeWithReady("a", "True", t0), grace + time.Second, "Unknown/NodeStatusUnknown", "gossip reports the worker dead"},
		{"grace passed, gossip alive", ptr(worker("a", "alive")), nodeWithReady("a", "True", t0), grace + time.Second, "Unknown/NodeStatusUnknown", "still reports the worker alive"},
		{"grace passed, not in gossip", nil, nodeWithReady("a", "True", t0), grace + time.Second, "Unknown/NodeStatusUnknown", "not in gossip"},
		{"never reported", ptr(worker("a", "dead")), nodeWithReady("a", "", t0), grace + time.Second, "Unknown/NodeStatusNeverUpdated", "never posted"},
		{"already unknown", ptr(worker("a", "dead")), nodeWithReady("a", "Unknown", t0), grace + time.Hour, "", ""},
		{"left", ptr(worker("a", "left")), nodeWithReady("a", "True", t0), time.Second, "False/Left", "gracefully"},
		{"left stays left past the grace period", ptr(worker("a", "left")), withLeft(nodeWithReady("a", "True", t0)), grace + time.Hour, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var members []Member
			if tt.member != nil {
				members = []Member{*tt.member}
			}
			tr := newHeartbeatTracker()
			tr.observe(t0, []*pb.Node{tt.node}, nil)
			now := t0.Add(tt.elapsed)
			tr.observe(now, []*pb.Node{tt.node}, nil)
			plan := planNodes(now, grace, members, []*pb.Node{tt.node}, tr)
			if tt.want == "" {
				if len(plan.updates) != 0 {
					t.Errorf("updates %v, want none", plan.updates)
				}
				return
			}
			if len(plan.updates) != 1 {
				t.Fatalf("updates %v, want one", plan.updates)
			}
			c := readyCondition(plan.updates[0])
			if got := c.GetStatus() + "/" + c.GetReason(); got != tt.want || !strings.Contains(c.GetMessage(), tt.msg) {
				t.Errorf("condition %v, want %s with %q", c, tt.want, tt.msg)
			}
			if plan.updates[0].GetMetadata().GetResourceVersion() != 7 {
				t.Errorf("the update must carry the resourceVersion it was decided on")
			}
			if old := readyCondition(tt.node); old != nil && !c.GetLastHeartbeatTime().AsTime().Equal(old.GetLastHeartbeatTime().AsTime()) {
				t.Errorf("heartbeat time changed: %v", c.GetLastHeartbeatTime())
			}
			if !c.GetLastTransitionTime().AsTime().Equal(now) {
				t.Errorf("transition time %v, want %v", c.GetLastTransitionTime().AsTime(), now)
			}
			if readyCondition(tt.node).GetStatus() == "True" && readyCondition(tt.node) == c {
				t.Errorf("planNodes modified the node it was given")
			}
		})
	}
}

// A heartbeat (lastHeartbeatTime changing) restarts the grace period, and
// a new tracker (a new leader) gives every node a fresh one.
func TestHeartbeatTracker(t *testing.T) {
	const grace = 10 * time.Second
	t0 := time.Unix(100000, 0)
	members := []Member{{Name: "a", Role: RoleWorker, Status: "dead"}}
	tr := newHeartbeatTracker()
	tr.observe(t0, []*pb.Node{nodeWithReady("a", "True", t0)}, nil)
	// A heartbeat at t0+8s.
	nd := nodeWithReady("a", "True", t0.Add(8*time.Second))
	tr.observe(t0.Add(8*time.Second), []*pb.Node{nd}, nil)
	if p := planNodes(t0.Add(15*time.Second), grace, members, []*pb.Node{nd}, tr); len(p.updates) != 0 {
		t.Errorf("marked 7s after a heartbeat: %v", p.updates)
	}
	if p := planNodes(t0.Add(19*time.Second), grace, members, []*pb.Node{nd}, tr); len(p.updates) != 1 {
		t.Errorf("not marked 11s after the last heartbeat")
	}
	// A new leader (fresh tracker) at t0+100s: the node's heartbeat is old,
	// but it gets a full grace period from now.
	fresh := newHeartbeatTracker()
	later := t0.Add(100 * time.Second)
	fresh.observe(later, []*pb.Node{nd}, nil)
	if p := planNodes(later.Add(9*time.Second), grace, members, []*pb.Node{nd}, fresh); len(p.updates) != 0 {
		t.Errorf("a new leader marked a node before giving it a grace period")
	}
	// Nodes that disappear are forgotten.
	fresh.observe(later, nil, nil)
	if _, ok := fresh.observedAt("a"); ok {
		t.Errorf("deleted node still tracked")
	}
}

// A Lease renewal is a heartbeat too: a node whose status was posted long
// ago stays Ready while its Lease is renewed, and is marked once both stop.
func TestHeartbeatTrackerLeases(t *testing.T) {
	const grace = 10 * time.Second
	t0 := time.Unix(100000, 0)
	members := []Member{{Name: "a", Role: RoleWorker, Status: "alive"}}
	nd := nodeWithReady("a", "True", t0) // status posted once, at t0
	tr := newHeartbeatTracker()
	tr.observe(t0, []*pb.Node{nd}, map[string]time.Time{"a": t0})
	for i := 1; i <= 6; i++ { // renewals every 5s up to t0+30s
		at := t0.Add(time.Duration(i) * 5 * time.Second)
		tr.observe(at, []*pb.Node{nd}, map[string]time.Time{"a": at, "stray": at})
		if p := planNodes(at.Add(4*time.Second), grace, members, []*pb.Node{nd}, tr); len(p.updates) != 0 {
			t.Fatalf("marked %s after t0 although its lease was renewed 4s before: %v", at.Add(4*time.Second).Sub(t0), p.updates)
		}
	}
	last := t0.Add(30 * time.Second)
	tr.observe(last.Add(5*time.Second), []*pb.Node{nd}, map[string]time.Time{"a": last}) // no renewal
	p := planNodes(last.Add(11*time.Second), grace, members, []*pb.Node{nd}, tr)
	if len(p.updates) != 1 {
		t.Fatalf("not marked 11s after the last renewal")
	}
	if c := readyCondition(p.updates[0]); c.GetStatus() != "Unknown" || !strings.Contains(c.GetMessage(), "stopped renewing its lease") {
		t.Errorf("Ready condition %v, want Unknown saying the lease stopped", c)
	}
	if _, ok := tr.observedAt("stray"); ok {
		t.Errorf("a lease without a node is tracked")
	}
}

func TestAgentAddress(t *testing.T) {
	nd := &pb.Node{Status: &pb.NodeStatus{
		Addresses:       []*pb.NodeAddress{{Type: "Hostname", Address: "w1"}, {Type: "InternalIP", Address: "10.0.0.5"}},
		DaemonEndpoints: &pb.NodeDaemonEndpoints{KubeletEndpoint: &pb.DaemonEndpoint{Port: 10250}},
	}}
	if got, err := agentAddress(nd); err != nil || got != "10.0.0.5:10250" {
		t.Errorf("agentAddress = %q, %v", got, err)
	}
	nd.Status.DaemonEndpoints = nil
	if _, err := agentAddress(nd); err == nil {
		t.Errorf("no port: no error")
	}
}

func ptr[T any](v T) *T { return &v }

func withLeft(nd *pb.Node) *pb.Node {
	c := readyCondition(nd)
	c.Status, c.Reason = "False", NodeReasonLeft
	return nd
}
