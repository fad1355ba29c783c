package server

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// metrics lives in a per-Server registry rather than the global one: tests
// (and `skiff dev`) run several masters in one process.
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	applySeconds   prometheus.Histogram
	forwarded      *prometheus.CounterVec
	watchers       prometheus.Gauge
	logStoreStalls prometheus.Counter
	logBatch       prometheus.Histogram
	entryWrites    prometheus.Histogram
	leaderChanges  prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_api_requests_total",
			Help: "API requests handled, by gRPC method and status code.",
		}, []string{"method", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "skiff_api_request_duration_seconds",
			Help:    "Latency of unary API requests and of Lists (streamed in chunks), by gRPC method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skiff_raft_apply_duration_seconds",
			Help:    "Time from proposing a command on the leader to its commit and apply.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_api_forwarded_total",
			Help: "Requests a follower forwarded to the leader, by method.",
		}, []string{"method"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_api_watchers",
			Help: "Open watch streams on this master.",
		}),
		logStoreStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_raft_log_store_stalls_total",
			Help: "Leader log writes refused because the one before had not landed in LogStoreStallTimeout (the master steps down).",
		}),
		logBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skiff_raft_log_write_entries",
			Help:    "Entries per raft log write (one fsynced bolt commit): how well group commit batches.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		entryWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skiff_raft_entry_writes",
			Help:    "API writes per raft entry the leader proposed: writes of different objects released together share one entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_raft_leadership_gained_total",
			Help: "Times this master became leader.",
		}),
	}
	m.reg.MustRegister(m.requests, m.requestSeconds, m.applySeconds, m.forwarded, m.watchers,
		m.logStoreStalls, m.logBatch, m.entryWrites, m.leaderChanges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registerState adds the gauges read from raft and the store at scrape
// time, and the count of commit pushes (serialTransport.pushes).
func (m *metrics) registerState(r *raft.Raft, store *fsm.FSM, logs *logCache, pushes *atomic.Uint64) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "skiff_raft_commit_pushes_total",
			Help: "AppendEntries this master sent as leader only to tell a follower a new commit index that no entry would carry soon.",
		}, func() float64 { return float64(pushes.Load()) }),
		gauge("skiff_raft_state", "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
			func() float64 { return float64(r.State()) }),
		gauge("skiff_raft_term", "Current Raft term.", func() float64 { return float64(r.CurrentTerm()) }),
		gauge("skiff_raft_commit_index", "Raft commit index known to this master.",
			func() float64 { return float64(r.CommitIndex()) }),
		gauge("skiff_raft_last_index", "Last index in this master's Raft log.",
			func() float64 { return float64(r.LastIndex()) }),
		gauge("skiff_raft_applied_index", "Last index applied to this master's store.",
			func() float64 { return float64(store.AppliedIndex()) }),
		gauge("skiff_watch_window_events", "Watch events this master keeps for resuming watches.",
			func() float64 { n, _, _ := store.EventWindow(); return float64(n) }),
		gauge("skiff_watch_window_bytes", "Bytes of object encodings the retained watch events hold.",
			func() float64 { _, b, _ := store.EventWindow(); return float64(b) }),
		gauge("skiff_watch_window_start_index", "The oldest resourceVersion a watch may resume from on this master.",
			func() float64 { _, _, i := store.EventWindow(); return float64(i) }),
		gauge("skiff_raft_log_cache_bytes", "Bytes of recent Raft log entries this master keeps in memory.",
			func() float64 { _, b := logs.cached(); return float64(b) }),
		&objectCollector{store: store, desc: prometheus.NewDesc("skiff_objects",
			"Objects in this master's store, by kind.", []string{"kind"}, nil)},
	)
}

// objectCollector counts objects at scrape time: the store is in memory and
// counts are cheap, and a counter kept in step with Apply would have to
// live inside the FSM.
type objectCollector struct {
	store *fsm.FSM
	desc  *prometheus.Desc
}

func (c *objectCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *objectCollector) Collect(ch chan<- prometheus.Metric) {
	for _, k := range pb.Kinds() {
		n, err := c.store.Count(k.Kind)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k.Kind)
	}
}

// shortMethod turns "/skiff.v1.Cluster/Create" into "Cluster/Create".
func shortMethod(full string) string {
	return full[strings.LastIndex(full, ".")+1:]
}

func (m *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	method := shortMethod(info.FullMethod)
	m.requestSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	return resp, err
}

func (m *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	method := shortMethod(info.FullMethod)
	// A List streams its answer in chunks but is one request, timed as it
	// was when unary; a watch's duration is how long the client kept it.
	if info.FullMethod == pb.Cluster_List_FullMethodName {
		m.requestSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
	}
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	return err
}
