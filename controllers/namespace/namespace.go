// Package namespace finishes the deletion of namespaces. Deleting a
// namespace that still holds objects only marks it Terminating (the store
// refuses new objects in it from then on); this controller deletes
// everything in it, of every namespaced kind, and deletes the namespace
// again once nothing is left, which the store then removes.
//
// Objects are deleted as a user would delete them: pods gracefully (the
// worker finishes them), objects with finalizers once their finalizers are
// done, dependents through the garbage collector. The namespace goes only
// when all of that is over, so nothing is left behind.
package namespace

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "namespace"

// recheck is how often a Terminating namespace that is still waiting for
// its contents is looked at even if no event says anything changed: a
// safety net.
const recheck = 15 * time.Second

// NewRegistration returns the controller's Registration.
func NewRegistration() controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		return New(env).Loop, nil
	}}
}

// Controller empties and removes Terminating namespaces.
type Controller struct {
	*controllers.Loop
	env        controllers.Env
	namespaces *controllers.Informer
	kinds      []string // namespaced kinds, sorted
}

// New builds the controller over the Namespace informer. A Terminating
// namespace's contents are listed live, as Kubernetes' namespace
// controller lists them: a cache of every object of the cluster for an
// operation this rare would cost the leader memory all the time. Every
// namespaced kind's dependents informer (shared with the garbage
// collector) tells it of the deletions it waits for.
func New(env controllers.Env) *Controller {
	c := &Controller{env: env, namespaces: env.Informers.For("Namespace")}
	wait := []*controllers.Informer{c.namespaces}
	var contents []*controllers.Informer
	for _, k := range pb.Kinds() {
		if !k.Namespaced {
			continue
		}
		c.kinds = append(c.kinds, k.Kind)
		contents = append(contents, env.Informers.ForDependents(k.Kind))
	}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: wait})
	c.namespaces.AddHandler(controllers.HandlerFuncs{
		AddFunc:    c.enqueueIfTerminating,
		UpdateFunc: func(_, o *pb.Object) { c.enqueueIfTerminating(o) },
	})
	// The progress a Terminating namespace waits for: its objects going.
	content := func(o *pb.Object) {
		if ns, ok := c.namespaces.Get(o.Meta().GetNamespace()); ok && Terminating(ns) {
			c.Queue().Add(o.Meta().GetNamespace())
		}
	}
	for _, inf := range contents {
		inf.AddHandler(controllers.HandlerFuncs{
			UpdateFunc: func(_, o *pb.Object) { content(o) },
			DeleteFunc: content,
		})
	}
	return c
}

func (c *Controller) enqueueIfTerminating(o *pb.Object) {
	if Terminating(o) {
		c.Queue().Add(controllers.KeyOf(o))
	}
}

// Terminating reports whether a namespace is being deleted.
func Terminating(ns *pb.Object) bool {
	return ns.Meta().GetDeletionTimestamp() != nil || ns.GetNamespace().GetStatus().GetPhase() == "Terminating"
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, name string) (controllers.Result, error) {
	ns, ok := c.namespaces.Get(name)
	if !ok || !Terminating(ns) {
		return controllers.Result{}, nil
	}
	remaining, errs := 0, []error(nil)
	var left []string
	for _, kind := range c.kinds {
		resp, err := c.env.Cluster.List(ctx, &pb.ListRequest{Kind: kind, Namespace: name})
		if err != nil {
			return controllers.Result{}, fmt.Errorf("list %s in namespace %s: %w", kind, name, err)
		}
		objs := resp.GetItems() // in key order
		if len(objs) > 0 {
			left = append(left, fmt.Sprintf("%d %s", len(objs), kind))
		}
		for _, o := range objs {
			remaining++
			m := o.Meta()
			if m.GetDeletionTimestamp() != nil {
				continue // going; its worker or finalizers finish it
			}
			err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: kind, Namespace: name, Name: m.GetName(), Uid: m.GetUid(), PropagationPolicy: "Background"})
			if err != nil && !controllers.IsNotFound(err) && !controllers.IsConflict(err) {
				errs = append(errs, fmt.Errorf("delete %s %s: %w", kind, m.Key(), err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.env.Recorder.Eventf(ns, controllers.EventTypeWarning, "NamespaceDeletionContentFailure", "failed to delete some content: %v", errs[0])
		return controllers.Result{}, err
	}
	if remaining > 0 {
		c.env.Logger.Debug("namespace waits for its contents to go", "namespace", name, "left", strings.Join(left, ", "))
		return controllers.Result{RequeueAfter: recheck}, nil
	}
	// Empty: the store removes an empty Terminating namespace on delete.
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Namespace", Name: name, Uid: ns.Meta().GetUid()})
	if err != nil && !controllers.IsNotFound(err) {
		return controllers.Result{}, fmt.Errorf("delete namespace %s: %w", name, err)
	}
	// If anything is left after all, the store keeps the namespace
	// Terminating and its content's events bring it back.
	return controllers.Result{RequeueAfter: recheck}, nil
}

var _ controllers.Reconciler = (*Controller)(nil)
