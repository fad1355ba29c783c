package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	pb "github.com/skiff-sh/skiff/proto"
)

// Config configures a Manager.
type Config struct {
	// Cluster is how controllers reach the store: on a master, an adapter
	// over the local server; out of process, the API client.
	Cluster Cluster
	Logger  *slog.Logger
	// Registerer receives the controllers' metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Registrations are the controllers that can run, usually
	// builtin.Registrations(builtin.DefaultConfig()).
	Registrations []Registration
	// Controllers selects which run: "*" (the default-enabled ones),
	// "name", "-name" (the --controllers flag, see Select).
	Controllers []string
	Clock       clock.PassiveClock
	// Workers is each Loop's default number of concurrent reconciles.
	Workers int
	// ResyncPeriod re-delivers every cached object to the handlers this
	// often (0 disables): a safety net, not a mechanism.
	ResyncPeriod time.Duration
	// RetryBaseDelay and RetryMaxDelay bound the per-key exponential
	// backoff of failed reconciles.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration
	// Host names this master in the events it writes.
	Host string
	// EventQueueSize bounds distinct events waiting to be written.
	EventQueueSize int
}

// DefaultConfig returns a Config with every default set; Cluster and
// Registrations are left for the caller.
func DefaultConfig() Config {
	return Config{
		Logger:         slog.New(slog.DiscardHandler),
		Controllers:    []string{"*"},
		Clock:          clock.RealClock{},
		Workers:        2,
		ResyncPeriod:   10 * time.Minute,
		RetryBaseDelay: 5 * time.Millisecond,
		RetryMaxDelay:  time.Minute,
		EventQueueSize: 1000,
	}
}

// Validate reports the first invalid field, by name.
func (c Config) Validate() error {
	switch {
	case c.Cluster == nil:
		return errors.New("controllers config: Cluster is required")
	case c.Logger == nil:
		return errors.New("controllers config: Logger is required")
	case c.Clock == nil:
		return errors.New("controllers config: Clock is required")
	case c.Workers <= 0:
		return fmt.Errorf("controllers config: Workers must be positive, got %d", c.Workers)
	case c.ResyncPeriod < 0:
		return fmt.Errorf("controllers config: ResyncPeriod must not be negative, got %s", c.ResyncPeriod)
	case c.RetryBaseDelay <= 0 || c.RetryMaxDelay < c.RetryBaseDelay:
		return fmt.Errorf("controllers config: RetryBaseDelay (%s) must be positive and at most RetryMaxDelay (%s)", c.RetryBaseDelay, c.RetryMaxDelay)
	case c.EventQueueSize <= 0:
		return fmt.Errorf("controllers config: EventQueueSize must be positive, got %d", c.EventQueueSize)
	}
	seen := make(map[string]bool)
	for i, r := range c.Registrations {
		switch {
		case r.Name == "":
			return fmt.Errorf("controllers config: Registrations[%d].Name is empty", i)
		case r.Name == "*" || r.Name[0] == '-':
			return fmt.Errorf("controllers config: Registrations[%d].Name %q is not a valid name", i, r.Name)
		case seen[r.Name]:
			return fmt.Errorf("controllers config: Registrations[%d].Name %q is registered twice", i, r.Name)
		case r.New == nil:
			return fmt.Errorf("controllers config: Registrations[%d] (%s): New is nil", i, r.Name)
		}
		seen[r.Name] = true
	}
	if _, err := Select(c.Controllers, c.Registrations); err != nil {
		return fmt.Errorf("controllers config: Controllers: %w", err)
	}
	return nil
}

// Manager runs the selected controllers. It is a server.LeaderTask: the
// server calls Run each time this master becomes leader (after a Raft
// barrier) and cancels its context the moment leadership is lost. Every
// run starts from scratch: new informers (a fresh list), new queues, new
// controller instances.
type Manager struct {
	cfg     Config
	enabled []Registration
	metrics *metrics
}

// NewManager validates cfg and registers the metrics.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	enabled, _ := Select(cfg.Controllers, cfg.Registrations)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("controllers: register metrics: %w", err)
	}
	return &Manager{cfg: cfg, enabled: enabled, metrics: m}, nil
}

// Name is the manager's name as a leader task.
func (m *Manager) Name() string { return "controller-manager" }

// Enabled returns the names of the controllers that run.
func (m *Manager) Enabled() []string {
	out := make([]string, 0, len(m.enabled))
	for _, r := range m.enabled {
		out = append(out, r.Name)
	}
	return out
}

// Run builds and runs every enabled controller until ctx ends, then stops
// them all and returns nil once every goroutine it started has finished.
// If a controller fails (its Run returns an error), Run stops the others
// and returns that error.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := m.cfg.Logger
	cluster := fencedCluster{Cluster: m.cfg.Cluster, ctx: ctx}
	// Informers only read: they list and watch through the cluster itself,
	// which may list metadata cheaply (metadataLister).
	factory := NewInformerFactory(m.cfg.Cluster, log, m.cfg.ResyncPeriod)
	factory.metrics = m.metrics.informer
	rec := NewRecorder(RecorderConfig{Writer: cluster, Logger: log, Clock: m.cfg.Clock, Host: m.cfg.Host, MaxPending: m.cfg.EventQueueSize})
	rec.metrics = m.metrics

	ctrls := make([]Controller, 0, len(m.enabled))
	for _, r := range m.enabled {
		env := Env{
			Name: r.Name, Cluster: cluster, Informers: factory, Recorder: rec.For(r.Name),
			Logger: log.With("controller", r.Name), Clock: m.cfg.Clock, Workers: m.cfg.Workers,
			RetryBaseDelay: m.cfg.RetryBaseDelay, RetryMaxDelay: m.cfg.RetryMaxDelay,
			metrics: m.metrics,
		}
		c, err := r.New(env)
		if err != nil {
			return fmt.Errorf("controllers: build %s: %w", r.Name, err)
		}
		ctrls = append(ctrls, c)
	}

	var (
		wg       sync.WaitGroup
		failOnce sync.Once
		failure  error
	)
	factory.Start(ctx)
	wg.Go(func() { rec.Run(ctx) })
	for _, c := range ctrls {
		wg.Go(func() {
			running := m.metrics.running.WithLabelValues(c.Name())
			running.Set(1)
			defer running.Set(0)
			err := runController(ctx, c)
			if err != nil && ctx.Err() == nil {
				failOnce.Do(func() { failure = fmt.Errorf("controllers: %s: %w", c.Name(), err) })
				log.Error("controller failed; stopping every controller", "controller", c.Name(), "err", err)
				cancel()
			}
		})
	}
	log.Info("controllers started", "controllers", m.Enabled())
	<-ctx.Done()
	wg.Wait()
	factory.Wait()
	log.Info("controllers stopped")
	return failure
}

// runController runs c, turning a panic into an error so that a bug in one
// controller cannot kill the master.
func runController(ctx context.Context, c Controller) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return c.Run(ctx)
}

// fencedCluster refuses writes once the run's context has ended, so that a
// controller still finishing a reconcile after leadership was lost writes
// nothing more. (The server refuses writes from a deposed leader as well;
// this closes the window before it notices.)
type fencedCluster struct {
	Cluster
	ctx context.Context
}

func (f fencedCluster) fenced() error {
	if f.ctx.Err() != nil {
		return pb.NotAppliedError("controllers stopped (leadership lost or shutting down): write not applied")
	}
	return nil
}

func (f fencedCluster) Create(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	if err := f.fenced(); err != nil {
		return nil, err
	}
	return f.Cluster.Create(ctx, obj)
}

func (f fencedCluster) Update(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	if err := f.fenced(); err != nil {
		return nil, err
	}
	return f.Cluster.Update(ctx, obj)
}

func (f fencedCluster) UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	if err := f.fenced(); err != nil {
		return nil, err
	}
	return f.Cluster.UpdateStatus(ctx, obj)
}

func (f fencedCluster) Delete(ctx context.Context, op *pb.DeleteOp) error {
	if err := f.fenced(); err != nil {
		return err
	}
	return f.Cluster.Delete(ctx, op)
}

func (f fencedCluster) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	if err := f.fenced(); err != nil {
		return nil, err
	}
	return f.Cluster.Bind(ctx, binds)
}
