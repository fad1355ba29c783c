// Package micro holds microbenchmarks of the masters' hot paths that the
// packages' own benchmarks (fsm/bench_test.go, proto/codec_test.go) do not
// cover: the realistic payloads of the benchmark suite, watch fan-out to
// 1,000 watchers, label- and field-selector lists over 10,000 realistic
// pods, command encoding and snapshot writing. Run them with
//
//	go test -run '^$' -bench . -benchmem -count 10 ./bench/micro/ > new.txt
//	benchstat old.txt new.txt
package micro_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/bench/internal/objects"
	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// store is an FSM with an index counter, driven by ApplyCommand.
type store struct {
	tb    testing.TB
	f     *fsm.FSM
	index uint64
}

func newStore(tb testing.TB, namespaces ...string) *store {
	tb.Helper()
	return newStoreWith(tb, fsm.DefaultConfig(), namespaces...)
}

// newStoreWith is newStore with a store configuration of the caller's.
func newStoreWith(tb testing.TB, cfg fsm.Config, namespaces ...string) *store {
	tb.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f, err := fsm.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s := &store{tb: tb, f: f}
	for _, ns := range append([]string{"default"}, namespaces...) {
		s.create(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: ns}}))
	}
	return s
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *store) cmd(o *pb.Object) *pb.Command {
	s.index++
	return &pb.Command{Time: timestamppb.New(epoch.Add(time.Duration(s.index) * time.Second)),
		Uid: fmt.Sprintf("uid-%d", s.index), Op: &pb.Command_Create{Create: o}}
}

func (s *store) create(o *pb.Object) {
	c := s.cmd(o)
	if res := s.f.ApplyCommand(s.index, c); res.Err != nil {
		s.tb.Fatal(res.Err)
	}
}

func pod(tb testing.TB, i, nodes int) *pb.Object {
	o, err := objects.Pod(fmt.Sprintf("ns-%d", i%10), fmt.Sprintf("pod-%05d", i), fmt.Sprintf("node-%04d", i%nodes), fmt.Sprintf("app-%d", i%100))
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

var tenNamespaces = []string{"ns-0", "ns-1", "ns-2", "ns-3", "ns-4", "ns-5", "ns-6", "ns-7", "ns-8", "ns-9"}

// podStore holds 10,000 realistic pods in 10 namespaces on 1,000 nodes,
// labelled app=app-0..app-99 (100 pods each).
func podStore(b *testing.B) *store {
	s := newStore(b, tenNamespaces...)
	for i := 0; i < 10000; i++ {
		s.create(pod(b, i, 1000))
	}
	return s
}

// encoded returns log entries creating n objects, as raft hands them to
// the store.
func encoded(b *testing.B, s *store, n int, mk func(i int) *pb.Object) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		data, err := fsm.EncodeCommand(s.cmd(mk(i)))
		if err != nil {
			b.Fatal(err)
		}
		logs[i] = &raft.Log{Index: s.index, Type: raft.LogCommand, Data: data}
	}
	return logs
}

// BenchmarkApply is the store's part of one API write: decode the command
// and apply it, for the suite's 256-byte ConfigMap and a realistic pod.
func BenchmarkApply(b *testing.B) {
	cases := map[string]func(b *testing.B, i int) *pb.Object{
		"ConfigMap256": func(b *testing.B, i int) *pb.Object {
			return objects.ConfigMap("default", fmt.Sprintf("cm-%d", i), objects.PayloadBytes)
		},
		"Pod": func(b *testing.B, i int) *pb.Object { return pod(b, i, 1000) },
	}
	for _, name := range []string{"ConfigMap256", "Pod"} {
		b.Run(name, func(b *testing.B) {
			s := newStore(b, tenNamespaces...)
			logs := encoded(b, s, b.N, func(i int) *pb.Object { return cases[name](b, i) })
			b.ReportAllocs()
			b.ResetTimer()
			for _, l := range logs {
				if res := s.f.Apply(l).(*fsm.Result); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

// BenchmarkApplyBindRunning is the store's part of what follows a pod's
// create: the scheduler's bind and the worker's Running status, each
// decoded and applied as raft hands it over (ns/op per pod, both writes).
func BenchmarkApplyBindRunning(b *testing.B) {
	s := newStore(b, tenNamespaces...)
	pods := make([]*pb.Object, b.N)
	for i := range pods {
		pods[i] = pod(b, i, 1000)
		pods[i].GetPod().Spec.NodeName = ""
		s.create(pods[i])
	}
	logs := make([]*raft.Log, 0, 2*b.N)
	for i, o := range pods {
		m := o.Meta()
		bind := s.cmd(nil)
		bind.Op = &pb.Command_Bind{Bind: &pb.BindOp{Namespace: m.Namespace, Name: m.Name, NodeName: fmt.Sprintf("node-%04d", i%1000)}}
		status := s.cmd(nil)
		status.Op = &pb.Command_UpdateStatus{UpdateStatus: running(o, status.Time)}
		for j, c := range []*pb.Command{bind, status} {
			data, err := fsm.EncodeCommand(c)
			if err != nil {
				b.Fatal(err)
			}
			logs = append(logs, &raft.Log{Index: s.index - 1 + uint64(j), Type: raft.LogCommand, Data: data})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, l := range logs {
		if res := s.f.Apply(l).(*fsm.Result); res.Err != nil || res.Action == fsm.ActionUnchanged {
			b.Fatalf("apply: %v %q", res.Err, res.Action)
		}
	}
}

// BenchmarkPodHistoryHeap is the heap a master keeps for 10,000 realistic
// pods that were each created, bound and reported Running: the objects and
// the watch events of their history (30,000 in the window of 50,000), with
// the store's default number of decoded events and with all of them kept
// decoded (as every master did until the twentieth session).
func BenchmarkPodHistoryHeap(b *testing.B) {
	for _, tc := range []struct {
		name    string
		decoded int
	}{{"default", fsm.DefaultConfig().DecodedEvents}, {"all-decoded", fsm.DefaultConfig().EventWindow}} {
		b.Run(tc.name, func(b *testing.B) {
			var live uint64
			for range b.N {
				live = podHistoryHeap(b, tc.decoded)
			}
			b.ReportMetric(float64(live)/(1<<20), "live-MiB")
			b.ReportMetric(float64(live)/10000, "live-B/pod")
		})
	}
}

func podHistoryHeap(b *testing.B, decoded int) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cfg := fsm.DefaultConfig()
	cfg.DecodedEvents = decoded
	if decoded == cfg.EventWindow {
		cfg.DecodedEventBytes = 0 // every event, however large
	}
	s := newStoreWith(b, cfg, tenNamespaces...)
	apply := func(c *pb.Command) {
		if res := s.f.ApplyCommand(s.index, c); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	for i := range 10000 {
		o := pod(b, i, 1000)
		o.GetPod().Spec.NodeName = ""
		apply(s.cmd(o))
		c := s.cmd(nil)
		m := o.Meta()
		c.Op = &pb.Command_Bind{Bind: &pb.BindOp{Namespace: m.Namespace, Name: m.Name, NodeName: fmt.Sprintf("node-%04d", i%1000)}}
		apply(c)
		c = s.cmd(nil)
		c.Op = &pb.Command_UpdateStatus{UpdateStatus: running(o, c.Time)}
		apply(c)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(s)
	return after.HeapAlloc - before.HeapAlloc
}

// running is the status a worker reports once a pod's containers run.
func running(o *pb.Object, at *timestamppb.Timestamp) *pb.Object {
	st := &pb.PodStatus{Phase: "Running", HostIp: "10.0.0.1", PodIp: "10.244.1.7", StartTime: at, QosClass: "Burstable",
		PodIps: []*pb.PodIP{{Ip: "10.244.1.7"}}}
	for _, t := range []string{"Initialized", "Ready", "ContainersReady", "PodScheduled"} {
		st.Conditions = append(st.Conditions, &pb.PodCondition{Type: t, Status: "True", LastTransitionTime: at})
	}
	for _, c := range o.GetPod().GetSpec().GetContainers() {
		st.ContainerStatuses = append(st.ContainerStatuses, &pb.ContainerStatus{Name: c.Name, Ready: true, Image: c.Image,
			ImageId: "sha256:0123456789abcdef", ContainerId: "skiff://" + o.Meta().Name + "-" + c.Name,
			State: &pb.ContainerState{Running: &pb.ContainerStateRunning{StartedAt: at}}})
	}
	m := o.Meta()
	return pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: m.Namespace, Name: m.Name}, Status: st})
}

// BenchmarkEncodeCommand is what the leader does to a write before
// raft.Apply; DecodeCommand is the first step of every master's Apply.
func BenchmarkEncodeCommand(b *testing.B) {
	s := newStore(b)
	for name, o := range map[string]*pb.Object{
		"ConfigMap256": objects.ConfigMap("default", "cm", objects.PayloadBytes),
		"Pod":          pod(b, 1, 1000),
	} {
		cmd := s.cmd(o)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := fsm.EncodeCommand(cmd); err != nil {
					b.Fatal(err)
				}
			}
		})
		data, _ := fsm.EncodeCommand(cmd)
		b.Run("Decode"+name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if _, err := fsm.DecodeCommand(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkListPods lists 10,000 realistic pods by namespace, label and
// field selectors.
func BenchmarkListPods(b *testing.B) {
	s := podStore(b)
	for _, tc := range []struct {
		name string
		q    fsm.Query
		want int
	}{
		{"all", fsm.Query{Kind: "Pod"}, 10000},
		{"namespace", fsm.Query{Kind: "Pod", Namespace: "ns-3"}, 1000},
		{"label-eq-1pct", fsm.Query{Kind: "Pod", LabelSelector: "app=app-7"}, 100},
		{"label-eq-ns", fsm.Query{Kind: "Pod", Namespace: "ns-7", LabelSelector: "app=app-7"}, 100},
		{"label-set", fsm.Query{Kind: "Pod", LabelSelector: "app in (app-1,app-2),tier=backend,release!=canary"}, 200},
		{"label-nomatch", fsm.Query{Kind: "Pod", LabelSelector: "app=none"}, 0},
		{"field-nodeName", fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName=node-0007"}, 10},
		{"field-phase", fsm.Query{Kind: "Pod", FieldSelector: "status.phase=Running"}, 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				objs, _, err := s.f.List(tc.q)
				if err != nil || len(objs) != tc.want {
					b.Fatalf("%d objects, %v; want %d", len(objs), err, tc.want)
				}
			}
		})
	}
}

// BenchmarkWatchFanout1000 delivers each applied change to 1,000 watchers;
// one op is one write received by every watcher that matches it. "all":
// every watcher matches; "selective": each watches one app label, so each
// write matches 10 and the other 990 filter it out.
func BenchmarkWatchFanout1000(b *testing.B) {
	const watchers = 1000
	for _, selective := range []bool{false, true} {
		name := "all"
		if selective {
			name = "selective"
		}
		b.Run(name, func(b *testing.B) {
			s := newStore(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var received atomic.Int64
			signal := make(chan struct{}, 1)
			var wg sync.WaitGroup
			for i := 0; i < watchers; i++ {
				q := fsm.Query{Kind: "ConfigMap", Namespace: "default"}
				if selective {
					q.LabelSelector = fmt.Sprintf("app=app-%d", i%100)
				}
				w, err := s.f.Watch(ctx, q, 0)
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						if _, err := w.Next(ctx); err != nil {
							return
						}
						received.Add(1)
						select {
						case signal <- struct{}{}:
						default:
						}
					}
				}()
			}
			perWrite := int64(watchers)
			if selective {
				perWrite = watchers / 100
			}
			logs := encoded(b, s, b.N, func(i int) *pb.Object {
				o := objects.ConfigMap("default", fmt.Sprintf("cm-%d", i), objects.PayloadBytes)
				o.Meta().Labels = map[string]string{"app": fmt.Sprintf("app-%d", i%100)}
				return o
			})
			b.ReportAllocs()
			b.ResetTimer()
			for i, l := range logs {
				if res := s.f.Apply(l).(*fsm.Result); res.Err != nil {
					b.Fatal(res.Err)
				}
				want := int64(i+1) * perWrite
				for received.Load() < want {
					<-signal
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}

// discardSink is a raft.SnapshotSink that counts bytes.
type discardSink struct{ n int64 }

func (d *discardSink) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }
func (d *discardSink) Close() error                { return nil }
func (d *discardSink) ID() string                  { return "bench" }
func (d *discardSink) Cancel() error               { return nil }

var _ io.Writer = (*discardSink)(nil)

// BenchmarkSnapshotPersist10kPods writes out the store of 10,000 pods, as
// raft does for every snapshot and `skiff cluster snapshot save` streams.
func BenchmarkSnapshotPersist10kPods(b *testing.B) {
	s := podStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	var n int64
	for i := 0; i < b.N; i++ {
		snap, err := s.f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		sink := &discardSink{}
		if err := snap.Persist(sink); err != nil {
			b.Fatal(err)
		}
		n = sink.n
	}
	b.SetBytes(n)
}
