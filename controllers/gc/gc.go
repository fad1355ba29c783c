// Package gc is the garbage collector. It deletes objects whose owners
// (metadata.ownerReferences) are gone, and carries out the propagation
// policies that the store records as finalizers when an owner is deleted:
//
//   - Background (the default): the owner goes at once; its dependents find
//     their owner gone and are deleted after it, level by level.
//   - Orphan (finalizer "orphan"): the owner's references are removed from
//     its dependents, which stay, then the finalizer is removed and the
//     store lets the owner go.
//   - Foreground (finalizer "foregroundDeletion"): the dependents are
//     deleted first; once no dependent with blockOwnerDeletion is left, the
//     finalizer is removed and the owner goes.
//
// A dependent with another owner that still exists is never deleted: only
// its references to the owners that are gone (or going in the foreground)
// are removed, as Kubernetes does.
//
// Deleting is the one thing that cannot be undone, so before deleting a
// dependent because its owner looks gone the collector confirms the absence
// with a live read (a List by name): an informer that lags behind the store
// may not show an owner created a moment ago. Everything else is decided
// from the caches, which are dependents informers: the collector hears of
// every object's deletion but keeps, metadata only, just the objects with
// owners or finalizers (and every object of the kinds other controllers
// cache in full). An owner it does not keep is looked up live when a
// dependent needs it (a lookup by name in the leader's store), so the
// leader does not hold a second copy of every ConfigMap and Secret of the
// cluster. An update (removing owner references or a finalizer) writes the
// whole object, so it starts from a live read of it.
package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name (kube-controller-manager's).
const Name = "garbagecollector"

// Finalizers the store adds for the Orphan and Foreground propagation
// policies.
const (
	FinalizerOrphan     = "orphan"
	FinalizerForeground = "foregroundDeletion"
)

// NewRegistration returns the controller's Registration.
func NewRegistration() controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		return New(env).Loop, nil
	}}
}

// Controller is the garbage collector. Its queue holds object keys of the
// form "Kind/namespace/name" ("Kind/name" for cluster-scoped kinds), since
// owners and dependents can be of any kind.
type Controller struct {
	*controllers.Loop
	env       controllers.Env
	informers map[string]*controllers.Informer // by kind
	order     []string                         // kinds, sorted, for deterministic iteration
}

// New builds the collector over a dependents informer for every kind.
func New(env controllers.Env) *Controller {
	c := &Controller{env: env, informers: map[string]*controllers.Informer{}}
	var wait []*controllers.Informer
	for _, k := range pb.Kinds() {
		inf := env.Informers.ForDependents(k.Kind)
		c.informers[k.Kind] = inf
		c.order = append(c.order, k.Kind)
		wait = append(wait, inf)
	}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: wait})
	for _, inf := range wait {
		inf.AddHandler(controllers.HandlerFuncs{
			AddFunc:    c.onAdd,
			UpdateFunc: c.onUpdate,
			DeleteFunc: c.onDelete,
		})
	}
	return c
}

// ObjectKey is the collector's queue key of obj.
func ObjectKey(obj *pb.Object) string {
	return obj.KindName() + "/" + controllers.KeyOf(obj)
}

func parseKey(key string) (kind, namespace, name string) {
	kind, rest, _ := strings.Cut(key, "/")
	namespace, name = controllers.SplitKey(rest)
	return kind, namespace, name
}

// interesting reports whether obj may need the collector: it has owners,
// or it is being deleted with one of the propagation finalizers.
func interesting(obj *pb.Object) bool {
	m := obj.Meta()
	return len(m.GetOwnerReferences()) > 0 || (m.GetDeletionTimestamp() != nil && hasPropagationFinalizer(m))
}

func hasPropagationFinalizer(m *pb.ObjectMeta) bool {
	f := m.GetFinalizers()
	return slices.Contains(f, FinalizerOrphan) || slices.Contains(f, FinalizerForeground)
}

func (c *Controller) onAdd(obj *pb.Object) {
	if interesting(obj) {
		c.Queue().Add(ObjectKey(obj))
	}
}

func (c *Controller) onUpdate(old, obj *pb.Object) {
	om, m := old.Meta(), obj.Meta()
	refsChanged := !sameRefs(om.GetOwnerReferences(), m.GetOwnerReferences())
	deletionChanged := (om.GetDeletionTimestamp() == nil) != (m.GetDeletionTimestamp() == nil) ||
		!slices.Equal(om.GetFinalizers(), m.GetFinalizers())
	if old == obj {
		// A periodic resync: look at everything again.
		refsChanged, deletionChanged = true, true
	}
	if (refsChanged || deletionChanged) && interesting(obj) {
		c.Queue().Add(ObjectKey(obj))
	}
	if refsChanged || deletionChanged {
		// Owners waiting on their dependents (orphan, foreground) look
		// again when a dependent lets go of them or starts going.
		c.enqueueOwners(old)
		c.enqueueOwners(obj)
	}
}

func (c *Controller) onDelete(obj *pb.Object) {
	c.enqueueOwners(obj)
	// Its dependents may now be garbage.
	for _, d := range c.dependents(obj.Meta().GetUid()) {
		c.Queue().Add(ObjectKey(d))
	}
}

func (c *Controller) enqueueOwners(obj *pb.Object) {
	ns := obj.Meta().GetNamespace()
	for _, ref := range obj.Meta().GetOwnerReferences() {
		ki, ok := pb.LookupKind(ref.GetKind())
		if !ok {
			continue
		}
		ons := ""
		if ki.Namespaced {
			ons = ns
		}
		c.Queue().Add(ki.Kind + "/" + controllers.Key(ons, ref.GetName()))
	}
}

func sameRefs(a, b []*pb.OwnerReference) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.OwnerReference) bool {
		return x.GetUid() == y.GetUid() && x.GetBlockOwnerDeletion() == y.GetBlockOwnerDeletion()
	})
}

// dependents returns the cached objects of every kind that list uid among
// their owners.
func (c *Controller) dependents(uid string) []*pb.Object {
	if uid == "" {
		return nil
	}
	var out []*pb.Object
	for _, kind := range c.order {
		deps := c.informers[kind].ByIndex(controllers.IndexOwner, uid)
		slices.SortFunc(deps, func(a, b *pb.Object) int { return strings.Compare(controllers.KeyOf(a), controllers.KeyOf(b)) })
		out = append(out, deps...)
	}
	return out
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	kind, ns, name := parseKey(key)
	inf, ok := c.informers[kind]
	if !ok {
		return controllers.Result{}, nil
	}
	obj, ok := inf.Get(controllers.Key(ns, name))
	if !ok {
		return controllers.Result{}, nil
	}
	m := obj.Meta()
	if m.GetDeletionTimestamp() != nil {
		switch f := m.GetFinalizers(); {
		case slices.Contains(f, FinalizerOrphan):
			return controllers.Result{}, c.orphanDependents(ctx, obj)
		case slices.Contains(f, FinalizerForeground):
			return controllers.Result{}, c.deleteDependentsFirst(ctx, obj)
		}
		return controllers.Result{}, nil // on its way out already
	}
	if len(m.GetOwnerReferences()) == 0 {
		return controllers.Result{}, nil
	}
	return controllers.Result{}, c.collect(ctx, obj)
}

// ownerState is what became of one owner of a dependent.
type ownerState int

const (
	// solid: the owner exists (or cannot be checked: an unknown kind).
	solid ownerState = iota
	// absent: no object of that kind, name and uid exists.
	absent
	// waiting: the owner is being deleted in the foreground, waiting for
	// its dependents to go.
	waiting
)

// classify decides what became of the owner ref names, from the cache; an
// owner that looks absent is confirmed with a live read.
func (c *Controller) classify(ctx context.Context, dep *pb.Object, ref *pb.OwnerReference) (ownerState, error) {
	ki, ok := pb.LookupKind(ref.GetKind())
	if !ok {
		return solid, nil // not a kind skiff has: nothing can say it is gone
	}
	ns := ""
	if ki.Namespaced {
		ns = dep.Meta().GetNamespace()
		if ns == "" {
			return solid, nil // a cluster-scoped object cannot have a namespaced owner; leave it be
		}
	}
	if o, ok := c.informers[ki.Kind].Get(controllers.Key(ns, ref.GetName())); ok && o.Meta().GetUid() == ref.GetUid() {
		if o.Meta().GetDeletionTimestamp() != nil && slices.Contains(o.Meta().GetFinalizers(), FinalizerForeground) {
			return waiting, nil
		}
		return solid, nil
	}
	resp, err := c.env.Cluster.List(ctx, &pb.ListRequest{Kind: ki.Kind, Namespace: ns, FieldSelector: "metadata.name=" + ref.GetName()})
	if err != nil {
		return solid, fmt.Errorf("look up owner %s %s: %w", ki.Kind, controllers.Key(ns, ref.GetName()), err)
	}
	for _, o := range resp.GetItems() {
		if o.Meta().GetUid() == ref.GetUid() {
			// Not kept (no owners or finalizers of its own), or the cache
			// is behind.
			if o.Meta().GetDeletionTimestamp() != nil && slices.Contains(o.Meta().GetFinalizers(), FinalizerForeground) {
				return waiting, nil
			}
			return solid, nil
		}
	}
	return absent, nil
}

// collect deletes obj if none of its owners is left, or removes its
// references to the owners that are gone if some are.
func (c *Controller) collect(ctx context.Context, obj *pb.Object) error {
	var solids, gone []string // owner UIDs
	var anyWaiting bool
	for _, ref := range obj.Meta().GetOwnerReferences() {
		st, err := c.classify(ctx, obj, ref)
		if err != nil {
			return err
		}
		switch st {
		case solid:
			solids = append(solids, ref.GetUid())
		case waiting:
			anyWaiting = true
			gone = append(gone, ref.GetUid())
		case absent:
			gone = append(gone, ref.GetUid())
		}
	}
	switch {
	case len(gone) == 0:
		return nil
	case len(solids) > 0:
		return c.removeRefs(ctx, obj, gone)
	}
	policy := "Background"
	switch f := obj.Meta().GetFinalizers(); {
	case slices.Contains(f, FinalizerOrphan):
		policy = "Orphan"
	case slices.Contains(f, FinalizerForeground):
		policy = "Foreground"
	case anyWaiting && len(c.dependents(obj.Meta().GetUid())) > 0:
		// Its owner waits for it: let it wait for its own dependents in
		// turn, so the whole chain goes in the foreground.
		policy = "Foreground"
	}
	return c.delete(ctx, obj, policy)
}

func (c *Controller) delete(ctx context.Context, obj *pb.Object, policy string) error {
	m := obj.Meta()
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{
		Kind: obj.KindName(), Namespace: m.GetNamespace(), Name: m.GetName(),
		Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion(), PropagationPolicy: policy,
	})
	if err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", obj.KindName(), m.Key(), err)
	}
	if err == nil {
		c.env.Logger.Debug("deleted dependent of gone owners", "kind", obj.KindName(), "object", m.Key(), "propagation", policy)
	}
	return nil
}

// removeRefs drops the owner references with the given UIDs from obj.
func (c *Controller) removeRefs(ctx context.Context, obj *pb.Object, uids []string) error {
	next, err := c.live(ctx, obj)
	if next == nil {
		return err
	}
	m := next.Meta()
	m.OwnerReferences = slices.DeleteFunc(m.OwnerReferences, func(r *pb.OwnerReference) bool {
		return slices.Contains(uids, r.GetUid())
	})
	if _, err := c.env.Cluster.Update(ctx, next); err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("remove owner references from %s %s: %w", obj.KindName(), m.Key(), err)
	}
	return nil
}

// orphanDependents removes owner's references from its dependents, then
// the orphan finalizer from owner.
func (c *Controller) orphanDependents(ctx context.Context, owner *pb.Object) error {
	uid := owner.Meta().GetUid()
	deps := c.dependents(uid)
	if len(deps) == 0 {
		return c.removeFinalizer(ctx, owner, FinalizerOrphan)
	}
	// Their updates enqueue the owner again; it lets go once the cache
	// shows none left.
	var errs []error
	for _, d := range deps {
		errs = append(errs, c.removeRefs(ctx, d, []string{uid}))
	}
	return errors.Join(errs...)
}

// deleteDependentsFirst deletes owner's dependents and, once none that
// blocks owner's deletion is left, removes the foreground finalizer.
func (c *Controller) deleteDependentsFirst(ctx context.Context, owner *pb.Object) error {
	uid := owner.Meta().GetUid()
	blocking := 0
	var errs []error
	for _, d := range c.dependents(uid) {
		if ref := refTo(d, uid); ref.GetBlockOwnerDeletion() {
			blocking++
		}
		if d.Meta().GetDeletionTimestamp() != nil {
			continue // going already: wait for it
		}
		errs = append(errs, c.collect(ctx, d))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if blocking > 0 {
		return nil // the dependents' deletions enqueue the owner again
	}
	return c.removeFinalizer(ctx, owner, FinalizerForeground)
}

func refTo(obj *pb.Object, uid string) *pb.OwnerReference {
	for _, r := range obj.Meta().GetOwnerReferences() {
		if r.GetUid() == uid {
			return r
		}
	}
	return nil
}

func (c *Controller) removeFinalizer(ctx context.Context, obj *pb.Object, finalizer string) error {
	next, err := c.live(ctx, obj)
	if next == nil {
		return err
	}
	m := next.Meta()
	m.Finalizers = slices.DeleteFunc(m.Finalizers, func(f string) bool { return f == finalizer })
	if _, err := c.env.Cluster.Update(ctx, next); err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("remove finalizer %s from %s %s: %w", finalizer, obj.KindName(), m.Key(), err)
	}
	return nil
}

// live returns a copy of the whole object the cached obj (metadata only)
// stands for, read from the store; nil if it is gone or was replaced by
// another of the same name. The copy keeps the store's resourceVersion, so
// an update from it fails with a conflict if the object changed meanwhile,
// and the key is retried.
func (c *Controller) live(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	m := obj.Meta()
	resp, err := c.env.Cluster.List(ctx, &pb.ListRequest{Kind: obj.KindName(), Namespace: m.GetNamespace(), FieldSelector: "metadata.name=" + m.GetName()})
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", obj.KindName(), m.Key(), err)
	}
	for _, o := range resp.GetItems() {
		if o.Meta().GetUid() == m.GetUid() {
			return o.Clone(), nil
		}
	}
	return nil, nil
}

var _ controllers.Reconciler = (*Controller)(nil)
