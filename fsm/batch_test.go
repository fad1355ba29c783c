package fsm_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// randomLogs is a history with many collisions between commands of one
// batch: creates of the same name, updates with stale resourceVersions,
// deletes, binds, a configuration entry and an undecodable entry.
func randomLogs(t *testing.T, seed uint64, n int) []*raft.Log {
	rng := rand.New(rand.NewPCG(seed, 1))
	logs := make([]*raft.Log, 0, n+2)
	name := func() string { return fmt.Sprintf("p%d", rng.IntN(6)) }
	for i := 1; i <= n; i++ {
		index := uint64(i)
		var cmd *pb.Command
		switch r := rng.IntN(9); {
		case i == 1:
			cmd = createCmd(namespace("default"))
		case r == 0:
			logs = append(logs, &raft.Log{Index: index, Type: raft.LogConfiguration})
			continue
		case r == 1 && i%7 == 0:
			logs = append(logs, &raft.Log{Index: index, Type: raft.LogCommand, Data: []byte{1, 0xff}})
			continue
		case r <= 3:
			cmd = createCmd(pod("default", name(), map[string]string{"app": name()}))
		case r == 4:
			p := pod("default", name(), map[string]string{"v": fmt.Sprint(i)})
			p.Meta().ResourceVersion = uint64(rng.IntN(i + 1))
			cmd = updateCmd(p)
		case r == 5:
			cmd = applyCmd(configMap("default", name(), map[string]string{"k": fmt.Sprint(i)}))
		case r == 6:
			cmd = deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: name()})
		case r == 7:
			cmd = bindCmd("default", name(), fmt.Sprintf("n%d", rng.IntN(2)))
		default:
			cmd = batchCmd(createCmd(configMap("default", name(), nil)), bindCmd("default", name(), "n1"))
		}
		cmd.Time = timeAt(index)
		cmd.Uid = fmt.Sprintf("uid-%d", index)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	}
	return logs
}

func resultString(r *fsm.Result) string {
	if r == nil {
		return "<nil>"
	}
	s := fmt.Sprintf("%d %s err=%v obj=%v", r.Index, r.Action, r.Err, r.Object)
	for _, b := range r.Batch {
		s += " [" + resultString(b) + "]"
	}
	return s
}

// TestApplyBatchEqualsApply: applying a history in batches of any size
// gives the same results, events, index and state as one entry at a time.
func TestApplyBatchEqualsApply(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			logs := randomLogs(t, seed, 300)
			one, batched := newCluster(t, 1000), newCluster(t, 1000)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			w1, err := one.f.Watch(ctx, fsm.Query{Kind: "Pod"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			w2, err := batched.f.Watch(ctx, fsm.Query{Kind: "Pod"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, l := range logs {
				want = append(want, resultString(one.f.Apply(l).(*fsm.Result)))
			}
			var got []string
			rng := rand.New(rand.NewPCG(seed, 2))
			for rest := logs; len(rest) > 0; {
				n := min(len(rest), 1+rng.IntN(40))
				for _, r := range batched.f.ApplyBatch(rest[:n]) {
					got = append(got, resultString(r.(*fsm.Result)))
				}
				if batched.f.AppliedIndex() != rest[n-1].Index {
					t.Fatalf("applied index %d after a batch ending at %d", batched.f.AppliedIndex(), rest[n-1].Index)
				}
				rest = rest[n:]
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("result %d:\n batched %s\n one by one %s", i, got[i], want[i])
				}
			}
			if h1, h2 := one.f.StateHash(), batched.f.StateHash(); h1 != h2 {
				t.Fatalf("state hashes differ: %s vs %s", h1, h2)
			}
			events := 0
			for one.f.AppliedIndex() > 0 {
				ectx, ecancel := context.WithTimeout(ctx, 50*time.Millisecond)
				e1, err1 := w1.Next(ectx)
				e2, err2 := w2.Next(ectx)
				ecancel()
				if err1 != nil || err2 != nil {
					if (err1 == nil) != (err2 == nil) {
						t.Fatalf("event %d: one watch ended (%v), the other not (%v)", events, err1, err2)
					}
					break
				}
				if e1.Type != e2.Type || e1.Index != e2.Index || !gproto.Equal(e1.Object, e2.Object) {
					t.Fatalf("event %d: %s %d vs %s %d", events, e1.Type, e1.Index, e2.Type, e2.Index)
				}
				events++
			}
			if events == 0 {
				t.Fatal("no events compared")
			}
		})
	}
}

// BenchmarkApplyBatch: creates of 256-byte ConfigMaps in group-committed
// batches of 64, as raft hands them over under load; ns/op is per command.
func BenchmarkApplyBatch(b *testing.B) {
	c := newCluster(b, 0)
	c.must(createCmd(namespace("default")))
	const batch = 64
	value := string(make([]byte, 256))
	logs := make([]*raft.Log, 0, batch)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.index++
		cmd := createCmd(configMap("default", fmt.Sprintf("cm-%d", i), map[string]string{"v": value}))
		cmd.Time, cmd.Uid = timeAt(c.index), fmt.Sprintf("uid-%d", c.index)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: c.index, Type: raft.LogCommand, Data: data})
		if len(logs) == batch || i == b.N-1 {
			for _, r := range c.f.ApplyBatch(logs) {
				if err := r.(*fsm.Result).Err; err != nil {
					b.Fatal(err)
				}
			}
			logs = logs[:0]
		}
	}
}

// TestCreated: the state a create left is found by uid even after later
// writes, and not once it has left the event window or for another uid.
func TestCreated(t *testing.T) {
	c := newCluster(t, 8)
	c.must(createCmd(namespace("default")))
	created := c.must(createCmd(configMap("default", "cm", map[string]string{"v": "1"})))
	uid := created.Object.Meta().GetUid()
	c.must(updateCmd(configMap("default", "cm", map[string]string{"v": "2"})))
	got, ok := c.f.Created("ConfigMap", "default", "cm", uid)
	if !ok || got.GetConfigMap().GetData()["v"] != "1" || got.Meta().GetResourceVersion() != created.Index {
		t.Fatalf("Created = %v, %v; want v=1 at %d", got, ok, created.Index)
	}
	if _, ok := c.f.Created("cm", "default", "cm", "other-uid"); ok {
		t.Fatal("found with another uid")
	}
	for i := range 10 { // push the Added event out of the window of 8
		c.must(createCmd(configMap("default", fmt.Sprintf("x%d", i), nil)))
	}
	if _, ok := c.f.Created("ConfigMap", "default", "cm", uid); ok {
		t.Fatal("found after leaving the event window")
	}
}

// casLogs is a history like the chaos workload's: creates, deletes and
// compare-and-set updates of a few ConfigMaps, most with the
// resourceVersion the object has at that point (so they succeed), some
// stale. A reference store decides the current resourceVersion while the
// history is built.
func casLogs(t *testing.T, seed uint64, n int) []*raft.Log {
	rng := rand.New(rand.NewPCG(seed, 3))
	ref := newCluster(t, 1000)
	var logs []*raft.Log
	for i := 1; i <= n; i++ {
		index := uint64(i)
		var cmd *pb.Command
		name := fmt.Sprintf("own-%d", rng.IntN(3))
		switch r := rng.IntN(20); {
		case i == 1:
			cmd = createCmd(namespace("default"))
		case r == 0:
			cmd = createCmd(configMap("default", name, map[string]string{"v": fmt.Sprint(i)}))
		case r == 1:
			cmd = deleteCmd(&pb.DeleteOp{Kind: "ConfigMap", Namespace: "default", Name: name})
		default:
			cm := configMap("default", name, map[string]string{"v": fmt.Sprint(i)})
			if cur, err := ref.f.Get("ConfigMap", "default", name); err == nil && r != 2 {
				cm.Meta().ResourceVersion = cur.Meta().ResourceVersion
			} else {
				cm.Meta().ResourceVersion = uint64(rng.IntN(i + 1))
			}
			cmd = updateCmd(cm)
		}
		cmd.Time = timeAt(index)
		cmd.Uid = fmt.Sprintf("uid-%d", index)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		l := &raft.Log{Index: index, Type: raft.LogCommand, Data: data}
		ref.f.Apply(l)
		logs = append(logs, l)
	}
	return logs
}

// TestCASBatchEqualsApply: compare-and-set histories give the same results
// and state in batches of any size (up to raft's 1024 per batch) as one
// entry at a time, and most updates in them succeed.
func TestCASBatchEqualsApply(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		logs := casLogs(t, seed, 400)
		one, batched := newCluster(t, 1000), newCluster(t, 1000)
		var want, got []string
		updated := 0
		for _, l := range logs {
			r := one.f.Apply(l).(*fsm.Result)
			if r.Err == nil && r.Action == fsm.ActionConfigured {
				updated++
			}
			want = append(want, resultString(r))
		}
		if updated < len(logs)/4 {
			t.Fatalf("seed %d: only %d of %d updates succeeded: the history tests little", seed, updated, len(logs))
		}
		rng := rand.New(rand.NewPCG(seed, 4))
		for rest := logs; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(200))
			for _, r := range batched.f.ApplyBatch(rest[:n]) {
				got = append(got, resultString(r.(*fsm.Result)))
			}
			rest = rest[n:]
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("seed %d result %d:\n batched %s\n one by one %s", seed, i, got[i], want[i])
			}
		}
		if h1, h2 := one.f.StateHash(), batched.f.StateHash(); h1 != h2 {
			t.Fatalf("seed %d: state hashes differ", seed)
		}
	}
}

// TestReadsDuringWrites: lists, counts and snapshots taken while batches
// are applied each see exactly the objects of the index they report, and
// a snapshot written out while writes go on restores to its index's state.
// Run with -race: readers share the store's trees with the writer's
// copy-on-write transactions.
func TestReadsDuringWrites(t *testing.T) {
	const n = 3000
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default"))) // index 1
	logs := make([]*raft.Log, n)
	for i := range logs {
		idx := uint64(2 + i)
		cmd := createCmd(configMap("default", fmt.Sprintf("cm-%05d", i), map[string]string{"v": "x"}))
		cmd.Time, cmd.Uid = timeAt(idx), fmt.Sprint("uid-", idx)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		logs[i] = &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	done := make(chan struct{})
	errs := make(chan error, 3)
	reader := func(read func() error) {
		for {
			select {
			case <-done:
				errs <- nil
				return
			default:
			}
			if err := read(); err != nil {
				errs <- err
				return
			}
		}
	}
	// The objects created up to index are cm-00000 .. cm-(index-2).
	go reader(func() error {
		items, index, err := c.f.List(fsm.Query{Kind: "ConfigMap", Namespace: "default"})
		if err != nil {
			return err
		}
		if want := int(index) - 1; len(items) != want {
			return fmt.Errorf("list at index %d: %d objects, want %d", index, len(items), want)
		}
		for i, o := range items {
			if name := fmt.Sprintf("cm-%05d", i); o.Meta().GetName() != name {
				return fmt.Errorf("list at index %d: item %d is %s, want %s", index, i, o.Meta().GetName(), name)
			}
		}
		return nil
	})
	go reader(func() error {
		before := c.f.AppliedIndex()
		got, err := c.f.Count("ConfigMap")
		after := c.f.AppliedIndex()
		if err != nil {
			return err
		}
		if got < int(before)-1 || got > int(after)-1 {
			return fmt.Errorf("count %d between indexes %d and %d", got, before, after)
		}
		return nil
	})
	go reader(func() error {
		snap, err := c.f.Snapshot()
		if err != nil {
			return err
		}
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			return err
		}
		index, err := fsm.SnapshotIndex(bytes.NewReader(sink.Bytes()))
		if err != nil {
			return err
		}
		fresh, err := fsm.New(fsm.DefaultConfig()) // not newCluster: no t.Fatal off the test goroutine
		if err != nil {
			return err
		}
		if err := fresh.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
			return err
		}
		if got, _ := fresh.Count("ConfigMap"); got != int(index)-1 {
			return fmt.Errorf("snapshot at index %d restores %d objects, want %d", index, got, index-1)
		}
		return nil
	})
	for i := 0; i < n; i += 16 {
		for _, res := range c.f.ApplyBatch(logs[i:min(i+16, n)]) {
			if err := res.(*fsm.Result).Err; err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
