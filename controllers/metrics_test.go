package controllers_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

// TestLoopRecordsReconcileMetrics: a Loop's reconciles, failed ones too,
// reach the duration histogram and the outcome counters.
func TestLoopRecordsReconcileMetrics(t *testing.T) {
	h := controllertest.NewHarness(t, pod("a", "p1", nil, ""))
	registry := prometheus.NewRegistry()
	env, err := h.Env("test").WithMetrics(registry)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	pods := h.Informers.For("Pod")
	l := controllers.NewLoop(env, controllers.ReconcilerFunc(func(context.Context, string) (controllers.Result, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return controllers.Result{}, errors.New("the first attempt fails")
		}
		return controllers.Result{}, nil
	}), controllers.LoopOptions{WaitFor: []*controllers.Informer{pods}})
	pods.AddHandler(controllers.EnqueueObject(l.Queue()))
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ctl := map[string]string{"controller": "test"}
	h.Eventually(func() bool {
		return controllertest.Gathered(t, registry, "skiff_controller_reconcile_total", map[string]string{"controller": "test", "result": "success"}) == 1
	}, "the retry to succeed")
	if n := controllertest.Gathered(t, registry, "skiff_controller_reconcile_duration_seconds", ctl); n != 2 {
		t.Errorf("reconcile_duration_seconds count = %v, want 2", n)
	}
	if n := controllertest.Gathered(t, registry, "skiff_controller_reconcile_errors_total", ctl); n != 1 {
		t.Errorf("reconcile_errors_total = %v, want 1", n)
	}
	if n := controllertest.Gathered(t, registry, "skiff_controller_reconcile_total", map[string]string{"controller": "test", "result": "error"}); n != 1 {
		t.Errorf("reconcile_total{result=error} = %v, want 1", n)
	}
}

// TestEnvObserveReconcile: a controller that is no Loop records its work
// through its Env, into the Manager's registry.
func TestEnvObserveReconcile(t *testing.T) {
	registry := prometheus.NewRegistry()
	var env controllers.Env
	built := make(chan struct{})
	cfg := controllers.DefaultConfig()
	cfg.Cluster = controllertest.NewFake(nil, pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "p"}}))
	cfg.Registerer = registry
	cfg.Registrations = []controllers.Registration{{Name: "batcher", New: func(e controllers.Env) (controllers.Controller, error) {
		env = e
		close(built)
		return &blocker{name: "batcher", env: e, started: make(chan struct{})}, nil
	}}}
	m, err := controllers.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-built

	start := env.Clock.Now()
	env.ObserveReconcile(start, nil)
	env.ObserveReconcile(start, errors.New("bind failed"))
	env.CountObjects("scheduled", 3)
	env.CountObjects("unschedulable", 0) // nothing to count
	ctl := map[string]string{"controller": "batcher"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"skiff_controller_reconcile_duration_seconds", ctl, 2},
		{"skiff_controller_reconcile_errors_total", ctl, 1},
		{"skiff_controller_reconcile_total", map[string]string{"controller": "batcher", "result": "success"}, 1},
		{"skiff_controller_reconcile_total", map[string]string{"controller": "batcher", "result": "error"}, 1},
		{"skiff_controller_objects_total", map[string]string{"controller": "batcher", "result": "scheduled"}, 3},
		{"skiff_controller_objects_total", map[string]string{"controller": "batcher", "result": "unschedulable"}, 0},
	} {
		if got := controllertest.Gathered(t, registry, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// An Env without metrics (as a test harness makes) ignores them.
	var bare controllers.Env
	bare.ObserveReconcile(start, errors.New("ignored"))
	bare.CountObjects("scheduled", 1)
}
