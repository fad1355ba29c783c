// Package daemonset runs one pod of each DaemonSet on every node that fits
// it (nodeName, nodeSelector, required node affinity, taints and
// tolerations, with the tolerations Kubernetes gives every daemon pod),
// following nodes as they join, change and leave. Like Kubernetes'
// DaemonSet controller it places its pods itself: a pod is created with
// spec.nodeName already set, so the scheduler leaves it alone. Resources
// are not checked; a daemon pod runs whatever else is on its node.
//
// Pods carry the controller-revision-hash label, a hash of the template
// they were made from. A RollingUpdate replaces old pods within maxSurge
// and maxUnavailable (counted in nodes that lack an available pod);
// OnDelete replaces a pod only when someone deletes it. Status follows
// Kubernetes' fields: desired, current, misscheduled, ready, updated,
// available and unavailable counts.
//
// Decisions are made by MakePlan (plan.go), which does no I/O.
package daemonset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "daemonset"

// RevisionHashLabel tells apart pods of each revision of the template
// (Kubernetes' DefaultDaemonSetUniqueLabelKey).
const RevisionHashLabel = "controller-revision-hash"

// Config tunes the controller.
type Config struct {
	// ExpectationsTimeout is how long a reconcile waits for its own pod
	// creations and deletions to show in the cache before acting again.
	ExpectationsTimeout time.Duration
	// BurstPods bounds the pods created or deleted in one reconcile.
	BurstPods int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{ExpectationsTimeout: 5 * time.Minute, BurstPods: 500} }

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.ExpectationsTimeout <= 0:
		return fmt.Errorf("daemonset config: ExpectationsTimeout must be positive, got %s", c.ExpectationsTimeout)
	case c.BurstPods <= 0:
		return fmt.Errorf("daemonset config: BurstPods must be positive, got %d", c.BurstPods)
	}
	return nil
}

// NewRegistration returns the controller's Registration with cfg.
func NewRegistration(cfg Config) controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		c, err := New(env, cfg)
		if err != nil {
			return nil, err
		}
		return c.Loop, nil
	}}
}

// Controller reconciles DaemonSets.
type Controller struct {
	*controllers.Loop
	env          controllers.Env
	cfg          Config
	daemonSets   *controllers.Informer
	nodes        *controllers.Informer
	pods         *controllers.Informer
	expectations *controllers.Expectations
	// suffix returns a random pod name suffix; tests make it predictable.
	suffix func() string
}

// New builds the controller over env's informers.
func New(env controllers.Env, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{
		env: env, cfg: cfg,
		daemonSets:   env.Informers.For("DaemonSet"),
		nodes:        env.Informers.For("Node"),
		pods:         env.Informers.For("Pod"),
		expectations: controllers.NewExpectations(env.Clock, cfg.ExpectationsTimeout),
		suffix:       randomSuffix,
	}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.daemonSets, c.nodes, c.pods}})
	c.daemonSets.AddHandler(controllers.EnqueueObject(c.Queue()))
	c.nodes.AddHandler(controllers.HandlerFuncs{
		AddFunc: func(*pb.Object) { c.enqueueAll() },
		UpdateFunc: func(old, o *pb.Object) {
			if old == o || nodeChanged(old.GetNode(), o.GetNode()) {
				c.enqueueAll()
			}
		},
		DeleteFunc: func(*pb.Object) { c.enqueueAll() },
	})
	c.pods.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { c.podEvent(nil, o, false) },
		UpdateFunc: func(old, o *pb.Object) { c.podEvent(old, o, false) },
		DeleteFunc: func(o *pb.Object) { c.podEvent(nil, o, true) },
	})
	return c, nil
}

func (c *Controller) enqueueAll() {
	for _, o := range c.daemonSets.List() {
		c.Queue().Add(controllers.KeyOf(o))
	}
}

// nodeChanged reports whether a node update can change where daemon pods
// belong: heartbeats alone do not.
func nodeChanged(a, b *pb.Node) bool {
	ready := func(n *pb.Node) bool {
		for _, c := range n.GetStatus().GetConditions() {
			if c.GetType() == "Ready" {
				return c.GetStatus() == "True"
			}
		}
		return false
	}
	sameTaints := slices.EqualFunc(a.GetSpec().GetTaints(), b.GetSpec().GetTaints(), func(x, y *pb.Taint) bool {
		return x.GetKey() == y.GetKey() && x.GetValue() == y.GetValue() && x.GetEffect() == y.GetEffect()
	})
	return ready(a) != ready(b) || a.GetSpec().GetUnschedulable() != b.GetSpec().GetUnschedulable() || !sameTaints ||
		!labels.Equals(a.GetMetadata().GetLabels(), b.GetMetadata().GetLabels())
}

func createID(podKey string) string { return "create " + podKey }
func deleteID(podKey string) string { return "delete " + podKey }

func ownerRef(o *pb.Object) *pb.OwnerReference {
	if ref := controllers.ControllerOf(o.Meta()); ref != nil && ref.GetKind() == "DaemonSet" {
		return ref
	}
	return nil
}

func (c *Controller) podEvent(old, o *pb.Object, deleted bool) {
	key := controllers.KeyOf(o)
	if ref := ownerRef(o); ref != nil {
		dsKey := controllers.Key(o.Meta().GetNamespace(), ref.GetName())
		switch {
		case deleted || o.Meta().GetDeletionTimestamp() != nil:
			c.expectations.Observe(dsKey, deleteID(key))
		case old == nil:
			c.expectations.Observe(dsKey, createID(key))
		}
		c.Queue().Add(dsKey)
		return
	}
	if deleted || !controllers.IsPodActive(o.GetPod()) {
		return
	}
	// An orphan: any DaemonSet that could adopt it.
	set := labels.Set(o.Meta().GetLabels())
	for _, d := range c.daemonSets.ByIndex(controllers.IndexNamespace, o.Meta().GetNamespace()) {
		if sel, err := controllers.Selector(d.GetDaemonSet().GetSpec().GetSelector()); err == nil && !sel.Empty() && sel.Matches(set) {
			c.Queue().Add(controllers.KeyOf(d))
		}
	}
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	obj, ok := c.daemonSets.Get(key)
	if !ok {
		c.expectations.Forget(key)
		return controllers.Result{}, nil
	}
	ds := obj.GetDaemonSet()
	if ds.GetMetadata().GetDeletionTimestamp() != nil {
		return controllers.Result{}, nil // the garbage collector takes its pods
	}
	sel, err := controllers.Selector(ds.GetSpec().GetSelector())
	if err == nil && sel.Empty() {
		err = errors.New("empty selector selects every pod")
	}
	if err != nil {
		c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "InvalidSelector", "invalid selector: %v", err)
		return controllers.Result{}, nil
	}
	satisfied, _ := c.expectations.Satisfied(key)
	pods, err := c.claimPods(ctx, obj, sel)
	if err != nil {
		return controllers.Result{}, err
	}
	nodeObjs := c.nodes.List()
	nodes := make([]*pb.Node, 0, len(nodeObjs))
	for _, o := range nodeObjs {
		nodes = append(nodes, o.GetNode())
	}
	hash := TemplateHash(ds.GetSpec().GetTemplate())
	now := c.env.Clock.Now()
	plan, err := MakePlan(ds, nodes, pods, hash, now)
	if err != nil {
		c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "InvalidSpec", "%v", err)
		return controllers.Result{}, nil
	}
	var errs []error
	if satisfied {
		errs = append(errs, c.deletePods(ctx, obj, plan.Delete), c.createPods(ctx, obj, plan.Create, hash))
	}
	errs = append(errs, c.updateStatus(ctx, obj, plan.Status))
	return controllers.Result{RequeueAfter: plan.RequeueAfter}, errors.Join(errs...)
}

// claimPods returns the DaemonSet's pods after adopting matching active
// orphans and releasing owned pods that stopped matching.
func (c *Controller) claimPods(ctx context.Context, obj *pb.Object, sel labels.Selector) ([]*pb.Pod, error) {
	uid := obj.Meta().GetUid()
	var out []*pb.Pod
	var errs []error
	for _, o := range c.pods.ByIndex(controllers.IndexOwner, uid) {
		if ref := controllers.ControllerOf(o.Meta()); ref == nil || ref.GetUid() != uid {
			continue
		}
		if sel.Matches(labels.Set(o.Meta().GetLabels())) {
			out = append(out, o.GetPod())
		} else if controllers.IsPodActive(o.GetPod()) {
			errs = append(errs, c.setOwner(ctx, o, nil))
		}
	}
	for _, o := range c.pods.Select(obj.Meta().GetNamespace(), sel) {
		if controllers.ControllerOf(o.Meta()) != nil || !controllers.IsPodActive(o.GetPod()) {
			continue
		}
		if err := c.setOwner(ctx, o, obj.Meta()); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o.GetPod())
	}
	return out, errors.Join(errs...)
}

func (c *Controller) setOwner(ctx context.Context, o *pb.Object, owner *pb.ObjectMeta) error {
	next := o.Clone()
	m := next.Meta()
	m.OwnerReferences = slices.DeleteFunc(m.OwnerReferences, func(r *pb.OwnerReference) bool { return r.GetController() })
	verb := "release"
	if owner != nil {
		m.OwnerReferences = append(m.OwnerReferences, controllers.NewControllerRef(owner, "apps/v1", "DaemonSet"))
		verb = "adopt"
	}
	if _, err := c.env.Cluster.Update(ctx, next); err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("%s pod %s: %w", verb, m.Key(), err)
	}
	return nil
}

func (c *Controller) deletePods(ctx context.Context, obj *pb.Object, dels []Deletion) error {
	if len(dels) > c.cfg.BurstPods {
		dels = dels[:c.cfg.BurstPods]
	}
	key := controllers.KeyOf(obj)
	ids := make([]string, len(dels))
	for i, d := range dels {
		ids[i] = deleteID(d.Pod.GetMetadata().Key())
	}
	c.expectations.Expect(key, ids...)
	var errs []error
	for i, d := range dels {
		m := d.Pod.GetMetadata()
		err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()})
		if err != nil {
			c.expectations.Observe(key, ids[i])
			if !controllers.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete pod %s: %w", m.Key(), err))
			}
			continue
		}
		c.env.Logger.Debug("deleted daemon pod", "daemonset", key, "pod", m.Key(), "node", d.Pod.GetSpec().GetNodeName(), "reason", d.Reason)
		c.env.Recorder.Eventf(obj, controllers.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", m.GetName())
	}
	if len(errs) > 0 {
		c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "FailedDelete", "Error deleting: %v", errs[0])
	}
	return errors.Join(errs...)
}

// createPods creates one pod on each node, in doubling batches that stop at
// the first failure.
func (c *Controller) createPods(ctx context.Context, obj *pb.Object, nodes []string, hash string) error {
	if len(nodes) > c.cfg.BurstPods {
		nodes = nodes[:c.cfg.BurstPods]
	}
	key := controllers.KeyOf(obj)
	for batch := 1; len(nodes) > 0; batch *= 2 {
		size := min(batch, len(nodes))
		pods := make([]*pb.Object, size)
		ids := make([]string, size)
		for i := range pods {
			pods[i] = c.newPod(obj, nodes[i], hash)
			ids[i] = createID(controllers.KeyOf(pods[i]))
		}
		nodes = nodes[size:]
		c.expectations.Expect(key, ids...)
		var errs []error
		for i, p := range pods {
			if _, err := c.env.Cluster.Create(ctx, p); err != nil {
				c.expectations.Observe(key, ids[i])
				errs = append(errs, fmt.Errorf("create pod %s on node %s: %w", controllers.KeyOf(p), p.GetPod().GetSpec().GetNodeName(), err))
				continue
			}
			c.env.Recorder.Eventf(obj, controllers.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", p.Meta().GetName())
		}
		if err := errors.Join(errs...); err != nil {
			if !controllers.IsAlreadyExists(err) {
				c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "FailedCreate", "Error creating: %v", errs[0])
			}
			return err
		}
	}
	return nil
}

// newPod builds the daemon pod for node: the template, bound to the node,
// with the daemon tolerations and the revision hash label.
func (c *Controller) newPod(obj *pb.Object, node, hash string) *pb.Object {
	ds := obj.GetDaemonSet()
	tmpl := ds.GetSpec().GetTemplate()
	lbls := map[string]string{}
	for k, v := range tmpl.GetMetadata().GetLabels() {
		lbls[k] = v
	}
	lbls[RevisionHashLabel] = hash
	var ann map[string]string
	if a := tmpl.GetMetadata().GetAnnotations(); len(a) > 0 {
		ann = make(map[string]string, len(a))
		for k, v := range a {
			ann[k] = v
		}
	}
	spec := &pb.PodSpec{}
	if tmpl.GetSpec() != nil {
		spec = proto.Clone(tmpl.GetSpec()).(*pb.PodSpec)
	}
	spec.NodeName = node
	spec.Tolerations = DaemonTolerations(spec)
	return pb.Wrap(&pb.Pod{
		ApiVersion: "v1", Kind: "Pod",
		Metadata: &pb.ObjectMeta{
			Name:            ds.GetMetadata().GetName() + "-" + c.suffix(),
			GenerateName:    ds.GetMetadata().GetName() + "-",
			Namespace:       ds.GetMetadata().GetNamespace(),
			Labels:          lbls,
			Annotations:     ann,
			Finalizers:      slices.Clone(tmpl.GetMetadata().GetFinalizers()),
			OwnerReferences: []*pb.OwnerReference{controllers.NewControllerRef(ds.GetMetadata(), "apps/v1", "DaemonSet")},
		},
		Spec: spec,
	})
}

func (c *Controller) updateStatus(ctx context.Context, obj *pb.Object, st *pb.DaemonSetStatus) error {
	if proto.Equal(obj.GetDaemonSet().GetStatus(), st) {
		return nil
	}
	next := obj.Clone()
	next.GetDaemonSet().Status = st
	if _, err := c.env.Cluster.UpdateStatus(ctx, next); err != nil {
		return fmt.Errorf("update status of daemonset %s: %w", controllers.KeyOf(obj), err)
	}
	return nil
}

const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

func randomSuffix() string {
	b := make([]byte, 5)
	for i := range b {
		b[i] = suffixAlphabet[rand.IntN(len(suffixAlphabet))]
	}
	return string(b)
}

// sortDeletions orders deletions by pod key, for stable output in tests
// and logs.
func sortDeletions(d []Deletion) {
	sort.Slice(d, func(i, j int) bool { return d[i].Pod.GetMetadata().Key() < d[j].Pod.GetMetadata().Key() })
}

var _ controllers.Reconciler = (*Controller)(nil)
