package controllers

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// metrics are created once per Manager, so that a manager that runs many
// times (once per leadership term) registers its collectors only once.
type metrics struct {
	queue             *queueMetrics
	reconcileDuration *prometheus.HistogramVec
	reconcileErrors   *prometheus.CounterVec
	reconciles        *prometheus.CounterVec
	objects           *prometheus.CounterVec
	informer          *informerMetrics
	eventsWritten     prometheus.Counter
	eventsDropped     prometheus.Counter
	eventsFiltered    prometheus.Counter
	running           *prometheus.GaugeVec
}

type informerMetrics struct {
	events  *prometheus.CounterVec
	relists *prometheus.CounterVec
	objects *prometheus.GaugeVec
}

// newMetrics creates the collectors and registers them with reg (nil: not
// registered). A collector already registered by an earlier manager is
// reused.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns = "skiff"
	r := registrar{reg: reg}
	ctl := []string{"controller"}
	m := &metrics{
		queue: &queueMetrics{
			depth: r.gaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: "controller", Name: "queue_depth",
				Help: "Keys waiting in the controller's work queue."}, ctl),
			adds: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "queue_adds_total",
				Help: "Keys added to the controller's work queue."}, ctl),
			latency: r.histogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "controller", Name: "queue_latency_seconds",
				Help: "How long a key waits in the queue before it is reconciled.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}, ctl),
			work: r.histogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "controller", Name: "queue_work_duration_seconds",
				Help: "How long processing a key takes, as the queue sees it.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}, ctl),
			unfinished: r.gaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: "controller", Name: "queue_unfinished_work_seconds",
				Help: "Seconds of work in progress not yet observed by work_duration."}, ctl),
			longest: r.gaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: "controller", Name: "queue_longest_running_processor_seconds",
				Help: "How long the longest running reconcile has been running."}, ctl),
			retries: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "queue_retries_total",
				Help: "Keys requeued with backoff after a failed reconcile."}, ctl),
		},
		reconcileDuration: r.histogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "controller", Name: "reconcile_duration_seconds",
			Help: "Time taken by one reconcile.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}, ctl),
		reconcileErrors: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "reconcile_errors_total",
			Help: "Reconciles that returned an error."}, ctl),
		reconciles: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "reconcile_total",
			Help: "Reconciles by result: success, error or requeue."}, []string{"controller", "result"}),
		objects: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "objects_total",
			Help: "Objects a batch controller handled, by outcome (the scheduler's pods: scheduled, unschedulable, error)."}, []string{"controller", "result"}),
		running: r.gaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: "controller", Name: "running",
			Help: "1 while the controller runs on this master (only on the leader)."}, ctl),
		informer: &informerMetrics{
			events: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "informer", Name: "events_total",
				Help: "Watch events received, by kind and type."}, []string{"kind", "type"}),
			relists: r.counterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "informer", Name: "relists_total",
				Help: "Lists after a watch's history expired."}, []string{"kind"}),
			objects: r.gaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: "informer", Name: "objects",
				Help: "Objects held in the informer cache."}, []string{"kind"}),
		},
		eventsWritten: r.counter(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "events_written_total",
			Help: "Event objects created or updated by the event recorder."}),
		eventsDropped: r.counter(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "events_dropped_total",
			Help: "Events dropped because the recorder's queue was full or the write failed."}),
		eventsFiltered: r.counter(prometheus.CounterOpts{Namespace: ns, Subsystem: "controller", Name: "events_spam_filtered_total",
			Help: "Events not written because their source had recorded too many about the same object lately (the recorder's spam filter)."}),
	}
	return m, r.err
}

// Results of a reconcile, the result label of reconcile_total.
const (
	resultSuccess = "success"
	resultError   = "error"
	resultRequeue = "requeue"
)

// observeReconcile records one reconcile of controller that took d and
// ended with result.
func (m *metrics) observeReconcile(controller string, d time.Duration, result string) {
	m.reconcileDuration.WithLabelValues(controller).Observe(d.Seconds())
	if result == resultError {
		m.reconcileErrors.WithLabelValues(controller).Inc()
	}
	m.reconciles.WithLabelValues(controller, result).Inc()
}

// registrar registers collectors, keeping the first error and reusing
// collectors that are already registered.
type registrar struct {
	reg prometheus.Registerer
	err error
}

func register[C prometheus.Collector](r *registrar, c C) C {
	if r.reg == nil {
		return c
	}
	if err := r.reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if r.err == nil {
			r.err = err
		}
	}
	return c
}

func (r *registrar) gaugeVec(o prometheus.GaugeOpts, l []string) *prometheus.GaugeVec {
	return register(r, prometheus.NewGaugeVec(o, l))
}

func (r *registrar) counterVec(o prometheus.CounterOpts, l []string) *prometheus.CounterVec {
	return register(r, prometheus.NewCounterVec(o, l))
}

func (r *registrar) histogramVec(o prometheus.HistogramOpts, l []string) *prometheus.HistogramVec {
	return register(r, prometheus.NewHistogramVec(o, l))
}

func (r *registrar) counter(o prometheus.CounterOpts) prometheus.Counter {
	return register(r, prometheus.NewCounter(o))
}

// queueMetrics is a workqueue.MetricsProvider whose queue name is the
// controller label.
type queueMetrics struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, work              *prometheus.HistogramVec
}

var _ workqueue.MetricsProvider = (*queueMetrics)(nil)

func (q *queueMetrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	g := q.depth.WithLabelValues(name)
	g.Set(0) // a new queue (a new leadership term) starts empty
	return g
}

func (q *queueMetrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return q.adds.WithLabelValues(name)
}

func (q *queueMetrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return q.latency.WithLabelValues(name)
}

func (q *queueMetrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return q.work.WithLabelValues(name)
}

func (q *queueMetrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.unfinished.WithLabelValues(name)
}

func (q *queueMetrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.longest.WithLabelValues(name)
}

func (q *queueMetrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return q.retries.WithLabelValues(name)
}
