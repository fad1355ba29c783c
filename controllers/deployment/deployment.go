// Package deployment rolls Deployments out through ReplicaSets, as
// Kubernetes' deployment controller does: one ReplicaSet per template
// revision (named <deployment>-<pod-template-hash>), RollingUpdate within
// maxSurge/maxUnavailable or Recreate, revision annotations, history
// cleanup (revisionHistoryLimit), status and the Progressing and Available
// conditions (progressDeadlineSeconds).
//
// Every decision is taken from the informer caches and every write carries
// the resourceVersion it was based on, so a decision taken on a stale cache
// fails and is taken again; that, and deriving everything from the stored
// state rather than from memory, is what keeps a rollout within its bounds
// across a leader change.
package deployment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "deployment"

// NewRegistration returns the controller's Registration.
func NewRegistration() controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		return New(env).Loop, nil
	}}
}

// Controller reconciles Deployments.
type Controller struct {
	*controllers.Loop
	env         controllers.Env
	deployments *controllers.Informer
	replicaSets *controllers.Informer
	pods        *controllers.Informer
	// written holds back a reconcile until the ReplicaSet cache shows the
	// Deployment's own last ReplicaSet writes.
	written *controllers.WriteBarrier
}

// New builds the controller over env's informers.
func New(env controllers.Env) *Controller {
	c := &Controller{
		env:         env,
		deployments: env.Informers.For("Deployment"),
		replicaSets: env.Informers.For("ReplicaSet"),
		pods:        env.Informers.For("Pod"),
	}
	c.written = controllers.NewWriteBarrier(c.replicaSets)
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.deployments, c.replicaSets, c.pods}})
	c.deployments.AddHandler(controllers.EnqueueObject(c.Queue()))
	c.replicaSets.AddHandler(controllers.EnqueueKeys(c.Queue(), c.deploymentsForReplicaSet))
	// Recreate waits for the old pods to be gone.
	c.pods.AddHandler(controllers.HandlerFuncs{
		UpdateFunc: func(old, o *pb.Object) {
			if controllers.IsPodTerminal(o.GetPod()) && !controllers.IsPodTerminal(old.GetPod()) {
				c.enqueueForPod(o)
			}
		},
		DeleteFunc: c.enqueueForPod,
	})
	return c
}

func (c *Controller) deploymentsForReplicaSet(o *pb.Object) []string {
	ns := o.Meta().GetNamespace()
	if ref := controllers.ControllerOf(o.Meta()); ref != nil {
		if ref.GetKind() == "Deployment" {
			return []string{controllers.Key(ns, ref.GetName())}
		}
		return nil
	}
	// An orphan: any Deployment that could adopt it.
	var out []string
	set := labels.Set(o.Meta().GetLabels())
	for _, d := range c.deployments.ByIndex(controllers.IndexNamespace, ns) {
		sel, err := controllers.Selector(d.GetDeployment().GetSpec().GetSelector())
		if err == nil && !sel.Empty() && sel.Matches(set) {
			out = append(out, controllers.KeyOf(d))
		}
	}
	return out
}

func (c *Controller) enqueueForPod(o *pb.Object) {
	ref := controllers.ControllerOf(o.Meta())
	if ref == nil || ref.GetKind() != "ReplicaSet" {
		return
	}
	if rs, ok := c.replicaSets.Get(controllers.Key(o.Meta().GetNamespace(), ref.GetName())); ok {
		for _, k := range c.deploymentsForReplicaSet(rs) {
			c.Queue().Add(k)
		}
	}
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	obj, ok := c.deployments.Get(key)
	if !ok {
		c.written.Forget(key)
		return controllers.Result{}, nil
	}
	if !c.written.Ready(key) {
		// The event of our last write enqueues the key again; the requeue
		// is a safety net.
		return controllers.Result{RequeueAfter: time.Second}, nil
	}
	d := obj.GetDeployment()
	if d.GetMetadata().GetDeletionTimestamp() != nil {
		return controllers.Result{}, nil // the garbage collector takes the ReplicaSets
	}
	sel, err := controllers.Selector(d.GetSpec().GetSelector())
	if err == nil && sel.Empty() {
		err = errors.New("empty selector selects every pod")
	}
	if err == nil && strategyType(d) == "RollingUpdate" {
		_, _, err = fenceposts(d)
	}
	if err != nil {
		// A bad spec does not fix itself: report it, do not retry.
		c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "InvalidSpec", "%v", err)
		return controllers.Result{}, nil
	}
	rss, err := c.claimReplicaSets(ctx, obj, sel)
	if err != nil {
		return controllers.Result{}, err
	}
	r := newRollout(ctx, c, obj, rss)
	switch {
	case d.GetSpec().GetPaused():
		err = r.paused()
	case strategyType(d) == "Recreate":
		err = r.recreate()
	default:
		err = r.rolling()
	}
	if err != nil {
		return controllers.Result{}, err
	}
	return r.syncStatus()
}

// claimReplicaSets returns the ReplicaSets the Deployment owns, after
// adopting matching orphans and releasing owned ones that stopped matching.
func (c *Controller) claimReplicaSets(ctx context.Context, obj *pb.Object, sel labels.Selector) ([]*pb.Object, error) {
	m := obj.Meta()
	var owned []*pb.Object
	var errs []error
	for _, o := range c.replicaSets.ByIndex(controllers.IndexNamespace, m.GetNamespace()) {
		matches := sel.Matches(labels.Set(o.Meta().GetLabels()))
		ref := controllers.ControllerOf(o.Meta())
		switch {
		case ref != nil && ref.GetUid() == m.GetUid():
			if matches {
				owned = append(owned, o)
			} else if o.Meta().GetDeletionTimestamp() == nil {
				errs = append(errs, c.setOwner(ctx, o, nil))
			}
		case ref == nil && matches && o.Meta().GetDeletionTimestamp() == nil:
			if err := c.setOwner(ctx, o, m); err != nil {
				errs = append(errs, err)
				continue
			}
			owned = append(owned, o)
		}
	}
	return owned, errors.Join(errs...)
}

func (c *Controller) setOwner(ctx context.Context, o *pb.Object, owner *pb.ObjectMeta) error {
	next := o.Clone()
	m := next.Meta()
	var refs []*pb.OwnerReference
	for _, r := range m.GetOwnerReferences() {
		if !r.GetController() {
			refs = append(refs, r)
		}
	}
	if owner != nil {
		refs = append(refs, controllers.NewControllerRef(owner, "apps/v1", "Deployment"))
	}
	m.OwnerReferences = refs
	stored, err := c.env.Cluster.Update(ctx, next)
	if err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("set owner of replicaset %s: %w", m.Key(), err)
	}
	if err == nil && owner != nil {
		c.written.Wrote(controllers.Key(owner.GetNamespace(), owner.GetName()), stored)
	}
	return nil
}

// oldPodsRunning reports whether any pod of the old ReplicaSets may still
// run: Recreate waits for none.
func (c *Controller) oldPodsRunning(old []*pb.Object) bool {
	for _, o := range old {
		if o.GetReplicaSet().GetStatus().GetReplicas() > 0 {
			return true
		}
		for _, p := range c.pods.ByIndex(controllers.IndexOwner, o.Meta().GetUid()) {
			if !controllers.IsPodTerminal(p.GetPod()) {
				return true
			}
		}
	}
	return false
}

var _ controllers.Reconciler = (*Controller)(nil)

// requeueFor bounds a RequeueAfter to something sensible.
func requeueFor(d time.Duration) time.Duration { return max(d, time.Second) }
