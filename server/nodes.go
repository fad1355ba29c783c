package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// Node lifecycle, the leader's side of it.
//
// Workers join gossip with role "worker" and their NodeAgent address in the
// metadata. The leader registers every alive worker that has no Node object
// yet: it asks the worker's agent for its description (NodeAgent.Info) and
// creates the Node. From then on the worker heartbeats, as Kubernetes'
// kubelet does: it renews its Lease (kube-node-lease/<node>) every
// heartbeat, and posts its Node status (Ready=True, lastHeartbeatTime) when
// the status changes and every few minutes. Either counts as a heartbeat
// (a worker that cannot write its Lease posts its status every time). The
// leader only watches for heartbeats that stop:
//
//   - a worker that leaves gossip gracefully is marked Ready=False, reason
//     Left, at once;
//   - a node whose heartbeat has not changed for NodeMonitorGracePeriod is
//     marked Ready=Unknown, reason NodeStatusUnknown (NodeStatusNeverUpdated
//     if it never reported), as Kubernetes' node lifecycle controller does.
//     The message says whether gossip also reports the worker failed.
//
// Heartbeat freshness is measured on the leader's own clock from the moment
// it saw lastHeartbeatTime or the Lease's renewTime change (Kubernetes'
// probeTimestamp), so clock
// skew between machines does not matter, and a new leader starts every node
// with a fresh grace period.

// Ready condition values the leader writes.
const (
	NodeReasonLeft          = "Left"
	NodeReasonStatusUnknown = "NodeStatusUnknown"
	NodeReasonNeverUpdated  = "NodeStatusNeverUpdated"
)

// nodeLifecycle is the leader task described above.
type nodeLifecycle struct {
	s *Server

	// sem bounds concurrent registrations (a thousand hollow workers
	// joining at once).
	sem chan struct{}

	mu       sync.Mutex
	inflight map[string]bool      // registrations in progress, by member name
	failedAt map[string]time.Time // last failed registration, by member name
}

func newNodeLifecycle(s *Server) *nodeLifecycle {
	return &nodeLifecycle{s: s, sem: make(chan struct{}, 64), inflight: map[string]bool{}, failedAt: map[string]time.Time{}}
}

func (n *nodeLifecycle) Name() string { return "node-lifecycle" }

// Run registers workers and marks silent nodes until ctx ends.
func (n *nodeLifecycle) Run(ctx context.Context) error {
	s := n.s
	tracker := newHeartbeatTracker()
	tick := time.NewTicker(s.cfg.NodeMonitorPeriod)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		wake := s.changed.wait()
		now := time.Now()
		objs, _, err := s.fsm.List(fsm.Query{Kind: "Node"})
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		nodes := make([]*pb.Node, 0, len(objs))
		for _, o := range objs {
			nodes = append(nodes, o.GetNode())
		}
		leases, _, err := s.fsm.List(fsm.Query{Kind: "Lease", Namespace: pb.NamespaceNodeLease})
		if err != nil {
			return fmt.Errorf("list node leases: %w", err)
		}
		tracker.observe(now, nodes, renewTimes(leases))
		plan := planNodes(now, s.cfg.NodeMonitorGracePeriod, s.gossip.members(), nodes, tracker)
		for _, m := range plan.register {
			if n.startRegistration(m, now) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n.register(ctx, m)
				}()
			}
		}
		for _, u := range plan.updates {
			n.writeCondition(ctx, u)
		}
		// Wake when the next grace period ends, not a period later.
		expiry := time.NewTimer(tracker.nextExpiry(now, s.cfg.NodeMonitorGracePeriod, nodes))
		select {
		case <-ctx.Done():
			expiry.Stop()
			return nil
		case <-expiry.C:
		case <-wake:
			expiry.Stop()
			// Gossip changes come in bursts (a thousand hollow workers
			// joining): coalesce them.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		case <-tick.C:
			expiry.Stop()
		}
	}
}

// nextExpiry is how long until the grace period of a node that may still
// be marked runs out (an hour when none may).
func (t *heartbeatTracker) nextExpiry(now time.Time, grace time.Duration, nodes []*pb.Node) time.Duration {
	next := time.Hour
	for _, nd := range nodes {
		c := readyCondition(nd)
		if c.GetStatus() == "Unknown" || (c.GetStatus() == "False" && c.GetReason() == NodeReasonLeft) {
			continue
		}
		if seen, ok := t.observedAt(nd.GetMetadata().GetName()); ok {
			next = min(next, seen.Add(grace).Sub(now)+10*time.Millisecond)
		}
	}
	return max(next, 10*time.Millisecond)
}

// heartbeatTracker remembers, per node, the last lastHeartbeatTime and
// Lease renewTime seen and when (on this leader's clock) either was first
// seen.
type heartbeatTracker struct {
	seen map[string]heartbeatSeen
}

type heartbeatSeen struct {
	heartbeat  time.Time // the Ready condition's lastHeartbeatTime
	renewed    time.Time // the node Lease's renewTime
	observedAt time.Time
}

// renewTimes maps the node Leases to their renewTime, by node name.
func renewTimes(leases []*pb.Object) map[string]time.Time {
	out := make(map[string]time.Time, len(leases))
	for _, o := range leases {
		if t := o.GetLease().GetSpec().GetRenewTime(); t != nil {
			out[o.Meta().GetName()] = t.AsTime()
		}
	}
	return out
}

func newHeartbeatTracker() *heartbeatTracker {
	return &heartbeatTracker{seen: map[string]heartbeatSeen{}}
}

func (t *heartbeatTracker) observe(now time.Time, nodes []*pb.Node, renewed map[string]time.Time) {
	present := make(map[string]bool, len(nodes))
	for _, nd := range nodes {
		name := nd.GetMetadata().GetName()
		present[name] = true
		var hb time.Time
		if c := readyCondition(nd); c != nil && c.GetLastHeartbeatTime() != nil {
			hb = c.GetLastHeartbeatTime().AsTime()
		}
		rt := renewed[name]
		prev, ok := t.seen[name]
		if !ok || !prev.heartbeat.Equal(hb) || !prev.renewed.Equal(rt) {
			t.seen[name] = heartbeatSeen{heartbeat: hb, renewed: rt, observedAt: now}
		}
	}
	for name := range t.seen {
		if !present[name] {
			delete(t.seen, name)
		}
	}
}

func (t *heartbeatTracker) observedAt(name string) (time.Time, bool) {
	s, ok := t.seen[name]
	return s.observedAt, ok
}

// nodePlan is what the leader should do now.
type nodePlan struct {
	// register lists alive workers without a Node object.
	register []Member
	// updates are Nodes with a new Ready condition, to write with their
	// resourceVersion as a precondition.
	updates []*pb.Node
}

// planNodes decides, without I/O, which workers to register and which
// nodes' Ready condition to change.
func planNodes(now time.Time, grace time.Duration, members []Member, nodes []*pb.Node, t *heartbeatTracker) nodePlan {
	var plan nodePlan
	byName := make(map[string]*pb.Node, len(nodes))
	for _, nd := range nodes {
		byName[nd.GetMetadata().GetName()] = nd
	}
	workers := map[string]Member{}
	for _, m := range members {
		if m.Role != RoleWorker {
			continue
		}
		workers[m.Name] = m
		if _, ok := byName[m.Name]; !ok && m.Status == "alive" && m.AgentAddr != "" {
			plan.register = append(plan.register, m)
		}
	}
	for _, nd := range nodes {
		name := nd.GetMetadata().GetName()
		m, known := workers[name]
		cur := readyCondition(nd)
		var want *pb.NodeCondition
		switch {
		case known && m.Status == "left":
			if cur.GetStatus() == "False" && cur.GetReason() == NodeReasonLeft {
				continue
			}
			want = &pb.NodeCondition{Type: "Ready", Status: "False", Reason: NodeReasonLeft,
				Message: "the skiff worker left the cluster gracefully"}
		default:
			seen, ok := t.observedAt(name)
			if !ok || now.Sub(seen) <= grace {
				continue
			}
			if cur.GetStatus() == "Unknown" || (cur.GetStatus() == "False" && cur.GetReason() == NodeReasonLeft) {
				continue
			}
			gossip := "gossip still reports the worker alive"
			switch {
			case !known:
				gossip = "the worker is not in gossip"
			case m.Status != "alive":
				gossip = "gossip reports the worker " + m.Status
			}
			want = &pb.NodeCondition{Type: "Ready", Status: "Unknown", Reason: NodeReasonStatusUnknown,
				Message: fmt.Sprintf("the skiff worker stopped renewing its lease and posting node status for more than %s; %s", grace, gossip)}
			if cur == nil {
				want.Reason = NodeReasonNeverUpdated
				want.Message = fmt.Sprintf("the skiff worker never posted node status (waited %s); %s", grace, gossip)
			}
		}
		plan.updates = append(plan.updates, withReadyCondition(nd, want, now))
	}
	sort.Slice(plan.register, func(i, j int) bool { return plan.register[i].Name < plan.register[j].Name })
	return plan
}

func readyCondition(nd *pb.Node) *pb.NodeCondition {
	for _, c := range nd.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c
		}
	}
	return nil
}

// withReadyCondition returns a copy of nd with its Ready condition replaced
// by want; the last heartbeat time is kept (it is the worker's), and the
// transition time is now when the status changes.
func withReadyCondition(nd *pb.Node, want *pb.NodeCondition, now time.Time) *pb.Node {
	out := nd.CloneVT()
	if out.Status == nil {
		out.Status = &pb.NodeStatus{}
	}
	want.LastTransitionTime = timestamppb.New(now.Truncate(time.Second))
	replaced := false
	for i, c := range out.Status.Conditions {
		if c.GetType() != "Ready" {
			continue
		}
		want.LastHeartbeatTime = c.GetLastHeartbeatTime()
		if c.GetStatus() == want.GetStatus() {
			want.LastTransitionTime = c.GetLastTransitionTime()
		}
		out.Status.Conditions[i], replaced = want, true
	}
	if !replaced {
		out.Status.Conditions = append(out.Status.Conditions, want)
	}
	return out
}

func (n *nodeLifecycle) startRegistration(m Member, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inflight[m.Name] {
		return false
	}
	if at, ok := n.failedAt[m.Name]; ok && now.Sub(at) < n.s.cfg.NodeMonitorPeriod {
		return false
	}
	n.inflight[m.Name] = true
	return true
}

// register asks the worker for its description and creates its Node.
func (n *nodeLifecycle) register(ctx context.Context, m Member) {
	s := n.s
	var err error
	select {
	case n.sem <- struct{}{}:
		err = n.doRegister(ctx, m)
		<-n.sem
	case <-ctx.Done():
		err = ctx.Err()
	}
	n.mu.Lock()
	delete(n.inflight, m.Name)
	if err != nil {
		n.failedAt[m.Name] = time.Now()
	} else {
		delete(n.failedAt, m.Name)
	}
	n.mu.Unlock()
	switch {
	case err == nil:
		s.log.Info("registered node", "node", m.Name, "agent", m.AgentAddr)
		s.changed.notify()
	case ctx.Err() == nil:
		s.log.Warn("register node; will retry", "node", m.Name, "agent", m.AgentAddr, "err", err)
	}
}

func (n *nodeLifecycle) doRegister(ctx context.Context, m Member) error {
	s := n.s
	conn, err := s.agents.get(m.AgentAddr)
	if err != nil {
		return err
	}
	ictx, cancel := context.WithTimeout(ctx, s.cfg.NodeMonitorPeriod+5*time.Second)
	defer cancel()
	resp, err := pb.NewNodeAgentClient(conn).Info(ictx, &pb.NodeInfoRequest{NodeName: m.Name})
	if err != nil {
		return fmt.Errorf("ask the worker at %s: %w", m.AgentAddr, err)
	}
	nd := resp.GetNode()
	if nd.GetMetadata().GetName() != m.Name {
		return fmt.Errorf("the worker at %s describes node %q, not %q", m.AgentAddr, nd.GetMetadata().GetName(), m.Name)
	}
	nd = nd.CloneVT()
	nd.ApiVersion, nd.Kind = "v1", "Node"
	nd.Metadata = &pb.ObjectMeta{Name: m.Name, Labels: nd.GetMetadata().GetLabels(), Annotations: nd.GetMetadata().GetAnnotations()}
	_, err = s.writeOnLeader(ctx, opCreate, pb.Wrap(nd))
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}

// writeCondition writes one planned Ready change. A conflict means the
// node changed (a heartbeat arrived): the next round decides again.
func (n *nodeLifecycle) writeCondition(ctx context.Context, nd *pb.Node) {
	s := n.s
	c := readyCondition(nd)
	_, err := s.writeOnLeader(ctx, opUpdateStatus, pb.Wrap(nd))
	switch {
	case err == nil:
		s.log.Warn("node is not ready", "node", nd.GetMetadata().GetName(), "ready", c.GetStatus(), "reason", c.GetReason(), "message", c.GetMessage())
	case status.Code(err) == codes.Aborted, status.Code(err) == codes.NotFound, errors.Is(err, context.Canceled), ctx.Err() != nil:
	default:
		s.log.Warn("mark node not ready", "node", nd.GetMetadata().GetName(), "err", err)
	}
}
