package fsm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// A list selects on what the store derived from each object when it was
// written; a watch selects on the decoded objects of its events. A watch
// continues a list, so both must select alike: here every selector's list
// must equal the state its watch, replayed from the start, arrives at.
// (Index 1 created a namespace, which no query selects.)
func TestListAndWatchSelectAlike(t *testing.T) {
	c := newCluster(t, 0)
	for _, ns := range []string{"a", "ab", "b"} {
		c.must(createCmd(namespace(ns)))
	}
	for i := 0; i < 60; i++ {
		ns := []string{"a", "ab", "b"}[i%3]
		labels := map[string]string{}
		if i%2 == 0 {
			labels["app"] = fmt.Sprint("web-", i%4)
		}
		if i%5 == 0 {
			labels["tier"] = "front"
		}
		if i%7 == 0 {
			labels = nil
		}
		name := fmt.Sprint("p", i)
		c.must(createCmd(pod(ns, name, labels)))
		if i%3 != 1 {
			c.must(bindCmd(ns, name, fmt.Sprint("n", i%4)))
		}
		if i%4 == 0 {
			p := c.get("Pod", ns, name)
			c.must(statusCmd(edit(p, func(o *pb.Object) { o.GetPod().Status.Phase = "Running" })))
		}
		if i%6 == 0 { // labels change: some objects leave or join selections
			p := c.get("Pod", ns, name)
			c.must(updateCmd(edit(p, func(o *pb.Object) { o.Meta().Labels = map[string]string{"app": "moved"} })))
		}
		if i%11 == 0 {
			c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: ns, Name: name, GracePeriodSeconds: new(int64)}))
		}
		c.must(createCmd(configMap(ns, name, nil)))
	}
	// Each query has a sentinel that it selects, written after the list:
	// its event ends the watch's replay.
	type sentinel struct {
		ns, name  string
		labels    map[string]string
		node      string
		running   bool
		configMap bool
	}
	for i, tc := range []struct {
		q fsm.Query
		s sentinel
	}{
		{fsm.Query{Kind: "Pod"}, sentinel{ns: "a"}},
		{fsm.Query{Kind: "Pod", Namespace: "a"}, sentinel{ns: "a"}},
		{fsm.Query{Kind: "Pod", LabelSelector: "app=web-0"}, sentinel{ns: "b", labels: map[string]string{"app": "web-0"}}},
		{fsm.Query{Kind: "Pod", LabelSelector: "app in (web-0,web-2,moved),!tier"}, sentinel{ns: "b", labels: map[string]string{"app": "moved"}}},
		{fsm.Query{Kind: "Pod", LabelSelector: "tier"}, sentinel{ns: "ab", labels: map[string]string{"tier": "x"}}},
		{fsm.Query{Kind: "Pod", LabelSelector: "app!=moved"}, sentinel{ns: "ab"}},
		{fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName=n1"}, sentinel{ns: "a", node: "n1"}},
		{fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName!=n1"}, sentinel{ns: "a", node: "n2"}},
		{fsm.Query{Kind: "Pod", FieldSelector: "status.phase=Running", LabelSelector: "app"}, sentinel{ns: "a", labels: map[string]string{"app": "x"}, running: true}},
		{fsm.Query{Kind: "Pod", FieldSelector: "status.phase!=Running,metadata.namespace=ab"}, sentinel{ns: "ab"}},
		{fsm.Query{Kind: "Pod", FieldSelector: "metadata.name=p12"}, sentinel{ns: "b", name: "p12"}},
		{fsm.Query{Kind: "ConfigMap", Namespace: "b", FieldSelector: "metadata.name!=p2"}, sentinel{ns: "b", configMap: true}},
	} {
		q := tc.q
		listed, _, err := c.f.List(q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		var want []string
		for _, o := range listed {
			want = append(want, o.Meta().Key())
		}
		s := tc.s
		if s.name == "" {
			s.name = fmt.Sprint("sentinel-", i)
		}
		if s.configMap {
			c.must(createCmd(configMap(s.ns, s.name, nil)))
		} else {
			c.must(createCmd(pod(s.ns, s.name, s.labels)))
		}
		if s.node != "" {
			c.must(bindCmd(s.ns, s.name, s.node))
		}
		if s.running {
			c.must(statusCmd(edit(c.get("Pod", s.ns, s.name), func(o *pb.Object) { o.GetPod().Status.Phase = "Running" })))
		}
		end := s.ns + "/" + s.name
		w, err := c.f.Watch(context.Background(), q, 1) // after index 1: every object's history
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for {
			ev := next(t, w)
			key := ev.Object.Meta().Key()
			if key == end {
				break
			}
			seen[key] = ev.Type != fsm.Deleted
		}
		var got []string
		for k, in := range seen {
			if in {
				got = append(got, k)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if len(want) == 0 && q.FieldSelector != "metadata.name=p12" {
			t.Fatalf("%+v: selects nothing; the case tests nothing", q)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v:\nlist  %v\nwatch %v", q, want, got)
		}
	}
}

// Reads decode their own copy of the stored bytes: changing what Get or
// List returned changes nothing in the store.
func TestReadsAreCopies(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(configMap("default", "cm", map[string]string{"k": "v"})))
	got := c.get("ConfigMap", "default", "cm")
	got.GetConfigMap().Data["k"] = "changed"
	got.Meta().Labels = map[string]string{"x": "y"}
	listed, _, err := c.f.List(fsm.Query{Kind: "ConfigMap"})
	if err != nil || len(listed) != 1 {
		t.Fatalf("list: %v %v", listed, err)
	}
	listed[0].GetConfigMap().Data["k"] = "changed too"
	again := c.get("ConfigMap", "default", "cm")
	if again.GetConfigMap().Data["k"] != "v" || again.Meta().Labels != nil {
		t.Fatalf("the store changed with a returned object: %v", again)
	}
	if res := c.must(updateCmd(c.get("ConfigMap", "default", "cm"))); res.Action != fsm.ActionUnchanged {
		t.Fatalf("update with the stored object: %q, want unchanged", res.Action)
	}
}

func TestCount(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	c.must(createCmd(namespace("other")))
	for i := 0; i < 3; i++ {
		c.must(createCmd(configMap("default", fmt.Sprint("cm", i), nil)))
	}
	c.must(createCmd(configMap("other", "cm", nil)))
	c.must(createCmd(pod("other", "p", nil)))
	for kind, want := range map[string]int{"ConfigMap": 4, "configmaps": 4, "Namespace": 2, "Pod": 1, "Node": 0} {
		if n, err := c.f.Count(kind); err != nil || n != want {
			t.Errorf("Count(%s) = %d, %v; want %d", kind, n, err, want)
		}
	}
	if _, err := c.f.Count("Gizmo"); err == nil || !strings.Contains(err.Error(), "Gizmo") {
		t.Fatalf("unknown kind: %v", err)
	}
}

// The store keeps objects encoded, so what it holds per object is a few
// heap objects the garbage collector scans, not a decoded message tree.
// A 256-byte ConfigMap costs 604 bytes in 3 heap objects (in go-memdb's
// radix tree it cost 961 in 8; decoded, with a namespace index, 2,077 in
// 23). Allocation sizes are deterministic, so the bounds hold on any
// machine.
func TestStoreHeapPerObject(t *testing.T) {
	const n = 20000
	c := newCluster(t, 1) // the watch window holds decoded events: keep one
	c.must(createCmd(namespace("default")))
	val := strings.Repeat("x", 200)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before) // the log entries below are garbage by the end
	logs := make([]*raft.Log, n)
	for i := range logs {
		idx := uint64(2 + i)
		cmd := createCmd(configMap("default", fmt.Sprint("cm-", i), map[string]string{"data": val}))
		cmd.Time, cmd.Uid = timeAt(idx), fmt.Sprint("uid-", idx)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		logs[i] = &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	for i := 0; i < n; i += 16 {
		for _, res := range c.f.ApplyBatch(logs[i:min(i+16, n)]) {
			if err := res.(*fsm.Result).Err; err != nil {
				t.Fatal(err)
			}
		}
	}
	logs = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	bytes := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	objects := (int64(after.HeapObjects) - int64(before.HeapObjects)) / n
	t.Logf("per stored ConfigMap: %d bytes in %d heap objects", bytes, objects)
	if bytes > 700 || objects > 5 {
		t.Fatalf("per stored ConfigMap: %d bytes in %d heap objects, want at most 700 in 5", bytes, objects)
	}
	if stored, err := c.f.Count("ConfigMap"); err != nil || stored != n {
		t.Fatalf("stored %d, %v", stored, err)
	}
}

// ListEncoded returns what List does, as the store's bytes.
func TestListEncoded(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("a")))
	for i := 0; i < 5; i++ {
		c.must(createCmd(pod("a", fmt.Sprint("p", i), map[string]string{"app": fmt.Sprint("web-", i%2), "x": "y"})))
	}
	c.must(bindCmd("a", "p3", "n1"))
	for _, q := range []fsm.Query{{Kind: "Pod"}, {Kind: "Pod", LabelSelector: "app=web-1"}, {Kind: "Pod", FieldSelector: "spec.nodeName=n1"}, {Kind: "Node"}} {
		objs, idx, err := c.f.List(q)
		if err != nil {
			t.Fatal(err)
		}
		raws, ridx, err := c.f.ListEncoded(q)
		if err != nil || ridx != idx || len(raws) != len(objs) {
			t.Fatalf("%+v: %d encoded at %d (%v), want %d at %d", q, len(raws), ridx, err, len(objs), idx)
		}
		for i, b := range raws {
			o := &pb.Object{}
			if err := pb.Unmarshal(b, o); err != nil || !equal(o, objs[i]) {
				t.Fatalf("%+v item %d: %v %v, want %v", q, i, o, err, objs[i])
			}
		}
	}
	if _, _, err := c.f.ListEncoded(fsm.Query{Kind: "Pod", LabelSelector: "a=(b"}); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("bad selector: %v", err)
	}

	// EachEncoded hands out the same items one by one, and stops at its
	// callback's first error.
	raws, idx, _ := c.f.ListEncoded(fsm.Query{Kind: "Pod"})
	var each [][]byte
	eidx, err := c.f.EachEncoded(fsm.Query{Kind: "Pod"}, func(raw []byte) error { each = append(each, raw); return nil })
	if err != nil || eidx != idx || !slices.EqualFunc(each, raws, bytes.Equal) {
		t.Fatalf("EachEncoded: %d items at %d (%v), want ListEncoded's %d at %d", len(each), eidx, err, len(raws), idx)
	}
	stop := errors.New("stop")
	n := 0
	if _, err := c.f.EachEncoded(fsm.Query{Kind: "Pod"}, func([]byte) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("EachEncoded after an error: %d calls, %v", n, err)
	}
}

// Events carry the encoding of their object: the store's for Added and
// Modified (also when a watch's selector turns a Modified into an Added),
// the last state's, at the deletion's index, for a Deleted. Only the Deleted
// a watch makes of an object leaving its selector has none.
func TestEventsCarryTheStoredEncoding(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("a")))
	all, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod", LabelSelector: "app=web"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.must(createCmd(pod("a", "p", map[string]string{"app": "db"})))
	c.must(updateCmd(edit(c.get("Pod", "a", "p"), func(o *pb.Object) { o.Meta().Labels = map[string]string{"app": "web"} })))
	c.must(updateCmd(edit(c.get("Pod", "a", "p"), func(o *pb.Object) { o.Meta().Labels = map[string]string{"app": "db"} })))
	c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "a", Name: "p"}))
	check := func(w *fsm.Watcher, types ...string) {
		t.Helper()
		for _, typ := range types {
			ev := next(t, w)
			if ev.Type != typ {
				t.Fatalf("event %s, want %s", ev.Type, typ)
			}
			if ev.Encoded == nil && w == web && typ == fsm.Deleted {
				continue
			}
			o := &pb.Object{}
			if err := pb.Unmarshal(ev.Encoded, o); err != nil || !equal(o, ev.Object) {
				t.Fatalf("%s event: encoding decodes to %v (%v), object %v", typ, o, err, ev.Object)
			}
		}
	}
	check(all, fsm.Added, fsm.Modified, fsm.Modified, fsm.Deleted)
	check(web, fsm.Added, fsm.Deleted) // Modified into and out of the selection
}
