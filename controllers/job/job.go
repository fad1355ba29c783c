// Package job runs Jobs: pods that run to completion. A Job wants
// spec.completions pods to succeed (or, without completions, any one pod to
// succeed and the rest to finish: a work queue), running at most
// spec.parallelism at once, and gives up after more than spec.backoffLimit
// failures or once spec.activeDeadlineSeconds have passed. Status reports
// active, succeeded and failed pods, startTime and completionTime, and the
// Complete or Failed condition, as Kubernetes' job controller does.
//
// Counting finished pods: the status counts the Job's finished pods that
// exist. So that a finished pod cannot vanish from the count (deleted by a
// user, a drain, or the pod GC when its node goes), every pod carries the
// finalizer batch.kubernetes.io/job-tracking while its Job runs; the
// controller removes it once the Job has finished (and at once from a pod
// deleted before it finished, which counts as neither). The counts in status
// never go down.
package job

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "job"

// TrackingFinalizer keeps a Job's finished pods until the Job has counted
// them for good.
const TrackingFinalizer = "batch.kubernetes.io/job-tracking"

// Condition types and reasons, as Kubernetes writes them.
const (
	ConditionComplete = "Complete"
	ConditionFailed   = "Failed"

	ReasonCompletionsReached   = "CompletionsReached"
	ReasonBackoffLimitExceeded = "BackoffLimitExceeded"
	ReasonDeadlineExceeded     = "DeadlineExceeded"
)

// Config tunes the controller.
type Config struct {
	// BackoffBase and BackoffMax bound the delay before failed pods are
	// replaced: BackoffBase doubled for every failure after the first, at
	// most BackoffMax, counted from the last failure (Kubernetes: 10s and
	// 6m). A zero BackoffBase replaces failed pods at once.
	BackoffBase, BackoffMax time.Duration
	// ExpectationsTimeout is how long a reconcile waits for its own pod
	// creations and deletions to show in the cache before acting again.
	ExpectationsTimeout time.Duration
}

// DefaultConfig returns Kubernetes' defaults.
func DefaultConfig() Config {
	return Config{BackoffBase: 10 * time.Second, BackoffMax: 6 * time.Minute, ExpectationsTimeout: 5 * time.Minute}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.BackoffBase < 0:
		return fmt.Errorf("job config: BackoffBase must not be negative, got %s", c.BackoffBase)
	case c.BackoffMax < c.BackoffBase:
		return fmt.Errorf("job config: BackoffMax (%s) must be at least BackoffBase (%s)", c.BackoffMax, c.BackoffBase)
	case c.ExpectationsTimeout <= 0:
		return fmt.Errorf("job config: ExpectationsTimeout must be positive, got %s", c.ExpectationsTimeout)
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

// Controller reconciles Jobs.
type Controller struct {
	*controllers.Loop
	env          controllers.Env
	cfg          Config
	jobs         *controllers.Informer
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
		jobs:         env.Informers.For("Job"),
		pods:         env.Informers.For("Pod"),
		expectations: controllers.NewExpectations(env.Clock, cfg.ExpectationsTimeout),
		suffix:       randomSuffix,
	}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.jobs, c.pods}})
	c.jobs.AddHandler(controllers.EnqueueObject(c.Queue()))
	c.pods.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { c.podEvent(nil, o, false) },
		UpdateFunc: func(old, o *pb.Object) { c.podEvent(old, o, false) },
		DeleteFunc: func(o *pb.Object) { c.podEvent(nil, o, true) },
	})
	return c, nil
}

func createID(podKey string) string { return "create " + podKey }
func deleteID(podKey string) string { return "delete " + podKey }

// ownerRef returns a pod's controller reference if it is a Job.
func ownerRef(o *pb.Object) *pb.OwnerReference {
	if ref := controllers.ControllerOf(o.Meta()); ref != nil && ref.GetKind() == "Job" {
		return ref
	}
	return nil
}

func (c *Controller) podEvent(old, o *pb.Object, deleted bool) {
	key := controllers.KeyOf(o)
	if ref := ownerRef(o); ref != nil {
		jobKey := controllers.Key(o.Meta().GetNamespace(), ref.GetName())
		switch {
		case deleted || o.Meta().GetDeletionTimestamp() != nil:
			c.expectations.Observe(jobKey, deleteID(key))
		case old == nil:
			c.expectations.Observe(jobKey, createID(key))
		}
		// A pod's status changes often; only a change of phase, readiness,
		// restarts or deletion matters to its Job.
		if old == nil || deleted || podChanged(old.GetPod(), o.GetPod()) {
			c.Queue().Add(jobKey)
		}
		return
	}
	if !deleted && controllers.IsPodActive(o.GetPod()) {
		for _, k := range c.matchingJobs(o) {
			c.Queue().Add(k)
		}
	}
}

func podChanged(a, b *pb.Pod) bool {
	return a.GetStatus().GetPhase() != b.GetStatus().GetPhase() ||
		(a.GetMetadata().GetDeletionTimestamp() == nil) != (b.GetMetadata().GetDeletionTimestamp() == nil) ||
		!slices.Equal(a.GetMetadata().GetFinalizers(), b.GetMetadata().GetFinalizers()) ||
		restarts(a) != restarts(b) || controllers.IsPodReady(a) != controllers.IsPodReady(b) ||
		a.GetSpec().GetNodeName() != b.GetSpec().GetNodeName() ||
		!proto.Equal(controllers.ControllerOf(a.GetMetadata()), controllers.ControllerOf(b.GetMetadata()))
}

func (c *Controller) matchingJobs(pod *pb.Object) []string {
	var out []string
	set := labels.Set(pod.Meta().GetLabels())
	for _, o := range c.jobs.ByIndex(controllers.IndexNamespace, pod.Meta().GetNamespace()) {
		if sel, err := selectorOf(o.GetJob()); err == nil && sel.Matches(set) {
			out = append(out, controllers.KeyOf(o))
		}
	}
	return out
}

// selectorOf is the Job's selector, or the one Kubernetes generates (by
// controller uid) when the Job has none.
func selectorOf(j *pb.Job) (labels.Selector, error) {
	if j.GetSpec().GetSelector() == nil {
		return labels.SelectorFromSet(labels.Set{pb.JobControllerUIDLabel: j.GetMetadata().GetUid()}), nil
	}
	sel, err := controllers.Selector(j.GetSpec().GetSelector())
	if err == nil && sel.Empty() {
		err = errors.New("empty selector selects every pod")
	}
	return sel, err
}

func completions(j *pb.Job) *int32 { return j.GetSpec().Completions }

func parallelism(j *pb.Job) int32 {
	if p := j.GetSpec().Parallelism; p != nil {
		return *p
	}
	return 1
}

func backoffLimit(j *pb.Job) int32 {
	if b := j.GetSpec().BackoffLimit; b != nil {
		return *b
	}
	return pb.DefaultJobBackoffLimit
}

// Finished returns the Job's Complete or Failed condition if it is True.
func Finished(j *pb.Job) *pb.WorkloadCondition {
	for _, c := range j.GetStatus().GetConditions() {
		if (c.GetType() == ConditionComplete || c.GetType() == ConditionFailed) && c.GetStatus() == "True" {
			return c
		}
	}
	return nil
}

// counts are a Job's pods by state.
type counts struct {
	active    []*pb.Object // not finished, not being deleted
	succeeded int32
	failed    int32
	restarts  int32        // container restarts of active pods
	lastFail  time.Time    // when the latest failed pod finished
	release   []*pb.Object // pods whose tracking finalizer can go now
	terminal  []*pb.Object // finished pods still holding the finalizer
}

func count(pods []*pb.Object) counts {
	var n counts
	for _, o := range pods {
		p := o.GetPod()
		hold := slices.Contains(o.Meta().GetFinalizers(), TrackingFinalizer)
		switch {
		case p.GetStatus().GetPhase() == "Succeeded":
			n.succeeded++
			if hold {
				n.terminal = append(n.terminal, o)
			}
		case p.GetStatus().GetPhase() == "Failed":
			n.failed++
			if t := finishedAt(p); t.After(n.lastFail) {
				n.lastFail = t
			}
			if hold {
				n.terminal = append(n.terminal, o)
			}
		case o.Meta().GetDeletionTimestamp() != nil:
			// Deleted before it finished: it counts as neither, and
			// nothing needs to keep it.
			if hold {
				n.release = append(n.release, o)
			}
		default:
			n.active = append(n.active, o)
			n.restarts += restarts(p)
		}
	}
	return n
}

// finishedAt is when a finished pod's last container ended, or failing that
// its last condition change or its creation.
func finishedAt(p *pb.Pod) time.Time {
	var t time.Time
	for _, s := range append(append([]*pb.ContainerStatus(nil), p.GetStatus().GetInitContainerStatuses()...), p.GetStatus().GetContainerStatuses()...) {
		if f := s.GetState().GetTerminated().GetFinishedAt(); f != nil && f.AsTime().After(t) {
			t = f.AsTime()
		}
	}
	if t.IsZero() {
		for _, c := range p.GetStatus().GetConditions() {
			if lt := c.GetLastTransitionTime(); lt != nil && lt.AsTime().After(t) {
				t = lt.AsTime()
			}
		}
	}
	if t.IsZero() {
		t = p.GetMetadata().GetCreationTimestamp().AsTime()
	}
	return t
}

func restarts(p *pb.Pod) int32 {
	var n int32
	for _, s := range p.GetStatus().GetInitContainerStatuses() {
		n += s.GetRestartCount()
	}
	for _, s := range p.GetStatus().GetContainerStatuses() {
		n += s.GetRestartCount()
	}
	return n
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	obj, ok := c.jobs.Get(key)
	if !ok {
		c.expectations.Forget(key)
		return controllers.Result{}, c.releaseLeftovers(ctx, key)
	}
	j := obj.GetJob()
	if j.GetMetadata().GetDeletionTimestamp() != nil {
		// Going: let its pods go too (the collector deletes them).
		return controllers.Result{}, c.release(ctx, c.ownedPods(obj))
	}
	sel, err := selectorOf(j)
	if err != nil {
		c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "InvalidSelector", "invalid selector: %v", err)
		return controllers.Result{}, nil
	}
	satisfied, _ := c.expectations.Satisfied(key)
	pods := c.ownedPods(obj)
	if Finished(j) == nil {
		// A finished Job adopts nothing: it would only stop what it took.
		if pods, err = c.claimPods(ctx, obj, pods, sel); err != nil {
			return controllers.Result{}, err
		}
	}
	n := count(pods)
	now := c.env.Clock.Now()
	if done := Finished(j); done != nil {
		return c.finished(ctx, obj, done, n, now)
	}

	st := proto.Clone(j.GetStatus()).(*pb.JobStatus)
	if st == nil {
		st = &pb.JobStatus{}
	}
	if st.StartTime == nil {
		st.StartTime = timestamppb.New(now)
	}
	st.Succeeded = max(st.GetSucceeded(), n.succeeded)
	st.Failed = max(st.GetFailed(), n.failed)

	var requeue time.Duration
	var errs []error
	complete := false
	if want := completions(j); want != nil {
		complete = st.GetSucceeded() >= *want
	} else {
		complete = st.GetSucceeded() > 0 && len(n.active) == 0
	}
	failReason, failMsg := "", ""
	switch {
	case complete:
	case st.GetFailed() > backoffLimit(j) || pastBackoffOnFailure(j, n):
		failReason, failMsg = ReasonBackoffLimitExceeded, "Job has reached the specified backoff limit"
	case j.GetSpec().ActiveDeadlineSeconds != nil:
		deadline := st.GetStartTime().AsTime().Add(time.Duration(j.GetSpec().GetActiveDeadlineSeconds()) * time.Second)
		if !now.Before(deadline) {
			failReason, failMsg = ReasonDeadlineExceeded, "Job was active longer than specified deadline"
		} else {
			requeue = deadline.Sub(now)
		}
	}
	switch {
	case complete:
		setCondition(st, ConditionComplete, ReasonCompletionsReached, "Reached expected number of succeeded pods", now)
		st.CompletionTime = timestamppb.New(now)
		c.env.Recorder.Event(obj, controllers.EventTypeNormal, "Completed", "Job completed")
	case failReason != "":
		setCondition(st, ConditionFailed, failReason, failMsg, now)
		c.env.Recorder.Event(obj, controllers.EventTypeWarning, failReason, failMsg)
	case satisfied:
		delta, wait, err := c.manage(ctx, obj, n, st, now)
		errs = append(errs, err)
		st.Active = int32(len(n.active)) + delta
		if wait > 0 && (requeue == 0 || wait < requeue) {
			requeue = wait
		}
	}
	if len(n.release) > 0 {
		errs = append(errs, c.release(ctx, n.release))
	}
	if !satisfied || complete || failReason != "" {
		st.Active = int32(len(n.active))
	}
	if !proto.Equal(j.GetStatus(), st) {
		next := obj.Clone()
		next.GetJob().Status = st
		stored, err := c.env.Cluster.UpdateStatus(ctx, next)
		if err != nil {
			return controllers.Result{}, errors.Join(append(errs, fmt.Errorf("update status of job %s: %w", key, err))...)
		}
		obj = stored
	}
	if Finished(obj.GetJob()) != nil {
		// Finished just now: stop what runs, let the pods go.
		res, err := c.finished(ctx, obj, Finished(obj.GetJob()), n, now)
		return res, errors.Join(append(errs, err)...)
	}
	return controllers.Result{RequeueAfter: requeue}, errors.Join(errs...)
}

// pastBackoffOnFailure counts container restarts of pods that restart in
// place (restartPolicy OnFailure) against the backoff limit, as Kubernetes
// does.
func pastBackoffOnFailure(j *pb.Job, n counts) bool {
	if j.GetSpec().GetTemplate().GetSpec().GetRestartPolicy() != "OnFailure" {
		return false
	}
	limit := backoffLimit(j)
	if limit == 0 {
		return n.restarts > 0
	}
	return n.restarts >= limit
}

// manage creates or deletes active pods to match what the Job wants now.
// It returns how many active pods that added (or removed), and when to
// look again for a pod replacing a failed one.
func (c *Controller) manage(ctx context.Context, obj *pb.Object, n counts, st *pb.JobStatus, now time.Time) (int32, time.Duration, error) {
	j := obj.GetJob()
	active := int32(len(n.active))
	want := parallelism(j)
	if w := completions(j); w != nil {
		want = min(want, max(*w-st.GetSucceeded(), 0))
	} else if st.GetSucceeded() > 0 {
		want = min(want, active) // a work queue: once one succeeded, start no more
	}
	key := controllers.KeyOf(obj)
	switch {
	case active > want:
		victims := leastUseful(n.active, int(active-want))
		ids := make([]string, len(victims))
		for i, o := range victims {
			ids[i] = deleteID(controllers.KeyOf(o))
		}
		c.expectations.Expect(key, ids...)
		var errs []error
		deleted := int32(0)
		for i, o := range victims {
			if err := c.deletePod(ctx, obj, o); err != nil {
				c.expectations.Observe(key, ids[i])
				errs = append(errs, err)
				continue
			}
			deleted++
		}
		return -deleted, 0, errors.Join(errs...)
	case active < want:
		if wait := c.backoff(n, st, now); wait > 0 {
			return 0, wait, nil
		}
		created, err := c.createPods(ctx, obj, int(want-active))
		return int32(created), 0, err
	}
	return 0, 0, nil
}

// backoff is how long replacing failed pods must still wait.
func (c *Controller) backoff(n counts, st *pb.JobStatus, now time.Time) time.Duration {
	if c.cfg.BackoffBase <= 0 || st.GetFailed() == 0 || n.lastFail.IsZero() {
		return 0
	}
	delay := c.cfg.BackoffBase
	for i := int32(1); i < st.GetFailed() && delay < c.cfg.BackoffMax; i++ {
		delay *= 2
	}
	delay = min(delay, c.cfg.BackoffMax)
	return n.lastFail.Add(delay).Sub(now)
}

// finished stops a finished Job's remaining pods, releases its pods' tracking
// finalizers, and deletes the Job once ttlSecondsAfterFinished has passed.
func (c *Controller) finished(ctx context.Context, obj *pb.Object, done *pb.WorkloadCondition, n counts, now time.Time) (controllers.Result, error) {
	// Release first: deleting a pod changes it, and the release carries
	// the cached resourceVersion.
	errs := []error{c.release(ctx, append(append(n.release, n.terminal...), n.active...))}
	for _, o := range n.active {
		errs = append(errs, c.deletePod(ctx, obj, o))
	}
	if err := errors.Join(errs...); err != nil {
		return controllers.Result{}, err
	}
	j := obj.GetJob()
	if j.GetSpec().TtlSecondsAfterFinished == nil {
		return controllers.Result{}, nil
	}
	at := done.GetLastTransitionTime().AsTime()
	if ct := j.GetStatus().GetCompletionTime(); ct != nil {
		at = ct.AsTime()
	}
	expiry := at.Add(time.Duration(j.GetSpec().GetTtlSecondsAfterFinished()) * time.Second)
	if now.Before(expiry) {
		return controllers.Result{RequeueAfter: expiry.Sub(now)}, nil
	}
	m := obj.Meta()
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Job", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), PropagationPolicy: "Foreground"})
	if err != nil && !controllers.IsNotFound(err) {
		return controllers.Result{}, fmt.Errorf("delete finished job %s after its TTL: %w", m.Key(), err)
	}
	return controllers.Result{}, nil
}

func setCondition(st *pb.JobStatus, typ, reason, msg string, now time.Time) {
	ts := timestamppb.New(now)
	st.Conditions = slices.DeleteFunc(st.Conditions, func(c *pb.WorkloadCondition) bool { return c.GetType() == typ })
	st.Conditions = append(st.Conditions, &pb.WorkloadCondition{Type: typ, Status: "True", Reason: reason, Message: msg, LastProbeTime: ts, LastTransitionTime: ts})
}

// ownedPods are the cached pods the Job controls.
func (c *Controller) ownedPods(obj *pb.Object) []*pb.Object {
	uid := obj.Meta().GetUid()
	var out []*pb.Object
	for _, o := range c.pods.ByIndex(controllers.IndexOwner, uid) {
		if ref := controllers.ControllerOf(o.Meta()); ref != nil && ref.GetUid() == uid {
			out = append(out, o)
		}
	}
	sortByKey(out)
	return out
}

func sortByKey(objs []*pb.Object) {
	sort.Slice(objs, func(i, j int) bool { return controllers.KeyOf(objs[i]) < controllers.KeyOf(objs[j]) })
}

// claimPods returns owned plus the matching active orphans it adopts.
func (c *Controller) claimPods(ctx context.Context, obj *pb.Object, owned []*pb.Object, sel labels.Selector) ([]*pb.Object, error) {
	var errs []error
	for _, o := range c.pods.Select(obj.Meta().GetNamespace(), sel) {
		if controllers.ControllerOf(o.Meta()) != nil || !controllers.IsPodActive(o.GetPod()) {
			continue
		}
		next := o.Clone()
		next.Meta().OwnerReferences = append(next.Meta().OwnerReferences, controllers.NewControllerRef(obj.Meta(), "batch/v1", "Job"))
		stored, err := c.env.Cluster.Update(ctx, next)
		if err != nil {
			if !controllers.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("adopt pod %s: %w", o.Meta().Key(), err))
			}
			continue
		}
		owned = append(owned, stored)
	}
	return owned, errors.Join(errs...)
}

// release removes the tracking finalizer from pods.
func (c *Controller) release(ctx context.Context, pods []*pb.Object) error {
	var errs []error
	for _, o := range pods {
		if !slices.Contains(o.Meta().GetFinalizers(), TrackingFinalizer) {
			continue
		}
		next := o.Clone()
		next.Meta().Finalizers = slices.DeleteFunc(next.Meta().Finalizers, func(f string) bool { return f == TrackingFinalizer })
		if _, err := c.env.Cluster.Update(ctx, next); err != nil && !controllers.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove finalizer from pod %s: %w", o.Meta().Key(), err))
		}
	}
	return errors.Join(errs...)
}

// releaseLeftovers lets go of the pods of a Job that is gone.
func (c *Controller) releaseLeftovers(ctx context.Context, key string) error {
	ns, name := controllers.SplitKey(key)
	var left []*pb.Object
	for _, o := range c.pods.ByIndex(controllers.IndexNamespace, ns) {
		if ref := ownerRef(o); ref != nil && ref.GetName() == name && slices.Contains(o.Meta().GetFinalizers(), TrackingFinalizer) {
			left = append(left, o)
		}
	}
	return c.release(ctx, left)
}

func (c *Controller) deletePod(ctx context.Context, job, o *pb.Object) error {
	m := o.Meta()
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()})
	if err != nil && !controllers.IsNotFound(err) {
		return fmt.Errorf("delete pod %s: %w", m.Key(), err)
	}
	if err == nil {
		c.env.Recorder.Eventf(job, controllers.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", m.GetName())
	}
	return nil
}

// createPods creates n pods in doubling batches, stopping at the first
// failure (Kubernetes' slow start).
func (c *Controller) createPods(ctx context.Context, obj *pb.Object, n int) (created int, _ error) {
	key := controllers.KeyOf(obj)
	for batch := 1; n > 0; batch *= 2 {
		size := min(batch, n)
		pods := make([]*pb.Object, size)
		ids := make([]string, size)
		for i := range pods {
			pods[i] = c.newPod(obj)
			ids[i] = createID(controllers.KeyOf(pods[i]))
		}
		c.expectations.Expect(key, ids...)
		var errs []error
		for i, p := range pods {
			if _, err := c.env.Cluster.Create(ctx, p); err != nil {
				c.expectations.Observe(key, ids[i])
				errs = append(errs, fmt.Errorf("create pod %s: %w", controllers.KeyOf(p), err))
				continue
			}
			created++
			c.env.Recorder.Eventf(obj, controllers.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", p.Meta().GetName())
		}
		if err := errors.Join(errs...); err != nil {
			if !controllers.IsAlreadyExists(err) {
				c.env.Recorder.Eventf(obj, controllers.EventTypeWarning, "FailedCreate", "Error creating: %v", errs[0])
			}
			return created, err
		}
		n -= size
	}
	return created, nil
}

// newPod builds a pod from the template, named <job>-<random suffix>, with
// the labels that tie it to its Job and the tracking finalizer.
func (c *Controller) newPod(obj *pb.Object) *pb.Object {
	j := obj.GetJob()
	tmpl := j.GetSpec().GetTemplate()
	lbls := map[string]string{}
	for k, v := range tmpl.GetMetadata().GetLabels() {
		lbls[k] = v
	}
	if j.GetSpec().GetSelector() == nil {
		lbls[pb.JobControllerUIDLabel] = j.GetMetadata().GetUid()
		lbls[pb.JobNameLabel] = j.GetMetadata().GetName()
	}
	var ann map[string]string
	if a := tmpl.GetMetadata().GetAnnotations(); len(a) > 0 {
		ann = make(map[string]string, len(a))
		for k, v := range a {
			ann[k] = v
		}
	}
	m := &pb.ObjectMeta{
		Name:            j.GetMetadata().GetName() + "-" + c.suffix(),
		GenerateName:    j.GetMetadata().GetName() + "-",
		Namespace:       j.GetMetadata().GetNamespace(),
		Labels:          lbls,
		Annotations:     ann,
		Finalizers:      append(append([]string(nil), tmpl.GetMetadata().GetFinalizers()...), TrackingFinalizer),
		OwnerReferences: []*pb.OwnerReference{controllers.NewControllerRef(j.GetMetadata(), "batch/v1", "Job")},
	}
	spec := &pb.PodSpec{}
	if tmpl.GetSpec() != nil {
		spec = proto.Clone(tmpl.GetSpec()).(*pb.PodSpec)
	}
	return pb.Wrap(&pb.Pod{ApiVersion: "v1", Kind: "Pod", Metadata: m, Spec: spec})
}

// leastUseful picks n active pods to delete: unscheduled, then pending,
// then not ready, then newest first.
func leastUseful(pods []*pb.Object, n int) []*pb.Object {
	sorted := append([]*pb.Object(nil), pods...)
	rank := func(o *pb.Object) int {
		p := o.GetPod()
		switch {
		case p.GetSpec().GetNodeName() == "":
			return 0
		case p.GetStatus().GetPhase() == "Pending":
			return 1
		case !controllers.IsPodReady(p):
			return 2
		}
		return 3
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		if ri, rj := rank(sorted[i]), rank(sorted[j]); ri != rj {
			return ri < rj
		}
		ci, cj := sorted[i].Meta().GetCreationTimestamp().AsTime(), sorted[j].Meta().GetCreationTimestamp().AsTime()
		if !ci.Equal(cj) {
			return ci.After(cj)
		}
		return controllers.KeyOf(sorted[i]) > controllers.KeyOf(sorted[j])
	})
	return sorted[:n]
}

const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

func randomSuffix() string {
	b := make([]byte, 5)
	for i := range b {
		b[i] = suffixAlphabet[rand.IntN(len(suffixAlphabet))]
	}
	return string(b)
}

var _ controllers.Reconciler = (*Controller)(nil)
