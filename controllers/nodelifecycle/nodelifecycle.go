// Package nodelifecycle acts on nodes that stop being Ready, as
// Kubernetes' node lifecycle controller, taint manager and pod GC do. The
// masters mark a node Ready=False or Unknown when its heartbeats stop (see
// server/nodes.go); this controller turns that into taints and evictions:
//
//   - Taints: Ready=False gets node.kubernetes.io/not-ready, Ready=Unknown
//     node.kubernetes.io/unreachable, each as NoSchedule and NoExecute;
//     spec.unschedulable (cordon) gets node.kubernetes.io/unschedulable
//     NoSchedule. They are removed when the condition clears.
//   - Pods of a node that is not Ready get their Ready condition set to
//     False, so Services and Deployments stop counting on them.
//   - Eviction: a pod on a node with NoExecute taints is deleted once it
//     has stayed as long as its tolerations allow. A pod without a
//     toleration for not-ready or unreachable gets Kubernetes' default one
//     (tolerationSeconds 300, Config.DefaultTolerationSeconds), as the
//     DefaultTolerationSeconds admission plugin would have given it; a pod
//     that does not tolerate a NoExecute taint at all goes at once.
//   - Force deletion: a deleted pod on a node that is not Ready has nobody
//     to confirm it stopped; once its grace period has passed it is deleted
//     with grace 0, so its ReplicaSet's replacement is the only copy the
//     store keeps. Pods bound to a node that no longer exists are deleted
//     the same way (after a live check that the node is really gone).
//
// Safety: the controller evicts and force-deletes nothing during
// StartupGracePeriod after it starts (after every leadership change) and
// after a full disruption ends, and nothing at all while no node is Ready
// (then the masters' view of the workers, not the workers, is most likely
// broken: Kubernetes stops evictions in that case too). A new leader thus
// gives every node a fresh grace period instead of evicting everything at
// once.
package nodelifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/scheduler"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "nodelifecycle"

// Taint keys the controller manages (Kubernetes' well-known ones).
const (
	TaintNotReady      = "node.kubernetes.io/not-ready"
	TaintUnreachable   = "node.kubernetes.io/unreachable"
	TaintUnschedulable = "node.kubernetes.io/unschedulable"
)

// Taint effects.
const (
	NoSchedule = "NoSchedule"
	NoExecute  = "NoExecute"
)

// indexNode maps a node name to every pod bound to it (terminated ones too:
// a pod bound to a node that is gone must go, finished or not).
const indexNode = "nodelifecycle/spec.nodeName"

// Config tunes the controller.
type Config struct {
	// DefaultTolerationSeconds is how long a pod that has no toleration of
	// its own for not-ready or unreachable stays on such a node before it
	// is evicted (Kubernetes: 300).
	DefaultTolerationSeconds int64
	// StartupGracePeriod is how long, after the controller starts and
	// after a full disruption ends, nothing is evicted or force-deleted, so
	// workers that are alive can report in first (Kubernetes'
	// node-monitor-grace-period: 50s).
	StartupGracePeriod time.Duration
}

// DefaultConfig returns Kubernetes' defaults.
func DefaultConfig() Config {
	return Config{DefaultTolerationSeconds: 300, StartupGracePeriod: 50 * time.Second}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.DefaultTolerationSeconds < 0:
		return fmt.Errorf("nodelifecycle config: DefaultTolerationSeconds must not be negative, got %d", c.DefaultTolerationSeconds)
	case c.StartupGracePeriod < 0:
		return fmt.Errorf("nodelifecycle config: StartupGracePeriod must not be negative, got %s", c.StartupGracePeriod)
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

// Controller reconciles nodes (keys are node names).
type Controller struct {
	*controllers.Loop
	env   controllers.Env
	cfg   Config
	nodes *controllers.Informer
	pods  *controllers.Informer

	mu sync.Mutex
	// graceFrom is when the current grace period began: the start of this
	// run, or the end of the last full disruption.
	graceFrom time.Time
	disrupted bool
	// missingSince remembers when pods were first seen bound to a node
	// that does not exist.
	missingSince map[string]time.Time
}

// New builds the controller. Its grace period starts now.
func New(env controllers.Env, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{
		env: env, cfg: cfg,
		nodes:        env.Informers.For("Node"),
		pods:         env.Informers.For("Pod"),
		graceFrom:    env.Clock.Now(),
		missingSince: map[string]time.Time{},
	}
	c.pods.AddIndexer(indexNode, func(o *pb.Object) []string {
		if n := o.GetPod().GetSpec().GetNodeName(); n != "" {
			return []string{n}
		}
		return nil
	})
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.nodes, c.pods}})
	c.nodes.AddHandler(controllers.EnqueueObject(c.Queue()))
	c.pods.AddHandler(controllers.EnqueueKeys(c.Queue(), c.nodeOfPod))
	return c, nil
}

// nodeOfPod maps a pod to its node when the node may need this controller:
// missing, not Ready, or tainted NoExecute. Healthy nodes' pods change all
// the time and concern nobody here.
func (c *Controller) nodeOfPod(o *pb.Object) []string {
	name := o.GetPod().GetSpec().GetNodeName()
	if name == "" {
		return nil
	}
	n, ok := c.nodes.Get(name)
	if !ok || readyStatus(n.GetNode()) != "True" || len(noExecuteTaints(n.GetNode())) > 0 {
		return []string{name}
	}
	return nil
}

// readyStatus is the node's Ready condition status, "" when it has none.
func readyStatus(n *pb.Node) string {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus()
		}
	}
	return ""
}

// notReady reports whether the node is known not to be Ready (a node that
// never reported has no opinion yet).
func notReady(n *pb.Node) bool {
	s := readyStatus(n)
	return s == "False" || s == "Unknown"
}

func noExecuteTaints(n *pb.Node) []*pb.Taint {
	var out []*pb.Taint
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetEffect() == NoExecute {
			out = append(out, t)
		}
	}
	return out
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, name string) (controllers.Result, error) {
	now := c.env.Clock.Now()
	pods := c.pods.ByIndex(indexNode, name)
	slices.SortFunc(pods, func(a, b *pb.Object) int { return strings.Compare(controllers.KeyOf(a), controllers.KeyOf(b)) })
	obj, ok := c.nodes.Get(name)
	if !ok {
		wait, err := c.orphaned(ctx, name, pods, now)
		return requeue(wait), err
	}
	c.mu.Lock()
	delete(c.missingSince, name)
	c.mu.Unlock()

	obj, err := c.syncTaints(ctx, obj, now)
	if err != nil {
		return controllers.Result{}, err
	}
	node := obj.GetNode()
	if !notReady(node) && len(noExecuteTaints(node)) == 0 {
		return controllers.Result{}, nil
	}
	var errs []error
	if notReady(node) {
		errs = append(errs, c.markPodsNotReady(ctx, node, pods, now))
	}
	wait, err := c.evict(ctx, node, pods, now)
	errs = append(errs, err)
	return requeue(wait), errors.Join(errs...)
}

func requeue(wait time.Duration) controllers.Result {
	if wait <= 0 {
		return controllers.Result{}
	}
	return controllers.Result{RequeueAfter: wait}
}

// wantTaints returns the managed taints the node should carry.
func wantTaints(n *pb.Node) []*pb.Taint {
	var out []*pb.Taint
	switch readyStatus(n) {
	case "False":
		out = append(out, &pb.Taint{Key: TaintNotReady, Effect: NoSchedule}, &pb.Taint{Key: TaintNotReady, Effect: NoExecute})
	case "Unknown":
		out = append(out, &pb.Taint{Key: TaintUnreachable, Effect: NoSchedule}, &pb.Taint{Key: TaintUnreachable, Effect: NoExecute})
	}
	if n.GetSpec().GetUnschedulable() {
		out = append(out, &pb.Taint{Key: TaintUnschedulable, Effect: NoSchedule})
	}
	return out
}

func managed(t *pb.Taint) bool {
	switch t.GetKey() {
	case TaintNotReady, TaintUnreachable:
		return t.GetEffect() == NoSchedule || t.GetEffect() == NoExecute
	case TaintUnschedulable:
		return t.GetEffect() == NoSchedule
	}
	return false
}

func sameTaint(a, b *pb.Taint) bool {
	return a.GetKey() == b.GetKey() && a.GetEffect() == b.GetEffect()
}

// PlanTaints returns the node's taints as they should be: managed ones that
// no longer apply removed, missing ones added (NoExecute with timeAdded
// now), everything else kept in place. changed is false when nothing
// differs.
func PlanTaints(n *pb.Node, now time.Time) (taints []*pb.Taint, changed bool) {
	want := wantTaints(n)
	for _, t := range n.GetSpec().GetTaints() {
		if managed(t) && !slices.ContainsFunc(want, func(w *pb.Taint) bool { return sameTaint(w, t) }) {
			changed = true
			continue
		}
		taints = append(taints, t)
	}
	for _, w := range want {
		if slices.ContainsFunc(taints, func(t *pb.Taint) bool { return sameTaint(w, t) }) {
			continue
		}
		if w.GetEffect() == NoExecute {
			w.TimeAdded = timestamppb.New(now)
		}
		taints = append(taints, w)
		changed = true
	}
	return taints, changed
}

// syncTaints writes the planned taints and returns the node as stored.
func (c *Controller) syncTaints(ctx context.Context, obj *pb.Object, now time.Time) (*pb.Object, error) {
	taints, changed := PlanTaints(obj.GetNode(), now)
	if !changed {
		return obj, nil
	}
	next := obj.Clone()
	n := next.GetNode()
	if n.Spec == nil {
		n.Spec = &pb.NodeSpec{}
	}
	n.Spec.Taints = taints
	stored, err := c.env.Cluster.Update(ctx, next)
	if err != nil {
		return nil, fmt.Errorf("update taints of node %s: %w", obj.Meta().GetName(), err)
	}
	c.env.Logger.Info("node taints changed", "node", obj.Meta().GetName(), "ready", readyStatus(n), "taints", taintStrings(taints))
	return stored, nil
}

func taintStrings(ts []*pb.Taint) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.GetKey()+":"+t.GetEffect())
	}
	return out
}

// markPodsNotReady sets Ready=False on the node's pods that still claim
// to be ready: nobody else can, the worker being unreachable.
func (c *Controller) markPodsNotReady(ctx context.Context, node *pb.Node, pods []*pb.Object, now time.Time) error {
	var errs []error
	for _, o := range pods {
		p := o.GetPod()
		if controllers.IsPodTerminal(p) || !controllers.IsPodReady(p) {
			continue
		}
		next := o.Clone()
		for _, cond := range next.GetPod().GetStatus().GetConditions() {
			if cond.GetType() == "Ready" {
				cond.Status = "False"
				cond.Reason = "NodeNotReady"
				cond.Message = fmt.Sprintf("node %s is not ready", node.GetMetadata().GetName())
				cond.LastTransitionTime = timestamppb.New(now)
			}
		}
		if _, err := c.env.Cluster.UpdateStatus(ctx, next); err != nil {
			if !controllers.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("mark pod %s not ready: %w", o.Meta().Key(), err))
			}
			continue
		}
		c.env.Recorder.Eventf(o, controllers.EventTypeWarning, "NodeNotReady", "Node %s is not ready", node.GetMetadata().GetName())
	}
	return errors.Join(errs...)
}

// window returns whether evictions are paused (no node is Ready) and when
// the current grace period began.
func (c *Controller) window(now time.Time) (paused bool, graceFrom time.Time) {
	nodes := c.nodes.List()
	ready := 0
	for _, o := range nodes {
		if readyStatus(o.GetNode()) == "True" {
			ready++
		}
	}
	disrupted := len(nodes) > 0 && ready == 0
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case disrupted && !c.disrupted:
		c.env.Logger.Warn("no node is ready: evictions paused until one is", "nodes", len(nodes))
	case !disrupted && c.disrupted:
		c.env.Logger.Info("a node is ready again: evictions resume after a grace period", "grace", c.cfg.StartupGracePeriod)
		c.graceFrom = now
	}
	c.disrupted = disrupted
	return disrupted, c.graceFrom
}

// DefaultTolerations are the tolerations a pod gets for the not-ready and
// unreachable NoExecute taints when it has none of its own, with
// tolerationSeconds seconds (Kubernetes' DefaultTolerationSeconds
// admission plugin).
func DefaultTolerations(tolerations []*pb.Toleration, seconds int64) []*pb.Toleration {
	out := tolerations
	for _, key := range []string{TaintNotReady, TaintUnreachable} {
		if scheduler.Tolerates(tolerations, &pb.Taint{Key: key, Effect: NoExecute}) {
			continue
		}
		s := seconds
		out = append(slices.Clip(out), &pb.Toleration{Key: key, Operator: "Exists", Effect: NoExecute, TolerationSeconds: &s})
	}
	return out
}

// EvictionDelay says how long a pod with tolerations may stay on a node
// with the NoExecute taints taints: forever is true when every taint is
// tolerated without a time limit; otherwise the pod goes delay after the
// taints were added (0 when a taint is not tolerated at all). As in
// Kubernetes, the shortest tolerationSeconds of the tolerations in use
// wins.
func EvictionDelay(taints []*pb.Taint, tolerations []*pb.Toleration) (delay time.Duration, forever bool) {
	minSeconds := int64(-1)
	for _, t := range taints {
		used := scheduler.MatchingTolerations(tolerations, t)
		if len(used) == 0 {
			return 0, false
		}
		for _, tol := range used {
			if tol.TolerationSeconds == nil {
				continue
			}
			s := max(tol.GetTolerationSeconds(), 0)
			if minSeconds < 0 || s < minSeconds {
				minSeconds = s
			}
		}
	}
	if minSeconds < 0 {
		return 0, true
	}
	return time.Duration(minSeconds) * time.Second, false
}

// evict deletes the pods whose tolerations have run out and force-deletes
// deleted pods nobody will finish. It returns how long until the next one
// is due.
func (c *Controller) evict(ctx context.Context, node *pb.Node, pods []*pb.Object, now time.Time) (time.Duration, error) {
	taints := noExecuteTaints(node)
	paused, graceFrom := c.window(now)
	notBefore := graceFrom.Add(c.cfg.StartupGracePeriod)
	// The NoExecute taints count from when the first was added; taints
	// without timeAdded (a user's) from the start of the grace period.
	since := graceFrom
	for i, t := range taints {
		if at := t.GetTimeAdded(); at != nil && (i == 0 || at.AsTime().Before(since)) {
			since = at.AsTime()
		}
	}
	var next time.Duration
	due := func(at time.Time) bool {
		if at.Before(notBefore) {
			at = notBefore
		}
		if paused {
			at = now.Add(max(c.cfg.StartupGracePeriod, time.Second)) // look again later
		}
		if !now.Before(at) {
			return true
		}
		if w := at.Sub(now); next == 0 || w < next {
			next = w
		}
		return false
	}
	var errs []error
	for _, o := range pods {
		p := o.GetPod()
		m := p.GetMetadata()
		switch {
		case m.GetDeletionTimestamp() != nil:
			// Deleted already. On a node that is not Ready nobody will
			// confirm it stopped: finish it once its grace period is over.
			if !notReady(node) || (m.DeletionGracePeriodSeconds != nil && m.GetDeletionGracePeriodSeconds() == 0) {
				continue
			}
			if due(m.GetDeletionTimestamp().AsTime()) {
				errs = append(errs, c.forceDelete(ctx, o, "its node "+node.GetMetadata().GetName()+" is not ready"))
			}
		case controllers.IsPodTerminal(p) || len(taints) == 0:
		default:
			delay, forever := EvictionDelay(taints, DefaultTolerations(p.GetSpec().GetTolerations(), c.cfg.DefaultTolerationSeconds))
			if !forever && due(since.Add(delay)) {
				errs = append(errs, c.evictPod(ctx, o, node, taints))
			}
		}
	}
	return next, errors.Join(errs...)
}

func (c *Controller) evictPod(ctx context.Context, o *pb.Object, node *pb.Node, taints []*pb.Taint) error {
	m := o.Meta()
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()})
	if err != nil {
		if controllers.IsNotFound(err) || controllers.IsConflict(err) {
			return nil
		}
		return fmt.Errorf("evict pod %s: %w", m.Key(), err)
	}
	c.env.Logger.Info("evicted pod from tainted node", "pod", m.Key(), "node", node.GetMetadata().GetName(), "taints", taintStrings(taints))
	c.env.Recorder.Eventf(o, controllers.EventTypeNormal, "TaintManagerEviction", "Marking for deletion Pod %s", m.Key())
	return nil
}

func (c *Controller) forceDelete(ctx context.Context, o *pb.Object, why string) error {
	m := o.Meta()
	zero := int64(0)
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), GracePeriodSeconds: &zero})
	if err != nil {
		if controllers.IsNotFound(err) || controllers.IsConflict(err) {
			return nil
		}
		return fmt.Errorf("force-delete pod %s: %w", m.Key(), err)
	}
	c.env.Logger.Info("force-deleted pod", "pod", m.Key(), "why", why)
	return nil
}

// orphaned force-deletes the pods bound to a node that does not exist, once
// it has been missing for the grace period and a live read confirms it.
func (c *Controller) orphaned(ctx context.Context, name string, pods []*pb.Object, now time.Time) (time.Duration, error) {
	if len(pods) == 0 {
		c.mu.Lock()
		delete(c.missingSince, name)
		c.mu.Unlock()
		return 0, nil
	}
	c.mu.Lock()
	first, ok := c.missingSince[name]
	if !ok {
		first = now
		c.missingSince[name] = now
	}
	c.mu.Unlock()
	_, graceFrom := c.window(now)
	if graceFrom.After(first) {
		first = graceFrom
	}
	at := first.Add(c.cfg.StartupGracePeriod)
	if now.Before(at) {
		return at.Sub(now), nil
	}
	resp, err := c.env.Cluster.List(ctx, &pb.ListRequest{Kind: "Node", FieldSelector: "metadata.name=" + name})
	if err != nil {
		return 0, fmt.Errorf("check node %s: %w", name, err)
	}
	if len(resp.GetItems()) > 0 {
		return 0, nil // the cache is behind; the node's event brings it back
	}
	var errs []error
	for _, o := range pods {
		if m := o.Meta(); m.DeletionGracePeriodSeconds != nil && m.GetDeletionGracePeriodSeconds() == 0 {
			continue // force-deleted already, waiting for its finalizers
		}
		errs = append(errs, c.forceDelete(ctx, o, "its node "+name+" does not exist"))
	}
	return 0, errors.Join(errs...)
}

var _ controllers.Reconciler = (*Controller)(nil)
