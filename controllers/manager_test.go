package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func reg(name string, disabled bool) controllers.Registration {
	return controllers.Registration{Name: name, DisabledByDefault: disabled, New: func(controllers.Env) (controllers.Controller, error) { return nil, nil }}
}

func names(regs []controllers.Registration) []string {
	var out []string
	for _, r := range regs {
		out = append(out, r.Name)
	}
	return out
}

func TestSelect(t *testing.T) {
	regs := []controllers.Registration{reg("scheduler", false), reg("replicaset", false), reg("deployment", false), reg("eventgc", true)}
	tests := []struct {
		flag    string
		want    []string
		wantErr string
	}{
		{flag: "*", want: []string{"scheduler", "replicaset", "deployment"}},
		{flag: "", want: nil},
		{flag: "*,-scheduler", want: []string{"replicaset", "deployment"}},
		{flag: "-scheduler,*", want: []string{"replicaset", "deployment"}},
		{flag: "*,eventgc", want: []string{"scheduler", "replicaset", "deployment", "eventgc"}},
		{flag: "scheduler", want: []string{"scheduler"}},
		{flag: " scheduler , replicaset ", want: []string{"scheduler", "replicaset"}},
		{flag: "*,-bogus", wantErr: `controllers: "bogus": unknown controller (known: deployment, eventgc, replicaset, scheduler)`},
		{flag: "scheduler,-scheduler", wantErr: `"scheduler" is both enabled and disabled`},
	}
	for _, tc := range tests {
		t.Run(tc.flag, func(t *testing.T) {
			got, err := controllers.Select(controllers.ParseControllers(tc.flag), regs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "unknown") && !errors.Is(err, controllers.ErrUnknownController) {
					t.Errorf("err does not wrap ErrUnknownController")
				}
				return
			}
			if err != nil || !slices.Equal(names(got), tc.want) {
				t.Errorf("Select = %v, %v; want %v", names(got), err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	fake := controllertest.NewFake(nil)
	base := func() controllers.Config {
		c := controllers.DefaultConfig()
		c.Cluster = fake
		c.Registrations = []controllers.Registration{reg("a", false)}
		return c
	}
	tests := []struct {
		name   string
		mutate func(*controllers.Config)
		want   string
	}{
		{"no cluster", func(c *controllers.Config) { c.Cluster = nil }, "Cluster"},
		{"workers", func(c *controllers.Config) { c.Workers = 0 }, "Workers"},
		{"retry", func(c *controllers.Config) { c.RetryMaxDelay = time.Nanosecond }, "RetryBaseDelay"},
		{"duplicate", func(c *controllers.Config) { c.Registrations = append(c.Registrations, reg("a", false)) }, "registered twice"},
		{"unknown", func(c *controllers.Config) { c.Controllers = []string{"*", "-b"} }, `Controllers: controllers: "b": unknown controller`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := base().Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// blocker is a controller that blocks until its context ends, writing
// through the Cluster when asked.
type blocker struct {
	name    string
	env     controllers.Env
	started chan struct{}
	stopped atomic.Bool
}

func (b *blocker) Name() string { return b.name }
func (b *blocker) Run(ctx context.Context) error {
	close(b.started)
	<-ctx.Done()
	b.stopped.Store(true)
	return nil
}

func TestManagerStopsEveryControllerPromptly(t *testing.T) {
	fake := controllertest.NewFake(nil, pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "p"}}))
	var mu sync.Mutex
	built := map[string]*blocker{}
	var regs []controllers.Registration
	for _, n := range []string{"one", "two", "three"} {
		regs = append(regs, controllers.Registration{Name: n, New: func(env controllers.Env) (controllers.Controller, error) {
			// Controllers share informers; ask for one so the manager has
			// watches to stop too.
			env.Informers.For("Pod")
			b := &blocker{name: n, env: env, started: make(chan struct{})}
			mu.Lock()
			built[n] = b
			mu.Unlock()
			return b, nil
		}})
	}
	// A real Loop as well.
	regs = append(regs, controllers.Registration{Name: "loop", New: func(env controllers.Env) (controllers.Controller, error) {
		pods := env.Informers.For("Pod")
		l := controllers.NewLoop(env, controllers.ReconcilerFunc(func(ctx context.Context, key string) (controllers.Result, error) {
			return controllers.Result{}, nil
		}), controllers.LoopOptions{WaitFor: []*controllers.Informer{pods}})
		pods.AddHandler(controllers.EnqueueObject(l.Queue()))
		return l, nil
	}})
	cfg := controllers.DefaultConfig()
	cfg.Cluster = fake
	cfg.Registrations = regs
	cfg.Controllers = []string{"*", "-three"}
	registry := prometheus.NewRegistry()
	cfg.Registerer = registry
	m, err := controllers.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Enabled(); !slices.Equal(got, []string{"one", "two", "loop"}) {
		t.Errorf("Enabled = %v", got)
	}

	before := runtime.NumGoroutine()
	// Run twice, as across two leadership terms: each run starts afresh
	// and the metrics are registered once.
	for term := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		controllertest.Eventually(t, 5*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(built) == 2
		}, "controllers to be built")
		mu.Lock()
		one, two := built["one"], built["two"]
		mu.Unlock()
		<-one.started
		<-two.started

		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("term %d: Run = %v", term, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("term %d: Run did not return within 5s of cancel", term)
		}
		// Generous for a loaded -race run; typically well under 10ms.
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("term %d: stopping took %s", term, d)
		} else {
			t.Logf("term %d: stopped in %s", term, d)
		}
		if !one.stopped.Load() || !two.stopped.Load() {
			t.Errorf("term %d: a controller was still running after Run returned", term)
		}
		// A controller that outlives the run cannot write.
		_, err := one.env.Cluster.Create(context.Background(), pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "late"}}))
		if status.Code(err) != codes.Unavailable || !pb.IsNotApplied(err) {
			t.Errorf("term %d: write after stop = %v, want Unavailable, not applied", term, err)
		}
		mu.Lock()
		clear(built)
		mu.Unlock()
	}
	controllertest.Eventually(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= before+2 }, "goroutines to end")

	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range families {
		got = append(got, f.GetName())
	}
	// Histogram vectors appear in Gather only after a first observation,
	// which this test's controllers need not make; these gauges always do.
	for _, want := range []string{"skiff_controller_queue_depth", "skiff_controller_running", "skiff_informer_objects"} {
		if !slices.Contains(got, want) {
			t.Errorf("metric %s not registered (have %v)", want, got)
		}
	}
}

type failing struct{}

func (failing) Name() string { return "failing" }
func (failing) Run(ctx context.Context) error {
	return errors.New("cannot go on")
}

func TestManagerReturnsAControllersFailure(t *testing.T) {
	b := &blocker{name: "ok", started: make(chan struct{})}
	cfg := controllers.DefaultConfig()
	cfg.Cluster = controllertest.NewFake(nil)
	cfg.Registrations = []controllers.Registration{
		{Name: "ok", New: func(controllers.Env) (controllers.Controller, error) { return b, nil }},
		{Name: "failing", New: func(controllers.Env) (controllers.Controller, error) { return failing{}, nil }},
	}
	m, err := controllers.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "failing: cannot go on") {
		t.Errorf("Run = %v, want the failure", err)
	}
	if !b.stopped.Load() {
		t.Error("the other controller was not stopped")
	}
	if ctx.Err() != nil {
		t.Error("Run waited for the context instead of returning on failure")
	}
}

func TestLoopRetriesWithBackoffAndRequeues(t *testing.T) {
	h := controllertest.NewHarness(t, pod("a", "p1", nil, ""))
	env := h.Env("test")
	var mu sync.Mutex
	calls := map[string]int{}
	pods := h.Informers.For("Pod")
	l := controllers.NewLoop(env, controllers.ReconcilerFunc(func(ctx context.Context, key string) (controllers.Result, error) {
		mu.Lock()
		calls[key]++
		n := calls[key]
		mu.Unlock()
		switch {
		case key == "a/p1" && n < 3:
			return controllers.Result{}, fmt.Errorf("attempt %d fails", n)
		case key == "a/p1" && n == 3:
			return controllers.Result{RequeueAfter: time.Millisecond}, nil
		case key == "a/panics" && n == 1:
			panic("bug")
		}
		return controllers.Result{}, nil
	}), controllers.LoopOptions{WaitFor: []*controllers.Informer{pods}})
	pods.AddHandler(controllers.EnqueueObject(l.Queue()))
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	h.Fake.Add(pod("a", "panics", nil, ""))
	h.Eventually(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls["a/p1"] == 4 && calls["a/panics"] == 2
	}, "two failures, a requeue, a panic and their retries")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
