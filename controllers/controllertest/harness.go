package controllertest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Clock is a settable clock.PassiveClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Since returns Now() - t.
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Step moves the clock forward by d.
func (c *Clock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Recorder is an in-memory controllers.EventRecorder.
type Recorder struct {
	mu     sync.Mutex
	events []string
}

// Event implements controllers.EventRecorder.
func (r *Recorder) Event(obj *pb.Object, eventType, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s %s: %s", eventType, obj.KindName(), obj.Meta().Key(), reason, message))
}

// Eventf implements controllers.EventRecorder.
func (r *Recorder) Eventf(obj *pb.Object, eventType, reason, format string, args ...any) {
	r.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

// Events returns what was recorded, each as "Type Kind ns/name Reason: message".
func (r *Recorder) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// Harness runs informers over a Fake for one test.
type Harness struct {
	T         testing.TB
	Fake      *Fake
	Clock     *Clock
	Recorder  *Recorder
	Informers *controllers.InformerFactory
	Logger    *slog.Logger

	ctx     context.Context
	started bool
}

// Epoch is the Harness clock's starting time.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// NewHarness returns a Harness whose Fake holds objs. Informers stop when
// the test ends.
func NewHarness(t testing.TB, objs ...*pb.Object) *Harness {
	clk := NewClock(Epoch)
	fake := NewFake(clk, objs...)
	level := slog.LevelError
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	if os.Getenv("CONTROLLERTEST_QUIET") != "" {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Harness{
		T: t, Fake: fake, Clock: clk, Recorder: &Recorder{}, Logger: log,
		Informers: controllers.NewInformerFactory(fake, log, 0), ctx: ctx,
	}
	t.Cleanup(func() {
		cancel()
		h.Informers.Wait()
	})
	return h
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Context is cancelled when the test ends.
func (h *Harness) Context() context.Context { return h.ctx }

// Env returns an Env for a controller named name, wired to the Harness.
func (h *Harness) Env(name string) controllers.Env {
	return controllers.Env{
		Name: name, Cluster: h.Fake, Informers: h.Informers, Recorder: h.Recorder,
		Logger: h.Logger.With("controller", name), Clock: h.Clock, Workers: 2,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 50 * time.Millisecond,
	}
}

// Start starts the informers asked for so far (and later ones as they are
// asked for) and waits until they hold everything in the Fake.
func (h *Harness) Start() {
	h.T.Helper()
	h.Informers.Start(h.ctx)
	h.started = true
	h.WaitForCache()
}

// WaitForCache waits until every informer holds the Fake's latest change of
// its kind.
func (h *Harness) WaitForCache() {
	h.T.Helper()
	if !h.started {
		h.Start()
		return
	}
	h.Eventually(func() bool {
		for _, inf := range h.Informers.Informers() {
			// Handled, not just cached: handlers record what a
			// reconcile reads besides the cache (expectations).
			if !inf.HasSynced() || inf.HandledResourceVersion() < h.Fake.KindVersion(inf.Kind()) {
				return false
			}
		}
		return true
	}, "informer caches to catch up with the fake")
}

// Reconcile waits for the caches, runs r for key once and fails the test on
// an error.
func (h *Harness) Reconcile(r controllers.Reconciler, key string) controllers.Result {
	h.T.Helper()
	h.WaitForCache()
	res, err := r.Reconcile(h.ctx, key)
	if err != nil {
		h.T.Fatalf("reconcile %s: %v", key, err)
	}
	return res
}

// Eventually polls cond until it holds, failing the test after 10 s.
func (h *Harness) Eventually(cond func() bool, what string) {
	h.T.Helper()
	Eventually(h.T, 10*time.Second, cond, what)
}

// Eventually polls cond every few milliseconds until it holds, failing t
// after timeout. Use it instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(wait) // polling interval, not synchronisation
		wait = min(wait*2, 20*time.Millisecond)
	}
}
