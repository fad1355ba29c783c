// Package replicaset keeps the number of pods of each ReplicaSet at its
// spec.replicas: it creates pods from the template, deletes the surplus
// (unscheduled, not ready and newest first), adopts matching orphans,
// releases pods that stopped matching, and reports replicas, ready and
// available counts in status.
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "replicaset"

// Config tunes the controller.
type Config struct {
	// BurstReplicas bounds the pods created or deleted in one reconcile.
	BurstReplicas int
	// ExpectationsTimeout is how long a reconcile waits for its own
	// writes to show in the cache before acting again regardless.
	ExpectationsTimeout time.Duration
	// Workers is how many ReplicaSets are reconciled at once; 0 means the
	// manager's default. Each reconcile waits for its writes, so this
	// bounds how many ReplicaSets create pods at the same time.
	Workers int
}

// DefaultConfig returns Kubernetes' defaults (burst 500,
// --concurrent-replicaset-syncs 5).
func DefaultConfig() Config {
	return Config{BurstReplicas: 500, ExpectationsTimeout: 5 * time.Minute, Workers: 5}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.BurstReplicas <= 0:
		return fmt.Errorf("replicaset config: BurstReplicas must be positive, got %d", c.BurstReplicas)
	case c.ExpectationsTimeout <= 0:
		return fmt.Errorf("replicaset config: ExpectationsTimeout must be positive, got %s", c.ExpectationsTimeout)
	case c.Workers < 0:
		return fmt.Errorf("replicaset config: Workers must not be negative, got %d", c.Workers)
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

// Controller reconciles ReplicaSets.
type Controller struct {
	*controllers.Loop
	env          controllers.Env
	cfg          Config
	replicaSets  *controllers.Informer
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
		replicaSets:  env.Informers.For("ReplicaSet"),
		pods:         env.Informers.For("Pod"),
		expectations: controllers.NewExpectations(env.Clock, cfg.ExpectationsTimeout),
		suffix:       randomSuffix,
	}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{Workers: cfg.Workers, WaitFor: []*controllers.Informer{c.replicaSets, c.pods}})
	c.replicaSets.AddHandler(controllers.EnqueueObject(c.Queue()))
	c.pods.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { c.podEvent(nil, o, false) },
		UpdateFunc: func(old, o *pb.Object) { c.podEvent(old, o, false) },
		DeleteFunc: func(o *pb.Object) { c.podEvent(nil, o, true) },
	})
	return c, nil
}

// Expectation ids.
func createID(podKey string) string { return "create " + podKey }
func deleteID(podKey string) string { return "delete " + podKey }

// podEvent observes the controller's own writes landing and enqueues the
// ReplicaSets a pod change matters to: its owner (before and after) or, for
// an orphan, every ReplicaSet that could adopt it.
func (c *Controller) podEvent(old, o *pb.Object, deleted bool) {
	key := controllers.KeyOf(o)
	if ref := ownerRef(o); ref != nil {
		rsKey := controllers.Key(o.Meta().GetNamespace(), ref.GetName())
		switch {
		case deleted || o.Meta().GetDeletionTimestamp() != nil:
			c.expectations.Observe(rsKey, deleteID(key))
		case old == nil:
			c.expectations.Observe(rsKey, createID(key))
		}
		c.Queue().Add(rsKey)
	} else if !deleted {
		for _, k := range c.matchingReplicaSets(o) {
			c.Queue().Add(k)
		}
	}
	if old != nil {
		if ref := ownerRef(old); ref != nil && ref.GetUid() != ownerRef(o).GetUid() {
			c.Queue().Add(controllers.Key(old.Meta().GetNamespace(), ref.GetName()))
		}
	}
}

// ownerRef returns a pod's controller reference if it is a ReplicaSet.
func ownerRef(o *pb.Object) *pb.OwnerReference {
	if ref := controllers.ControllerOf(o.Meta()); ref != nil && ref.GetKind() == "ReplicaSet" {
		return ref
	}
	return nil
}

func (c *Controller) matchingReplicaSets(pod *pb.Object) []string {
	var out []string
	set := labels.Set(pod.Meta().GetLabels())
	for _, o := range c.replicaSets.ByIndex(controllers.IndexNamespace, pod.Meta().GetNamespace()) {
		sel, err := controllers.Selector(o.GetReplicaSet().GetSpec().GetSelector())
		if err == nil && !sel.Empty() && sel.Matches(set) {
			out = append(out, controllers.KeyOf(o))
		}
	}
	return out
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	obj, ok := c.replicaSets.Get(key)
	if !ok {
		c.expectations.Forget(key)
		return controllers.Result{}, nil
	}
	rs := obj.GetReplicaSet()
	sel, err := controllers.Selector(rs.GetSpec().GetSelector())
	if err != nil || sel.Empty() {
		// A bad selector will not fix itself: say so, do not retry.
		c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "InvalidSelector", "invalid selector: %v", err)
		return controllers.Result{}, nil
	}
	// Ask before reading the pods: a write observed between reading them
	// and asking would leave a stale list that looks current.
	satisfied, wait := c.expectations.Satisfied(key)
	pods, err := c.claimPods(ctx, obj, sel)
	if err != nil {
		return controllers.Result{}, err
	}

	var manageErr *failure
	if !satisfied {
		// Our last writes have not all shown up yet; acting now could
		// create or delete twice. Their events enqueue the key again.
		c.env.Logger.Debug("waiting for earlier writes to show", "replicaset", key, "for", wait)
	} else if rs.GetMetadata().GetDeletionTimestamp() == nil {
		manageErr = c.manageReplicas(ctx, obj, pods)
	}

	requeue, err := c.updateStatus(ctx, obj, pods, manageErr)
	if manageErr != nil {
		err = manageErr.err
	}
	return controllers.Result{RequeueAfter: requeue}, err
}

// failure is a failed create or delete, reported in the ReplicaFailure
// condition with its reason.
type failure struct {
	reason string // FailedCreate, FailedDelete
	err    error
}

func failed(reason string, err error) *failure {
	if err == nil {
		return nil
	}
	return &failure{reason, err}
}

// claimPods returns the active pods the ReplicaSet owns after adopting
// matching orphans and releasing owned pods that no longer match.
func (c *Controller) claimPods(ctx context.Context, obj *pb.Object, sel labels.Selector) ([]*pb.Pod, error) {
	rs := obj.GetReplicaSet()
	uid := rs.GetMetadata().GetUid()
	deleting := rs.GetMetadata().GetDeletionTimestamp() != nil
	var owned []*pb.Pod
	var errs []error
	// Owned pods come from the owner index, adoption candidates from the
	// label index: no scan of the namespace.
	for _, o := range c.pods.ByIndex(controllers.IndexOwner, uid) {
		p := o.GetPod()
		if ref := controllers.ControllerOf(p.GetMetadata()); ref == nil || ref.GetUid() != uid {
			continue
		}
		if sel.Matches(labels.Set(p.GetMetadata().GetLabels())) {
			owned = append(owned, p)
		} else if controllers.IsPodActive(p) {
			errs = append(errs, c.setOwner(ctx, o, nil))
		}
	}
	if !deleting {
		for _, o := range c.pods.Select(rs.GetMetadata().GetNamespace(), sel) {
			p := o.GetPod()
			if controllers.ControllerOf(p.GetMetadata()) != nil || !controllers.IsPodActive(p) {
				continue
			}
			if err := c.setOwner(ctx, o, rs.GetMetadata()); err != nil {
				errs = append(errs, err)
				continue
			}
			owned = append(owned, p)
		}
	}
	var active []*pb.Pod
	for _, p := range owned {
		if controllers.IsPodActive(p) {
			active = append(active, p)
		}
	}
	return active, errors.Join(errs...)
}

// setOwner adopts the pod (owner non-nil) or releases it, with the pod's
// resourceVersion as precondition.
func (c *Controller) setOwner(ctx context.Context, o *pb.Object, owner *pb.ObjectMeta) error {
	next := o.Clone()
	m := next.Meta()
	var refs []*pb.OwnerReference
	for _, r := range m.GetOwnerReferences() {
		if !r.GetController() {
			refs = append(refs, r)
		}
	}
	verb := "release"
	if owner != nil {
		refs = append(refs, controllers.NewControllerRef(owner, "apps/v1", "ReplicaSet"))
		verb = "adopt"
	}
	m.OwnerReferences = refs
	if _, err := c.env.Cluster.Update(ctx, next); err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("%s pod %s: %w", verb, m.Key(), err)
	}
	return nil
}

// manageReplicas creates or deletes pods to reach spec.replicas.
func (c *Controller) manageReplicas(ctx context.Context, obj *pb.Object, pods []*pb.Pod) *failure {
	rs := obj.GetReplicaSet()
	key := controllers.KeyOf(obj)
	diff := len(pods) - int(replicas(rs))
	switch {
	case diff < 0:
		n := min(-diff, c.cfg.BurstReplicas)
		return failed("FailedCreate", c.createPods(ctx, obj, n))
	case diff > 0:
		n := min(diff, c.cfg.BurstReplicas)
		victims := podsToDelete(pods, n)
		ids := make([]string, len(victims))
		for i, p := range victims {
			ids[i] = deleteID(p.GetMetadata().Key())
		}
		c.expectations.Expect(key, ids...)
		ops := make([]*pb.DeleteOp, len(victims))
		for i, p := range victims {
			m := p.GetMetadata()
			ops[i] = &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()}
		}
		// One write for all of them where the cluster can batch: each
		// delete still succeeds or fails alone.
		delErrs := controllers.DeleteMany(ctx, c.env.Cluster, ops)
		var errs []error
		for i, p := range victims {
			m := p.GetMetadata()
			if err := delErrs[i]; err != nil {
				c.expectations.Observe(key, ids[i])
				if !controllers.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("delete pod %s: %w", m.Key(), err))
				}
				continue
			}
			c.env.Recorder.Eventf(obj, controllers.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", m.GetName())
		}
		if len(errs) > 0 {
			c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "FailedDelete", "Error deleting: %v", errs[0])
		}
		return failed("FailedDelete", errors.Join(errs...))
	}
	return nil
}

// createPods creates n pods in batches that double in size (1, 2, 4, ...)
// and stops after a batch with a failure, as Kubernetes' slow start does,
// so that a quota or a terminating namespace costs one failed write, not
// n. Each batch is one write where the cluster can batch (one Raft entry
// for many pods); each pod in it still succeeds or fails alone.
func (c *Controller) createPods(ctx context.Context, obj *pb.Object, n int) error {
	key := controllers.KeyOf(obj)
	batch := 1
	for n > 0 {
		size := min(batch, n)
		pods := make([]*pb.Object, size)
		ids := make([]string, size)
		for i := range pods {
			pods[i] = c.newPod(obj)
			ids[i] = createID(controllers.KeyOf(pods[i]))
		}
		// Expect before writing: the informer may show a pod before
		// the write returns, and its Observe must find the expectation.
		c.expectations.Expect(key, ids...)
		_, createErrs := controllers.CreateMany(ctx, c.env.Cluster, pods)
		var errs []error
		for i, p := range pods {
			if err := createErrs[i]; err != nil {
				// Never observed: do not wait for it.
				c.expectations.Observe(key, ids[i])
				errs = append(errs, fmt.Errorf("create pod %s: %w", controllers.KeyOf(p), err))
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
		n -= size
		batch = min(batch*2, c.cfg.BurstReplicas)
	}
	return nil
}

// newPod builds a pod from the template, named <rs>-<random suffix>.
func (c *Controller) newPod(obj *pb.Object) *pb.Object {
	rs := obj.GetReplicaSet()
	tmpl := rs.GetSpec().GetTemplate()
	m := &pb.ObjectMeta{
		Name:            rs.GetMetadata().GetName() + "-" + c.suffix(),
		GenerateName:    rs.GetMetadata().GetName() + "-",
		Namespace:       rs.GetMetadata().GetNamespace(),
		Labels:          copyMap(tmpl.GetMetadata().GetLabels()),
		Annotations:     copyMap(tmpl.GetMetadata().GetAnnotations()),
		Finalizers:      append([]string(nil), tmpl.GetMetadata().GetFinalizers()...),
		OwnerReferences: []*pb.OwnerReference{controllers.NewControllerRef(rs.GetMetadata(), "apps/v1", "ReplicaSet")},
	}
	spec := &pb.PodSpec{}
	if tmpl.GetSpec() != nil {
		spec = proto.Clone(tmpl.GetSpec()).(*pb.PodSpec)
	}
	return pb.Wrap(&pb.Pod{ApiVersion: "v1", Kind: "Pod", Metadata: m, Spec: spec})
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func replicas(rs *pb.ReplicaSet) int32 {
	if r := rs.GetSpec().Replicas; r != nil {
		return *r
	}
	return 1
}

// podsToDelete picks n pods, the least useful first: unscheduled before
// scheduled, pending before unknown before running, not ready before
// ready, ready for less time before ready for longer, more restarts
// before fewer, newer before older (Kubernetes' ActivePods ordering).
func podsToDelete(pods []*pb.Pod, n int) []*pb.Pod {
	sorted := append([]*pb.Pod(nil), pods...)
	sort.SliceStable(sorted, func(i, j int) bool { return lessUseful(sorted[i], sorted[j]) })
	return sorted[:n]
}

func lessUseful(a, b *pb.Pod) bool {
	if sa, sb := a.GetSpec().GetNodeName() != "", b.GetSpec().GetNodeName() != ""; sa != sb {
		return !sa
	}
	phase := map[string]int{"Pending": 0, "Unknown": 1, "Running": 2}
	if pa, pb := phase[a.GetStatus().GetPhase()], phase[b.GetStatus().GetPhase()]; pa != pb {
		return pa < pb
	}
	if ra, rb := controllers.IsPodReady(a), controllers.IsPodReady(b); ra != rb {
		return !ra
	}
	if controllers.IsPodReady(a) {
		ta := controllers.PodCondition(a, "Ready").GetLastTransitionTime().AsTime()
		tb := controllers.PodCondition(b, "Ready").GetLastTransitionTime().AsTime()
		if !ta.Equal(tb) {
			return ta.After(tb)
		}
	}
	if ra, rb := restarts(a), restarts(b); ra != rb {
		return ra > rb
	}
	ca, cb := a.GetMetadata().GetCreationTimestamp().AsTime(), b.GetMetadata().GetCreationTimestamp().AsTime()
	if !ca.Equal(cb) {
		return ca.After(cb)
	}
	return a.GetMetadata().GetName() > b.GetMetadata().GetName()
}

func restarts(p *pb.Pod) int32 {
	var n int32
	for _, s := range p.GetStatus().GetContainerStatuses() {
		n = max(n, s.GetRestartCount())
	}
	return n
}

// updateStatus writes the counts if they changed, and says when to look
// again for a ready pod to become available.
func (c *Controller) updateStatus(ctx context.Context, obj *pb.Object, pods []*pb.Pod, manageErr *failure) (time.Duration, error) {
	rs := obj.GetReplicaSet()
	now := c.env.Clock.Now()
	tmplLabels := labels.SelectorFromSet(rs.GetSpec().GetTemplate().GetMetadata().GetLabels())
	next := &pb.ReplicaSetStatus{
		Replicas:           int32(len(pods)),
		ObservedGeneration: rs.GetMetadata().GetGeneration(),
	}
	var requeue time.Duration
	for _, p := range pods {
		if tmplLabels.Matches(labels.Set(p.GetMetadata().GetLabels())) {
			next.FullyLabeledReplicas++
		}
		if controllers.IsPodReady(p) {
			next.ReadyReplicas++
			available, wait := controllers.PodAvailableIn(p, rs.GetSpec().GetMinReadySeconds(), now)
			if available {
				next.AvailableReplicas++
			} else if requeue == 0 || wait < requeue {
				requeue = wait
			}
		}
	}
	next.Conditions = failureConditions(rs.GetStatus().GetConditions(), manageErr, now)
	if proto.Equal(rs.GetStatus(), next) {
		return requeue, nil
	}
	upd := obj.Clone()
	upd.GetReplicaSet().Status = next
	if _, err := c.env.Cluster.UpdateStatus(ctx, upd); err != nil {
		return 0, fmt.Errorf("update status of %s: %w", controllers.KeyOf(obj), err)
	}
	return requeue, nil
}

// failureConditions sets or clears the ReplicaFailure condition. Conflicts
// and other races are not failures worth reporting.
func failureConditions(cur []*pb.WorkloadCondition, f *failure, now time.Time) []*pb.WorkloadCondition {
	var out []*pb.WorkloadCondition
	var prev *pb.WorkloadCondition
	for _, c := range cur {
		if c.GetType() == "ReplicaFailure" {
			prev = c
			continue
		}
		out = append(out, c)
	}
	if f == nil || controllers.IsConflict(f.err) || controllers.IsAlreadyExists(f.err) || controllers.IsNotFound(f.err) {
		return out
	}
	cond := &pb.WorkloadCondition{Type: "ReplicaFailure", Status: "True", Reason: f.reason, Message: f.err.Error(), LastTransitionTime: timestamppb.New(now)}
	if prev != nil && prev.GetStatus() == "True" {
		cond.LastTransitionTime = prev.GetLastTransitionTime()
	}
	return append(out, cond)
}

const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// randomSuffix is Kubernetes' generateName suffix: 5 characters without
// vowels or look-alike digits.
func randomSuffix() string {
	b := make([]byte, 5)
	for i := range b {
		b[i] = suffixAlphabet[rand.IntN(len(suffixAlphabet))]
	}
	return string(b)
}
