package fsm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// randomLog builds a log of n mixed commands, many of which fail, from a
// fixed seed: the randomness is the test's, never the store's.
func randomLog(seed int64, n int) []*pb.Command {
	rng := rand.New(rand.NewSource(seed))
	cmds := []*pb.Command{createCmd(namespace("default")), createCmd(namespace("team"))}
	nss := []string{"default", "team", "missing"}
	name := func() string { return fmt.Sprint("o", rng.Intn(20)) }
	labels := func() map[string]string {
		return map[string]string{"app": fmt.Sprint("a", rng.Intn(3)), "k": fmt.Sprint(rng.Intn(100))}
	}
	for len(cmds) < n {
		ns := nss[rng.Intn(len(nss))]
		var cmd *pb.Command
		switch rng.Intn(9) {
		case 0, 1:
			cmd = createCmd(pod(ns, name(), labels()))
		case 2:
			cm := configMap(ns, name(), map[string]string{"a": fmt.Sprint(rng.Intn(5)), "b": "x"})
			if rng.Intn(3) == 0 {
				cm.Meta().Finalizers = []string{"keep"}
			}
			cmd = createCmd(cm)
		case 3:
			p := pod(ns, name(), labels())
			p.GetPod().Spec.Containers[0].Image = fmt.Sprint("img:", rng.Intn(3))
			cmd = applyCmd(p)
		case 4:
			cmd = updateCmd(configMap(ns, name(), map[string]string{"a": fmt.Sprint(rng.Intn(5))}))
		case 5:
			p := pod(ns, name(), nil)
			p.GetPod().Status = &pb.PodStatus{Phase: []string{"Running", "Failed"}[rng.Intn(2)]}
			cmd = statusCmd(p)
		case 6:
			cmd = bindCmd(ns, name(), fmt.Sprint("n", rng.Intn(3)))
		case 7:
			kind := []string{"Pod", "ConfigMap"}[rng.Intn(2)]
			op := &pb.DeleteOp{Kind: kind, Namespace: ns, Name: name()}
			if rng.Intn(2) == 0 {
				op.GracePeriodSeconds = ptr[int64](0)
			}
			cmd = deleteCmd(op)
		case 8:
			cmd = batchCmd(createCmd(pod(ns, name(), labels())), bindCmd(ns, name(), "n1"))
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}

func replay(t testing.TB, cmds []*pb.Command) *cluster {
	c := newCluster(t, 0)
	for _, cmd := range cmds {
		c.run(cmd) // failures are part of the log
	}
	return c
}

func allObjects(t testing.TB, f *fsm.FSM) []*pb.Object {
	t.Helper()
	var out []*pb.Object
	for _, k := range pb.Kinds() {
		objs, _, err := f.List(fsm.Query{Kind: k.Kind})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, objs...)
	}
	return out
}

func snapshotBytes(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed {
		t.Fatal("Persist did not close the sink")
	}
	return sink.Bytes()
}

func TestDeterminismAndSnapshot(t *testing.T) {
	log := randomLog(1, 600)
	a, b := replay(t, log), replay(t, randomLog(1, 600))
	if a.f.StateHash() != b.f.StateHash() {
		t.Fatal("the same log gave different states")
	}
	if n := len(allObjects(t, a.f)); n < 10 {
		t.Fatalf("the log built only %d objects: a weak test", n)
	}
	if other := replay(t, randomLog(2, 600)); other.f.StateHash() == a.f.StateHash() {
		t.Fatal("different logs gave the same hash")
	}

	// Snapshot while Apply goes on: the snapshot reflects its own moment.
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	hashAt, indexAt := a.f.StateHash(), a.f.AppliedIndex()
	more := randomLog(3, 100)[2:]
	for _, cmd := range more {
		a.run(cmd)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}

	r := newCluster(t, 0)
	r.must(createCmd(namespace("stale-state")))
	if err := r.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if r.f.StateHash() != hashAt || r.f.AppliedIndex() != indexAt {
		t.Fatalf("restored hash/index differ: index %d, want %d", r.f.AppliedIndex(), indexAt)
	}
	b2 := replay(t, log)
	want, got := allObjects(t, b2.f), allObjects(t, r.f)
	if len(want) != len(got) {
		t.Fatalf("%d objects restored, want %d", len(got), len(want))
	}
	for i := range want {
		if !equal(want[i], got[i]) {
			t.Fatalf("object %d differs:\n%v\n%v", i, got[i], want[i])
		}
	}
	// The restored store goes on exactly like the original.
	r.index = indexAt
	for _, cmd := range randomLog(3, 100)[2:] {
		r.run(cmd)
	}
	if r.f.StateHash() != a.f.StateHash() {
		t.Fatal("the restored store diverged")
	}

	// Snapshot -> Restore of the final state into a fresh store.
	fresh := newCluster(t, 0)
	if err := fresh.f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	if fresh.f.StateHash() != a.f.StateHash() || fresh.f.AppliedIndex() != a.f.AppliedIndex() {
		t.Fatal("fresh restore differs")
	}
}

func TestRestoreAndWatches(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(namespace("x")))
	data := snapshotBytes(t, c.f)
	if idx, err := fsm.SnapshotIndex(bytes.NewReader(data)); err != nil || idx != 2 {
		t.Fatalf("SnapshotIndex: %d, %v", idx, err)
	}
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Namespace"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.must(createCmd(namespace("y")))
	if err := c.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, fsm.ErrExpired) {
		t.Fatalf("watch across a restore: %v", err)
	}
	if _, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Namespace"}, 1); !errors.Is(err, fsm.ErrExpired) {
		t.Fatalf("watch from before the snapshot: %v", err)
	}
	w, err = c.f.Watch(context.Background(), fsm.Query{Kind: "Namespace"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	c.index = 2
	idx := c.must(createCmd(namespace("z"))).Index
	expect(t, w, wantEvent{fsm.Added, "z", idx})
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(pod("default", "p", nil)))
	good := snapshotBytes(t, c.f)
	hash := c.f.StateHash()

	dup := append([]byte(nil), good[:len(good)-1]...)
	dup = append(dup, good[20:len(good)-1]...) // every object twice
	dup = append(dup, 0)
	badVersion := append([]byte(nil), good...)
	badVersion[11] = 9
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("NOTSKIFF"), good[8:]...)},
		{"bad version", badVersion},
		{"truncated", good[:len(good)-1]},
		{"truncated object", good[:30]},
		{"trailing data", append(append([]byte(nil), good...), 1)},
		{"duplicate objects", dup},
		{"huge length", append(append([]byte(nil), good[:20]...), 0xff, 0xff, 0xff, 0xff, 0x7f)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.f.Restore(io.NopCloser(bytes.NewReader(tc.data))); err == nil {
				t.Fatal("Restore accepted a bad snapshot")
			}
			if c.f.StateHash() != hash {
				t.Fatal("a failed Restore changed the state")
			}
		})
	}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)
