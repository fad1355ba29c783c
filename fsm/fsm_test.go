package fsm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*fsm.Config)
		want string
	}{
		{"default", func(*fsm.Config) {}, ""},
		{"no logger", func(c *fsm.Config) { c.Logger = nil }, "Logger"},
		{"no window", func(c *fsm.Config) { c.EventWindow = 0 }, "EventWindow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fsm.DefaultConfig()
			tc.cfg(&cfg)
			_, err := fsm.New(cfg)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("New: %v, want error naming %q", err, tc.want)
			}
		})
	}
}

func TestCommandEnvelope(t *testing.T) {
	cmd := createCmd(configMap("default", "c", map[string]string{"b": "2", "a": "1", "c": "3"}))
	cmd.Uid = "u"
	b1, err := fsm.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ { // map order must not leak into the log
		b2, _ := fsm.EncodeCommand(cmd)
		if string(b1) != string(b2) {
			t.Fatal("EncodeCommand is not deterministic")
		}
	}
	got, err := fsm.DecodeCommand(b1)
	if err != nil || !equal(got, cmd) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if _, err := fsm.EncodeCommand(nil); err == nil {
		t.Error("EncodeCommand(nil) succeeded")
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{99}, b1[1:]...)},
		{"garbage", []byte{b1[0], 0xff, 0xff, 0xff}},
		{"truncated", b1[:len(b1)-3]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := fsm.DecodeCommand(tc.data); !errors.Is(err, fsm.ErrInvalid) {
				t.Fatalf("DecodeCommand: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestApplyUndecodableAdvancesIndex(t *testing.T) {
	c := newCluster(t, 0)
	res := c.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{7, 1, 2}}).(*fsm.Result)
	if !errors.Is(res.Err, fsm.ErrInvalid) || c.f.AppliedIndex() != 1 {
		t.Fatalf("got %v at applied %d, want ErrInvalid at 1", res.Err, c.f.AppliedIndex())
	}
	// A configuration entry (ApplyBatch passes them) only advances the index.
	out := c.f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogConfiguration}})
	if len(out) != 1 || out[0].(*fsm.Result).Err != nil || c.f.AppliedIndex() != 2 {
		t.Fatalf("configuration entry: %v, applied %d", out, c.f.AppliedIndex())
	}
	// Indexes never go back.
	if res := c.f.ApplyCommand(2, createCmd(namespace("x"))); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("replayed index: %v", res.Err)
	}
	if res := c.f.ApplyCommand(3, &pb.Command{Time: timeAt(3)}); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("empty command: %v", res.Err)
	}
}

func TestCreate(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(namespace("gone")))
	c.must(createCmd(pod("gone", "p", nil)))
	c.must(deleteCmd(&pb.DeleteOp{Kind: "Namespace", Name: "gone"})) // terminating: it has a pod

	withNS := func(o *pb.Object, ns string) *pb.Object { o.Meta().Namespace = ns; return o }
	for _, tc := range []struct {
		name string
		cmd  *pb.Command
		want error
	}{
		{"pod", createCmd(pod("default", "web", nil)), nil},
		{"exists", createCmd(pod("default", "web", nil)), fsm.ErrAlreadyExists},
		{"missing namespace", createCmd(pod("nope", "web", nil)), fsm.ErrFailedPrecondition},
		{"terminating namespace", createCmd(pod("gone", "web", nil)), fsm.ErrFailedPrecondition},
		{"namespaced without namespace", createCmd(pod("", "web", nil)), fsm.ErrInvalid},
		{"cluster-scoped with namespace", createCmd(withNS(node("n1"), "default")), fsm.ErrInvalid},
		{"no name", createCmd(pod("default", "", nil)), fsm.ErrInvalid},
		{"slash in name", createCmd(pod("default", "a/b", nil)), fsm.ErrInvalid},
		{"empty object", createCmd(&pb.Object{}), fsm.ErrInvalid},
		{"nil object", createCmd(nil), fsm.ErrInvalid},
		{"node", createCmd(node("n1")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run(tc.cmd)
			if !errors.Is(res.Err, tc.want) || (tc.want == nil) != (res.Err == nil) {
				t.Fatalf("err %v, want %v", res.Err, tc.want)
			}
			if tc.want == nil && res.Action != fsm.ActionCreated {
				t.Fatalf("action %q", res.Action)
			}
		})
	}
	if res := c.run(createCmd(pod("nope", "web", nil))); !strings.Contains(res.Err.Error(), `"nope"`) {
		t.Errorf("missing namespace error does not name it: %v", res.Err)
	}

	// What the store sets on create.
	in := pod("default", "stamped", map[string]string{"app": "web"})
	m := in.Meta()
	m.Uid, m.ResourceVersion, m.Generation = "client-uid", 99, 7
	m.DeletionTimestamp = timestamppb.New(t0)
	cmd := createCmd(in)
	cmd.Uid = "leader-uid"
	res := c.must(cmd)
	got := c.get("Pod", "default", "stamped")
	if !equal(got, res.Object) {
		t.Fatal("result object differs from stored object")
	}
	gm, p := got.Meta(), got.GetPod()
	switch {
	case gm.Uid != "leader-uid":
		t.Errorf("uid %q", gm.Uid)
	case gm.ResourceVersion != res.Index:
		t.Errorf("resourceVersion %d, want %d", gm.ResourceVersion, res.Index)
	case gm.Generation != 1:
		t.Errorf("generation %d", gm.Generation)
	case !equal(gm.CreationTimestamp, timeAt(res.Index)):
		t.Errorf("creationTimestamp %v", gm.CreationTimestamp)
	case gm.DeletionTimestamp != nil:
		t.Errorf("deletionTimestamp kept")
	case p.ApiVersion != "v1" || p.Kind != "Pod":
		t.Errorf("apiVersion/kind %q %q", p.ApiVersion, p.Kind)
	case p.Status.GetPhase() != "Pending":
		t.Errorf("phase %q", p.Status.GetPhase())
	}

	// Kinds without spec have no generation; Secret stringData lands in data.
	c.must(createCmd(configMap("default", "cm", map[string]string{"k": "v"})))
	if g := c.get("ConfigMap", "default", "cm").Meta().Generation; g != 0 {
		t.Errorf("configmap generation %d", g)
	}
	c.must(createCmd(pb.Wrap(&pb.Secret{
		Metadata:   &pb.ObjectMeta{Namespace: "default", Name: "s"},
		Data:       map[string][]byte{"a": []byte("1"), "b": []byte("old")},
		StringData: map[string]string{"b": "2"},
	})))
	s := c.get("Secret", "default", "s").GetSecret()
	if string(s.Data["a"]) != "1" || string(s.Data["b"]) != "2" || len(s.StringData) != 0 || s.ApiVersion != "v1" {
		t.Errorf("secret: %v", s)
	}
	if ns := c.get("Namespace", "", "default").GetNamespace(); ns.Status.GetPhase() != "Active" || ns.Metadata.Namespace != "" {
		t.Errorf("namespace: %v", ns)
	}
}

func TestCommandNeedsTimeAndUID(t *testing.T) {
	c := newCluster(t, 0)
	if res := c.f.ApplyCommand(1, &pb.Command{Uid: "u", Op: &pb.Command_Create{Create: namespace("a")}}); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Errorf("no time: %v", res.Err)
	}
	if res := c.f.ApplyCommand(2, &pb.Command{Time: timeAt(2), Op: &pb.Command_Create{Create: namespace("a")}}); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Errorf("no uid: %v", res.Err)
	}
	// ApplyCommand does not keep the caller's command.
	cmd := &pb.Command{Time: timeAt(3), Uid: "u", Op: &pb.Command_Create{Create: namespace("a")}}
	c.f.ApplyCommand(3, cmd)
	cmd.GetCreate().Meta().Labels = map[string]string{"changed": "later"}
	if o, _ := c.f.Get("Namespace", "", "a"); len(o.Meta().Labels) != 0 {
		t.Error("the store aliases the caller's command")
	}
}

func TestUpdate(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	created := c.must(createCmd(pod("default", "web", map[string]string{"v": "1"}))).Object

	// Status written through UpdateStatus survives a spec update.
	c.must(statusCmd(edit(created, func(o *pb.Object) { o.GetPod().Status.Phase = "Running" })))
	cur := c.get("Pod", "default", "web")

	for _, tc := range []struct {
		name   string
		obj    *pb.Object
		want   error
		action string
		gen    int64
	}{
		{"stale resourceVersion", edit(created, func(o *pb.Object) { o.Meta().Labels["v"] = "2" }), fsm.ErrConflict, "", 1},
		{"wrong uid", edit(cur, func(o *pb.Object) { o.Meta().Uid = "other" }), fsm.ErrConflict, "", 1},
		{"not found", pod("default", "nope", nil), fsm.ErrNotFound, "", 1},
		{"labels only", edit(cur, func(o *pb.Object) { o.Meta().Labels["v"] = "2"; o.Meta().ResourceVersion = 0 }), nil, fsm.ActionConfigured, 1},
		{"spec", edit(cur, func(o *pb.Object) {
			o.Meta().ResourceVersion = 0
			o.Meta().Labels["v"] = "2"
			o.GetPod().Spec.Containers[0].Image = "nginx"
		}), nil, fsm.ActionConfigured, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run(updateCmd(tc.obj))
			if !errors.Is(res.Err, tc.want) || (tc.want == nil) != (res.Err == nil) {
				t.Fatalf("err %v, want %v", res.Err, tc.want)
			}
			got := c.get("Pod", "default", "web")
			if res.Action != tc.action || got.Meta().Generation != tc.gen {
				t.Fatalf("action %q generation %d, want %q %d", res.Action, got.Meta().Generation, tc.action, tc.gen)
			}
			if tc.want == nil && got.Meta().ResourceVersion != res.Index {
				t.Fatalf("resourceVersion %d, want %d", got.Meta().ResourceVersion, res.Index)
			}
			if got.GetPod().Status.GetPhase() != "Running" {
				t.Fatalf("update replaced status: %v", got.GetPod().Status)
			}
		})
	}

	// Writing the same thing again changes nothing: no resourceVersion, no event.
	cur = c.get("Pod", "default", "web")
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	res := c.must(updateCmd(edit(cur, func(o *pb.Object) {
		m := o.Meta() // fields Update may not touch are ignored
		m.CreationTimestamp, m.Generation = nil, 40
		o.GetPod().Status = nil
	})))
	if res.Action != fsm.ActionUnchanged || res.Object.Meta().ResourceVersion != cur.Meta().ResourceVersion {
		t.Fatalf("unchanged update: %q rv %d", res.Action, res.Object.Meta().ResourceVersion)
	}
	marker := c.must(createCmd(pod("default", "marker", nil)))
	if ev := next(t, w); ev.Object.Meta().Name != "marker" || ev.Index != marker.Index {
		t.Fatalf("unchanged update made an event: %v", ev)
	}

	// A manifest without spec.nodeName does not unbind a bound pod.
	c.must(bindCmd("default", "web", "n1"))
	res = c.must(updateCmd(pod("default", "web", map[string]string{"v": "2"})))
	if n := res.Object.GetPod().Spec.NodeName; n != "n1" {
		t.Fatalf("update unbound the pod: nodeName %q", n)
	}
	if res := c.run(updateCmd(edit(res.Object, func(o *pb.Object) { o.GetPod().Spec.NodeName = "n2" }))); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("moving a bound pod: %v", res.Err)
	}
}

func TestFinalizers(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	cm := configMap("default", "cm", nil)
	cm.Meta().Finalizers = []string{"a", "b"}
	c.must(createCmd(cm))

	res := c.must(deleteCmd(&pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "cm"}))
	if res.Action != fsm.ActionDeleting || res.Object.Meta().DeletionTimestamp == nil {
		t.Fatalf("delete with finalizers: %q %v", res.Action, res.Object.Meta())
	}
	firstDT := res.Object.Meta().DeletionTimestamp
	// Deleting again keeps the first deletionTimestamp and changes nothing.
	res = c.must(deleteCmd(&pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "cm"}))
	if res.Action != fsm.ActionDeleting || !equal(res.Object.Meta().DeletionTimestamp, firstDT) {
		t.Fatalf("second delete: %q %v", res.Action, res.Object.Meta().DeletionTimestamp)
	}
	cur := c.get("ConfigMap", "default", "cm")
	if res := c.run(updateCmd(edit(cur, func(o *pb.Object) { o.Meta().Finalizers = []string{"a", "b", "c"} }))); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("adding a finalizer to a deleting object: %v", res.Err)
	}
	res = c.must(updateCmd(edit(cur, func(o *pb.Object) { o.Meta().Finalizers = []string{"b"} })))
	if res.Action != fsm.ActionConfigured {
		t.Fatalf("removing one finalizer: %q", res.Action)
	}
	res = c.must(updateCmd(edit(res.Object, func(o *pb.Object) { o.Meta().Finalizers = nil })))
	if res.Action != fsm.ActionDeleted || res.Object.Meta().ResourceVersion != res.Index {
		t.Fatalf("removing the last finalizer: %q rv %d", res.Action, res.Object.Meta().ResourceVersion)
	}
	if _, err := c.f.Get("ConfigMap", "default", "cm"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("get after removal: %v", err)
	}
}

func TestDelete(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	cm := c.must(createCmd(configMap("default", "cm", nil))).Object
	c.must(createCmd(configMap("default", "fg", nil)))
	c.must(createCmd(configMap("default", "orphan", nil)))

	for _, tc := range []struct {
		name       string
		op         *pb.DeleteOp
		want       error
		action     string
		finalizers []string
	}{
		{"not found", &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "nope"}, fsm.ErrNotFound, "", nil},
		{"unknown kind", &pb.DeleteOp{Kind: "Gizmo", Namespace: "default", Name: "cm"}, fsm.ErrInvalid, "", nil},
		{"stale resourceVersion", &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "cm", ResourceVersion: cm.Meta().ResourceVersion + 100}, fsm.ErrConflict, "", nil},
		{"wrong uid", &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "cm", Uid: "x"}, fsm.ErrConflict, "", nil},
		{"bad policy", &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "cm", PropagationPolicy: "Sideways"}, fsm.ErrInvalid, "", nil},
		{"default namespace", &pb.DeleteOp{Kind: "Namespace", Name: "default"}, fsm.ErrInvalid, "", nil},
		{"foreground", &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "fg", PropagationPolicy: "Foreground"}, nil, fsm.ActionDeleting, []string{"foregroundDeletion"}},
		{"orphan", &pb.DeleteOp{Kind: "configmaps", Namespace: "default", Name: "orphan", PropagationPolicy: "Orphan"}, nil, fsm.ActionDeleting, []string{"orphan"}},
		{"plain", &pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "cm", Uid: cm.Meta().Uid, ResourceVersion: cm.Meta().ResourceVersion, PropagationPolicy: "Background"}, nil, fsm.ActionDeleted, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run(deleteCmd(tc.op))
			if !errors.Is(res.Err, tc.want) || (tc.want == nil) != (res.Err == nil) {
				t.Fatalf("err %v, want %v", res.Err, tc.want)
			}
			if res.Action != tc.action {
				t.Fatalf("action %q, want %q", res.Action, tc.action)
			}
			if tc.want != nil {
				return
			}
			if res.Object.Meta().ResourceVersion != res.Index {
				t.Fatalf("resourceVersion %d, want %d", res.Object.Meta().ResourceVersion, res.Index)
			}
			if got := res.Object.Meta().Finalizers; strings.Join(got, ",") != strings.Join(tc.finalizers, ",") {
				t.Fatalf("finalizers %v, want %v", got, tc.finalizers)
			}
		})
	}
	// The last foreground/orphan delete wins.
	res := c.must(deleteCmd(&pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: "fg", PropagationPolicy: "Orphan"}))
	if f := res.Object.Meta().Finalizers; len(f) != 1 || f[0] != "orphan" {
		t.Fatalf("finalizers %v", f)
	}
}

func TestGracefulPodDeletion(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(pod("default", "unbound", nil)))
	c.must(createCmd(pod("default", "bound", nil)))
	short := pod("default", "short", nil)
	short.GetPod().Spec.TerminationGracePeriodSeconds = ptr[int64](5)
	c.must(createCmd(short))
	c.must(createCmd(pod("default", "done", nil)))
	for _, n := range []string{"bound", "short", "done"} {
		c.must(bindCmd("default", n, "n1"))
	}
	done := c.get("Pod", "default", "done")
	c.must(statusCmd(edit(done, func(o *pb.Object) { o.GetPod().Status.Phase = "Succeeded" })))

	del := func(name string, grace *int64) *fsm.Result {
		return c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: name, GracePeriodSeconds: grace}))
	}
	if res := del("unbound", nil); res.Action != fsm.ActionDeleted {
		t.Fatalf("unbound pod: %q", res.Action)
	}
	if res := del("done", nil); res.Action != fsm.ActionDeleted {
		t.Fatalf("finished pod: %q", res.Action)
	}
	for _, tc := range []struct {
		name  string
		grace *int64
		want  int64
	}{
		{"bound", nil, 30},
		{"short", nil, 5},
	} {
		res := del(tc.name, tc.grace)
		m := res.Object.Meta()
		if res.Action != fsm.ActionDeleting || m.GetDeletionGracePeriodSeconds() != tc.want ||
			!equal(m.DeletionTimestamp, timestamppb.New(timeAt(res.Index).AsTime().Add(time.Duration(tc.want)*time.Second))) {
			t.Fatalf("%s: %q grace %d deletionTimestamp %v", tc.name, res.Action, m.GetDeletionGracePeriodSeconds(), m.DeletionTimestamp)
		}
	}
	// A longer grace period does not extend it; a shorter one shortens it.
	if res := del("bound", ptr[int64](60)); res.Action != fsm.ActionDeleting || res.Object.Meta().GetDeletionGracePeriodSeconds() != 30 {
		t.Fatalf("longer grace: %v", res.Object.Meta())
	}
	if res := del("bound", ptr[int64](10)); res.Object.Meta().GetDeletionGracePeriodSeconds() != 10 {
		t.Fatalf("shorter grace: %v", res.Object.Meta())
	}
	// A status update from the worker does not remove the terminating pod.
	if res := c.must(statusCmd(edit(c.get("Pod", "default", "bound"), func(o *pb.Object) { o.GetPod().Status.Phase = "Running" }))); res.Action != fsm.ActionConfigured {
		t.Fatalf("status during grace: %q", res.Action)
	}
	// The worker has stopped the containers: grace 0 finishes the deletion.
	if res := del("bound", ptr[int64](0)); res.Action != fsm.ActionDeleted {
		t.Fatalf("grace 0: %q", res.Action)
	}
	if _, err := c.f.Get("Pod", "default", "bound"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("get: %v", err)
	}
}

func TestNamespaceTermination(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("team")))
	c.must(createCmd(configMap("team", "cm", nil)))
	res := c.must(deleteCmd(&pb.DeleteOp{Kind: "Namespace", Name: "team"}))
	ns := res.Object.GetNamespace()
	if res.Action != fsm.ActionDeleting || ns.Status.GetPhase() != "Terminating" || ns.Metadata.DeletionTimestamp == nil {
		t.Fatalf("namespace with contents: %q %v", res.Action, ns)
	}
	if res := c.run(createCmd(configMap("team", "new", nil))); !errors.Is(res.Err, fsm.ErrFailedPrecondition) {
		t.Fatalf("create in terminating namespace: %v", res.Err)
	}
	// Neither a label change nor a status update ends termination early.
	nsObj := c.get("Namespace", "", "team")
	c.must(updateCmd(edit(nsObj, func(o *pb.Object) { o.Meta().Labels = map[string]string{"a": "b"} })))
	c.must(statusCmd(edit(c.get("Namespace", "", "team"), func(o *pb.Object) { o.GetNamespace().Status.Phase = "Active" })))
	if ns := c.get("Namespace", "", "team").GetNamespace(); ns.Status.GetPhase() != "Terminating" {
		t.Fatalf("phase %q", ns.Status.GetPhase())
	}
	c.must(deleteCmd(&pb.DeleteOp{Kind: "ConfigMap", Namespace: "team", Name: "cm"}))
	if res := c.must(deleteCmd(&pb.DeleteOp{Kind: "Namespace", Name: "team"})); res.Action != fsm.ActionDeleted {
		t.Fatalf("empty namespace: %q", res.Action)
	}
	c.must(createCmd(namespace("empty")))
	if res := c.must(deleteCmd(&pb.DeleteOp{Kind: "Namespace", Name: "empty"})); res.Action != fsm.ActionDeleted {
		t.Fatalf("empty namespace: %q", res.Action)
	}
}

func TestUpdateStatus(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	p := c.must(createCmd(pod("default", "web", map[string]string{"a": "b"}))).Object
	c.must(createCmd(configMap("default", "cm", nil)))

	res := c.must(statusCmd(edit(p, func(o *pb.Object) {
		o.GetPod().Status.Phase = "Running"
		o.Meta().Labels = nil                     // ignored
		o.GetPod().Spec.Containers[0].Image = "x" // ignored
	})))
	got := res.Object.GetPod()
	if res.Action != fsm.ActionConfigured || got.Status.Phase != "Running" || got.Metadata.Labels["a"] != "b" ||
		got.Spec.Containers[0].Image != "busybox" || got.Metadata.Generation != 1 {
		t.Fatalf("status update: %q %v", res.Action, got)
	}
	if res := c.run(statusCmd(p)); !errors.Is(res.Err, fsm.ErrConflict) {
		t.Fatalf("stale status update: %v", res.Err)
	}
	same := edit(res.Object, func(o *pb.Object) { o.Meta().ResourceVersion = 0 })
	if res := c.must(statusCmd(same)); res.Action != fsm.ActionUnchanged {
		t.Fatalf("same status: %q", res.Action)
	}
	if res := c.run(statusCmd(configMap("default", "cm", nil))); !errors.Is(res.Err, fsm.ErrInvalid) {
		t.Fatalf("configmap status: %v", res.Err)
	}
}

// TestUnchangedWrites: a write changes nothing (same resourceVersion,
// ActionUnchanged) exactly when the object it would store is gproto.Equal
// to the stored one: a value of the same length, an empty message where
// there was none, and unknown fields are changes; labels (a map) given
// again are not.
func TestUnchangedWrites(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	labels := map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
	c.must(createCmd(pod("default", "web", labels)))
	base := edit(c.get("Pod", "default", "web"), func(o *pb.Object) {
		o.Meta().ResourceVersion = 0
		st := o.GetPod().Status
		st.Phase = "Running"
		st.ContainerStatuses = []*pb.ContainerStatus{{Name: "app", State: &pb.ContainerState{}}}
	})
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 7)
	for _, tc := range []struct {
		name    string
		edit    func(*pb.Object)
		changed bool
	}{
		{"the same status", func(*pb.Object) {}, false},
		{"a phase of the same length", func(o *pb.Object) { o.GetPod().Status.Phase = "Runnink" }, true},
		{"an empty message", func(o *pb.Object) {
			o.GetPod().Status.ContainerStatuses[0].State.Running = &pb.ContainerStateRunning{}
		}, true},
		{"an unknown field", func(o *pb.Object) { o.GetPod().Status.ProtoReflect().SetUnknown(unknown) }, true},
	} {
		c.must(statusCmd(base))
		before := c.get("Pod", "default", "web")
		res := c.must(statusCmd(edit(base, tc.edit)))
		after := c.get("Pod", "default", "web")
		if got := res.Action != fsm.ActionUnchanged; got != tc.changed {
			t.Errorf("%s: action %q, want changed=%v", tc.name, res.Action, tc.changed)
		}
		rvMoved := after.Meta().ResourceVersion != before.Meta().ResourceVersion
		if rvMoved != tc.changed || res.Object.Meta().ResourceVersion != after.Meta().ResourceVersion {
			t.Errorf("%s: resourceVersion %d -> %d (result %d), want changed=%v", tc.name,
				before.Meta().ResourceVersion, after.Meta().ResourceVersion, res.Object.Meta().ResourceVersion, tc.changed)
		}
		stripped := edit(after, func(o *pb.Object) { o.Meta().ResourceVersion = before.Meta().ResourceVersion })
		if equal(before, stripped) == tc.changed {
			t.Errorf("%s: gproto.Equal(before, after) = %v, but changed=%v", tc.name, equal(before, stripped), tc.changed)
		}
	}
	res := c.must(applyCmd(pod("default", "web", map[string]string{"e": "5", "d": "4", "c": "3", "b": "2", "a": "1"})))
	if res.Action != fsm.ActionUnchanged {
		t.Errorf("the same labels again: %q", res.Action)
	}
}

func TestApplyCommand(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	manifest := func(image string, labels, annotations map[string]string) *pb.Object {
		o := pod("default", "web", labels)
		o.Meta().Annotations = annotations
		o.GetPod().Spec.Containers[0].Image = image
		return o
	}
	res := c.must(applyCmd(manifest("busybox", map[string]string{"a": "1"}, map[string]string{"x": "1"})))
	if res.Action != fsm.ActionCreated {
		t.Fatalf("first apply: %q", res.Action)
	}
	// Things other writers set are kept: status, annotations, finalizers.
	c.must(statusCmd(edit(res.Object, func(o *pb.Object) { o.GetPod().Status.Phase = "Running" })))
	cur := c.get("Pod", "default", "web")
	c.must(updateCmd(edit(cur, func(o *pb.Object) {
		o.Meta().Annotations["controller"] = "kept"
		o.Meta().Finalizers = []string{"f"}
	})))

	res = c.must(applyCmd(manifest("busybox", map[string]string{"a": "1"}, map[string]string{"x": "1"})))
	if res.Action != fsm.ActionUnchanged {
		t.Fatalf("same manifest: %q", res.Action)
	}
	res = c.must(applyCmd(manifest("nginx", map[string]string{"b": "2"}, map[string]string{"x": "2"})))
	m := res.Object.Meta()
	switch {
	case res.Action != fsm.ActionConfigured:
		t.Fatalf("changed manifest: %q", res.Action)
	case m.Generation != 2:
		t.Errorf("generation %d", m.Generation)
	case len(m.Labels) != 1 || m.Labels["b"] != "2":
		t.Errorf("labels %v", m.Labels)
	case m.Annotations["x"] != "2" || m.Annotations["controller"] != "kept":
		t.Errorf("annotations %v", m.Annotations)
	case len(m.Finalizers) != 1:
		t.Errorf("finalizers %v", m.Finalizers)
	case res.Object.GetPod().Status.Phase != "Running":
		t.Errorf("status %v", res.Object.GetPod().Status)
	}
	// Apply has no preconditions.
	stale := manifest("nginx", map[string]string{"b": "2"}, nil)
	stale.Meta().ResourceVersion = 1
	if res := c.run(applyCmd(stale)); res.Err != nil || res.Action != fsm.ActionUnchanged {
		t.Fatalf("apply with a stale resourceVersion: %q %v", res.Action, res.Err)
	}
}

func TestBind(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	p := c.must(createCmd(pod("default", "web", nil))).Object
	c.must(createCmd(pod("default", "other", nil)))
	fin := pod("default", "dying", nil)
	fin.Meta().Finalizers = []string{"x"}
	c.must(createCmd(fin))
	c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "dying"}))

	for _, tc := range []struct {
		name string
		op   *pb.BindOp
		want error
	}{
		{"no node", &pb.BindOp{Namespace: "default", Name: "web"}, fsm.ErrInvalid},
		{"not found", &pb.BindOp{Namespace: "default", Name: "nope", NodeName: "n1"}, fsm.ErrNotFound},
		{"stale", &pb.BindOp{Namespace: "default", Name: "web", NodeName: "n1", ResourceVersion: p.Meta().ResourceVersion + 1}, fsm.ErrConflict},
		{"wrong uid", &pb.BindOp{Namespace: "default", Name: "web", NodeName: "n1", Uid: "x"}, fsm.ErrConflict},
		{"deleting", &pb.BindOp{Namespace: "default", Name: "dying", NodeName: "n1"}, fsm.ErrConflict},
		{"ok", &pb.BindOp{Namespace: "default", Name: "web", NodeName: "n1", Uid: p.Meta().Uid, ResourceVersion: p.Meta().ResourceVersion}, nil},
		{"already bound", &pb.BindOp{Namespace: "default", Name: "web", NodeName: "n2"}, fsm.ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.run(&pb.Command{Op: &pb.Command_Bind{Bind: tc.op}})
			if !errors.Is(res.Err, tc.want) || (tc.want == nil) != (res.Err == nil) {
				t.Fatalf("err %v, want %v", res.Err, tc.want)
			}
			if tc.want != nil {
				return
			}
			got := res.Object.GetPod()
			conds := got.Status.Conditions
			if res.Action != fsm.ActionBound || got.Spec.NodeName != "n1" || got.Metadata.ResourceVersion != res.Index ||
				len(conds) != 1 || conds[0].Type != "PodScheduled" || conds[0].Status != "True" ||
				!equal(conds[0].LastTransitionTime, timeAt(res.Index)) {
				t.Fatalf("bound pod: %q %v", res.Action, got)
			}
		})
	}
	// A PodScheduled=False from an earlier attempt is replaced, not duplicated.
	other := c.get("Pod", "default", "other")
	c.must(statusCmd(edit(other, func(o *pb.Object) {
		o.GetPod().Status.Conditions = []*pb.PodCondition{{Type: "PodScheduled", Status: "False", Reason: "Unschedulable"}}
	})))
	res := c.must(bindCmd("default", "other", "n2"))
	if conds := res.Object.GetPod().Status.Conditions; len(conds) != 1 || conds[0].Status != "True" || conds[0].Reason != "" {
		t.Fatalf("conditions %v", conds)
	}
}

func TestBatch(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := createCmd(pod("default", "a", nil)), createCmd(pod("default", "b", nil))
	a.Uid, b.Uid = "uid-a", "uid-b"
	res := c.must(batchCmd(a, createCmd(pod("default", "a", nil)), b, bindCmd("default", "a", "n1"), batchCmd()))
	if len(res.Batch) != 5 {
		t.Fatalf("%d results", len(res.Batch))
	}
	wantErr := []error{nil, fsm.ErrAlreadyExists, nil, nil, fsm.ErrInvalid}
	for i, r := range res.Batch {
		if !errors.Is(r.Err, wantErr[i]) || (wantErr[i] == nil) != (r.Err == nil) || r.Index != res.Index {
			t.Fatalf("result %d: %v at %d, want %v at %d", i, r.Err, r.Index, wantErr[i], res.Index)
		}
	}
	// An empty batch is the servers' store barrier: it only advances the index.
	if res := c.run(batchCmd()); res.Err != nil || len(res.Batch) != 0 || c.f.AppliedIndex() != res.Index {
		t.Fatalf("empty batch: %v", res.Err)
	}
	pa := c.get("Pod", "default", "a")
	if pa.Meta().Uid != "uid-a" || pa.GetPod().Spec.NodeName != "n1" || pa.Meta().ResourceVersion != res.Index ||
		!equal(pa.Meta().CreationTimestamp, timeAt(res.Index)) { // time from the parent
		t.Fatalf("pod a: %v", pa)
	}
	for _, want := range []struct{ typ, name string }{{fsm.Added, "a"}, {fsm.Added, "b"}, {fsm.Modified, "a"}} {
		ev := next(t, w)
		if ev.Type != want.typ || ev.Object.Meta().Name != want.name || ev.Index != res.Index {
			t.Fatalf("event %s %s at %d, want %s %s at %d", ev.Type, ev.Object.Meta().Name, ev.Index, want.typ, want.name, res.Index)
		}
	}
}

func TestList(t *testing.T) {
	c := newCluster(t, 0)
	for _, ns := range []string{"b", "a", "a-b"} {
		c.must(createCmd(namespace(ns)))
	}
	for _, p := range []*pb.Object{
		pod("b", "p1", map[string]string{"app": "web", "tier": "front"}),
		pod("a", "p2", map[string]string{"app": "web"}),
		pod("a-b", "p0", map[string]string{"app": "db"}),
		pod("a", "p1", nil),
	} {
		c.must(createCmd(p))
	}
	c.must(bindCmd("a", "p2", "n1"))
	c.must(bindCmd("b", "p1", "n2"))
	c.must(createCmd(configMap("a", "p1", nil)))
	c.must(createCmd(node("n1")))

	names := func(objs []*pb.Object) string {
		var s []string
		for _, o := range objs {
			s = append(s, o.Meta().Key())
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		name string
		q    fsm.Query
		want string
		err  string
	}{
		{"all pods, sorted", fsm.Query{Kind: "Pod"}, "a/p1 a/p2 a-b/p0 b/p1", ""},
		{"one namespace", fsm.Query{Kind: "pods", Namespace: "a"}, "a/p1 a/p2", ""},
		{"labels", fsm.Query{Kind: "Pod", LabelSelector: "app=web"}, "a/p2 b/p1", ""},
		{"label set", fsm.Query{Kind: "Pod", LabelSelector: "app in (web,db),!tier"}, "a/p2 a-b/p0", ""},
		{"node", fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName=n1"}, "a/p2", ""},
		{"unbound", fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName="}, "a/p1 a-b/p0", ""},
		{"node and namespace", fsm.Query{Kind: "Pod", Namespace: "b", FieldSelector: "spec.nodeName=n1"}, "", ""},
		{"not on node", fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName!=n1"}, "a/p1 a-b/p0 b/p1", ""},
		{"name", fsm.Query{Kind: "Pod", FieldSelector: "metadata.name=p1,metadata.namespace=b"}, "b/p1", ""},
		{"name in a namespace", fsm.Query{Kind: "Pod", Namespace: "a", FieldSelector: "metadata.name=p2"}, "a/p2", ""},
		{"name in a namespace, other labels", fsm.Query{Kind: "Pod", Namespace: "a", FieldSelector: "metadata.name=p2", LabelSelector: "app=db"}, "", ""},
		{"name in a namespace, other node", fsm.Query{Kind: "Pod", Namespace: "a", FieldSelector: "metadata.name=p2,spec.nodeName=n2"}, "", ""},
		{"name missing in a namespace", fsm.Query{Kind: "Pod", Namespace: "b", FieldSelector: "metadata.name=p2"}, "", ""},
		{"cluster-scoped name", fsm.Query{Kind: "Node", FieldSelector: "metadata.name=n1"}, "n1", ""},
		{"phase", fsm.Query{Kind: "Pod", FieldSelector: "status.phase=Pending", LabelSelector: "app"}, "a/p2 a-b/p0 b/p1", ""},
		{"cluster-scoped ignores namespace", fsm.Query{Kind: "Node", Namespace: "a"}, "n1", ""},
		{"other kind", fsm.Query{Kind: "ConfigMap"}, "a/p1", ""},
		{"no kind", fsm.Query{}, "", "kind"},
		{"bad kind", fsm.Query{Kind: "Gizmo"}, "", "Gizmo"},
		{"bad label selector", fsm.Query{Kind: "Pod", LabelSelector: "a=(b"}, "", "label selector"},
		{"bad field", fsm.Query{Kind: "Pod", FieldSelector: "spec.hostname=x"}, "", "spec.hostname"},
		{"pod field on nodes", fsm.Query{Kind: "Node", FieldSelector: "spec.nodeName=x"}, "", "spec.nodeName"},
		{"bad field syntax", fsm.Query{Kind: "Pod", FieldSelector: "==="}, "", "field selector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, index, err := c.f.List(tc.q)
			if tc.err != "" {
				if !errors.Is(err, fsm.ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want ErrInvalid naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(objs); got != tc.want || index != c.index {
				t.Fatalf("got %q at %d, want %q at %d", got, index, tc.want, c.index)
			}
		})
	}
	if _, err := c.f.Get("Pod", "a", "nope"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := c.f.Get("Gizmo", "a", "p1"); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("get bad kind: %v", err)
	}
}

func TestDependents(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	owned := func(name string, uids ...string) *pb.Object {
		o := pod("default", name, nil)
		for _, u := range uids {
			o.Meta().OwnerReferences = append(o.Meta().OwnerReferences, &pb.OwnerReference{Kind: "ReplicaSet", Name: "rs", Uid: u})
		}
		return o
	}
	c.must(createCmd(owned("b", "rs-1", "rs-1")))
	c.must(createCmd(owned("a", "rs-2", "rs-1")))
	c.must(createCmd(owned("c", "rs-2")))
	var got []string
	for _, o := range c.f.Dependents("rs-1") {
		got = append(got, o.Meta().Name)
	}
	if strings.Join(got, ",") != "a,b" {
		t.Fatalf("dependents of rs-1: %v", got)
	}
	c.must(updateCmd(edit(c.get("Pod", "default", "a"), func(o *pb.Object) { o.Meta().OwnerReferences = nil })))
	if d := c.f.Dependents("rs-1"); len(d) != 1 {
		t.Fatalf("after orphaning: %d dependents", len(d))
	}
}

func TestWaitForIndex(t *testing.T) {
	c := newCluster(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.f.WaitForIndex(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- c.f.WaitForIndex(ctx, 3)
	}()
	for i := 0; i < 3; i++ {
		c.must(createCmd(namespace(string(rune('a' + i)))))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.f.WaitForIndex(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestCreateTakenName: a create of a name that is taken changes nothing:
// the stored object, its place in the indexes (spec.nodeName, owners) and
// the watch stay as they were, alone in a batch or beside other writes.
func TestCreateTakenName(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	first := pod("default", "web", map[string]string{"app": "a"})
	first.GetPod().Spec.NodeName = "n1"
	first.Meta().OwnerReferences = []*pb.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Uid: "owner-1"}}
	cmd := createCmd(first)
	cmd.Uid = "uid-first"
	c.must(cmd)
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 0)
	if err != nil {
		t.Fatal(err)
	}

	second := pod("default", "web", map[string]string{"app": "b"})
	second.GetPod().Spec.NodeName = "n2"
	second.Meta().OwnerReferences = []*pb.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Uid: "owner-2"}}
	dup := createCmd(second)
	dup.Uid = "uid-second"
	if res := c.run(dup); !errors.Is(res.Err, fsm.ErrAlreadyExists) {
		t.Fatalf("create of a taken name: %v, want AlreadyExists", res.Err)
	}
	other := createCmd(pod("default", "api", nil))
	other.Uid = "uid-api"
	dup2 := createCmd(second.Clone())
	dup2.Uid = "uid-third"
	res := c.must(batchCmd(dup2, other))
	if !errors.Is(res.Batch[0].Err, fsm.ErrAlreadyExists) || res.Batch[1].Err != nil {
		t.Fatalf("batch: %v, %v", res.Batch[0].Err, res.Batch[1].Err)
	}

	got := c.get("Pod", "default", "web")
	if got.Meta().Uid != "uid-first" || got.GetPod().Spec.NodeName != "n1" || got.Meta().Labels["app"] != "a" {
		t.Fatalf("stored pod changed: uid %s, node %s, labels %v", got.Meta().Uid, got.GetPod().Spec.NodeName, got.Meta().Labels)
	}
	names := func(q fsm.Query) []string {
		t.Helper()
		objs, _, err := c.f.List(q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range objs {
			out = append(out, o.Meta().Name)
		}
		return out
	}
	if got := names(fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName=n1"}); len(got) != 1 || got[0] != "web" {
		t.Errorf("pods on n1: %v, want [web]", got)
	}
	if got := names(fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName=n2"}); len(got) != 0 {
		t.Errorf("pods on n2: %v, want none", got)
	}
	if got := names(fsm.Query{Kind: "Pod", LabelSelector: "app=b"}); len(got) != 0 {
		t.Errorf("pods with app=b: %v, want none", got)
	}
	if deps := c.f.Dependents("owner-1"); len(deps) != 1 || deps[0].Meta().Name != "web" {
		t.Errorf("dependents of owner-1: %v, want web", deps)
	}
	if deps := c.f.Dependents("owner-2"); len(deps) != 0 {
		t.Errorf("dependents of owner-2: %d, want none", len(deps))
	}
	// The watch saw the one create that happened, nothing for the others.
	if ev := next(t, w); ev.Type != fsm.Added || ev.Object.Meta().Name != "api" {
		t.Fatalf("event %s %s, want Added api", ev.Type, ev.Object.Meta().Name)
	}
}

// Events take Kubernetes' event field selectors (kubectl get events
// --field-selector involvedObject.name=web-0,type=Warning), in lists and in
// watches alike.
func TestEventFieldSelectors(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	event := func(name, kind, obj, typ, reason string) *pb.Object {
		return pb.Wrap(&pb.Event{
			Metadata:       &pb.ObjectMeta{Name: name, Namespace: "default"},
			InvolvedObject: &pb.ObjectReference{Kind: kind, Namespace: "default", Name: obj, Uid: "uid-" + obj},
			Type:           typ, Reason: reason, Source: &pb.EventSource{Component: "worker"},
		})
	}
	c.must(createCmd(event("e1", "Pod", "web-0", "Normal", "Pulled")))
	c.must(createCmd(event("e2", "Pod", "web-0", "Warning", "BackOff")))
	c.must(createCmd(event("e3", "Pod", "web-1", "Warning", "BackOff")))
	c.must(createCmd(event("e4", "Deployment", "web", "Normal", "ScalingReplicaSet")))
	for _, tc := range []struct {
		sel, want, err string
	}{
		{"involvedObject.name=web-0", "e1 e2", ""},
		{"involvedObject.name=web-0,type=Warning", "e2", ""},
		{"involvedObject.kind=Pod,reason!=BackOff", "e1", ""},
		{"involvedObject.uid=uid-web-1", "e3", ""},
		{"type=Normal,source=worker,involvedObject.namespace=default", "e1 e4", ""},
		{"involvedObject.kind=Deployment,metadata.name=e4", "e4", ""},
		{"involvedObject.name=nope", "", ""},
		{"involvedObject.color=red", "", "involvedObject.color"},
	} {
		objs, _, err := c.f.List(fsm.Query{Kind: "Event", FieldSelector: tc.sel})
		if tc.err != "" {
			if !errors.Is(err, fsm.ErrInvalid) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "involvedObject.name") {
				t.Errorf("%s: %v, want ErrInvalid naming %q and the event fields", tc.sel, err, tc.err)
			}
			continue
		}
		var got []string
		for _, o := range objs {
			got = append(got, o.Meta().GetName())
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("events %s: %q, %v; want %q", tc.sel, strings.Join(got, " "), err, tc.want)
		}
	}
	if _, _, err := c.f.List(fsm.Query{Kind: "Pod", FieldSelector: "type=Warning"}); !errors.Is(err, fsm.ErrInvalid) || !strings.Contains(err.Error(), "pods") {
		t.Errorf("an event field on pods: %v, want ErrInvalid", err)
	}

	// A watch decides from the decoded event as a list does from the store.
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Event", FieldSelector: "involvedObject.name=web-0,type=Warning"}, c.index)
	if err != nil {
		t.Fatal(err)
	}
	c.must(createCmd(event("e5", "Pod", "web-0", "Normal", "Started")))
	res := c.must(createCmd(event("e6", "Pod", "web-0", "Warning", "Unhealthy")))
	expect(t, w, wantEvent{fsm.Added, "e6", res.Index})
}
