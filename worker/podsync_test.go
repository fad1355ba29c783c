package worker

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

// fillMessage sets every field of m, recursively, to a value that is not
// the default (lists get one element), so that changing any one field is
// visible.
func fillMessage(t *testing.T, m protoreflect.Message) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			t.Fatalf("%s is a map: teach sameStatus and this test about it", fd.FullName())
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			el := m.Mutable(fd).List().AppendMutable()
			fillMessage(t, el.Message())
		case fd.IsList():
			m.Mutable(fd).List().Append(otherScalar(t, fd, fd.Default()))
		case fd.Kind() == protoreflect.MessageKind:
			fillMessage(t, m.Mutable(fd).Message())
		default:
			m.Set(fd, otherScalar(t, fd, fd.Default()))
		}
	}
}

// otherScalar returns a value of fd's kind that differs from v.
func otherScalar(t *testing.T, fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	t.Helper()
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(!v.Bool())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(v.String() + "x")
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(v.Int()) + 1)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(v.Int() + 1)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(v.Uint()) + 1)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(v.Uint() + 1)
	}
	t.Fatalf("%s has kind %s: teach sameStatus and this test about it", fd.FullName(), fd.Kind())
	return protoreflect.Value{}
}

// step is one hop from a message to a message inside it: a singular field,
// or element 0 of a list.
type step struct{ fd protoreflect.FieldDescriptor }

func follow(m protoreflect.Message, path []step) protoreflect.Message {
	for _, s := range path {
		if s.fd.IsList() {
			m = m.Mutable(s.fd).List().Get(0).Message()
		} else {
			m = m.Mutable(s.fd).Message()
		}
	}
	return m
}

// TestSameStatusComparesEveryField changes each field of a full PodStatus
// (and of every message in it) in every way that matters to proto.Equal,
// one at a time, and checks that sameStatus agrees with proto.Equal: a
// field added to the API that sameStatus does not compare fails here, as
// would treating an absent message as an empty one.
func TestSameStatusComparesEveryField(t *testing.T) {
	base := &pb.PodStatus{}
	fillMessage(t, base.ProtoReflect())
	agree := func(what string, a, b *pb.PodStatus) {
		t.Helper()
		want := gproto.Equal(a, b)
		if got := sameStatus(a, b); got != want {
			t.Errorf("%s: sameStatus = %v, proto.Equal = %v", what, got, want)
		}
		if got := sameStatus(b, a); got != want {
			t.Errorf("%s (swapped): sameStatus = %v, proto.Equal = %v", what, got, want)
		}
	}
	agree("a copy", base, gproto.Clone(base).(*pb.PodStatus))
	variant := func(path []step, change func(m protoreflect.Message)) *pb.PodStatus {
		c := gproto.Clone(base).(*pb.PodStatus)
		change(follow(c.ProtoReflect(), path))
		return c
	}
	fieldsSeen := 0
	var walk func(path []step, md protoreflect.MessageDescriptor, name string)
	walk = func(path []step, md protoreflect.MessageDescriptor, name string) {
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			fname := name + "." + string(fd.Name())
			fieldsSeen++
			cleared := variant(path, func(m protoreflect.Message) { m.Clear(fd) })
			agree(fname+" cleared", base, cleared)
			switch {
			case fd.IsList():
				longer := variant(path, func(m protoreflect.Message) {
					l := m.Mutable(fd).List()
					if fd.Kind() == protoreflect.MessageKind {
						fillMessage(t, l.AppendMutable().Message())
					} else {
						l.Append(otherScalar(t, fd, fd.Default()))
					}
				})
				agree(fname+" one more element", base, longer)
				if fd.Kind() == protoreflect.MessageKind {
					walk(append(path[:len(path):len(path)], step{fd}), fd.Message(), fname+"[0]")
				}
			case fd.Kind() == protoreflect.MessageKind:
				// Present but empty, against present and full, and
				// against absent.
				empty := variant(path, func(m protoreflect.Message) { m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message())) })
				agree(fname+" empty", base, empty)
				agree(fname+" empty against absent", empty, cleared)
				walk(append(path[:len(path):len(path)], step{fd}), fd.Message(), fname)
			default:
				changed := variant(path, func(m protoreflect.Message) { m.Set(fd, otherScalar(t, fd, m.Get(fd))) })
				agree(fname+" changed", base, changed)
				if fd.HasPresence() {
					// An optional field set to its default is not an
					// absent one.
					zero := variant(path, func(m protoreflect.Message) { m.Set(fd, fd.Default()) })
					agree(fname+" set to default against absent", zero, cleared)
				}
			}
		}
	}
	walk(nil, base.ProtoReflect().Descriptor(), "status")
	if fieldsSeen < 40 {
		t.Fatalf("walked %d fields, want the whole PodStatus", fieldsSeen)
	}
	agree("nil against empty", nil, &pb.PodStatus{})
	agree("nil against nil", nil, nil)
}

// TestSameStatusContainerChanges pins the changes of a pod's status that
// must be written even though the messages involved are empty: a
// container's state moving waiting -> running -> terminated (with empty
// sub-messages, as a runtime without timestamps gives), a ready flip, a
// restart, and a condition's change.
func TestSameStatusContainerChanges(t *testing.T) {
	withState := func(s *pb.ContainerState, last *pb.ContainerState) *pb.PodStatus {
		return &pb.PodStatus{Phase: phaseRunning, ContainerStatuses: []*pb.ContainerStatus{
			{Name: "app", State: s, LastState: last, Started: gproto.Bool(true)},
		}}
	}
	waiting := &pb.ContainerState{Waiting: &pb.ContainerStateWaiting{}}
	running := &pb.ContainerState{Running: &pb.ContainerStateRunning{}}
	terminated := &pb.ContainerState{Terminated: &pb.ContainerStateTerminated{}}
	ready := func(r bool) *pb.PodStatus {
		st := withState(running, &pb.ContainerState{})
		st.ContainerStatuses[0].Ready = r
		return st
	}
	restarts := func(n int32) *pb.PodStatus {
		st := withState(running, &pb.ContainerState{})
		st.ContainerStatuses[0].RestartCount = n
		return st
	}
	cond := func(status string, at int64) *pb.PodStatus {
		st := withState(running, &pb.ContainerState{})
		st.Conditions = []*pb.PodCondition{{Type: conditionReady, Status: status, LastTransitionTime: &timestamppb.Timestamp{Seconds: at}}}
		return st
	}
	for _, tc := range []struct {
		name string
		a, b *pb.PodStatus
		same bool
	}{
		{"waiting -> running", withState(waiting, nil), withState(running, nil), false},
		{"running -> terminated", withState(running, nil), withState(terminated, nil), false},
		{"waiting -> terminated", withState(waiting, nil), withState(terminated, nil), false},
		{"running{} -> no state", withState(running, nil), withState(nil, nil), false},
		{"state {} -> no state", withState(&pb.ContainerState{}, nil), withState(nil, nil), false},
		{"lastState {} -> terminated{}", withState(running, &pb.ContainerState{}), withState(running, terminated), false},
		{"lastState absent -> {}", withState(running, nil), withState(running, &pb.ContainerState{}), false},
		{"started true -> unset", withState(running, nil), &pb.PodStatus{Phase: phaseRunning, ContainerStatuses: []*pb.ContainerStatus{{Name: "app", State: running}}}, false},
		{"ready flips", ready(false), ready(true), false},
		{"restartCount", restarts(0), restarts(1), false},
		{"condition status", cond("False", 5), cond("True", 5), false},
		{"condition transition time", cond("True", 5), cond("True", 6), false},
		{"condition transition time absent", cond("True", 5), withState(running, &pb.ContainerState{}), false},
		{"same running", withState(running, &pb.ContainerState{}), withState(running, &pb.ContainerState{}), true},
		{"same condition", cond("True", 5), cond("True", 5), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameStatus(tc.a, tc.b); got != tc.same {
				t.Errorf("sameStatus = %v, want %v", got, tc.same)
			}
			if got := gproto.Equal(tc.a, tc.b); got != tc.same {
				t.Errorf("proto.Equal = %v: the case itself is wrong", got)
			}
		})
	}
}

// A status that differs from the API's only in which (empty) state a
// container is in is written; one equal to the API's is not, and deciding
// that allocates nothing.
func TestStatusWriterEmptyStateChange(t *testing.T) {
	r := &recordingWrites{}
	s := &statusWriter{writeFn: r.write}
	ctx := context.Background()
	pod := statusPod(3, phaseRunning)
	pod.Status.ContainerStatuses = []*pb.ContainerStatus{{Name: "app", State: &pb.ContainerState{Waiting: &pb.ContainerStateWaiting{}}}}
	st := gproto.Clone(pod.GetStatus()).(*pb.PodStatus)
	st.ContainerStatuses[0].State = &pb.ContainerState{Running: &pb.ContainerStateRunning{}}
	s.submit(ctx, pod, st, 0)
	s.flush()
	if got := r.written(); len(got) != 1 {
		t.Fatalf("written %v, want the running state written once", got)
	}
	echo := statusPod(4, phaseRunning)
	echo.Status = gproto.Clone(st).(*pb.PodStatus)
	if allocs := testing.AllocsPerRun(100, func() { s.submit(ctx, echo, st, 0) }); allocs != 0 {
		t.Errorf("submit of the status the API has: %v allocations, want 0 (no reflection)", allocs)
	}
	s.flush()
	if got := r.written(); len(got) != 1 {
		t.Fatalf("written %v, want no write of the status the API has", got)
	}
}

// TestSameRecordComparesEveryField changes each field of a pod record and
// of a container record, one at a time, and checks sameRecord sees it: a
// field added to either that sameRecord does not compare fails here.
func TestSameRecordComparesEveryField(t *testing.T) {
	base := &podRecord{UID: "u", Namespace: "ns", Name: "p", StartTime: time.Unix(100, 0), Grace: 30,
		Containers: map[string]*containerRecord{"app": {RestartCount: 1, Backoff: time.Second}}}
	if !sameRecord(base, copyRecord(base)) {
		t.Fatal("a record differs from its copy")
	}
	change := func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		default:
			if tm, ok := v.Addr().Interface().(*time.Time); ok {
				*tm = tm.Add(time.Second)
				return
			}
			t.Fatalf("field of kind %s: teach sameRecord and this test about it", v.Kind())
		}
	}
	rt := reflect.TypeFor[podRecord]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		if f.Name == "Containers" {
			continue
		}
		c := copyRecord(base)
		change(reflect.ValueOf(c).Elem().Field(i))
		if sameRecord(base, c) || sameRecord(c, base) {
			t.Errorf("podRecord.%s changed, sameRecord says the same", f.Name)
		}
	}
	ct := reflect.TypeFor[containerRecord]()
	for i := range ct.NumField() {
		c := copyRecord(base)
		change(reflect.ValueOf(c.Containers["app"]).Elem().Field(i))
		if sameRecord(base, c) || sameRecord(c, base) {
			t.Errorf("containerRecord.%s changed, sameRecord says the same", ct.Field(i).Name)
		}
	}
	c := copyRecord(base)
	c.Containers["sidecar"] = &containerRecord{}
	if sameRecord(base, c) || sameRecord(c, base) {
		t.Error("a container added, sameRecord says the same")
	}
	c = copyRecord(base)
	c.Containers = map[string]*containerRecord{"other": base.Containers["app"]}
	if sameRecord(base, c) {
		t.Error("a container renamed, sameRecord says the same")
	}
	// The copy is deep: changing the original does not change it.
	c = copyRecord(base)
	base.Containers["app"].RestartCount++
	if sameRecord(base, c) {
		t.Error("a copy shares its container records with the original")
	}
}

// countingState counts saves and can be made to fail them.
type countingState struct {
	stateStore
	mu   sync.Mutex
	puts int
	fail bool
}

func (c *countingState) put(r *podRecord) error {
	c.mu.Lock()
	c.puts++
	fail := c.fail
	c.mu.Unlock()
	if fail {
		return errors.New("disk full")
	}
	return c.stateStore.put(r)
}

func (c *countingState) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts
}

func (c *countingState) setFail(fail bool) {
	c.mu.Lock()
	c.fail = fail
	c.mu.Unlock()
}

func (c *countingState) saved(t *testing.T, uid string) *podRecord {
	t.Helper()
	all, err := c.load()
	if err != nil {
		t.Fatal(err)
	}
	return all[uid]
}

// TestPersistSavesOnlyChanges: a running pod's record is saved when the pod
// starts, not again while nothing changes (and deciding that allocates
// nothing); it is saved when a container's restart count or backoff or the
// pod's grace period changes; a failed save is retried at the next sync.
func TestPersistSavesOnlyChanges(t *testing.T) {
	w, _ := runningPodWorker(t)
	st := &countingState{stateStore: w.a.state}
	w.a.state = st
	ctx := context.Background()
	w.saved = nil // as after adopt: the first sync saves
	w.sync(ctx)
	if n := st.count(); n != 1 {
		t.Fatalf("%d saves at the first sync, want 1", n)
	}
	for range 5 {
		w.sync(ctx)
	}
	if allocs := testing.AllocsPerRun(100, w.persist); allocs != 0 {
		t.Errorf("persist of an unchanged record: %v allocations, want 0 (no marshalling)", allocs)
	}
	if n := st.count(); n != 1 {
		t.Fatalf("%d saves after unchanged syncs, want 1", n)
	}

	setRestarts := func(n int32) {
		w.mu.Lock()
		w.ctrs["app"].restartCount = n
		w.mu.Unlock()
	}
	setRestarts(3)
	st.setFail(true)
	w.persist()
	if n := st.count(); n != 2 {
		t.Fatalf("%d saves after a restart count change, want 2", n)
	}
	st.setFail(false)
	w.persist() // the failed save again
	if n := st.count(); n != 3 {
		t.Fatalf("%d saves, want the failed save retried", n)
	}
	if got := st.saved(t, w.uid).Containers["app"].RestartCount; got != 3 {
		t.Fatalf("saved restart count %d, want 3", got)
	}
	w.persist()
	if n := st.count(); n != 3 {
		t.Fatalf("%d saves, want none once saved", n)
	}

	w.mu.Lock()
	w.ctrs["sidecar"].backoff = 20 * time.Second
	w.mu.Unlock()
	w.persist()
	if n := st.count(); n != 4 {
		t.Fatalf("%d saves after a backoff change, want 4", n)
	}
	if got := st.saved(t, w.uid).Containers["sidecar"].Backoff; got != 20*time.Second {
		t.Fatalf("saved backoff %s, want 20s", got)
	}

	// The pod's grace period changes (it comes from the pod each sync).
	pod, _ := w.snapshot()
	pod = gproto.Clone(pod).(*pb.Pod)
	pod.Spec.TerminationGracePeriodSeconds = gproto.Int64(5)
	w.update(pod, false)
	w.sync(ctx)
	if n := st.count(); n != 5 {
		t.Fatalf("%d saves after a grace period change, want 5", n)
	}
	if got := st.saved(t, w.uid).Grace; got != 5 {
		t.Fatalf("saved grace %d, want 5", got)
	}
	w.sync(ctx)
	if n := st.count(); n != 5 {
		t.Fatalf("%d saves, want none for an unchanged pod", n)
	}
}

// The steady sync of a running pod writes nothing: no status, no record.
func TestPodWorkerSteadySyncWritesNothing(t *testing.T) {
	w, e := runningPodWorker(t)
	st := &countingState{stateStore: w.a.state}
	w.a.state = st
	ctx := context.Background()
	writes := e.n
	for range 10 {
		w.sync(ctx)
	}
	w.sw.flush()
	if e.n != writes || st.count() != 0 {
		t.Fatalf("%d status writes and %d saves in steady syncs, want none", e.n-writes, st.count())
	}
	// A container that exits and is restarted is news: the status shows
	// the restart, and the record keeps its restart count and backoff.
	w.mu.Lock()
	id := w.ctrs["app"].cur.id
	w.mu.Unlock()
	if err := w.a.rt.Stop(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	w.sync(ctx)
	w.sw.flush()
	if e.n != writes+1 {
		t.Fatalf("%d status writes after a restart, want 1", e.n-writes)
	}
	if got := e.last.GetContainerStatuses()[0].GetRestartCount(); got != 1 {
		t.Fatalf("written restart count %d, want 1", got)
	}
	if st.count() != 1 || st.saved(t, w.uid).Containers["app"].RestartCount != 1 {
		t.Fatalf("%d saves after a restart, want 1 with restart count 1", st.count())
	}
}
