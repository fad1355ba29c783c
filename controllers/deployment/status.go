package deployment

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

func hasProgressDeadline(d *pb.Deployment) bool {
	return progressDeadline(d) != math.MaxInt32
}

// calculateStatus derives the Deployment's status from its ReplicaSets.
func (r *rollout) calculateStatus() *pb.DeploymentStatus {
	d := r.deployment()
	all := r.all()
	available := sumStatus(all, (*pb.ReplicaSetStatus).GetAvailableReplicas)
	st := &pb.DeploymentStatus{
		ObservedGeneration:  d.GetMetadata().GetGeneration(),
		Replicas:            sumStatus(all, (*pb.ReplicaSetStatus).GetReplicas),
		ReadyReplicas:       sumStatus(all, (*pb.ReplicaSetStatus).GetReadyReplicas),
		AvailableReplicas:   available,
		UnavailableReplicas: max(sumSpec(all)-available, 0),
		CollisionCount:      d.GetStatus().CollisionCount,
	}
	if r.newRS != nil {
		st.UpdatedReplicas = r.newRS.GetReplicaSet().GetStatus().GetReplicas()
	}
	if available >= replicasOf(d)-maxUnavailable(d) {
		setCondition(&r.conds, newCondition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", r.now))
	} else {
		setCondition(&r.conds, newCondition("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", r.now))
	}
	return st
}

// complete reports whether every replica runs the current template and is
// available.
func (r *rollout) complete() bool {
	return complete(r.deployment(), r.calculateStatus())
}

func complete(d *pb.Deployment, st *pb.DeploymentStatus) bool {
	n := replicasOf(d)
	return st.GetUpdatedReplicas() == n && st.GetReplicas() == n && st.GetAvailableReplicas() == n &&
		st.GetObservedGeneration() >= d.GetMetadata().GetGeneration()
}

// progressing reports whether the rollout moved since the last status.
func progressing(d *pb.Deployment, st *pb.DeploymentStatus) bool {
	old := d.GetStatus()
	return st.GetUpdatedReplicas() > old.GetUpdatedReplicas() ||
		st.GetReplicas()-st.GetUpdatedReplicas() < old.GetReplicas()-old.GetUpdatedReplicas() ||
		st.GetReadyReplicas() > old.GetReadyReplicas() ||
		st.GetAvailableReplicas() > old.GetAvailableReplicas()
}

// syncStatus computes the status and the Progressing condition, writes
// them if they changed, and asks to be requeued at the progress deadline.
func (r *rollout) syncStatus() (controllers.Result, error) {
	d := r.deployment()
	st := r.calculateStatus()
	var requeue time.Duration
	cond := getCondition(r.conds, "Progressing")
	switch {
	case d.GetSpec().GetPaused():
		if cond.GetReason() != "DeploymentPaused" {
			setCondition(&r.conds, newCondition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", r.now))
		}
	case !hasProgressDeadline(d):
		removeCondition(&r.conds, "Progressing")
	case cond.GetReason() == "DeploymentPaused":
		setCondition(&r.conds, newCondition("Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", r.now))
	case st.GetReplicas() == st.GetUpdatedReplicas() && cond.GetReason() == "NewReplicaSetAvailable":
		// Complete already; a later scale does not restart the clock.
	case complete(d, st):
		setCondition(&r.conds, newCondition("Progressing", "True", "NewReplicaSetAvailable",
			fmt.Sprintf("ReplicaSet %q has successfully progressed.", r.newRSName()), r.now))
	case progressing(d, st):
		c := newCondition("Progressing", "True", "ReplicaSetUpdated", fmt.Sprintf("ReplicaSet %q is progressing.", r.newRSName()), r.now)
		if cond.GetStatus() == "True" {
			c.LastTransitionTime = cond.GetLastTransitionTime()
		}
		removeCondition(&r.conds, "Progressing")
		r.conds = append(r.conds, c)
	case timedOut(d, cond, r.now):
		setCondition(&r.conds, newCondition("Progressing", "False", "ProgressDeadlineExceeded",
			fmt.Sprintf("ReplicaSet %q has timed out progressing.", r.newRSName()), r.now))
	}
	if c := getCondition(r.conds, "Progressing"); c != nil && c.GetStatus() == "True" && c.GetReason() != "NewReplicaSetAvailable" && !d.GetSpec().GetPaused() {
		deadline := c.GetLastUpdateTime().AsTime().Add(time.Duration(progressDeadline(d)) * time.Second)
		requeue = requeueFor(deadline.Sub(r.now) + time.Second)
	}
	r.replicaFailure()
	st.Conditions = r.conds
	if proto.Equal(d.GetStatus(), st) {
		return controllers.Result{RequeueAfter: requeue}, nil
	}
	next := r.d.Clone()
	next.GetDeployment().Status = st
	stored, err := r.c.env.Cluster.UpdateStatus(r.ctx, next)
	if err != nil {
		return controllers.Result{}, fmt.Errorf("update status of deployment %s: %w", r.d.Meta().Key(), err)
	}
	r.d = stored
	return controllers.Result{RequeueAfter: requeue}, nil
}

// replicaFailure mirrors a ReplicaSet's ReplicaFailure condition.
func (r *rollout) replicaFailure() {
	for _, rs := range r.all() {
		for _, c := range rs.GetStatus().GetConditions() {
			if c.GetType() == "ReplicaFailure" && c.GetStatus() == "True" {
				setCondition(&r.conds, newCondition("ReplicaFailure", "True", c.GetReason(), c.GetMessage(), r.now))
				return
			}
		}
	}
	removeCondition(&r.conds, "ReplicaFailure")
}

func (r *rollout) newRSName() string {
	if r.newRS == nil {
		return ""
	}
	return r.newRS.Meta().GetName()
}

func timedOut(d *pb.Deployment, cond *pb.WorkloadCondition, now time.Time) bool {
	if cond == nil || cond.GetReason() == "NewReplicaSetAvailable" {
		return false
	}
	if cond.GetReason() == "ProgressDeadlineExceeded" {
		return true
	}
	from := cond.GetLastUpdateTime().AsTime()
	return now.After(from.Add(time.Duration(progressDeadline(d)) * time.Second))
}

func newCondition(typ, status, reason, msg string, now time.Time) *pb.WorkloadCondition {
	ts := timestamppb.New(now)
	return &pb.WorkloadCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastUpdateTime: ts, LastTransitionTime: ts}
}

func getCondition(conds []*pb.WorkloadCondition, typ string) *pb.WorkloadCondition {
	for _, c := range conds {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// setCondition is Kubernetes' SetDeploymentCondition: no change when status
// and reason are the same; the transition time is kept when only the
// reason changes.
func setCondition(conds *[]*pb.WorkloadCondition, c *pb.WorkloadCondition) {
	cur := getCondition(*conds, c.GetType())
	if cur != nil && cur.GetStatus() == c.GetStatus() && cur.GetReason() == c.GetReason() {
		return
	}
	if cur != nil && cur.GetStatus() == c.GetStatus() {
		c.LastTransitionTime = cur.GetLastTransitionTime()
	}
	removeCondition(conds, c.GetType())
	*conds = append(*conds, c)
}

func removeCondition(conds *[]*pb.WorkloadCondition, typ string) {
	out := (*conds)[:0]
	for _, c := range *conds {
		if c.GetType() != typ {
			out = append(out, c)
		}
	}
	*conds = out
}
