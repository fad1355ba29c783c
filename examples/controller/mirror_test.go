package main

import (
	"context"
	"testing"

	"github.com/skiff-sh/skiff/controllers/controllertest"
	pb "github.com/skiff-sh/skiff/proto"
)

func namespace(name string) *pb.Object {
	return pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: name}})
}

func configMap(ns, name string, ann map[string]string, data map[string]string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}, Data: data})
}

// TestMirror runs the controller's loop over the fake cluster: copies
// appear, follow the source, are repaired, and go when no longer wanted.
func TestMirror(t *testing.T) {
	h := controllertest.NewHarness(t, namespace("default"), namespace("a"), namespace("b"),
		configMap("default", "settings", map[string]string{MirrorTo: "a, b, missing"}, map[string]string{"level": "info"}))
	m := NewMirror(h.Env(MirrorName))
	h.Start()
	ctx, cancel := context.WithCancel(h.Context())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	copyHas := func(ns, level string) func() bool {
		return func() bool {
			cp := h.Fake.Get("ConfigMap", ns, "settings")
			return cp != nil && cp.GetConfigMap().GetData()["level"] == level && cp.Meta().GetAnnotations()[MirrorOf] == "default/settings"
		}
	}
	h.Eventually(copyHas("a", "info"), "a copy in a")
	h.Eventually(copyHas("b", "info"), "a copy in b")

	// The source changes: the copies follow.
	if err := h.Fake.Mutate("ConfigMap", "default", "settings", func(o *pb.Object) { o.GetConfigMap().Data["level"] = "debug" }); err != nil {
		t.Fatal(err)
	}
	h.Eventually(copyHas("a", "debug"), "the copy in a updated")
	// A copy is deleted by hand: it comes back. A namespace appears: it gets one.
	h.Fake.Remove("ConfigMap", "b", "settings")
	h.Fake.Add(namespace("missing"))
	h.Eventually(copyHas("b", "debug"), "the copy in b restored")
	h.Eventually(copyHas("missing", "debug"), "a copy in the new namespace")

	// Not wanted in a any more; then the source goes: every copy goes.
	if err := h.Fake.Mutate("ConfigMap", "default", "settings", func(o *pb.Object) { o.Meta().Annotations[MirrorTo] = "b,missing" }); err != nil {
		t.Fatal(err)
	}
	h.Eventually(func() bool { return h.Fake.Get("ConfigMap", "a", "settings") == nil }, "the copy in a deleted")
	h.Fake.Remove("ConfigMap", "default", "settings")
	h.Eventually(func() bool { return len(h.Fake.Objects("ConfigMap")) == 0 }, "every copy deleted")
}

// TestLeavesOthersAlone: a ConfigMap of the same name that is not a copy is
// not overwritten.
func TestLeavesOthersAlone(t *testing.T) {
	h := controllertest.NewHarness(t, namespace("default"), namespace("a"),
		configMap("default", "settings", map[string]string{MirrorTo: "a"}, map[string]string{"level": "info"}),
		configMap("a", "settings", nil, map[string]string{"mine": "yes"}))
	m := NewMirror(h.Env(MirrorName))
	h.Start()
	h.Reconcile(m, "default/settings")
	if got := h.Fake.ActionStrings("Event"); len(got) != 0 {
		t.Fatalf("actions = %q, want none", got)
	}
	if ev := h.Recorder.Events(); len(ev) != 1 {
		t.Errorf("events = %q, want a MirrorConflict warning", ev)
	}
}
