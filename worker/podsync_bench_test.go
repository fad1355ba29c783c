package worker

import (
	"context"
	"log/slog"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// hollowAgent is an agent with just what a pod worker uses, on the hollow
// runtime (containers run at once, probes always pass) and in-memory state,
// with no masters: status writes go to the statusWriter's writeFn.
func hollowAgent() *Agent {
	h := NewHollowRuntime()
	cfg := DefaultConfig()
	cfg.Hollow = true
	return &Agent{
		cfg: cfg, log: slog.New(slog.DiscardHandler),
		rt: h, images: h, prober: hollowProber{}, state: newMemState(),
		desc:    nodeDescription{addresses: []*pb.NodeAddress{{Type: "InternalIP", Address: "10.0.0.1"}}},
		backoff: backoffPolicy{base: cfg.BackoffBase, max: cfg.BackoffMax, reset: cfg.BackoffReset},
		net:     newPodNetwork(),
	}
}

// echoWrites is a statusWriter write function that keeps the last status
// written, as the API would.
type echoWrites struct {
	rv   uint64
	last *pb.PodStatus
	n    int
}

func (e *echoWrites) write(ctx context.Context, meta *pb.ObjectMeta, key string, st *pb.PodStatus) (uint64, bool) {
	e.rv++
	e.n++
	e.last = st
	return e.rv, true
}

// runningPodWorker returns a pod worker whose pod (two containers) runs,
// with its Running status written and echoed back by the watch, so the
// next syncs have nothing to do: the steady state of every pod of a node.
func runningPodWorker(tb testing.TB) (*podWorker, *echoWrites) {
	tb.Helper()
	a := hollowAgent()
	w := newPodWorker(a, "uid-1")
	e := &echoWrites{rv: 10}
	w.sw.writeFn = e.write
	pod := &pb.Pod{
		Metadata: &pb.ObjectMeta{Name: "web-1", Namespace: "default", Uid: "uid-1", ResourceVersion: 10},
		Spec: &pb.PodSpec{NodeName: "n1", Containers: []*pb.Container{
			{Name: "app", Image: "example/app:1"},
			{Name: "sidecar", Image: "example/sidecar:1"},
		}},
		Status: &pb.PodStatus{Phase: phasePending},
	}
	w.update(pod, false)
	ctx := context.Background()
	w.sync(ctx)
	w.sw.flush()
	if e.last.GetPhase() != phaseRunning {
		tb.Fatalf("status written %v, want Running", e.last)
	}
	// The watch brings our own write back.
	echo := gproto.Clone(pod).(*pb.Pod)
	echo.Status = gproto.Clone(e.last).(*pb.PodStatus)
	echo.Metadata.ResourceVersion = e.rv
	w.update(echo, false)
	tb.Cleanup(func() {
		w.sw.drop()
		for _, cs := range w.ctrs {
			cs.probes.stop()
		}
	})
	return w, e
}

// BenchmarkPodSyncRunning is the cost of one sync of a running pod with two
// containers when nothing changed (a timer sync, or the echo of the
// worker's own status write), the bulk of a node agent's CPU; and of its
// two dedupe steps alone: deciding the pod record needs no save, and the
// status no write.
func BenchmarkPodSyncRunning(b *testing.B) {
	b.Run("sync", func(b *testing.B) {
		w, e := runningPodWorker(b)
		ctx := context.Background()
		writes := e.n
		b.ReportAllocs()
		for b.Loop() {
			w.sync(ctx)
		}
		b.StopTimer()
		w.sw.flush()
		if e.n != writes {
			b.Fatalf("%d status writes during steady syncs, want none", e.n-writes)
		}
	})
	b.Run("persist", func(b *testing.B) {
		w, _ := runningPodWorker(b)
		b.ReportAllocs()
		for b.Loop() {
			w.persist()
		}
	})
	b.Run("submit", func(b *testing.B) {
		w, e := runningPodWorker(b)
		ctx := context.Background()
		pod, _ := w.snapshot()
		st := w.status(pod, true, false, time.Now())
		writes := e.n
		b.ReportAllocs()
		for b.Loop() {
			w.sw.submit(ctx, pod, st, 0)
		}
		b.StopTimer()
		w.sw.flush()
		if e.n != writes {
			b.Fatalf("%d status writes of an unchanged status, want none", e.n-writes)
		}
	})
}
