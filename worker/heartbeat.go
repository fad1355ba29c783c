package worker

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// heartbeatLoop heartbeats every HeartbeatInterval, as Kubernetes' kubelet
// does with node leases: it renews the node's Lease (kube-node-lease/NAME)
// and posts the Node status (Ready=True with a fresh lastHeartbeatTime,
// capacity, addresses, system info and the agent's port, which may change
// across restarts) only when the masters' copy differs from it, or
// NodeStatusReportFrequency after the last post. So a thousand idle nodes
// write a thousand small Leases, and nobody watching Nodes hears from them.
// When the Lease cannot be written the status is posted every time
// instead, so the node stays Ready through masters that do not know Leases.
// Until the leader has registered the node it checks twice a second, so a
// new node turns Ready within moments of its registration.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	hb := &heartbeater{a: a}
	for {
		registered, err := hb.beat(ctx)
		next := a.cfg.HeartbeatInterval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.log.Warn("post node status", "err", err)
			next = min(next, time.Second)
		case !registered:
			next = min(next, 500*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// heartbeater is the heartbeat loop's state.
type heartbeater struct {
	a *Agent
	// lease is the Lease as last written, whose resourceVersion the next
	// renewal names; nil when it must be read first.
	lease *pb.Lease
	// posted is when the Node status was last posted.
	posted time.Time
	// leaseFailing is set while Lease writes fail (logged once).
	leaseFailing bool
}

// beat heartbeats once. It reads the Node from whichever master answers (a
// stale read is enough: it only keeps the Ready condition's transition time
// and tells whether the masters' status is current) and writes the status
// when needed: the worker owns its Node's status, and the leader only
// changes Ready when heartbeats have stopped.
func (h *heartbeater) beat(ctx context.Context) (registered bool, err error) {
	a := h.a
	c, err := a.api.get(ctx)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, max(a.cfg.HeartbeatInterval, 5*time.Second))
	defer cancel()
	obj, err := c.Get(ctx, "Node", "", a.cfg.Name, client.ReadOptions{Stale: true})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	now := time.Now()
	var prev *pb.NodeCondition
	for _, cond := range obj.GetNode().GetStatus().GetConditions() {
		if cond.GetType() == "Ready" {
			prev = cond
		}
	}
	st := a.desc.status(now, prev)

	leaseErr := h.renewLease(ctx, c, obj.Meta(), now)
	switch {
	case leaseErr != nil && !h.leaseFailing:
		h.leaseFailing = true
		a.log.Warn("renew node lease; posting the node status every heartbeat instead", "err", leaseErr)
	case leaseErr == nil && h.leaseFailing:
		h.leaseFailing = false
		a.log.Info("node lease renewed again")
	}
	if leaseErr == nil && now.Sub(h.posted) < a.cfg.NodeStatusReportFrequency && sameNodeStatus(obj.GetNode().GetStatus(), st) {
		a.markRegistered()
		return true, nil
	}
	nd := &pb.Node{ApiVersion: "v1", Kind: "Node", Metadata: &pb.ObjectMeta{Name: a.cfg.Name}, Status: st}
	if _, err := c.UpdateStatus(ctx, pb.Wrap(nd)); err != nil {
		if status.Code(err) == codes.NotFound {
			return false, nil
		}
		return true, err
	}
	h.posted = now
	a.markRegistered()
	return true, nil
}

func (a *Agent) markRegistered() {
	if !a.registered.Swap(true) {
		a.log.Info("node registered and ready")
	}
}

// sameNodeStatus reports whether the masters' status (have) says what the
// worker would post (want), heartbeat times aside.
func sameNodeStatus(have, want *pb.NodeStatus) bool {
	if have == nil {
		return false
	}
	strip := func(s *pb.NodeStatus) *pb.NodeStatus {
		s = s.CloneVT()
		for _, c := range s.Conditions {
			c.LastHeartbeatTime = nil
		}
		return s
	}
	return gproto.Equal(strip(have), strip(want))
}

// renewLease writes the node's Lease with renewTime now: an update of the
// Lease last written, or, when there is none or it changed meanwhile, of
// the one the masters hold, created if missing. The Lease is owned by the
// Node, so it goes when the Node is deleted.
func (h *heartbeater) renewLease(ctx context.Context, c *client.Client, node *pb.ObjectMeta, now time.Time) error {
	a := h.a
	owner := &pb.OwnerReference{ApiVersion: "v1", Kind: "Node", Name: node.GetName(), Uid: node.GetUid()}
	renew := func(l *pb.Lease) *pb.Lease {
		l = l.CloneVT()
		l.ApiVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
		if l.Spec == nil {
			l.Spec = &pb.LeaseSpec{}
		}
		if l.Spec.HolderIdentity != a.cfg.Name {
			l.Spec.HolderIdentity = a.cfg.Name
			l.Spec.AcquireTime = timestamppb.New(now)
		}
		l.Spec.LeaseDurationSeconds = gproto.Int32(a.leaseDurationSeconds())
		l.Spec.RenewTime = timestamppb.New(now)
		l.Metadata.OwnerReferences = []*pb.OwnerReference{owner}
		return l
	}
	if h.lease != nil && len(h.lease.GetMetadata().GetOwnerReferences()) == 1 && h.lease.GetMetadata().GetOwnerReferences()[0].GetUid() == owner.Uid {
		resp, err := c.Update(ctx, pb.Wrap(renew(h.lease)))
		if err == nil {
			h.lease = resp.GetObject().GetLease()
			return nil
		}
		h.lease = nil
		if code := status.Code(err); code != codes.Aborted && code != codes.NotFound {
			return err
		}
	}
	h.lease = nil
	cur, err := c.Get(ctx, "Lease", pb.NamespaceNodeLease, a.cfg.Name, client.ReadOptions{})
	var resp *pb.WriteResponse
	switch {
	case status.Code(err) == codes.NotFound:
		l := &pb.Lease{Metadata: &pb.ObjectMeta{Name: a.cfg.Name, Namespace: pb.NamespaceNodeLease}}
		resp, err = c.Create(ctx, pb.Wrap(renew(l)))
	case err != nil:
		return err
	default:
		resp, err = c.Update(ctx, pb.Wrap(renew(cur.GetLease())))
	}
	if err != nil {
		return err
	}
	h.lease = resp.GetObject().GetLease()
	return nil
}

// leaseDurationSeconds is the node Lease's advertised duration: four
// heartbeats, as the kubelet's 40s lease is renewed every 10s.
func (a *Agent) leaseDurationSeconds() int32 {
	return int32(max(1, (4*a.cfg.HeartbeatInterval).Round(time.Second)/time.Second))
}
