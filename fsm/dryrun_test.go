package fsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

// dryStore drives an FSM the way a leader does: each command at the next
// index, with the leader's time and uid.
type dryStore struct {
	t testing.TB
	f *FSM
}

func newDryStore(t testing.TB) *dryStore {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &dryStore{t: t, f: f}
}

// leaderCmd fills in what the leader chooses before proposing.
func leaderCmd(cmd *pb.Command, uid string) *pb.Command {
	cmd.Time = timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	cmd.Uid = uid
	return cmd
}

func (s *dryStore) must(cmd *pb.Command) *Result {
	s.t.Helper()
	index := s.f.AppliedIndex() + 1
	res := s.f.ApplyCommand(index, leaderCmd(cmd, fmt.Sprintf("uid-%d", index)))
	if res.Err != nil {
		s.t.Fatalf("index %d: %v", index, res.Err)
	}
	return res
}

func (s *dryStore) get(kind, ns, name string) *pb.Object {
	s.t.Helper()
	o, err := s.f.Get(kind, ns, name)
	if err != nil {
		s.t.Fatal(err)
	}
	return o
}

// storeState is everything a reader or a waiter of the store can see.
type storeState struct {
	hash    string
	applied uint64
	lists   map[string][]*pb.Object
	events  uint64          // the event log's next sequence
	notify  <-chan struct{} // WaitForIndex's broadcast
	wakes   map[wakeKey]<-chan struct{}
}

func (s *dryStore) state() storeState {
	s.t.Helper()
	st := storeState{hash: s.f.StateHash(), applied: s.f.AppliedIndex(), lists: map[string][]*pb.Object{}, wakes: map[wakeKey]<-chan struct{}{}}
	for _, ki := range pb.Kinds() {
		objs, _, err := s.f.List(Query{Kind: ki.Kind})
		if err != nil {
			s.t.Fatal(err)
		}
		st.lists[ki.Kind] = objs
		k := wakeKey{kind: ki.Kind}
		st.wakes[k] = s.f.wake.wait(k)
	}
	for _, node := range []string{"", "n1", "n2"} {
		k := wakeKey{kind: "Pod", node: node, byNode: true}
		st.wakes[k] = s.f.wake.wait(k)
	}
	s.f.mu.RLock()
	st.events, st.notify = s.f.events.next, s.f.notify
	s.f.mu.RUnlock()
	return st
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// unchanged checks that nothing a reader, a watcher or a waiter can see
// moved since before.
func (s *dryStore) unchanged(before storeState) {
	s.t.Helper()
	after := s.state()
	if after.hash != before.hash || after.applied != before.applied {
		s.t.Fatalf("the dry run changed the store: hash %s -> %s, applied index %d -> %d", before.hash, after.hash, before.applied, after.applied)
	}
	for kind, objs := range before.lists {
		got := after.lists[kind]
		if len(got) != len(objs) {
			s.t.Fatalf("List(%s): %d objects before, %d after", kind, len(objs), len(got))
		}
		for i := range objs {
			if !gproto.Equal(objs[i], got[i]) {
				s.t.Fatalf("List(%s)[%d] changed:\nbefore %v\nafter  %v", kind, i, objs[i], got[i])
			}
		}
	}
	if after.events != before.events {
		s.t.Fatalf("the dry run published %d watch events", after.events-before.events)
	}
	if isClosed(before.notify) {
		s.t.Fatal("the dry run woke WaitForIndex")
	}
	for k, ch := range before.wakes {
		if isClosed(ch) {
			s.t.Fatalf("the dry run woke the watchers of %+v", k)
		}
	}
}

// dryService builds a Service; nodePort 0 leaves the port without one.
func dryService(ns, name, typ, ip string, nodePort int32) *pb.Object {
	return pb.Wrap(&pb.Service{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: name},
		Spec: &pb.ServiceSpec{Type: typ, ClusterIp: ip, Selector: map[string]string{"app": name},
			Ports: []*pb.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: "8080", NodePort: nodePort}}},
	})
}

func dryConfigMap(ns, name string, data map[string]string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Namespace: ns, Name: name}, Data: data})
}

func dryPod(ns, name string) *pb.Object {
	return pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: name},
		Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "busybox"}}},
	})
}

func dryNamespace(name string) *pb.Object {
	return pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: name}})
}

func opCreate(o *pb.Object) *pb.Command { return &pb.Command{Op: &pb.Command_Create{Create: o}} }
func opUpdate(o *pb.Object) *pb.Command { return &pb.Command{Op: &pb.Command_Update{Update: o}} }
func opApply(o *pb.Object) *pb.Command  { return &pb.Command{Op: &pb.Command_Apply{Apply: o}} }
func opStatus(o *pb.Object) *pb.Command {
	return &pb.Command{Op: &pb.Command_UpdateStatus{UpdateStatus: o}}
}
func opDelete(kind, ns, name string, fn func(*pb.DeleteOp)) *pb.Command {
	op := &pb.DeleteOp{Kind: kind, Namespace: ns, Name: name}
	if fn != nil {
		fn(op)
	}
	return &pb.Command{Op: &pb.Command_Delete{Delete: op}}
}
func opBind(ns, name, node string) *pb.Command {
	return &pb.Command{Op: &pb.Command_Bind{Bind: &pb.BindOp{Namespace: ns, Name: name, NodeName: node}}}
}

// setupDryStore holds one object for every refusal the cases below need.
func setupDryStore(t *testing.T) *dryStore {
	s := newDryStore(t)
	s.must(opCreate(dryNamespace("default")))
	s.must(opCreate(dryNamespace("doomed")))
	s.must(opCreate(dryConfigMap("doomed", "left", nil)))
	if res := s.must(opDelete("Namespace", "", "doomed", nil)); res.Action != ActionDeleting {
		t.Fatalf("namespace with contents: %s, want deleting", res.Action)
	}
	s.must(opCreate(pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "n1"}})))
	s.must(opCreate(dryService("default", "a", "NodePort", "10.96.0.10", 30080)))
	s.must(opCreate(dryConfigMap("default", "settings", map[string]string{"a": "1"})))
	s.must(opCreate(dryPod("default", "web")))
	s.must(opCreate(dryPod("default", "placed")))
	s.must(opBind("default", "placed", "n1"))
	return s
}

func edited(o *pb.Object, fn func(*pb.Object)) *pb.Object {
	o = o.Clone()
	fn(o)
	return o
}

// TestDryRunAnswersAsApply: for every kind of write, DryRun refuses what
// Apply refuses, with the same error, and accepts what Apply accepts with
// the same action and object (but no new resourceVersion), while the store,
// its watchers and its waiters see nothing. Each case then runs the same
// command through ApplyCommand at the index the dry run used.
func TestDryRunAnswersAsApply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmd     func(s *dryStore) *pb.Command
		wantErr error // nil: success with wantAction
		msg     string
		action  string
	}{
		// create
		{name: "create in a missing namespace",
			cmd:     func(*dryStore) *pb.Command { return opCreate(dryConfigMap("nowhere", "x", nil)) },
			wantErr: ErrFailedPrecondition, msg: `namespace "nowhere" not found`},
		{name: "create in a terminating namespace",
			cmd:     func(*dryStore) *pb.Command { return opCreate(dryConfigMap("doomed", "x", nil)) },
			wantErr: ErrFailedPrecondition, msg: `namespace "doomed" is terminating`},
		{name: "create with another Service's clusterIP",
			cmd:     func(*dryStore) *pb.Command { return opCreate(dryService("default", "b", "ClusterIP", "10.96.0.10", 0)) },
			wantErr: ErrAllocated, msg: `services "default/b": spec.clusterIP: Invalid value: "10.96.0.10": provided IP is already allocated`},
		{name: "create of an existing object",
			cmd:     func(*dryStore) *pb.Command { return opCreate(dryConfigMap("default", "settings", nil)) },
			wantErr: ErrAlreadyExists, msg: `configmaps "default/settings"`},
		{name: "create",
			cmd: func(*dryStore) *pb.Command {
				return opCreate(dryConfigMap("default", "new", map[string]string{"k": "v"}))
			},
			action: ActionCreated},
		{name: "create of a Namespace",
			cmd:    func(*dryStore) *pb.Command { return opCreate(dryNamespace("fresh")) },
			action: ActionCreated},

		// update
		{name: "update with a stale resourceVersion",
			cmd: func(s *dryStore) *pb.Command {
				return opUpdate(edited(s.get("ConfigMap", "default", "settings"), func(o *pb.Object) { o.Meta().ResourceVersion = 1 }))
			},
			wantErr: ErrConflict, msg: "the object has been modified"},
		{name: "update changing an immutable clusterIP",
			cmd: func(s *dryStore) *pb.Command {
				return opUpdate(edited(s.get("Service", "default", "a"), func(o *pb.Object) { o.GetService().Spec.ClusterIp = "10.96.0.11" }))
			},
			wantErr: ErrInvalid, msg: `spec.clusterIP: Invalid value: "10.96.0.11": field is immutable`},
		{name: "update moving a bound pod",
			cmd: func(s *dryStore) *pb.Command {
				return opUpdate(edited(s.get("Pod", "default", "placed"), func(o *pb.Object) { o.GetPod().Spec.NodeName = "n2" }))
			},
			wantErr: ErrInvalid, msg: "spec.nodeName is immutable once bound"},
		{name: "update",
			cmd: func(s *dryStore) *pb.Command {
				return opUpdate(edited(s.get("ConfigMap", "default", "settings"), func(o *pb.Object) { o.GetConfigMap().Data["a"] = "2" }))
			},
			action: ActionConfigured},

		// apply
		{name: "apply creating in a missing namespace",
			cmd:     func(*dryStore) *pb.Command { return opApply(dryConfigMap("nowhere", "x", nil)) },
			wantErr: ErrFailedPrecondition, msg: `namespace "nowhere" not found`},
		{name: "apply with another Service's nodePort",
			cmd: func(*dryStore) *pb.Command {
				return opApply(dryService("default", "b", "NodePort", "10.96.0.12", 30080))
			},
			wantErr: ErrAllocated, msg: `spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated`},
		{name: "apply creating",
			cmd: func(*dryStore) *pb.Command {
				return opApply(dryService("default", "b", "NodePort", "10.96.0.12", 30081))
			},
			action: ActionCreated},
		{name: "apply changing",
			cmd: func(*dryStore) *pb.Command {
				return opApply(dryConfigMap("default", "settings", map[string]string{"a": "3"}))
			},
			action: ActionConfigured},
		{name: "apply unchanged",
			cmd: func(*dryStore) *pb.Command {
				return opApply(dryConfigMap("default", "settings", map[string]string{"a": "1"}))
			},
			action: ActionUnchanged},

		// updateStatus
		{name: "status update with another uid",
			cmd: func(s *dryStore) *pb.Command {
				return opStatus(pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "web", Uid: "someone-else"}, Status: &pb.PodStatus{Phase: "Running"}}))
			},
			wantErr: ErrConflict, msg: `precondition failed: uid is`},
		{name: "status update of a missing object",
			cmd: func(*dryStore) *pb.Command {
				return opStatus(pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "ghost"}, Status: &pb.PodStatus{Phase: "Running"}}))
			},
			wantErr: ErrNotFound, msg: `pods "default/ghost"`},
		{name: "status update",
			cmd: func(s *dryStore) *pb.Command {
				return opStatus(pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "web", Uid: s.get("Pod", "default", "web").Meta().GetUid()}, Status: &pb.PodStatus{Phase: "Running"}}))
			},
			action: ActionConfigured},

		// delete
		{name: "delete with a stale resourceVersion",
			cmd: func(*dryStore) *pb.Command {
				return opDelete("ConfigMap", "default", "settings", func(op *pb.DeleteOp) { op.ResourceVersion = 2 })
			},
			wantErr: ErrConflict, msg: "the object has been modified"},
		{name: "delete of namespace default",
			cmd:     func(*dryStore) *pb.Command { return opDelete("Namespace", "", "default", nil) },
			wantErr: ErrInvalid, msg: `namespace "default" cannot be deleted`},
		{name: "delete of namespace kube-node-lease",
			cmd:     func(*dryStore) *pb.Command { return opDelete("Namespace", "", "kube-node-lease", nil) },
			wantErr: ErrInvalid, msg: `namespace "kube-node-lease" cannot be deleted: the masters keep it`},
		{name: "delete",
			cmd:    func(*dryStore) *pb.Command { return opDelete("ConfigMap", "default", "settings", nil) },
			action: ActionDeleted},
		{name: "delete of a bound pod, graceful",
			cmd:    func(*dryStore) *pb.Command { return opDelete("Pod", "default", "placed", nil) },
			action: ActionDeleting},

		// bind
		{name: "bind of a bound pod",
			cmd:     func(*dryStore) *pb.Command { return opBind("default", "placed", "n1") },
			wantErr: ErrConflict, msg: `is already assigned to node "n1"`},
		{name: "bind",
			cmd:    func(*dryStore) *pb.Command { return opBind("default", "web", "n1") },
			action: ActionBound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := setupDryStore(t)
			cmd := leaderCmd(tc.cmd(s), "uid-new")
			sent := gproto.Clone(cmd)
			before := s.state()
			dry := s.f.DryRun(cmd)
			s.unchanged(before)
			if !gproto.Equal(cmd, sent) {
				t.Fatal("DryRun modified the caller's command")
			}

			if tc.wantErr != nil {
				if !errors.Is(dry.Err, tc.wantErr) || !strings.Contains(dry.Err.Error(), tc.msg) {
					t.Fatalf("dry run: %v, want %v containing %q", dry.Err, tc.wantErr, tc.msg)
				}
			} else if dry.Err != nil || dry.Action != tc.action {
				t.Fatalf("dry run: %s %v, want %s", dry.Action, dry.Err, tc.action)
			}
			if dry.Index != 0 {
				t.Errorf("dry run result index %d, want 0: nothing was applied", dry.Index)
			}

			// The same command, applied for real, answers the same.
			index := s.f.AppliedIndex() + 1
			real := s.f.ApplyCommand(index, cmd)
			if fmt.Sprint(real.Err) != fmt.Sprint(dry.Err) || real.Action != dry.Action {
				t.Fatalf("dry run answered %q %v, the real apply %q %v", dry.Action, dry.Err, real.Action, real.Err)
			}
			if tc.wantErr != nil {
				return
			}
			// ... with the same object, except that the dry run made no
			// version: the object keeps the one it has (0 when new).
			want := real.Object.Clone()
			switch {
			case tc.action == ActionUnchanged:
			case tc.action == ActionCreated:
				want.Meta().ResourceVersion = 0
			default:
				want.Meta().ResourceVersion = before.versionOf(want)
			}
			if !gproto.Equal(dry.Object, want) {
				t.Fatalf("dry run object:\n%v\nreal apply's (resourceVersion as stored before):\n%v", dry.Object, want)
			}
		})
	}
}

// versionOf returns the resourceVersion o had in the listed state.
func (st storeState) versionOf(o *pb.Object) uint64 {
	for _, c := range st.lists[o.KindName()] {
		if c.Meta().GetNamespace() == o.Meta().GetNamespace() && c.Meta().GetName() == o.Meta().GetName() {
			return c.Meta().GetResourceVersion()
		}
	}
	return 0
}

// TestDryRunBatch: each command of a batch is checked after the ones
// before it, as in Apply, and the whole batch stores nothing.
func TestDryRunBatch(t *testing.T) {
	s := setupDryStore(t)
	cmd := leaderCmd(&pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{Commands: []*pb.Command{
		opCreate(dryNamespace("team")),
		opCreate(dryConfigMap("team", "c", nil)), // sees the namespace created just before
		opCreate(dryService("team", "s", "ClusterIP", "10.96.0.20", 0)),
		opCreate(dryService("team", "t", "ClusterIP", "10.96.0.20", 0)), // and the IP taken just before
	}}}}, "uid-batch")
	before := s.state()
	res := s.f.DryRun(cmd)
	s.unchanged(before)
	if res.Err != nil || len(res.Batch) != 4 {
		t.Fatalf("batch: %v, %d results", res.Err, len(res.Batch))
	}
	for i, r := range res.Batch[:3] {
		if r.Err != nil || r.Action != ActionCreated || r.Object.Meta().GetResourceVersion() != 0 || r.Index != 0 {
			t.Errorf("batch[%d]: %s %v rv %d index %d", i, r.Action, r.Err, r.Object.Meta().GetResourceVersion(), r.Index)
		}
	}
	if !errors.Is(res.Batch[3].Err, ErrAllocated) {
		t.Errorf("batch[3]: %v, want the clusterIP taken by batch[2]", res.Batch[3].Err)
	}
	if _, err := s.f.Get("Namespace", "", "team"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the batch's namespace was stored: %v", err)
	}
}

// TestDryRunWatchersSeeNothing: a watcher's next event after a dry run is
// the next real write, and the dry run's object is free for it.
func TestDryRunWatchersSeeNothing(t *testing.T) {
	s := setupDryStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := s.f.Watch(ctx, Query{Kind: "ConfigMap"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res := s.f.DryRun(leaderCmd(opCreate(dryConfigMap("default", "ghost", nil)), "uid-ghost")); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := s.f.DryRun(leaderCmd(opDelete("ConfigMap", "default", "settings", nil), "uid-del")); res.Action != ActionDeleted {
		t.Fatalf("dry delete: %s %v", res.Action, res.Err)
	}
	real := s.must(opCreate(dryConfigMap("default", "ghost", map[string]string{"real": "yes"})))
	ev, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != Added || ev.Index != real.Index || ev.Object.GetConfigMap().GetData()["real"] != "yes" {
		t.Fatalf("first event after the dry runs: %s at %d %v, want the real create at %d", ev.Type, ev.Index, ev.Object, real.Index)
	}
	if real.Object.Meta().GetUid() == "uid-ghost" {
		t.Fatal("the real create got the dry run's uid")
	}
}

// TestDryRunPanic: a command that panics inside the store is a refusal,
// as in Apply, and leaves the store usable (the transaction and the
// writers' lock are released).
func TestDryRunPanic(t *testing.T) {
	s := setupDryStore(t)
	// A kind table with a field descriptor missing: a store bug of the
	// kind the recover in safeCommand guards against.
	broken := *s.f.kinds["ConfigMap"]
	broken.apiVersion = nil
	s.f.kinds["ConfigMap"] = &broken
	before := s.state()
	res := s.f.DryRun(leaderCmd(opCreate(dryConfigMap("default", "boom", nil)), "uid-boom"))
	s.unchanged(before)
	if !errors.Is(res.Err, ErrInvalid) || !strings.Contains(res.Err.Error(), "command panicked") {
		t.Fatalf("got %v, want a refusal saying the command panicked", res.Err)
	}
	done := make(chan *Result, 1)
	go func() {
		done <- s.f.ApplyCommand(s.f.AppliedIndex()+1, leaderCmd(opCreate(dryNamespace("after")), "uid-after"))
	}()
	select {
	case r := <-done:
		if r.Err != nil {
			t.Fatalf("apply after the panic: %v", r.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("apply after a panicking dry run blocked: the writers' lock or the transaction was kept")
	}
}

func TestDryRunNilCommand(t *testing.T) {
	s := newDryStore(t)
	if res := s.f.DryRun(nil); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("got %v", res.Err)
	}
}
