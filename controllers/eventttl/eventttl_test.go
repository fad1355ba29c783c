package eventttl

import (
	"slices"
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
