package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the scheduler's controller name and the schedulerName it serves
// besides "" and Kubernetes' "default-scheduler".
const Name = "scheduler"

// Config configures the scheduler.
type Config struct {
	Policy Policy
	// BatchSize bounds the pods placed and bound in one Bind call. A
	// batch takes whatever is queued up to this size, so batches grow
	// while binds are in flight and shrink when the queue is short.
	BatchSize int
	// BindsInFlight bounds the Bind calls running at once: the next
	// batch is placed while earlier ones are being bound (each Bind is a
	// Raft round trip), counting their pods as assumed on their nodes.
	BindsInFlight int
	// RetryUnschedulable is how often pods that fit nowhere are tried
	// again even if no node or pod changed (a safety net).
	RetryUnschedulable time.Duration
	// AssumeTimeout is how long a binding the cache has not shown yet is
	// still counted on its node.
	AssumeTimeout time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Policy: DefaultPolicy(), BatchSize: 500, BindsInFlight: 3, RetryUnschedulable: time.Minute, AssumeTimeout: 30 * time.Second}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	switch {
	case c.BatchSize <= 0:
		return fmt.Errorf("scheduler config: BatchSize must be positive, got %d", c.BatchSize)
	case c.BindsInFlight <= 0:
		return fmt.Errorf("scheduler config: BindsInFlight must be positive, got %d", c.BindsInFlight)
	case c.RetryUnschedulable <= 0:
		return fmt.Errorf("scheduler config: RetryUnschedulable must be positive, got %s", c.RetryUnschedulable)
	case c.AssumeTimeout <= 0:
		return fmt.Errorf("scheduler config: AssumeTimeout must be positive, got %s", c.AssumeTimeout)
	}
	return nil
}

// NewRegistration returns the scheduler's Registration with cfg.
func NewRegistration(cfg Config) controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		return New(env, cfg)
	}}
}

// Scheduler is the controller: its queue holds keys of pods to place. One
// worker takes them in batches and places each batch against one snapshot
// (pods placed earlier in the batch count); the batch is then bound in one
// Cluster.Bind, in the background, while the worker places the next
// batches (up to BindsInFlight binds at once). Placed pods are assumed on
// their nodes before their Bind is sent, as Kubernetes' scheduler assumes
// them, so every later snapshot counts them; a pod whose bind fails is
// un-assumed and tried again. A bind made on a stale view of a pod fails
// its resourceVersion precondition. Pods that fit nowhere get
// PodScheduled=False and a FailedScheduling event, and wait until a node or
// a bound pod changes.
//
// Each batch is one reconcile in the controllers' metrics (its duration
// from taking the keys until its Bind returns; an error if the Bind failed
// or rejected pods), and skiff_controller_objects_total{controller=
// "scheduler"} counts pods by outcome: scheduled, unschedulable, error.
type Scheduler struct {
	env   controllers.Env
	cfg   Config
	pods  *controllers.Informer
	nodes *controllers.Informer
	queue controllers.Queue

	mu sync.Mutex
	// assumed are pods bound by this scheduler that the cache still shows
	// unbound; they count on their node until it catches up.
	assumed map[string]assumedPod
	// unschedulable are pods that fit nowhere, waiting for a change.
	unschedulable map[string]struct{}
	// moves counts the times unschedulable pods were requeued, so a batch
	// that overlapped one requeues its failures at once.
	moves uint64
	// nextNode is where the next batch's placement starts its search
	// (Policy.PercentageOfNodesToScore).
	nextNode int
	// infos caches parsed pods by UID.
	infos map[string]*podInfo
	// cache counts the bound pods on each node.
	cache *nodeCache
}

type assumedPod struct {
	uid  string
	node string
	info *podInfo
	at   time.Time
	// binding: its Bind has not returned yet; it never expires then.
	binding bool
}

// New builds a Scheduler over env's informers.
func New(env controllers.Env, cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scheduler{
		env: env, cfg: cfg,
		pods:          env.Informers.For("Pod"),
		nodes:         env.Informers.For("Node"),
		queue:         env.NewQueue(),
		assumed:       make(map[string]assumedPod),
		unschedulable: make(map[string]struct{}),
		infos:         make(map[string]*podInfo),
		cache:         newNodeCache(),
	}
	s.pods.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { s.podChanged(nil, o) },
		UpdateFunc: s.podChanged,
		DeleteFunc: s.podDeleted,
	})
	s.nodes.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { s.nodeChanged(o, o.GetNode()) },
		UpdateFunc: func(_, o *pb.Object) { s.nodeChanged(o, o.GetNode()) },
		DeleteFunc: func(o *pb.Object) { s.nodeChanged(o, nil) },
	})
	return s, nil
}

// Name implements controllers.Controller.
func (s *Scheduler) Name() string { return s.env.Name }

// Queue is the scheduler's queue of pod keys.
func (s *Scheduler) Queue() controllers.Queue { return s.queue }

// responsible reports whether pod is this scheduler's to place now.
func responsible(p *pb.Pod) bool {
	switch p.GetSpec().GetSchedulerName() {
	case "", pb.DefaultSchedulerName, Name:
	default:
		return false
	}
	return p.GetSpec().GetNodeName() == "" && controllers.IsPodActive(p)
}

func (s *Scheduler) podChanged(old, o *pb.Object) {
	p := o.GetPod()
	key := controllers.KeyOf(o)
	if responsible(p) {
		s.mu.Lock()
		_, parked := s.unschedulable[key]
		s.cache.setPod(key, "", nil)
		s.mu.Unlock()
		// A parked pod waits for a node or pod change, not for its own
		// status update (ours, recording why it is parked).
		if !parked || old == nil || !gproto.Equal(old.GetPod().GetSpec(), p.GetSpec()) {
			s.queue.Add(key)
		}
		return
	}
	// A bound pod counts on its node until it finishes. One whose requests
	// do not parse holds nothing placement can count.
	var node string
	var pi *podInfo
	if n := p.GetSpec().GetNodeName(); n != "" && !controllers.IsPodTerminal(p) {
		if info, err := s.info(p); err == nil {
			node, pi = n, info
		}
	}
	s.mu.Lock()
	// The cache counts the pod and drops its assumption in one step, so a
	// snapshot sees it exactly once.
	s.cache.setPod(key, node, pi)
	if a, ok := s.assumed[key]; ok && p.GetSpec().GetNodeName() != "" && a.uid == p.GetMetadata().GetUid() {
		delete(s.assumed, key) // the cache shows the binding now
	}
	delete(s.unschedulable, key)
	s.mu.Unlock()
	// A bound pod that finished frees its node.
	if old != nil && p.GetSpec().GetNodeName() != "" && !controllers.IsPodTerminal(old.GetPod()) && controllers.IsPodTerminal(p) {
		s.retryUnschedulable()
	}
}

func (s *Scheduler) podDeleted(o *pb.Object) {
	key := controllers.KeyOf(o)
	s.mu.Lock()
	s.cache.setPod(key, "", nil)
	delete(s.assumed, key)
	delete(s.unschedulable, key)
	delete(s.infos, o.Meta().GetUid())
	s.mu.Unlock()
	if o.GetPod().GetSpec().GetNodeName() != "" {
		s.retryUnschedulable()
	}
}

// nodeChanged records a node's new form (nil: deleted) and, if a pod that
// fit nowhere may fit now, tries those pods again. Heartbeats alone change
// nothing.
func (s *Scheduler) nodeChanged(o *pb.Object, node *pb.Node) {
	s.mu.Lock()
	changed := s.cache.setNode(o.Meta().GetName(), node)
	s.mu.Unlock()
	if changed && node != nil {
		s.retryUnschedulable()
	}
}

// retryUnschedulable queues every pod waiting for a change.
func (s *Scheduler) retryUnschedulable() {
	s.mu.Lock()
	keys := make([]string, 0, len(s.unschedulable))
	for k := range s.unschedulable {
		keys = append(keys, k)
	}
	clear(s.unschedulable)
	s.moves++
	s.mu.Unlock()
	for _, k := range keys {
		s.queue.Add(k)
	}
}

// Run implements controllers.Controller.
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.queue.ShutDown()
	if !controllers.WaitForSync(ctx, s.pods, s.nodes) {
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		<-ctx.Done()
		s.queue.ShutDown()
	})
	wg.Go(func() {
		t := time.NewTicker(s.cfg.RetryUnschedulable)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.expireAssumed()
				s.retryUnschedulable()
			}
		}
	})
	// A slot is taken before a batch is: while every slot is busy the
	// queue fills up, and the next batch takes what gathered.
	slots := make(chan struct{}, s.cfg.BindsInFlight)
	for {
		acquired := false
		select {
		case slots <- struct{}{}:
			acquired = true
		case <-ctx.Done():
			// Drain what is queued without placing it, until the
			// queue shuts down.
		}
		keys := s.nextBatch()
		if keys == nil {
			return nil
		}
		start := time.Now()
		var placed []placement
		var placeErr error
		placing := acquired && ctx.Err() == nil
		if placing {
			placed, placeErr = s.placeBatch(ctx, keys)
		}
		inBind := make(map[string]bool, len(placed))
		for _, p := range placed {
			inBind[p.key] = true
		}
		for _, k := range keys {
			if !inBind[k] {
				s.queue.Done(k)
			}
		}
		if len(placed) == 0 {
			if placing && ctx.Err() == nil {
				s.env.ObserveReconcile(start, placeErr)
			}
			if acquired {
				<-slots
			}
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			err := s.bind(ctx, placed)
			for _, p := range placed {
				s.queue.Done(p.key)
			}
			if ctx.Err() == nil { // a bind cut short by losing leadership is no failure
				s.env.ObserveReconcile(start, errors.Join(placeErr, err))
			}
		})
	}
}

// nextBatch blocks for one key, then takes whatever else is queued, up to
// BatchSize. nil means the queue was shut down.
func (s *Scheduler) nextBatch() []string {
	key, shutdown := s.queue.Get()
	if shutdown {
		return nil
	}
	keys := []string{key}
	for len(keys) < s.cfg.BatchSize && s.queue.Len() > 0 {
		k, shutdown := s.queue.Get()
		if shutdown {
			break
		}
		keys = append(keys, k)
	}
	return keys
}

func (s *Scheduler) expireAssumed() {
	now := s.env.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, a := range s.assumed {
		if !a.binding && now.Sub(a.at) > s.cfg.AssumeTimeout {
			delete(s.assumed, k)
		}
	}
}

// info returns the parsed form of pod, cached by UID.
func (s *Scheduler) info(pod *pb.Pod) (*podInfo, error) {
	uid := pod.GetMetadata().GetUid()
	s.mu.Lock()
	pi := s.infos[uid]
	s.mu.Unlock()
	if pi != nil && pi.key == pod.GetMetadata().Key() {
		return pi, nil
	}
	pi, err := newPodInfo(pod)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.infos[uid] = pi
	s.mu.Unlock()
	return pi, nil
}

// snapshot returns the placement view: the cache plus the bindings it
// does not show yet.
func (s *Scheduler) snapshot() (*Snapshot, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.cache.snapshot()
	snap.next = s.nextNode
	// A pod leaves assumed in the same step that the cache counts it, so
	// each is counted once.
	for _, a := range s.assumed {
		snap.addPodInfo(a.info, a.node)
	}
	return snap, s.moves
}

type placement struct {
	key  string
	obj  *pb.Object
	info *podInfo
	node string
}

// placeBatch places the pods of keys and assumes the placed ones on their
// nodes; it returns them for bind, and the first failure to record why a
// pod fits nowhere.
func (s *Scheduler) placeBatch(ctx context.Context, keys []string) ([]placement, error) {
	var todo []*pb.Object
	for _, key := range keys {
		o, ok := s.pods.Get(key)
		if !ok || !responsible(o.GetPod()) || s.isAssumed(key, o.Meta().GetUid()) {
			s.queue.Forget(key)
			continue
		}
		todo = append(todo, o)
	}
	if len(todo) == 0 {
		return nil, nil
	}
	// Higher priority first, then oldest first.
	sort.SliceStable(todo, func(i, j int) bool {
		pi, pj := todo[i].GetPod().GetSpec().GetPriority(), todo[j].GetPod().GetSpec().GetPriority()
		if pi != pj {
			return pi > pj
		}
		return todo[i].Meta().GetCreationTimestamp().AsTime().Before(todo[j].Meta().GetCreationTimestamp().AsTime())
	})

	snap, moves := s.snapshot()
	var placed []placement
	var firstErr error
	for _, o := range todo {
		pod := o.GetPod()
		key := controllers.KeyOf(o)
		pi, err := s.info(pod)
		if err != nil {
			err = s.markUnschedulable(ctx, o, fmt.Sprintf("invalid pod: %v", err), moves)
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		res := snap.schedule(pod, pi, s.cfg.Policy)
		if res.Node == "" {
			err = s.markUnschedulable(ctx, o, res.Message, moves)
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		snap.addPodInfo(pi, res.Node)
		placed = append(placed, placement{key: key, obj: o, info: pi, node: res.Node})
	}
	// Assume before binding: the next batch, placed while this one's Bind
	// is in flight, must count these pods on their nodes.
	now := s.env.Clock.Now()
	s.mu.Lock()
	s.nextNode = snap.next
	for _, p := range placed {
		s.assumed[p.key] = assumedPod{uid: p.obj.Meta().GetUid(), node: p.node, info: p.info, at: now, binding: true}
	}
	s.mu.Unlock()
	return placed, firstErr
}

// bind binds placed pods in one Cluster.Bind. Bound pods stay assumed until
// the cache shows them bound; the others are un-assumed and queued again.
// The error is the Bind call's, or says how many pods it rejected (pods
// deleted meanwhile are not rejections).
func (s *Scheduler) bind(ctx context.Context, placed []placement) error {
	binds := make([]*pb.BindOp, len(placed))
	for i, p := range placed {
		m := p.obj.Meta()
		binds[i] = &pb.BindOp{Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion(), NodeName: p.node}
	}
	results, err := s.env.Cluster.Bind(ctx, binds)
	if err != nil {
		if ctx.Err() == nil {
			s.env.Logger.Warn("bind failed; retrying", "pods", len(binds), "err", err)
		}
		for _, p := range placed {
			s.unassume(p)
			s.queue.AddRateLimited(p.key)
		}
		if ctx.Err() == nil {
			s.env.CountObjects(resultError, len(placed))
		}
		return fmt.Errorf("bind %d pods: %w", len(binds), err)
	}
	now := s.env.Clock.Now()
	bound, rejected := 0, 0
	var firstRejection string
	for i, p := range placed {
		code := codes.Unknown
		msg := "no result"
		if i < len(results) {
			code, msg = codes.Code(results[i].GetCode()), results[i].GetMessage()
		}
		switch code {
		case codes.OK:
			bound++
			s.mu.Lock()
			// Still there unless the cache has shown the binding already;
			// from now on it may expire like any assumed pod.
			if a, ok := s.assumed[p.key]; ok && a.uid == p.obj.Meta().GetUid() && a.binding {
				a.binding, a.at = false, now
				s.assumed[p.key] = a
			}
			delete(s.unschedulable, p.key)
			s.mu.Unlock()
			s.queue.Forget(p.key)
			s.env.Recorder.Eventf(p.obj, controllers.EventTypeNormal, "Scheduled", "Successfully assigned %s to %s", p.key, p.node)
		case codes.NotFound:
			s.unassume(p)
			s.queue.Forget(p.key)
		default:
			// Most often a stale view of the pod (Aborted): look again.
			s.env.Logger.Debug("bind rejected; retrying", "pod", p.key, "node", p.node, "code", code, "msg", msg)
			s.unassume(p)
			s.queue.AddRateLimited(p.key)
			if rejected == 0 {
				firstRejection = fmt.Sprintf("%s to %s: %s: %s", p.key, p.node, code, msg)
			}
			rejected++
		}
	}
	s.env.CountObjects(resultScheduled, bound)
	s.env.CountObjects(resultError, rejected)
	s.env.Logger.Debug("bound batch", "pods", bound, "of", len(placed))
	if rejected > 0 {
		return fmt.Errorf("bind: %d of %d pods rejected (first: %s)", rejected, len(placed), firstRejection)
	}
	return nil
}

// Outcomes of one pod's scheduling, the result label of
// skiff_controller_objects_total (Kubernetes' scheduler_schedule_attempts_total
// uses the same words).
const (
	resultScheduled     = "scheduled"
	resultUnschedulable = "unschedulable"
	resultError         = "error"
)

// unassume drops p's assumption made for a bind that did not happen.
func (s *Scheduler) unassume(p placement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.assumed[p.key]; ok && a.uid == p.obj.Meta().GetUid() && a.binding {
		delete(s.assumed, p.key)
	}
}

func (s *Scheduler) isAssumed(key, uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.assumed[key]
	return ok && a.uid == uid
}

// markUnschedulable parks the pod until a node or pod changes, records why
// in its PodScheduled condition (when that changes) and in an event. The
// error is a failure to write the condition that no retry takes care of.
func (s *Scheduler) markUnschedulable(ctx context.Context, o *pb.Object, msg string, moves uint64) error {
	key := controllers.KeyOf(o)
	s.env.CountObjects(resultUnschedulable, 1)
	s.mu.Lock()
	missed := s.moves != moves // something changed while this batch ran
	if !missed {
		s.unschedulable[key] = struct{}{}
	}
	s.mu.Unlock()
	if missed {
		s.queue.AddRateLimited(key)
	} else {
		s.queue.Forget(key)
	}
	s.env.Recorder.Event(o, controllers.EventTypeWarning, "FailedScheduling", msg)

	pod := o.GetPod()
	if c := controllers.PodCondition(pod, "PodScheduled"); c != nil && c.GetStatus() == "False" && c.GetReason() == "Unschedulable" && c.GetMessage() == msg {
		return nil
	}
	next := o.Clone()
	st := next.GetPod().Status
	if st == nil {
		st = &pb.PodStatus{}
		next.GetPod().Status = st
	}
	now := timestamppb.New(s.env.Clock.Now())
	cond := &pb.PodCondition{Type: "PodScheduled", Status: "False", Reason: "Unschedulable", Message: msg, LastTransitionTime: now}
	replaced := false
	for i, c := range st.Conditions {
		if c.GetType() == "PodScheduled" {
			if c.GetStatus() == "False" {
				cond.LastTransitionTime = c.GetLastTransitionTime()
			}
			st.Conditions[i], replaced = cond, true
		}
	}
	if !replaced {
		st.Conditions = append(st.Conditions, cond)
	}
	if _, err := s.env.Cluster.UpdateStatus(ctx, next); err != nil && ctx.Err() == nil {
		if controllers.IsConflict(err) {
			// The pod changed under us: place it again with the news.
			s.queue.AddRateLimited(key)
			return nil
		}
		if !controllers.IsNotFound(err) {
			s.env.Logger.Warn("cannot record unschedulable pod", "pod", key, "err", err)
			return fmt.Errorf("record why pod %s is unschedulable: %w", key, err)
		}
	}
	return nil
}

var _ controllers.Controller = (*Scheduler)(nil)
