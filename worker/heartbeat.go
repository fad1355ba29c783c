package worker

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// heartbeatLoop posts the node's status every HeartbeatInterval: Ready=True
// with a fresh lastHeartbeatTime, plus capacity, addresses, system info and
// the agent's port (which may change across restarts). Until the leader has
// registered the node it checks twice a second, so a new node turns Ready
// within moments of its registration.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	for {
		registered, err := a.heartbeat(ctx)
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

// heartbeat posts one status. It reads the Node from whichever master
// answers (a stale read is enough: it only keeps the Ready condition's
// transition time) and writes the status unconditionally: the worker owns
// its Node's status, and the leader only changes Ready when heartbeats have
// stopped.
func (a *Agent) heartbeat(ctx context.Context) (registered bool, err error) {
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
	var prev *pb.NodeCondition
	for _, cond := range obj.GetNode().GetStatus().GetConditions() {
		if cond.GetType() == "Ready" {
			prev = cond
		}
	}
	st := a.desc.status(time.Now(), prev)
	nd := &pb.Node{ApiVersion: "v1", Kind: "Node", Metadata: &pb.ObjectMeta{Name: a.cfg.Name}, Status: st}
	if _, err := c.UpdateStatus(ctx, pb.Wrap(nd)); err != nil {
		if status.Code(err) == codes.NotFound {
			return false, nil
		}
		return true, err
	}
	if !a.registered.Swap(true) {
		a.log.Info("node registered and ready")
	}
	return true, nil
}
