package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// gateRuntime holds every StartContainer call until `want` calls are in
// progress at once (or as many as remain of `total`), so a test sees
// whether the agent starts a burst's containers concurrently: if it started
// them one after another, the first call would wait for company that never
// comes, until the gate's deadline.
type gateRuntime struct {
	*fakeRuntime
	want, total int
	deadline    time.Duration

	mu                 sync.Mutex
	changed            chan struct{} // closed and replaced on every change
	inflight, finished int
	maxInflight        int
	timedOut           int // calls that passed the gate only at the deadline
}

func newGateRuntime(want, total int) *gateRuntime {
	return &gateRuntime{fakeRuntime: newFakeRuntime(), want: want, total: total, deadline: 30 * time.Second, changed: make(chan struct{})}
}

func (g *gateRuntime) broadcastLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *gateRuntime) StartContainer(ctx context.Context, sb *wrt.Sandbox, spec wrt.ContainerSpec) (string, error) {
	g.mu.Lock()
	g.inflight++
	g.maxInflight = max(g.maxInflight, g.inflight)
	g.broadcastLocked()
	timer := time.NewTimer(g.deadline)
	defer timer.Stop()
	for g.inflight < min(g.want, g.total-g.finished) {
		ch := g.changed
		g.mu.Unlock()
		expired := false
		select {
		case <-ch:
		case <-timer.C:
			expired = true
		case <-ctx.Done():
		}
		g.mu.Lock()
		if expired {
			g.timedOut++
			g.mu.Unlock()
			return g.finish(ctx, sb, spec)
		}
		if ctx.Err() != nil {
			g.inflight--
			g.broadcastLocked()
			g.mu.Unlock()
			return "", ctx.Err()
		}
	}
	g.mu.Unlock()
	return g.finish(ctx, sb, spec)
}

func (g *gateRuntime) finish(ctx context.Context, sb *wrt.Sandbox, spec wrt.ContainerSpec) (string, error) {
	id, err := g.fakeRuntime.StartContainer(ctx, sb, spec)
	g.mu.Lock()
	g.inflight--
	g.finished++
	g.broadcastLocked()
	g.mu.Unlock()
	return id, err
}

func (g *gateRuntime) stats() (maxInflight, timedOut, finished int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxInflight, g.timedOut, g.finished
}

// TestBurstStartsConcurrently creates a burst of pods at once: the agent
// must have all their container starts in progress at the same time (the
// runtime's gate only lets them through together), and every pod must
// reach Running.
func TestBurstStartsConcurrently(t *testing.T) {
	t.Parallel()
	const n = 6
	tc := startCluster(t, clusterOptions{})
	g := newGateRuntime(n, n)
	tc.startAgent(t, "w1", func(c *Config) {
		c.Runtime, c.Images, c.testProber = g, g.fakeRuntime, newFakeProber()
		c.MaxParallelStarts = n
	})
	tc.waitNodeReady(t, "w1", "True", 30*time.Second)
	createBurst(t, tc, "burst", n)
	for i := range n {
		tc.waitPod(t, fmt.Sprintf("burst-%d", i), 60*time.Second, "Running", phaseIs("Running"))
	}
	maxIn, timedOut, finished := g.stats()
	if maxIn != n || timedOut != 0 || finished != n {
		t.Fatalf("container starts: at most %d at once (want %d), %d passed the gate only at its deadline (want 0), %d finished",
			maxIn, n, timedOut, finished)
	}
}

// TestMaxParallelStartsBounds checks the bound on starts in progress: with
// MaxParallelStarts 2, a burst of 5 pods has exactly 2 starts in progress
// at a time (the gate holds each until a second one arrives), and all
// start.
func TestMaxParallelStartsBounds(t *testing.T) {
	t.Parallel()
	const n, limit = 5, 2
	tc := startCluster(t, clusterOptions{})
	g := newGateRuntime(limit, n)
	tc.startAgent(t, "w1", func(c *Config) {
		c.Runtime, c.Images, c.testProber = g, g.fakeRuntime, newFakeProber()
		c.MaxParallelStarts = limit
	})
	tc.waitNodeReady(t, "w1", "True", 30*time.Second)
	createBurst(t, tc, "bounded", n)
	for i := range n {
		tc.waitPod(t, fmt.Sprintf("bounded-%d", i), 60*time.Second, "Running", phaseIs("Running"))
	}
	maxIn, timedOut, finished := g.stats()
	if maxIn != limit || timedOut != 0 || finished != n {
		t.Fatalf("container starts: at most %d at once (want exactly %d), %d passed the gate only at its deadline (want 0), %d finished",
			maxIn, limit, timedOut, finished)
	}
}

func createBurst(t *testing.T, tc *testCluster, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			obj := testPod(fmt.Sprintf("%s-%d", prefix, i), "w1", ctr("main", "run"))
			_, errs[i] = tc.api.Create(ctxFor(t, 10*time.Second), obj)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %s-%d: %v", prefix, i, err)
		}
	}
}

// slowSandboxRuntime takes at least delay to create a pod's sandbox, as a
// network namespace and a veth take on a busy node.
type slowSandboxRuntime struct {
	*fakeRuntime
	delay time.Duration
}

func (s *slowSandboxRuntime) CreateSandbox(ctx context.Context, podUID string, opts wrt.SandboxOptions) (*wrt.Sandbox, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.fakeRuntime.CreateSandbox(ctx, podUID, opts)
}

// TestStartedContainerLogsSetup: the "started container" line says how
// long the pod's sandbox took before it (the pod start benchmark reads it
// as "of which pod setup").
func TestStartedContainerLogsSetup(t *testing.T) {
	t.Parallel()
	const delay = 40 * time.Millisecond
	tc := startCluster(t, clusterOptions{})
	rt := &slowSandboxRuntime{fakeRuntime: newFakeRuntime(), delay: delay}
	logs := &syncBuffer{}
	tc.startAgent(t, "w1", func(c *Config) {
		c.Runtime, c.Images, c.testProber = rt, rt.fakeRuntime, newFakeProber()
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	tc.waitNodeReady(t, "w1", "True", 30*time.Second)
	createBurst(t, tc, "setup", 1)
	tc.waitPod(t, "setup-0", 60*time.Second, "Running", phaseIs("Running"))
	var line struct {
		Msg   string `json:"msg"`
		Pod   string `json:"pod"`
		Setup int64  `json:"setup"` // slog's JSON: nanoseconds
	}
	found := false
	for _, l := range strings.Split(logs.String(), "\n") {
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "started container" && line.Pod == "default/setup-0" {
			found = true
			break
		}
	}
	if !found {
		t.Fatalf("no \"started container\" line for default/setup-0 in:\n%s", logs.String())
	}
	if got := time.Duration(line.Setup); got < delay {
		t.Errorf("started container: setup %s, want at least the sandbox's %s", got, delay)
	}
}
