package eventttl

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func event(name string, last time.Time) *pb.Object {
	return pb.Wrap(&pb.Event{
		Metadata:      &pb.ObjectMeta{Name: name, Namespace: "default"},
		LastTimestamp: timestamppb.New(last),
	})
}

func TestDeletesExpiredEvents(t *testing.T) {
	h := controllertest.NewHarness(t)
	h.Fake.Add(event("old", h.Clock.Now().Add(-2*time.Hour)))
	h.Fake.Add(event("recent", h.Clock.Now().Add(-10*time.Minute)))
	c, err := New(h.Env(Name), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	h.Reconcile(c, "default/old")
	if res := h.Reconcile(c, "default/recent"); res.RequeueAfter != 50*time.Minute {
		t.Errorf("RequeueAfter = %s, want 50m", res.RequeueAfter)
	}
	if got := h.Fake.ActionStrings(); !slices.Equal(got, []string{"delete Event default/old"}) {
		t.Errorf("actions = %q", got)
	}
	h.Clock.Step(50 * time.Minute)
	h.Reconcile(c, "default/recent")
	if n := len(h.Fake.Objects("Event")); n != 0 {
		t.Errorf("%d events left, want 0", n)
	}
	if err := (Config{}).Validate(); err == nil {
		t.Error("zero TTL accepted")
	}
}

// TestDeletesOldestEventsBeyondMaxEvents: events younger than the TTL are
// still deleted, oldest first, once there are more than MaxEvents.
func TestDeletesOldestEventsBeyondMaxEvents(t *testing.T) {
	h := controllertest.NewHarness(t)
	now := h.Clock.Now()
	// e00 is the oldest; names are not in age order, so the order comes
	// from lastTimestamp.
	for i := range 15 {
		h.Fake.Add(event(fmt.Sprintf("e%02d", (i*7)%15), now.Add(-time.Duration(15-i)*time.Minute)))
	}
	age := map[string]int{} // name -> minutes old
	for _, o := range h.Fake.Objects("Event") {
		age[o.Meta().GetName()] = int(now.Sub(o.GetEvent().GetLastTimestamp().AsTime()) / time.Minute)
	}
	cfg := DefaultConfig()
	cfg.MaxEvents = 10 // a trim leaves 9: a tenth below the cap
	c, err := New(h.Env(Name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	h.Reconcile(c, capKey)
	left := h.Fake.Objects("Event")
	if len(left) != 9 {
		t.Fatalf("%d events left, want 9", len(left))
	}
	for _, o := range left {
		if a := age[o.Meta().GetName()]; a > 9 {
			t.Errorf("event %s, %d minutes old, kept over younger ones", o.Meta().GetName(), a)
		}
	}
	deletes := func() int {
		n := 0
		for _, a := range h.Fake.ActionStrings() {
			if strings.HasPrefix(a, "delete Event") {
				n++
			}
		}
		return n
	}
	if n := deletes(); n != 6 {
		t.Errorf("%d deletes, want 6: %q", n, h.Fake.ActionStrings())
	}
	// Under the cap, a trim deletes nothing; one more event reaches the
	// cap, and still nothing is deleted (no trim per event at the cap).
	h.Reconcile(c, capKey)
	h.Fake.Add(event("at-cap", now))
	h.Reconcile(c, capKey)
	if n := len(h.Fake.Objects("Event")); n != 10 || deletes() != 6 {
		t.Errorf("%d events left and %d deletes after trims at the cap, want 10 and 6", n, deletes())
	}

	// Running, the controller trims as new events arrive.
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := range 3 {
		h.Fake.Add(event(fmt.Sprintf("new%d", i), now))
	}
	h.Eventually(func() bool {
		names := map[string]bool{}
		for _, o := range h.Fake.Objects("Event") {
			names[o.Meta().GetName()] = true
		}
		// Depending on how the arrivals and the trim interleave, the last
		// arrival may leave the store at the cap (10), not over it.
		return len(names) >= 9 && len(names) <= 10 && deletes() > 6 &&
			names["new0"] && names["new1"] && names["new2"] && names["at-cap"]
	}, "the new events kept and the oldest deleted down to 9 or 10")
}

// tenEventsAtTheCap starts a controller with a cap of 10 over events e00
// (the oldest, 10 minutes old) to e09 (1 minute old).
func tenEventsAtTheCap(t *testing.T) (*controllertest.Harness, *Controller, time.Time) {
	t.Helper()
	h := controllertest.NewHarness(t)
	now := h.Clock.Now()
	for i := range 10 {
		h.Fake.Add(event(fmt.Sprintf("e%02d", i), now.Add(-time.Duration(10-i)*time.Minute)))
	}
	cfg := DefaultConfig()
	cfg.MaxEvents = 10
	c, err := New(h.Env(Name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	return h, c, now
}

// An event that happens again becomes young: the next trim deletes the
// events that are now the oldest, not it.
func TestTrimFollowsEventsThatHappenAgain(t *testing.T) {
	h, c, now := tenEventsAtTheCap(t)
	again := h.Fake.Get("Event", "default", "e00").Clone()
	again.GetEvent().Count = 2
	again.GetEvent().LastTimestamp = timestamppb.New(now)
	h.Fake.Add(again)
	h.Fake.Add(event("new", now))
	h.Reconcile(c, capKey)
	var left []string
	for _, o := range h.Fake.Objects("Event") {
		left = append(left, o.Meta().GetName())
	}
	slices.Sort(left)
	if want := []string{"e00", "e03", "e04", "e05", "e06", "e07", "e08", "e09", "new"}; !slices.Equal(left, want) {
		t.Errorf("events left %q, want %q (e01 and e02 the oldest)", left, want)
	}
}

// Events deleted by others (or expired) no longer count toward the cap,
// and events a trim deleted are not deleted again by the next trim, even
// before the cache shows them gone.
func TestTrimCountsOnlyLiveEvents(t *testing.T) {
	h, c, now := tenEventsAtTheCap(t)
	deletes := func() int {
		return len(slices.DeleteFunc(h.Fake.ActionStrings(), func(a string) bool { return !strings.HasPrefix(a, "delete Event") }))
	}
	for i := 5; i < 10; i++ { // the five youngest go
		if err := h.Fake.Delete(h.Context(), &pb.DeleteOp{Kind: "Event", Namespace: "default", Name: fmt.Sprintf("e%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		h.Fake.Add(event(fmt.Sprintf("new%d", i), now))
	}
	h.Reconcile(c, capKey)
	if n := len(h.Fake.Objects("Event")); n != 8 || deletes() != 5 {
		t.Errorf("8 live events under a cap of 10: %d left after a trim, %d deletes (want 8, 5)", n, deletes())
	}
	for i := range 5 {
		h.Fake.Add(event(fmt.Sprintf("more%d", i), now))
	}
	h.Reconcile(c, capKey)                      // 13 events: the 4 oldest go
	if err := c.trim(h.Context()); err != nil { // at once: nothing more to delete
		t.Fatal(err)
	}
	if n := len(h.Fake.Objects("Event")); n != 9 || deletes() != 9 {
		t.Errorf("after two trims of 13 events: %d left, %d deletes (want 9, 5+4)", n, deletes())
	}
}

func TestUncappedKeepsEveryYoungEvent(t *testing.T) {
	h := controllertest.NewHarness(t)
	for i := range 20 {
		h.Fake.Add(event(fmt.Sprintf("e%d", i), h.Clock.Now()))
	}
	c, err := New(h.Env(Name), Config{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	h.Reconcile(c, capKey)
	if n := len(h.Fake.Objects("Event")); n != 20 {
		t.Errorf("%d events left without a cap, want 20", n)
	}
	if err := (Config{TTL: time.Hour, MaxEvents: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "MaxEvents") {
		t.Errorf("Validate = %v, want an error naming MaxEvents", err)
	}
}
