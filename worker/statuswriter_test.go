package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
)

// recordingWrites is a statusWriter's write function that records the
// phases written and can hold a write until released.
type recordingWrites struct {
	mu      sync.Mutex
	phases  []string
	rv      uint64
	hold    chan struct{} // when not nil, each write waits for a receive
	started chan string   // each write's phase, when it begins
}

func (r *recordingWrites) write(ctx context.Context, meta *pb.ObjectMeta, key string, st *pb.PodStatus) (uint64, bool) {
	if r.started != nil {
		r.started <- st.GetPhase()
	}
	if r.hold != nil {
		<-r.hold
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, st.GetPhase())
	r.rv++
	return r.rv, true
}

func (r *recordingWrites) written() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.phases...)
}

func statusPod(rv uint64, phase string) *pb.Pod {
	return &pb.Pod{Metadata: &pb.ObjectMeta{Name: "p", Namespace: "default", Uid: "u1", ResourceVersion: rv},
		Status: &pb.PodStatus{Phase: phase}}
}

// A delayed first status replaced before its delay is over is never
// written: only the newer one is, at once.
func TestStatusWriterCoalescesDelayed(t *testing.T) {
	r := &recordingWrites{}
	s := &statusWriter{writeFn: r.write}
	ctx := context.Background()
	pod := statusPod(1, "")
	s.submit(ctx, pod, &pb.PodStatus{Phase: phasePending}, time.Hour)
	s.submit(ctx, pod, &pb.PodStatus{Phase: phaseRunning}, 0)
	done := make(chan struct{})
	go func() { s.flush(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the Running write waited for the Pending write's delay")
	}
	if got := r.written(); len(got) != 1 || got[0] != phaseRunning {
		t.Fatalf("written %v, want [Running]", got)
	}
}

// Statuses submitted while a write is in progress collapse into one write
// of the latest; a status equal to the one in progress is not queued again.
func TestStatusWriterLatestWins(t *testing.T) {
	r := &recordingWrites{hold: make(chan struct{}), started: make(chan string, 4)}
	s := &statusWriter{writeFn: r.write}
	ctx := context.Background()
	pod := statusPod(1, "")
	s.submit(ctx, pod, &pb.PodStatus{Phase: phasePending}, 0)
	if ph := <-r.started; ph != phasePending {
		t.Fatalf("first write %s", ph)
	}
	s.submit(ctx, pod, &pb.PodStatus{Phase: phaseRunning}, 0)
	s.submit(ctx, pod, &pb.PodStatus{Phase: phaseSucceeded}, 0)
	s.submit(ctx, pod, &pb.PodStatus{Phase: phaseFailed}, 0)
	r.hold <- struct{}{} // Pending completes
	if ph := <-r.started; ph != phaseFailed {
		t.Fatalf("second write %s, want Failed (the latest)", ph)
	}
	s.submit(ctx, pod, &pb.PodStatus{Phase: phaseFailed}, 0) // in progress: not again
	r.hold <- struct{}{}
	s.flush()
	if got := r.written(); len(got) != 2 || got[1] != phaseFailed {
		t.Fatalf("written %v, want [Pending Failed]", got)
	}
	// Written, and the pod from the watch is older than that write: not
	// written again.
	s.submit(ctx, statusPod(1, phasePending), &pb.PodStatus{Phase: phaseFailed}, 0)
	// The API shows it: nothing to write either.
	s.submit(ctx, statusPod(5, phaseFailed), &pb.PodStatus{Phase: phaseFailed}, 0)
	s.flush()
	if got := r.written(); len(got) != 2 {
		t.Fatalf("written %v, want no more writes", got)
	}
	// Someone else changed the status after our write: written again.
	r.hold = nil
	s.submit(ctx, statusPod(9, phaseRunning), &pb.PodStatus{Phase: phaseFailed}, 0)
	<-r.started
	s.flush()
	if got := r.written(); len(got) != 3 {
		t.Fatalf("written %v, want a third write", got)
	}
}

// A failed write asks its pod worker for a sync a SyncInterval later, which
// writes again: pods otherwise sync only every ResyncInterval.
func TestStatusWriterFailedWriteWakesWorker(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SyncInterval, cfg.ResyncInterval = 10*time.Millisecond, time.Hour
	w := &podWorker{a: &Agent{cfg: cfg}, wake: make(chan struct{}, 1)}
	s := &statusWriter{w: w, writeFn: func(context.Context, *pb.ObjectMeta, string, *pb.PodStatus) (uint64, bool) {
		return 0, false
	}}
	s.submit(context.Background(), statusPod(1, ""), &pb.PodStatus{Phase: phaseRunning}, 0)
	s.flush()
	select {
	case <-w.wake:
	case <-time.After(30 * time.Second):
		t.Fatal("a failed status write did not wake the pod worker")
	}
}
