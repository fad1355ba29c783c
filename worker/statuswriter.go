package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

// statusWriter writes one pod's status to the API off the pod worker's
// goroutine. A status write is a Raft commit on the masters (milliseconds,
// more under load); made inline, the first "Pending, ContainerCreating"
// write of a pod delayed its container start by as much, and a worker
// starting many pods at once waited for each of those writes in turn.
//
// It coalesces: only the latest status handed to it is written, so a pod
// that turns Running while its Pending write is still queued skips the
// Pending write. Writes of different pods are independent (one writer per
// pod, with a goroutine only while it has something to write), so a pod's
// Running is never queued behind other pods' writes.
type statusWriter struct {
	w *podWorker
	// writeFn replaces write (tests).
	writeFn func(ctx context.Context, meta *pb.ObjectMeta, key string, st *pb.PodStatus) (uint64, bool)

	mu sync.Mutex
	// want is the next status to write, not before notBefore, and meta
	// the pod it belongs to.
	want      *pb.PodStatus
	notBefore time.Time
	meta      *pb.ObjectMeta
	key       string
	// kick wakes the goroutine waiting for notBefore when want changes.
	kick chan struct{}
	// inflight is being written now.
	inflight *pb.PodStatus
	// done is the last status written successfully and doneRV the pod's
	// resourceVersion after that write; done is nil after a failed write
	// so the next sync (asked for a SyncInterval later) writes again.
	done    *pb.PodStatus
	doneRV  uint64
	running bool
	idle    chan struct{} // closed when the goroutine ends; nil while none runs
}

// submit asks for st to be written for pod, unless it is written already,
// being written, or queued. The pod from the watch may not show our last
// write yet: an equal status is only written again when the pod changed
// after that write (someone else changed the status, for example the node
// lifecycle controller marking it not ready).
//
// A write with a delay waits that long for a newer status to replace it:
// a pod's first "Pending, ContainerCreating" is news only if its
// containers take a while to start; when they start at once, the pod's
// Running is the only write the masters see.
func (s *statusWriter) submit(ctx context.Context, pod *pb.Pod, st *pb.PodStatus, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sameStatus(pod.GetStatus(), st) {
		// The API has it. A write still queued is older news: drop it.
		s.want, s.meta = nil, nil
		return
	}
	var notBefore time.Time
	if delay > 0 {
		notBefore = time.Now().Add(delay)
	}
	switch {
	case s.want != nil:
		if sameStatus(s.want, st) {
			if notBefore.Before(s.notBefore) {
				s.notBefore = notBefore
				s.wake()
			}
			return
		}
	case s.inflight != nil:
		if sameStatus(s.inflight, st) {
			return
		}
	case s.done != nil:
		if sameStatus(s.done, st) && pod.GetMetadata().GetResourceVersion() <= s.doneRV {
			return
		}
	}
	m := pod.GetMetadata()
	s.want, s.notBefore = st, notBefore
	s.meta = &pb.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), Uid: m.GetUid()}
	s.key = podKey(pod)
	if !s.running {
		s.running = true
		s.idle = make(chan struct{})
		if s.kick == nil {
			s.kick = make(chan struct{}, 1)
		}
		go s.loop(ctx, s.idle)
		return
	}
	s.wake()
}

// wake tells a goroutine waiting for notBefore to look again; s.mu is held.
func (s *statusWriter) wake() {
	if s.kick == nil {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// loop writes the latest wanted status until there is none.
func (s *statusWriter) loop(ctx context.Context, idle chan struct{}) {
	defer close(idle)
	for {
		s.mu.Lock()
		st, meta, key := s.want, s.meta, s.key
		if st == nil || ctx.Err() != nil {
			s.want, s.meta = nil, nil
			s.running = false
			s.mu.Unlock()
			return
		}
		if wait := time.Until(s.notBefore); wait > 0 {
			kick := s.kick
			s.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-kick:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		s.want, s.meta, s.inflight = nil, nil, st
		prev := s.done
		s.mu.Unlock()

		write := s.write
		if s.writeFn != nil {
			write = s.writeFn
		}
		rv, ok := write(ctx, meta, key, st)
		if ok && (prev == nil || prev.GetPhase() != st.GetPhase()) && s.w != nil {
			s.w.log.Info("pod status", "pod", key, "phase", st.GetPhase())
		}
		s.mu.Lock()
		s.inflight = nil
		if ok {
			s.done, s.doneRV = st, rv
		} else {
			s.done = nil
			if s.w != nil {
				// The next sync writes again; pods sync every
				// ResyncInterval only, so ask for one sooner.
				time.AfterFunc(s.w.a.cfg.SyncInterval, s.w.notify)
			}
		}
		s.mu.Unlock()
	}
}

func (s *statusWriter) write(ctx context.Context, meta *pb.ObjectMeta, key string, st *pb.PodStatus) (uint64, bool) {
	c, err := s.w.a.api.get(ctx)
	if err != nil {
		return 0, false
	}
	obj := &pb.Pod{ApiVersion: "v1", Kind: "Pod", Metadata: meta, Status: st}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.UpdateStatus(wctx, pb.Wrap(obj))
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound, codes.Aborted:
			// Deleted or replaced: the watch brings the news.
		default:
			if ctx.Err() == nil {
				s.w.log.Warn("write pod status", "pod", key, "err", err)
			}
		}
		return 0, false
	}
	return resp.GetObject().Meta().GetResourceVersion(), true
}

// discard forgets a queued write.
func (s *statusWriter) discard() {
	s.mu.Lock()
	s.want, s.meta = nil, nil
	s.wake()
	s.mu.Unlock()
}

// drop forgets a queued write and waits for one in progress.
func (s *statusWriter) drop() {
	s.mu.Lock()
	s.want, s.meta = nil, nil
	s.wake()
	idle := s.idle
	s.mu.Unlock()
	if idle != nil {
		<-idle
	}
}

// flush waits until everything submitted so far is written (or failed).
func (s *statusWriter) flush() {
	s.mu.Lock()
	idle := s.idle
	s.mu.Unlock()
	if idle != nil {
		<-idle
	}
}

// sameStatus reports whether a and b are equal as proto.Equal sees them,
// without its reflection: submit compares statuses on every sync of every
// pod, and proto.Equal was most of a steady sync's cost. As in
// proto.Equal, a nil message differs from an empty one: a state with
// running{} (no start time) is not one with waiting{}, and a lastState {}
// is not an absent one. (vtprotobuf's EqualVT treats nil and empty as
// equal, which would make those the same.) Unknown fields are ignored:
// the statuses built here have none, and one the API adds is not ours to
// rewrite. TestSameStatusComparesEveryField fails when PodStatus or a
// message in it gains a field this does not compare.
func sameStatus(a, b *pb.PodStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Phase == b.Phase && a.Message == b.Message && a.Reason == b.Reason &&
		a.HostIp == b.HostIp && a.PodIp == b.PodIp && a.QosClass == b.QosClass &&
		a.NominatedNodeName == b.NominatedNodeName && sameTime(a.StartTime, b.StartTime) &&
		slices.EqualFunc(a.PodIps, b.PodIps, samePodIP) &&
		slices.EqualFunc(a.Conditions, b.Conditions, sameCondition) &&
		slices.EqualFunc(a.InitContainerStatuses, b.InitContainerStatuses, sameContainerStatus) &&
		slices.EqualFunc(a.ContainerStatuses, b.ContainerStatuses, sameContainerStatus)
}

func sameTime(a, b *timestamppb.Timestamp) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Seconds == b.Seconds && a.Nanos == b.Nanos
}

func samePodIP(a, b *pb.PodIP) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Ip == b.Ip
}

func sameCondition(a, b *pb.PodCondition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message &&
		sameTime(a.LastProbeTime, b.LastProbeTime) && sameTime(a.LastTransitionTime, b.LastTransitionTime)
}

func sameContainerStatus(a, b *pb.ContainerStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	if (a.Started == nil) != (b.Started == nil) || (a.Started != nil && *a.Started != *b.Started) {
		return false
	}
	return a.Name == b.Name && a.Ready == b.Ready && a.RestartCount == b.RestartCount &&
		a.Image == b.Image && a.ImageId == b.ImageId && a.ContainerId == b.ContainerId &&
		sameContainerState(a.State, b.State) && sameContainerState(a.LastState, b.LastState)
}

func sameContainerState(a, b *pb.ContainerState) bool {
	if a == nil || b == nil {
		return a == b
	}
	w1, w2 := a.Waiting, b.Waiting
	if (w1 == nil) != (w2 == nil) || (w1 != nil && (w1.Reason != w2.Reason || w1.Message != w2.Message)) {
		return false
	}
	r1, r2 := a.Running, b.Running
	if (r1 == nil) != (r2 == nil) || (r1 != nil && !sameTime(r1.StartedAt, r2.StartedAt)) {
		return false
	}
	t1, t2 := a.Terminated, b.Terminated
	if t1 == nil || t2 == nil {
		return t1 == t2
	}
	return t1.ExitCode == t2.ExitCode && t1.Signal == t2.Signal && t1.Reason == t2.Reason &&
		t1.Message == t2.Message && t1.ContainerId == t2.ContainerId &&
		sameTime(t1.StartedAt, t2.StartedAt) && sameTime(t1.FinishedAt, t2.FinishedAt)
}
