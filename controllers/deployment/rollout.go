package deployment

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// rollout is one reconcile of one Deployment: the Deployment and its
// ReplicaSets as last read or written, updated after every write so later
// steps of the same reconcile build on it.
type rollout struct {
	key    string
	ctx    context.Context
	c      *Controller
	d      *pb.Object
	newRS  *pb.Object
	oldRSs []*pb.Object
	now    time.Time
	// conds are the Deployment's conditions as this reconcile leaves them.
	conds []*pb.WorkloadCondition
}

func newRollout(ctx context.Context, c *Controller, d *pb.Object, rss []*pb.Object) *rollout {
	r := &rollout{key: controllers.KeyOf(d), ctx: ctx, c: c, d: d, now: c.env.Clock.Now()}
	for _, cond := range d.GetDeployment().GetStatus().GetConditions() {
		r.conds = append(r.conds, proto.Clone(cond).(*pb.WorkloadCondition))
	}
	tmpl := d.GetDeployment().GetSpec().GetTemplate()
	var candidates []*pb.ReplicaSet
	byName := map[string]*pb.Object{}
	for _, o := range rss {
		if equalIgnoreHash(o.GetReplicaSet().GetSpec().GetTemplate(), tmpl) {
			candidates = append(candidates, o.GetReplicaSet())
			byName[o.Meta().GetName()] = o
		}
	}
	if len(candidates) > 0 {
		// Several ReplicaSets with the current template: the oldest is
		// the new one, the others are old.
		sortByCreation(candidates)
		r.newRS = byName[candidates[0].GetMetadata().GetName()]
	}
	for _, o := range rss {
		if o != r.newRS {
			r.oldRSs = append(r.oldRSs, o)
		}
	}
	return r
}

func (r *rollout) deployment() *pb.Deployment { return r.d.GetDeployment() }

func (r *rollout) all() []*pb.ReplicaSet {
	out := make([]*pb.ReplicaSet, 0, len(r.oldRSs)+1)
	for _, o := range r.oldRSs {
		out = append(out, o.GetReplicaSet())
	}
	if r.newRS != nil {
		out = append(out, r.newRS.GetReplicaSet())
	}
	return out
}

func (r *rollout) old() []*pb.ReplicaSet {
	out := make([]*pb.ReplicaSet, 0, len(r.oldRSs))
	for _, o := range r.oldRSs {
		out = append(out, o.GetReplicaSet())
	}
	return out
}

// rolling is the RollingUpdate strategy: scale the new ReplicaSet up as far
// as maxSurge allows, then the old ones down as far as maxUnavailable
// allows, one step per reconcile.
func (r *rollout) rolling() error {
	if err := r.syncNewRS(true); err != nil {
		return err
	}
	scaled, err := r.reconcileNewRS()
	if err != nil || scaled {
		return err
	}
	scaled, err = r.reconcileOldRSs()
	if err != nil || scaled {
		return err
	}
	if r.complete() {
		return r.cleanup()
	}
	return nil
}

// recreate is the Recreate strategy: scale every old ReplicaSet to zero,
// wait until none of their pods runs, then scale the new one up.
func (r *rollout) recreate() error {
	if err := r.syncNewRS(false); err != nil {
		return err
	}
	scaled := false
	for _, o := range r.oldRSs {
		if rsReplicas(o.GetReplicaSet()) == 0 {
			continue
		}
		if _, err := r.scale(o, 0); err != nil {
			return err
		}
		scaled = true
	}
	if scaled || r.c.oldPodsRunning(r.oldRSs) {
		return nil
	}
	if r.newRS == nil {
		if err := r.syncNewRS(true); err != nil {
			return err
		}
	}
	if _, err := r.scale(r.newRS, replicasOf(r.deployment())); err != nil {
		return err
	}
	if r.complete() {
		return r.cleanup()
	}
	return nil
}

// paused only follows a change of replicas when no rollout is under way,
// and keeps history in check.
func (r *rollout) paused() error {
	if err := r.syncNewRS(false); err != nil {
		return err
	}
	if r.newRS != nil && sumSpec(r.old()) == 0 {
		if _, err := r.scale(r.newRS, replicasOf(r.deployment())); err != nil {
			return err
		}
	}
	return r.cleanup()
}

// syncNewRS finds, and with create makes, the ReplicaSet of the current
// template, and keeps the revision annotations of it and of the Deployment
// up to date.
func (r *rollout) syncNewRS(create bool) error {
	d := r.deployment()
	newRevision := maxRevision(r.old()) + 1
	if r.newRS == nil {
		if !create {
			return nil
		}
		return r.createNewRS(newRevision)
	}
	rs := r.newRS.GetReplicaSet()
	if revision(rs) < newRevision || rs.GetSpec().GetMinReadySeconds() != d.GetSpec().GetMinReadySeconds() {
		// A template rolled back to: it becomes the newest revision.
		next := r.newRS.Clone()
		nrs := next.GetReplicaSet()
		if revision(rs) < newRevision {
			setAnnotation(nrs.GetMetadata(), RevisionAnnotation, strconv.FormatInt(newRevision, 10))
		}
		nrs.Spec.MinReadySeconds = d.GetSpec().GetMinReadySeconds()
		stored, err := r.c.env.Cluster.Update(r.ctx, next)
		if err != nil {
			return fmt.Errorf("update revision of replicaset %s: %w", r.newRS.Meta().Key(), err)
		}
		r.c.written.Wrote(r.key, stored)
		r.newRS = stored
	}
	if getCondition(r.conds, "Progressing") == nil && hasProgressDeadline(d) {
		setCondition(&r.conds, newCondition("Progressing", "True", "FoundNewReplicaSet",
			fmt.Sprintf("Found new replica set %q", r.newRS.Meta().GetName()), r.now))
	}
	return r.syncDeploymentRevision()
}

func (r *rollout) createNewRS(newRevision int64) error {
	d := r.deployment()
	hash := templateHash(d.GetSpec().GetTemplate(), d.GetStatus().CollisionCount)
	tmpl := proto.Clone(d.GetSpec().GetTemplate()).(*pb.PodTemplateSpec)
	if tmpl.Metadata == nil {
		tmpl.Metadata = &pb.ObjectMeta{}
	}
	setLabel(tmpl.Metadata, PodTemplateHashLabel, hash)
	sel := proto.Clone(d.GetSpec().GetSelector()).(*pb.LabelSelector)
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[PodTemplateHashLabel] = hash
	rsLabels := copyMap(tmpl.GetMetadata().GetLabels())

	var replicas int32
	if strategyType(d) == "Recreate" {
		replicas = replicasOf(d)
	} else {
		replicas = r.newRSReplicas(0)
	}
	surge, _, _ := fenceposts(d)
	rs := &pb.ReplicaSet{
		ApiVersion: "apps/v1", Kind: "ReplicaSet",
		Metadata: &pb.ObjectMeta{
			Name:      d.GetMetadata().GetName() + "-" + hash,
			Namespace: d.GetMetadata().GetNamespace(),
			Labels:    rsLabels,
			Annotations: map[string]string{
				RevisionAnnotation:        strconv.FormatInt(newRevision, 10),
				DesiredReplicasAnnotation: strconv.Itoa(int(replicasOf(d))),
				MaxReplicasAnnotation:     strconv.Itoa(int(replicasOf(d) + surge)),
			},
			OwnerReferences: []*pb.OwnerReference{controllers.NewControllerRef(d.GetMetadata(), "apps/v1", "Deployment")},
		},
		Spec: &pb.ReplicaSetSpec{
			Replicas: &replicas, MinReadySeconds: d.GetSpec().GetMinReadySeconds(),
			Selector: sel, Template: tmpl,
		},
	}
	stored, err := r.c.env.Cluster.Create(r.ctx, pb.Wrap(rs))
	if controllers.IsAlreadyExists(err) {
		return r.collision(rs.GetMetadata().GetName(), err)
	}
	if err != nil {
		msg := fmt.Sprintf("Failed to create new replica set %q: %v", rs.GetMetadata().GetName(), err)
		r.c.env.Recorder.Event(r.d, controllers.EventTypeWarning, "FailedCreate", msg)
		return fmt.Errorf("create replicaset %s: %w", controllers.KeyOf(pb.Wrap(rs)), err)
	}
	r.c.written.Wrote(r.key, stored)
	r.newRS = stored
	if replicas > 0 {
		r.c.env.Recorder.Eventf(r.d, controllers.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", rs.GetMetadata().GetName(), replicas)
	}
	if hasProgressDeadline(d) {
		setCondition(&r.conds, newCondition("Progressing", "True", "NewReplicaSetCreated",
			fmt.Sprintf("Created new replica set %q", rs.GetMetadata().GetName()), r.now))
	}
	return r.syncDeploymentRevision()
}

// collision handles a create whose name is taken. If the ReplicaSet is ours
// with the same template the cache is just behind; otherwise another
// object holds the name, and bumping status.collisionCount changes the
// hash.
func (r *rollout) collision(name string, err error) error {
	d := r.deployment()
	o, ok := r.c.replicaSets.Get(controllers.Key(d.GetMetadata().GetNamespace(), name))
	if !ok {
		// Not cached yet: look again once it is.
		return fmt.Errorf("replicaset %s exists but is not cached yet: %w", name, err)
	}
	ref := controllers.ControllerOf(o.Meta())
	if ref != nil && ref.GetUid() == d.GetMetadata().GetUid() && equalIgnoreHash(o.GetReplicaSet().GetSpec().GetTemplate(), d.GetSpec().GetTemplate()) {
		// Ours, with our template: adopted into the claim on the next look.
		return fmt.Errorf("replicaset %s exists but was not claimed yet: %w", name, err)
	}
	next := r.d.Clone()
	st := next.GetDeployment().Status
	if st == nil {
		st = &pb.DeploymentStatus{}
		next.GetDeployment().Status = st
	}
	n := st.GetCollisionCount() + 1
	st.CollisionCount = &n
	if _, uerr := r.c.env.Cluster.UpdateStatus(r.ctx, next); uerr != nil {
		return fmt.Errorf("replicaset name %s collides; update collisionCount: %w", name, uerr)
	}
	return fmt.Errorf("replicaset name %s collides with another object; retrying with collisionCount %d: %w", name, n, err)
}

// syncDeploymentRevision copies the new ReplicaSet's revision onto the
// Deployment's annotations.
func (r *rollout) syncDeploymentRevision() error {
	want := r.newRS.Meta().GetAnnotations()[RevisionAnnotation]
	if want == "" || r.d.Meta().GetAnnotations()[RevisionAnnotation] == want {
		return nil
	}
	next := r.d.Clone()
	setAnnotation(next.Meta(), RevisionAnnotation, want)
	stored, err := r.c.env.Cluster.Update(r.ctx, next)
	if err != nil {
		return fmt.Errorf("update revision of deployment %s: %w", r.d.Meta().Key(), err)
	}
	r.d = stored
	return nil
}

// newRSReplicas is how far the new ReplicaSet may grow now:
// replicas+maxSurge minus the pods every ReplicaSet may have, capped at
// replicas.
func (r *rollout) newRSReplicas(current int32) int32 {
	d := r.deployment()
	desired := replicasOf(d)
	surge, _, _ := fenceposts(d)
	var total int32
	for _, rs := range r.all() {
		total += podsOf(rs)
	}
	if r.newRS == nil {
		total += current
	}
	maxTotal := desired + surge
	if total >= maxTotal {
		return current
	}
	up := min(maxTotal-total, desired-current)
	return current + max(up, 0)
}

// reconcileNewRS scales the new ReplicaSet towards replicas within surge.
func (r *rollout) reconcileNewRS() (bool, error) {
	desired := replicasOf(r.deployment())
	cur := rsReplicas(r.newRS.GetReplicaSet())
	switch {
	case cur == desired:
		return false, nil
	case cur > desired:
		return r.scale(r.newRS, desired)
	}
	return r.scale(r.newRS, r.newRSReplicas(cur))
}

// reconcileOldRSs scales old ReplicaSets down as far as maxUnavailable
// allows: first their unavailable pods, then available ones.
func (r *rollout) reconcileOldRSs() (bool, error) {
	old := r.old()
	if sumSpec(old) == 0 {
		return false, nil
	}
	d := r.deployment()
	_, maxUnav, _ := fenceposts(d)
	minAvailable := replicasOf(d) - maxUnav
	newRS := r.newRS.GetReplicaSet()
	newUnavailable := rsReplicas(newRS) - availableOf(newRS)
	maxScaledDown := sumSpec(r.all()) - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return false, nil
	}
	cleaned, err := r.cleanupUnhealthy(maxScaledDown)
	if err != nil {
		return cleaned > 0, err
	}
	down, err := r.scaleDownOld(minAvailable)
	return cleaned+down > 0, err
}

// cleanupUnhealthy scales old ReplicaSets down by their unavailable pods,
// oldest first, at most maxCleanup in all: removing pods that serve nothing
// costs no availability.
func (r *rollout) cleanupUnhealthy(maxCleanup int32) (int32, error) {
	var total int32
	for _, o := range r.oldByCreation() {
		if total >= maxCleanup {
			break
		}
		rs := o.GetReplicaSet()
		spec, avail := rsReplicas(rs), availableOf(rs)
		if spec == 0 || spec <= avail {
			continue
		}
		down := min(maxCleanup-total, spec-avail)
		if _, err := r.scale(o, spec-down); err != nil {
			return total, err
		}
		total += down
	}
	return total, nil
}

// scaleDownOld scales old ReplicaSets down, oldest first, by as many pods
// as are available beyond minAvailable.
func (r *rollout) scaleDownOld(minAvailable int32) (int32, error) {
	var available int32
	for _, rs := range r.all() {
		available += availableOf(rs)
	}
	if available <= minAvailable {
		return 0, nil
	}
	budget := available - minAvailable
	var total int32
	for _, o := range r.oldByCreation() {
		if total >= budget {
			break
		}
		spec := rsReplicas(o.GetReplicaSet())
		if spec == 0 {
			continue
		}
		down := min(spec, budget-total)
		if _, err := r.scale(o, spec-down); err != nil {
			return total, err
		}
		total += down
	}
	return total, nil
}

// podsOf is how many pods a ReplicaSet may have now: its spec, or more
// while it has not yet removed pods above a lowered spec (its status still
// counts them). Counting this rather than spec alone keeps the pods that
// actually run within maxSurge, not just the specs.
func podsOf(rs *pb.ReplicaSet) int32 {
	return max(rsReplicas(rs), rs.GetStatus().GetReplicas())
}

// availableOf is how many of a ReplicaSet's pods can be counted on as
// available: its status says so and its spec keeps them. A status counting
// pods above a just-lowered spec is about to lose them, and counting them
// would let a rolling update remove more than maxUnavailable allows.
func availableOf(rs *pb.ReplicaSet) int32 {
	return min(rs.GetStatus().GetAvailableReplicas(), rsReplicas(rs))
}

func (r *rollout) oldByCreation() []*pb.Object {
	out := append([]*pb.Object(nil), r.oldRSs...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Meta().GetCreationTimestamp().AsTime(), out[j].Meta().GetCreationTimestamp().AsTime()
		if !a.Equal(b) {
			return a.Before(b)
		}
		return out[i].Meta().GetName() < out[j].Meta().GetName()
	})
	return out
}

// scale sets a ReplicaSet's replicas (and the replica annotations), with
// its resourceVersion as precondition, and records the result in r.
func (r *rollout) scale(o *pb.Object, replicas int32) (bool, error) {
	d := r.deployment()
	rs := o.GetReplicaSet()
	surge := int32(0)
	if strategyType(d) == "RollingUpdate" {
		surge, _, _ = fenceposts(d)
	}
	desired := strconv.Itoa(int(replicasOf(d)))
	maxR := strconv.Itoa(int(replicasOf(d) + surge))
	ann := rs.GetMetadata().GetAnnotations()
	from := rsReplicas(rs)
	if from == replicas && ann[DesiredReplicasAnnotation] == desired && ann[MaxReplicasAnnotation] == maxR {
		return false, nil
	}
	next := o.Clone()
	nrs := next.GetReplicaSet()
	nrs.Spec.Replicas = &replicas
	setAnnotation(nrs.GetMetadata(), DesiredReplicasAnnotation, desired)
	setAnnotation(nrs.GetMetadata(), MaxReplicasAnnotation, maxR)
	stored, err := r.c.env.Cluster.Update(r.ctx, next)
	if err != nil {
		return false, fmt.Errorf("scale replicaset %s to %d: %w", o.Meta().Key(), replicas, err)
	}
	r.c.written.Wrote(r.key, stored)
	if o == r.newRS {
		r.newRS = stored
	} else {
		for i := range r.oldRSs {
			if r.oldRSs[i] == o {
				r.oldRSs[i] = stored
			}
		}
	}
	if from != replicas {
		dir := "up"
		if replicas < from {
			dir = "down"
		}
		r.c.env.Recorder.Eventf(r.d, controllers.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", dir, o.Meta().GetName(), from, replicas)
	}
	return from != replicas, nil
}

// cleanup deletes the oldest ReplicaSets with no pods beyond
// revisionHistoryLimit.
func (r *rollout) cleanup() error {
	limit := revisionHistoryLimit(r.deployment())
	var alive []*pb.Object
	for _, o := range r.oldRSs {
		if o.Meta().GetDeletionTimestamp() == nil {
			alive = append(alive, o)
		}
	}
	diff := len(alive) - int(limit)
	if diff <= 0 {
		return nil
	}
	sort.SliceStable(alive, func(i, j int) bool { return revision(alive[i].GetReplicaSet()) < revision(alive[j].GetReplicaSet()) })
	for _, o := range alive[:diff] {
		rs := o.GetReplicaSet()
		if rsReplicas(rs) != 0 || rs.GetStatus().GetReplicas() != 0 || rs.GetStatus().GetObservedGeneration() < rs.GetMetadata().GetGeneration() {
			continue
		}
		m := o.Meta()
		err := r.c.env.Cluster.Delete(r.ctx, &pb.DeleteOp{Kind: "ReplicaSet", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion(), PropagationPolicy: "Background"})
		if err != nil && !controllers.IsNotFound(err) {
			return fmt.Errorf("delete old replicaset %s: %w", m.Key(), err)
		}
	}
	return nil
}

func setAnnotation(m *pb.ObjectMeta, k, v string) {
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[k] = v
}

func setLabel(m *pb.ObjectMeta, k, v string) {
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels[k] = v
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
