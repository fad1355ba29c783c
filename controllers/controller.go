package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// Controller is one unit the Manager runs. Run blocks until ctx ends (then
// it returns nil, promptly) or the controller cannot go on (an error: the
// Manager then stops every controller and returns it, and the server
// restarts the manager with backoff). Reconcile failures are not such
// errors: they go back to the queue.
//
// Most controllers are a Loop around a Reconciler; a controller with a
// different shape (the scheduler binds in batches) implements Run itself,
// still with a Queue of keys and informers from its Env.
type Controller interface {
	Name() string
	Run(ctx context.Context) error
}

// Reconciler makes the world match one object's desired state. key is the
// object's "namespace/name" (or "name"); the object may no longer exist.
// Reconcile reads from informer caches and writes through the Cluster; it
// must be idempotent, since the same key is reconciled again after any
// change and after any error. Returning an error requeues the key with
// per-key exponential backoff; Result.RequeueAfter asks for another look
// later (for example when a pod becomes available after minReadySeconds).
// A key is never reconciled by two workers at once.
type Reconciler interface {
	Reconcile(ctx context.Context, key string) (Result, error)
}

// ReconcilerFunc adapts a function to Reconciler.
type ReconcilerFunc func(ctx context.Context, key string) (Result, error)

// Reconcile calls f.
func (f ReconcilerFunc) Reconcile(ctx context.Context, key string) (Result, error) {
	return f(ctx, key)
}

// Result tells the Loop what to do with a key after a successful reconcile.
type Result struct {
	// RequeueAfter, when positive, reconciles the key again after this long.
	RequeueAfter time.Duration
}

// Queue is a rate-limited queue of keys (client-go's workqueue): a key is
// held once however often it is added, and is never handed to two workers
// at once. Add after every relevant change, AddRateLimited to retry with
// per-key exponential backoff, Forget on success.
type Queue = workqueue.TypedRateLimitingInterface[string]

// Env is what a controller is built from. The Manager makes one per
// controller per run (per leadership term); controllertest makes them for
// tests.
type Env struct {
	// Name is the controller's registered name; metrics and logs use it.
	Name string
	// Cluster is where writes go. Under a Manager, writes fail with
	// codes.Unavailable once the run's context has ended, so a deposed
	// leader's controllers write nothing more.
	Cluster Cluster
	// Informers is shared by every controller of the run.
	Informers *InformerFactory
	// Recorder records Events; its source component is the controller's
	// name unless the controller asks for another.
	Recorder EventRecorder
	Logger   *slog.Logger
	Clock    clock.PassiveClock
	// Workers is the default number of reconciles a Loop runs at once.
	Workers int
	// RetryBaseDelay and RetryMaxDelay bound the per-key exponential
	// backoff of failed reconciles.
	RetryBaseDelay, RetryMaxDelay time.Duration

	metrics *metrics
}

func (e Env) getMetrics() *metrics {
	if e.metrics != nil {
		return e.metrics
	}
	m, _ := newMetrics(nil) // unregistered: nothing can fail
	return m
}

// WithMetrics returns e recording its controller's metrics (queue,
// reconciles, ObserveReconcile, CountObjects) in collectors registered with
// reg, reusing collectors an earlier call or Manager registered there. The
// Manager does this itself; use it to measure a controller run without one
// (a test, or a controller wired by hand).
func (e Env) WithMetrics(reg prometheus.Registerer) (Env, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return e, fmt.Errorf("controllers: register metrics: %w", err)
	}
	e.metrics = m
	return e, nil
}

// ObserveReconcile records one unit of work of a controller that does not
// reconcile through a Loop (a Loop records its own), started at start and
// ending now with err (nil: success), in the same metrics a Loop's
// reconciles go to: skiff_controller_reconcile_duration_seconds,
// _reconcile_total{result} and _reconcile_errors_total. The scheduler
// observes each batch it places and binds. Without metrics (an Env not
// made by a Manager or WithMetrics) it does nothing.
func (e Env) ObserveReconcile(start time.Time, err error) {
	if e.metrics == nil {
		return
	}
	result := resultSuccess
	if err != nil {
		result = resultError
	}
	e.metrics.observeReconcile(e.Name, time.Since(start), result)
}

// CountObjects adds n to skiff_controller_objects_total{controller,result}:
// what a controller that works in batches did with the objects in them,
// where one reconcile's outcome says too little (the scheduler counts pods
// "scheduled", "unschedulable" and "error"). Without metrics it does
// nothing.
func (e Env) CountObjects(result string, n int) {
	if e.metrics == nil || n <= 0 {
		return
	}
	e.metrics.objects.WithLabelValues(e.Name, result).Add(float64(n))
}

// NewQueue returns a rate-limited queue named after the controller, with
// its metrics. Shut it down when the controller stops (a Loop does).
func (e Env) NewQueue() Queue {
	base, maxDelay := e.RetryBaseDelay, e.RetryMaxDelay
	if base <= 0 {
		base = 5 * time.Millisecond
	}
	if maxDelay <= 0 {
		maxDelay = time.Minute
	}
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](base, maxDelay),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: e.Name, MetricsProvider: e.getMetrics().queue})
}

// LoopOptions tune a Loop.
type LoopOptions struct {
	// Workers reconciles at once; 0 means Env.Workers (at least 1).
	Workers int
	// WaitFor are the informers whose caches must be synced before the
	// first reconcile, usually every informer the Reconciler reads.
	WaitFor []*Informer
}

// Loop is the usual Controller: a queue of keys drained by workers that call
// a Reconciler.
type Loop struct {
	env     Env
	r       Reconciler
	opts    LoopOptions
	queue   Queue
	metrics *metrics
}

// NewLoop returns a Loop reconciling with r. Add handlers that enqueue into
// Queue() before the Manager runs it.
func NewLoop(env Env, r Reconciler, opts LoopOptions) *Loop {
	if opts.Workers <= 0 {
		opts.Workers = max(env.Workers, 1)
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	return &Loop{env: env, r: r, opts: opts, queue: env.NewQueue(), metrics: env.getMetrics()}
}

// Name is the controller's name.
func (l *Loop) Name() string { return l.env.Name }

// Queue is the loop's queue of keys.
func (l *Loop) Queue() Queue { return l.queue }

// Run waits for the caches, then reconciles until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	defer l.queue.ShutDown()
	if !WaitForSync(ctx, l.opts.WaitFor...) {
		return nil
	}
	l.env.Logger.Debug("caches synced; reconciling", "workers", l.opts.Workers)
	var wg sync.WaitGroup
	for range l.opts.Workers {
		wg.Go(func() {
			for l.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	l.queue.ShutDown()
	wg.Wait()
	return nil
}

func (l *Loop) processNext(ctx context.Context) bool {
	key, shutdown := l.queue.Get()
	if shutdown {
		return false
	}
	defer l.queue.Done(key)
	if ctx.Err() != nil {
		return false
	}
	start := time.Now()
	res, err := l.reconcile(ctx, key)
	took := time.Since(start)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return false
		}
		l.metrics.observeReconcile(l.env.Name, took, resultError)
		level := slog.LevelWarn
		if IsConflict(err) || IsAlreadyExists(err) || IsNotFound(err) {
			level = slog.LevelDebug // a stale cache; the retry sees the news
		}
		l.env.Logger.Log(ctx, level, "reconcile failed; retrying", "key", key, "retries", l.queue.NumRequeues(key), "err", err)
		l.queue.AddRateLimited(key)
	case res.RequeueAfter > 0:
		l.metrics.observeReconcile(l.env.Name, took, resultRequeue)
		l.queue.Forget(key)
		l.queue.AddAfter(key, res.RequeueAfter)
	default:
		l.metrics.observeReconcile(l.env.Name, took, resultSuccess)
		l.queue.Forget(key)
	}
	return true
}

// reconcile calls the Reconciler, turning a panic into an error: one object
// that trips a bug is retried with backoff instead of killing the master.
func (l *Loop) reconcile(ctx context.Context, key string) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("reconcile %s panicked: %v\n%s", key, p, debug.Stack())
		}
	}()
	return l.r.Reconcile(ctx, key)
}
