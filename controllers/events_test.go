package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func TestRecorderFoldsRepeatsIntoCount(t *testing.T) {
	clk := controllertest.NewClock(controllertest.Epoch)
	fake := controllertest.NewFake(clk)
	rec := controllers.NewRecorder(controllers.RecorderConfig{Writer: fake, Clock: clk, Host: "m1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	p := pod("default", "web-1", nil, "")
	p.Meta().Uid = "uid-web-1"
	node := pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "n1", Uid: "uid-n1"}})
	r := rec.For("scheduler")
	for range 3 {
		r.Event(p, controllers.EventTypeWarning, "FailedScheduling", "0/1 nodes are available")
		clk.Step(time.Second)
	}
	r.Event(p, controllers.EventTypeNormal, "Scheduled", "Successfully assigned default/web-1 to n1")
	r.Eventf(node, controllers.EventTypeNormal, "NodeReady", "Node %s is ready", "n1")

	controllertest.Eventually(t, 5*time.Second, func() bool {
		var total int32
		for _, o := range fake.Objects("Event") {
			total += o.GetEvent().GetCount()
		}
		return total == 5
	}, "five occurrences written")
	evs := fake.Objects("Event")
	if len(evs) != 3 {
		t.Fatalf("events = %d, want 3 (repeats folded)", len(evs))
	}
	var failed *pb.Event
	for _, o := range evs {
		if o.GetEvent().GetReason() == "FailedScheduling" {
			failed = o.GetEvent()
		}
		if o.GetEvent().GetReason() == "NodeReady" && o.Meta().GetNamespace() != "default" {
			t.Errorf("event about a node in namespace %q, want default", o.Meta().GetNamespace())
		}
	}
	if failed == nil {
		t.Fatal("no FailedScheduling event")
	}
	if failed.GetCount() != 3 || failed.GetType() != "Warning" || failed.GetSource().GetComponent() != "scheduler" || failed.GetSource().GetHost() != "m1" {
		t.Errorf("event = %v", failed)
	}
	io := failed.GetInvolvedObject()
	if io.GetKind() != "Pod" || io.GetName() != "web-1" || io.GetNamespace() != "default" || io.GetUid() != "uid-web-1" || io.GetApiVersion() != "v1" {
		t.Errorf("involvedObject = %v", io)
	}
	if !failed.GetLastTimestamp().AsTime().After(failed.GetFirstTimestamp().AsTime()) && failed.GetCount() > 1 {
		t.Errorf("timestamps first %v last %v", failed.GetFirstTimestamp().AsTime(), failed.GetLastTimestamp().AsTime())
	}

	// A repeat after the recorder wrote the event updates it.
	r.Event(p, controllers.EventTypeWarning, "FailedScheduling", "0/1 nodes are available")
	controllertest.Eventually(t, 5*time.Second, func() bool {
		for _, o := range fake.Objects("Event") {
			if o.GetEvent().GetReason() == "FailedScheduling" && o.GetEvent().GetCount() == 4 {
				return true
			}
		}
		return false
	}, "the count to reach 4")
	if n := len(fake.Objects("Event")); n != 3 {
		t.Errorf("events = %d, want still 3", n)
	}
}

func TestRecorderIsBounded(t *testing.T) {
	fake := controllertest.NewFake(nil)
	rec := controllers.NewRecorder(controllers.RecorderConfig{Writer: fake, MaxPending: 10})
	r := rec.For("test")
	p := pod("default", "p", nil, "")
	for i := range 100 {
		r.Event(p, controllers.EventTypeNormal, "Reason", fmt.Sprintf("message %d", i))
	}
	r.Event(p, controllers.EventTypeNormal, "Long", strings.Repeat("x", 5000))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	controllertest.Eventually(t, 5*time.Second, func() bool { return len(fake.Objects("Event")) == 10 }, "10 events")
	cancel()
	<-done
	if n := len(fake.Objects("Event")); n != 10 {
		t.Errorf("events written = %d, want 10 (the rest dropped)", n)
	}
}

func TestExpectations(t *testing.T) {
	clk := controllertest.NewClock(controllertest.Epoch)
	e := controllers.NewExpectations(clk, time.Minute)
	if ok, _ := e.Satisfied("rs"); !ok {
		t.Error("nothing expected, not satisfied")
	}
	e.Expect("rs", "create a", "create b")
	e.Observe("rs", "create a")
	if ok, wait := e.Satisfied("rs"); ok || wait != time.Minute {
		t.Errorf("Satisfied = %v, %s; want false, 1m", ok, wait)
	}
	e.Observe("rs", "create b")
	if ok, _ := e.Satisfied("rs"); !ok {
		t.Error("all observed, not satisfied")
	}
	e.Expect("rs", "delete c")
	clk.Step(2 * time.Minute)
	if ok, _ := e.Satisfied("rs"); !ok {
		t.Error("lapsed expectations still pending")
	}
}

func TestWriteBarrier(t *testing.T) {
	h := controllertest.NewHarness(t, pod("a", "p1", nil, ""))
	inf := h.Informers.For("Pod")
	h.Start()
	w := controllers.NewWriteBarrier(inf)
	stored, err := h.Fake.Update(context.Background(), h.Fake.Get("Pod", "a", "p1"))
	if err != nil {
		t.Fatal(err)
	}
	stored.Meta().ResourceVersion = h.Fake.ResourceVersion() + 1 // a write the cache cannot have seen yet
	w.Wrote("owner", stored)
	if w.Ready("owner") {
		t.Error("Ready before the cache saw the write")
	}
	h.Fake.Mutate("Pod", "a", "p1", func(o *pb.Object) { o.Meta().Labels = map[string]string{"v": "2"} })
	h.Eventually(func() bool { return w.Ready("owner") }, "the barrier to open")
	if !w.Ready("other") {
		t.Error("a key with no writes is not ready")
	}
}

// TestRecorderCreatesNewEventsTogether: new events recorded together are
// created with one batch write where the cluster can batch.
func TestRecorderCreatesNewEventsTogether(t *testing.T) {
	clk := controllertest.NewClock(controllertest.Epoch)
	fake := &batchingFake{Fake: controllertest.NewFake(clk)}
	rec := controllers.NewRecorder(controllers.RecorderConfig{Writer: fake, Clock: clk, Host: "m1"})
	r := rec.For("replicaset-controller")
	for i := range 10 {
		p := pod("default", fmt.Sprintf("web-%d", i), nil, "")
		p.Meta().Uid = fmt.Sprintf("uid-%d", i)
		r.Event(p, controllers.EventTypeNormal, "SuccessfulCreate", "Created pod: "+p.Meta().GetName())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	controllertest.Eventually(t, 5*time.Second, func() bool { return len(fake.Objects("Event")) == 10 }, "ten events written")
	if creates, _ := fake.calls(); creates != 1 {
		t.Fatalf("%d batch creates for 10 new events recorded together, want 1", creates)
	}
}

// TestRecorderSpamFilter: a source may record a burst of events about one
// object, then one per interval; other sources and objects have buckets
// of their own.
func TestRecorderSpamFilter(t *testing.T) {
	clk := controllertest.NewClock(controllertest.Epoch)
	fake := controllertest.NewFake(clk)
	rec := controllers.NewRecorder(controllers.RecorderConfig{Writer: fake, Clock: clk, Host: "m1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	p := pod("default", "churn", nil, "")
	p.Meta().Uid = "uid-churn"
	q := pod("default", "quiet", nil, "")
	q.Meta().Uid = "uid-quiet"
	kubelet := rec.For("kubelet")
	for i := range 100 {
		kubelet.Eventf(p, controllers.EventTypeNormal, "Pulled", "pulled image v%d", i)
	}
	kubelet.Event(q, controllers.EventTypeNormal, "Pulled", "pulled image v1")
	rec.For("scheduler").Event(p, controllers.EventTypeNormal, "Scheduled", "assigned to n1")

	perObject := func() map[string]int {
		out := map[string]int{}
		for _, o := range fake.Objects("Event") {
			ev := o.GetEvent()
			out[ev.GetSource().GetComponent()+" "+ev.GetInvolvedObject().GetName()] += int(ev.GetCount())
		}
		return out
	}
	want := map[string]int{"kubelet churn": 25, "kubelet quiet": 1, "scheduler churn": 1}
	controllertest.Eventually(t, 5*time.Second, func() bool { return len(fake.Objects("Event")) == 27 }, "27 events")
	if got := perObject(); !maps.Equal(got, want) {
		t.Fatalf("events by source and object = %v, want %v (a burst of 25)", got, want)
	}

	// The bucket refills one token per 5 minutes: of three new events,
	// one is written.
	clk.Step(5 * time.Minute)
	for i := range 3 {
		kubelet.Eventf(p, controllers.EventTypeNormal, "Pulled", "pulled image w%d", i)
	}
	controllertest.Eventually(t, 5*time.Second, func() bool { return len(fake.Objects("Event")) == 28 }, "one more event")
	want["kubelet churn"] = 26
	if got := perObject(); !maps.Equal(got, want) {
		t.Errorf("after 5 minutes, events = %v, want %v", got, want)
	}
}

// TestRecorderSpamFilterMetric: under a Manager, filtered events are
// counted.
func TestRecorderSpamFilterMetric(t *testing.T) {
	fake := controllertest.NewFake(nil)
	registry := prometheus.NewRegistry()
	cfg := controllers.DefaultConfig()
	cfg.Cluster = fake
	cfg.Registerer = registry
	cfg.Registrations = []controllers.Registration{{Name: "noisy", New: func(env controllers.Env) (controllers.Controller, error) {
		p := pod("default", "p", nil, "")
		for i := range 40 {
			env.Recorder.Eventf(p, controllers.EventTypeNormal, "Noise", "message %d", i)
		}
		return &blocker{name: "noisy", env: env, started: make(chan struct{})}, nil
	}}}
	m, err := controllers.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	controllertest.Eventually(t, 5*time.Second, func() bool {
		return controllertest.Gathered(t, registry, "skiff_controller_events_written_total", nil) == 25
	}, "25 events written")
	if n := controllertest.Gathered(t, registry, "skiff_controller_events_spam_filtered_total", nil); n != 15 {
		t.Errorf("events_spam_filtered_total = %v, want 15", n)
	}
	if n := len(fake.Objects("Event")); n != 25 {
		t.Errorf("%d events stored, want 25", n)
	}
}
