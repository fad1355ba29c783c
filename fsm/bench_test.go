package fsm_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/skiff-sh/skiff/fsm"
)

// encodedCreates returns n encoded creates of pods named prefix-0, ...,
// starting at index first.
func encodedCreates(b *testing.B, prefix string, first uint64, n int) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		idx := first + uint64(i)
		cmd := createCmd(pod("default", fmt.Sprint(prefix, i), map[string]string{"app": fmt.Sprint("app-", i%100)}))
		cmd.Time, cmd.Uid = timeAt(idx), fmt.Sprint("uid-", idx)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			b.Fatal(err)
		}
		logs[i] = &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	return logs
}

// applyAll applies logs one by one through raft's entry point.
func applyAll(b *testing.B, f *fsm.FSM, logs []*raft.Log) {
	for _, l := range logs {
		if res := f.Apply(l).(*fsm.Result); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

func BenchmarkApplyCreate(b *testing.B) {
	c := newCluster(b, 0)
	c.must(createCmd(namespace("default")))
	logs := encodedCreates(b, "pod-", 2, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	applyAll(b, c.f, logs)
}

// BenchmarkApplyCreateFullWindow creates unbound pods once the event
// window is full, as under steady pod churn: every event then pushes the
// oldest out, and the unbound pods' index of events must not be moved
// whole for it.
func BenchmarkApplyCreateFullWindow(b *testing.B) {
	const window = 20000
	c := newCluster(b, window)
	c.must(createCmd(namespace("default")))
	applyAll(b, c.f, encodedCreates(b, "fill-", 2, window))
	logs := encodedCreates(b, "pod-", uint64(2+window), b.N)
	b.ReportAllocs()
	b.ResetTimer()
	applyAll(b, c.f, logs)
}

func BenchmarkList(b *testing.B) {
	c := newCluster(b, 0)
	c.must(createCmd(namespace("default")))
	for _, l := range encodedCreates(b, "pod-", 2, 10000) {
		c.f.Apply(l)
	}
	for _, tc := range []struct {
		name string
		q    fsm.Query
		want int
	}{
		{"label", fsm.Query{Kind: "Pod", Namespace: "default", LabelSelector: "app=app-7"}, 100},
		{"label-set", fsm.Query{Kind: "Pod", LabelSelector: "app in (app-1,app-2),app!=app-3"}, 200},
		{"all", fsm.Query{Kind: "Pod"}, 10000},
		{"name", fsm.Query{Kind: "Pod", Namespace: "default", FieldSelector: "metadata.name=pod-7"}, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				objs, _, err := c.f.List(tc.q)
				if err != nil || len(objs) != tc.want {
					b.Fatalf("%d objects, %v", len(objs), err)
				}
			}
		})
	}
}

// BenchmarkWatchFanout measures one applied change delivered to 100
// watchers, half of which filter most changes out by label.
func BenchmarkWatchFanout(b *testing.B) {
	const watchers = 100
	c := newCluster(b, 0)
	c.must(createCmd(namespace("default")))
	logs := encodedCreates(b, "pod-", 2, b.N)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < watchers; i++ {
		q := fsm.Query{Kind: "Pod"}
		if i%2 == 1 {
			q.LabelSelector = "app=app-0"
		}
		w, err := c.f.Watch(ctx, q, 0)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ev, err := w.Next(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if ev.Object.Meta().GetName() == "sentinel" {
					return
				}
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, l := range logs {
		c.f.Apply(l)
	}
	// Every watcher matches the sentinel, so each one ends after seeing all.
	c.index = uint64(len(logs)) + 1
	c.must(createCmd(pod("default", "sentinel", map[string]string{"app": "app-0"})))
	wg.Wait()
}

// BenchmarkWatchFanoutByNode is the kubelet's pattern at scale: 1,000
// watchers, each of the pods of one node (spec.nodeName=node-i), while pods
// are created on one node at a time. A write should cost the watchers of its
// node, not all of them.
func BenchmarkWatchFanoutByNode(b *testing.B) {
	const nodes = 1000
	c := newCluster(b, 0)
	c.must(createCmd(namespace("default")))
	logs := make([]*raft.Log, b.N)
	for i := range logs {
		idx := uint64(2 + i)
		p := pod("default", fmt.Sprint("pod-", i), nil)
		p.GetPod().Spec.NodeName = fmt.Sprint("node-", i%nodes)
		cmd := createCmd(p)
		cmd.Time, cmd.Uid = timeAt(idx), fmt.Sprint("uid-", idx)
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			b.Fatal(err)
		}
		logs[i] = &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < nodes; i++ {
		w, err := c.f.Watch(ctx, fsm.Query{Kind: "Pod", FieldSelector: fmt.Sprint("spec.nodeName=node-", i)}, 0)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ev, err := w.Next(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if strings.HasPrefix(ev.Object.Meta().GetName(), "sentinel-") {
					return
				}
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, l := range logs {
		c.f.Apply(l)
	}
	// One sentinel per node ends every watcher after it has seen all.
	c.index = uint64(len(logs)) + 1
	for i := 0; i < nodes; i++ {
		p := pod("default", fmt.Sprint("sentinel-", i), nil)
		p.GetPod().Spec.NodeName = fmt.Sprint("node-", i)
		c.must(createCmd(p))
	}
	wg.Wait()
}

// BenchmarkGCMark is a full garbage collection of a process holding a store
// of 100,000 pods with two labels each: what every collection cycle of a
// master costs in marking, which grows with the store (the write path's
// allocations only decide how often it runs). ns/object is per stored pod.
func BenchmarkGCMark(b *testing.B) {
	const n = 100000
	c := newCluster(b, 0)
	c.must(createCmd(namespace("default")))
	for i := 0; i < n; i += 1000 {
		logs := make([]*raft.Log, 1000)
		for j := range logs {
			idx := uint64(2 + i + j)
			labels := map[string]string{"app": fmt.Sprint("app-", (i+j)%100), "pod-template-hash": fmt.Sprint("h", (i+j)%1000)}
			cmd := createCmd(pod("default", fmt.Sprint("pod-", i+j), labels))
			cmd.Time, cmd.Uid = timeAt(idx), fmt.Sprint("uid-", idx)
			data, err := fsm.EncodeCommand(cmd)
			if err != nil {
				b.Fatal(err)
			}
			logs[j] = &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
		}
		for _, res := range c.f.ApplyBatch(logs) {
			if err := res.(*fsm.Result).Err; err != nil {
				b.Fatal(err)
			}
		}
	}
	runtime.GC()
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
	}
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/object")
	b.ReportMetric(float64(ms.HeapObjects)/n, "heapobjects/object")
	b.ReportMetric(float64(ms.HeapAlloc)/n, "heapbytes/object")
	runtime.KeepAlive(c)
}
