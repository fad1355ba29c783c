package worker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// usageRuntime is what NodeAgent.Stats needs of a runtime: the
// libcontainer runtime reads cgroups; the hollow runtime (which runs
// nothing) does not implement it.
//
// ContainerUsage and NodeUsage read a container's cgroup and the root
// cgroup; withMemory adds the memory counters to the CPU counter. A
// container that is gone fails with runtime.ErrNotFound or
// runtime.ErrNotRunning.
type usageRuntime interface {
	ContainerUsage(id string, withMemory bool) (wrt.Usage, error)
	NodeUsage(withMemory bool) (wrt.Usage, error)
}

// nodeKey is the node's key in cpuHistory; containers go by ID.
const nodeKey = ""

// cpuRead is one read of a cgroup's cumulative CPU counter.
type cpuRead struct {
	t     time.Time
	nanos uint64
}

// cpuHistory keeps, per cgroup, the last two reads of its CPU counter
// taken at least minWindow apart, so that a request gets a rate at once:
// the growth of the counter between a read it makes now and an earlier
// one. The kubelet's CRI stats provider computes usageNanoCores the same
// way, from the read it cached at the previous request; a background
// sampler (Agent.statsLoop) keeps the earlier read fresh here.
type cpuHistory struct {
	minWindow time.Duration

	mu    sync.Mutex
	reads map[string]*cpuReads
}

// cpuReads are a cgroup's kept reads: newer is the latest kept, older
// the one before it (n says how many are set).
type cpuReads struct {
	older, newer cpuRead
	n            int
}

func newCPUHistory(minWindow time.Duration) *cpuHistory {
	return &cpuHistory{minWindow: minWindow, reads: map[string]*cpuReads{}}
}

// nanoCores is the CPU use between two reads, in billionths of a core.
func nanoCores(from, to cpuRead) (uint64, bool) {
	dt := to.t.Sub(from.t)
	if dt <= 0 || to.nanos < from.nanos {
		return 0, false
	}
	return uint64(float64(to.nanos-from.nanos) / dt.Seconds()), true
}

// observe records cur for key and returns the CPU rate up to it and the
// window it covers. The baseline is the latest kept read at least
// minWindow old, else the one before it, else born (when the cgroup was
// created, its counter zero then; zero when unknown), else whatever read
// is kept. ok is false when there is no baseline yet.
func (h *cpuHistory) observe(key string, cur cpuRead, born time.Time) (rate uint64, window time.Duration, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.reads[key]
	if r == nil {
		r = &cpuReads{}
		h.reads[key] = r
	}
	old := func(b cpuRead) bool { return cur.t.Sub(b.t) >= h.minWindow }
	var bases []cpuRead
	if r.n >= 1 && old(r.newer) {
		bases = append(bases, r.newer)
	}
	if r.n == 2 {
		bases = append(bases, r.older)
	}
	if start := (cpuRead{t: born}); !born.IsZero() && old(start) {
		bases = append(bases, start)
	}
	if r.n >= 1 {
		bases = append(bases, r.newer)
	}
	if !born.IsZero() {
		bases = append(bases, cpuRead{t: born})
	}
	for _, b := range bases {
		if rate, ok = nanoCores(b, cur); ok {
			window = cur.t.Sub(b.t)
			break
		}
	}
	if r.n == 0 || old(r.newer) {
		r.older, r.newer, r.n = r.newer, cur, min(r.n+1, 2)
	}
	return rate, window, ok
}

// retain forgets every cgroup but the node and those in keep.
func (h *cpuHistory) retain(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.reads {
		if k != nodeKey && !keep[k] {
			delete(h.reads, k)
		}
	}
}

// runningContainer is a running container of a pod, as Stats reports it.
type runningContainer struct {
	name    string
	id      string
	started time.Time
}

// running returns the pod's running containers, by name.
func (w *podWorker) running() []runningContainer {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []runningContainer
	for name, cs := range w.ctrs {
		if cs.cur != nil && cs.cur.st.State == wrt.StateRunning {
			out = append(out, runningContainer{name: name, id: cs.cur.id, started: cs.cur.st.StartedAt})
		}
	}
	slices.SortFunc(out, func(a, b runningContainer) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	return out
}

// statsLoop reads the CPU counters of the node and of every running
// container every StatsInterval, so that a Stats request has a recent
// earlier read to compute rates from. It reads only the CPU counter
// (about 0.2 ms per container here); memory is read on request.
func (a *Agent) statsLoop(ctx context.Context) {
	ur, ok := a.rt.(usageRuntime)
	if !ok || a.cpu == nil || a.cfg.StatsInterval <= 0 {
		return
	}
	t := time.NewTicker(a.cfg.StatsInterval)
	defer t.Stop()
	for {
		if u, err := ur.NodeUsage(false); err == nil {
			a.cpu.observe(nodeKey, cpuRead{t: u.Time, nanos: u.CPUNanos}, time.Time{})
		}
		seen := map[string]bool{}
		for _, w := range a.pods.all() {
			for _, c := range w.running() {
				seen[c.id] = true
				if u, err := ur.ContainerUsage(c.id, false); err == nil {
					a.cpu.observe(c.id, cpuRead{t: u.Time, nanos: u.CPUNanos}, c.started)
				}
			}
		}
		a.cpu.retain(seen)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stats answers NodeAgent.Stats for this node.
func (a *Agent) stats(req *pb.StatsRequest) (*pb.StatsResponse, error) {
	ur, ok := a.rt.(usageRuntime)
	switch {
	case a.cfg.Hollow:
		return nil, status.Errorf(codes.Unimplemented, "node %s is hollow: it runs no containers and reports no usage", a.cfg.Name)
	case !ok || a.cpu == nil:
		return nil, status.Errorf(codes.Unimplemented, "node %s: its container runtime reports no usage", a.cfg.Name)
	}
	nu, err := ur.NodeUsage(true)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node %s: %v", a.cfg.Name, err)
	}
	resp := &pb.StatsResponse{Node: a.usageOf(nodeKey, nu, bootTime())}
	if req.GetNodeOnly() {
		return resp, nil
	}
	namespace := req.GetNamespace()
	if req.GetPod() != "" && namespace == "" {
		namespace = "default"
	}
	var workers []*podWorker
	if req.GetPod() != "" {
		if w := a.pods.find(namespace, req.GetPod(), req.GetPodUid()); w != nil {
			workers = append(workers, w)
		}
		if len(workers) == 0 {
			return nil, status.Errorf(codes.NotFound, "pod %s/%s is not running on node %s", namespace, req.GetPod(), a.cfg.Name)
		}
	} else {
		for _, w := range a.pods.all() {
			if p, _ := w.snapshot(); namespace == "" || p.GetMetadata().GetNamespace() == namespace {
				workers = append(workers, w)
			}
		}
	}
	for _, w := range workers {
		p, _ := w.snapshot()
		pu := &pb.PodUsage{Namespace: p.GetMetadata().GetNamespace(), Name: p.GetMetadata().GetName(), Uid: w.uid}
		for _, c := range w.running() {
			u, err := ur.ContainerUsage(c.id, true)
			if errors.Is(err, wrt.ErrNotFound) || errors.Is(err, wrt.ErrNotRunning) {
				continue // it exited a moment ago
			}
			if err != nil {
				return nil, status.Errorf(codes.Internal, "pod %s/%s: container %s: %v", pu.Namespace, pu.Name, c.name, err)
			}
			pu.Containers = append(pu.Containers, &pb.ContainerUsage{Name: c.name, Usage: a.usageOf(c.id, u, c.started)})
		}
		if len(pu.Containers) > 0 {
			resp.Pods = append(resp.Pods, pu)
		}
	}
	slices.SortFunc(resp.Pods, func(x, y *pb.PodUsage) int {
		switch {
		case x.Namespace+"/"+x.Name < y.Namespace+"/"+y.Name:
			return -1
		case x.Namespace+"/"+x.Name > y.Namespace+"/"+y.Name:
			return 1
		}
		return 0
	})
	return resp, nil
}

// usageOf turns a read into the API's usage, with the CPU rate since an
// earlier read of the same cgroup.
func (a *Agent) usageOf(key string, u wrt.Usage, born time.Time) *pb.ResourceUsage {
	out := &pb.ResourceUsage{
		Time:                  timestamppb.New(u.Time),
		UsageCoreNanoSeconds:  u.CPUNanos,
		MemoryWorkingSetBytes: u.MemoryWorkingSet,
		MemoryUsageBytes:      u.MemoryUsage,
	}
	if rate, window, ok := a.cpu.observe(key, cpuRead{t: u.Time, nanos: u.CPUNanos}, born); ok {
		out.UsageNanoCores, out.Window = rate, durationpb.New(window)
	}
	return out
}

// statsMinWindow is the shortest span a CPU rate is measured over when
// an earlier read allows: shorter ones are mostly noise.
const statsMinWindow = time.Second
