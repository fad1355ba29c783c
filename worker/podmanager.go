package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// podManager follows the pods bound to this node (list, then watch from the
// list's resourceVersion, and list again when the watch expires) and hands
// each pod to its pod worker, starting one per pod UID.
//
// On start it first gathers what an earlier worker process left: containers
// and sandboxes from the runtime (their labels name the pod) and pod records
// from the state store. Pods the first list still has get those containers
// back (nothing is restarted); the others were deleted while the worker was
// down and are stopped and removed.
type podManager struct {
	a *Agent

	mu      sync.Mutex
	workers map[string]*podWorker // by pod UID
	wg      sync.WaitGroup
	// adopted is what the runtime and state store held at start, by pod
	// UID, until the first list hands it out.
	adopted map[string]*adoption
	synced  bool
}

type adoption struct {
	rec        *podRecord
	containers []wrt.ContainerStatus
	sandbox    *wrt.Sandbox
}

func newPodManager(a *Agent) *podManager {
	return &podManager{a: a, workers: map[string]*podWorker{}}
}

// gather collects what an earlier worker process left behind.
func (m *podManager) gather() error {
	a := m.a
	recs, err := a.state.load()
	if err != nil {
		return err
	}
	cs, err := a.rt.List()
	if err != nil {
		return err
	}
	sbs, err := a.rt.ListSandboxes()
	if err != nil {
		return err
	}
	m.adopted = map[string]*adoption{}
	get := func(uid string) *adoption {
		ad := m.adopted[uid]
		if ad == nil {
			ad = &adoption{}
			m.adopted[uid] = ad
		}
		return ad
	}
	for uid, r := range recs {
		get(uid).rec = r
	}
	for _, c := range cs {
		ad := get(c.PodUID)
		ad.containers = append(ad.containers, c)
	}
	for _, sb := range sbs {
		get(sb.PodUID).sandbox = sb
	}
	if n := len(m.adopted); n > 0 {
		a.log.Info("found pods of an earlier worker process", "pods", n, "containers", len(cs))
	}
	return nil
}

// run follows the API until ctx ends, then waits for the pod workers.
func (m *podManager) run(ctx context.Context) {
	a := m.a
	defer m.wg.Wait()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.relist(ctx)
	}()
	selector := "spec.nodeName=" + a.cfg.Name
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		c, err := a.api.get(ctx)
		if err != nil {
			return
		}
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		items, rv, err := c.List(lctx, "Pod", client.ListOptions{FieldSelector: selector})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("list pods; retrying", "err", err, "in", backoff)
			}
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		m.resync(ctx, items)
		w, err := c.Watch(ctx, "Pod", client.WatchOptions{FieldSelector: selector, ResourceVersion: rv, BookmarkSeconds: 60})
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("watch pods; listing again", "err", err)
			}
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				w.Close()
				if ctx.Err() == nil && !errors.Is(err, client.ErrExpired) {
					a.log.Warn("pod watch ended; listing again", "err", err)
					sleep(ctx, backoff)
				}
				break
			}
			pod := ev.GetObject().GetPod()
			if pod == nil {
				continue
			}
			m.dispatch(ctx, pod, ev.GetType() == "DELETED")
		}
	}
}

// relist is the node's pod lifecycle event generator (the kubelet's PLEG):
// every SyncInterval it reads the state of every container of the node's
// pods from the runtime and wakes the workers of the pods where one
// changed, an exit above all. The pod workers then need not sync every
// second to notice: with a thousand hollow nodes' pods in one process,
// their syncs were 40 % of its CPU.
func (m *podManager) relist(ctx context.Context) {
	t := time.NewTicker(m.a.cfg.SyncInterval)
	defer t.Stop()
	var ws []*podWorker
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		ws = ws[:0]
		for _, w := range m.workers {
			ws = append(ws, w)
		}
		m.mu.Unlock()
		for _, w := range ws {
			if w.changed() {
				w.notify()
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// resync hands a full list to the workers: listed pods are updated, pods
// with a worker that the list lacks were deleted meanwhile. After the first
// list, whatever an earlier process left for pods that are gone is stopped.
func (m *podManager) resync(ctx context.Context, items []*pb.Object) {
	listed := map[string]bool{}
	for _, o := range items {
		pod := o.GetPod()
		listed[pod.GetMetadata().GetUid()] = true
		m.dispatch(ctx, pod, false)
	}
	m.mu.Lock()
	var gone []*podWorker
	for uid, w := range m.workers {
		if !listed[uid] {
			gone = append(gone, w)
		}
	}
	var orphans map[string]*adoption
	if !m.synced {
		m.synced = true
		orphans = m.adopted
		m.adopted = nil
	}
	m.mu.Unlock()
	for _, w := range gone {
		w.update(nil, true)
	}
	for uid, ad := range orphans {
		if listed[uid] {
			continue
		}
		m.a.log.Info("stopping the containers of a pod deleted while the worker was down", "pod_uid", uid, "containers", len(ad.containers))
		m.startWorker(ctx, uid, nil, true, ad)
	}
}

// dispatch gives a pod event to its worker, starting one if needed.
func (m *podManager) dispatch(ctx context.Context, pod *pb.Pod, deleted bool) {
	uid := pod.GetMetadata().GetUid()
	m.mu.Lock()
	w := m.workers[uid]
	var ad *adoption
	if w == nil && m.adopted != nil {
		ad = m.adopted[uid]
		delete(m.adopted, uid)
	}
	m.mu.Unlock()
	if w != nil {
		w.update(pod, deleted)
		return
	}
	if deleted && ad == nil {
		// A pod we never ran (or already cleaned up): nothing to do.
		return
	}
	m.startWorker(ctx, uid, pod, deleted, ad)
}

func (m *podManager) startWorker(ctx context.Context, uid string, pod *pb.Pod, deleted bool, ad *adoption) {
	w := newPodWorker(m.a, uid)
	if ad != nil {
		w.adopt(ad.rec, ad.containers, ad.sandbox)
	}
	w.pod, w.deleted = pod, deleted
	m.mu.Lock()
	if cur, ok := m.workers[uid]; ok {
		m.mu.Unlock()
		cur.update(pod, deleted)
		return
	}
	m.workers[uid] = w
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		w.run(ctx)
		m.mu.Lock()
		if m.workers[uid] == w {
			delete(m.workers, uid)
		}
		m.mu.Unlock()
	}()
}

// find returns the worker of pod namespace/name (with uid, when given).
func (m *podManager) find(namespace, name, uid string) *podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	if uid != "" {
		if w := m.workers[uid]; w != nil {
			return w
		}
		return nil
	}
	for _, w := range m.workers {
		p, _ := w.snapshot()
		if p.GetMetadata().GetNamespace() == namespace && p.GetMetadata().GetName() == name {
			return w
		}
	}
	return nil
}

// all returns every pod worker.
func (m *podManager) all() []*podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*podWorker, 0, len(m.workers))
	for _, w := range m.workers {
		out = append(out, w)
	}
	return out
}

// wakeAll has every pod worker sync now: something all of the node's pods
// depend on changed.
func (m *podManager) wakeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		w.notify()
	}
}

// count returns how many pods have a worker.
func (m *podManager) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.workers)
}
