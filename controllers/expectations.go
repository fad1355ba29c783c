package controllers

import (
	"sync"
	"time"

	"k8s.io/utils/clock"

	pb "github.com/skiff-sh/skiff/proto"
)

// Expectations remember writes a controller made that its cache has not
// shown yet, per controller key, so that a reconcile running before the
// cache catches up does not act twice (create the same replicas again).
// A reconcile skips a key whose expectations are pending; the informer
// handler that sees a write land calls Observe, which enqueues nothing by
// itself (the same event enqueues the key). Expectations lapse after a
// timeout, in case an event was missed.
type Expectations struct {
	clock   clock.PassiveClock
	timeout time.Duration

	mu sync.Mutex
	m  map[string]*expectation
}

type expectation struct {
	pending  map[string]struct{}
	deadline time.Time
}

// NewExpectations returns Expectations that lapse after timeout.
func NewExpectations(c clock.PassiveClock, timeout time.Duration) *Expectations {
	return &Expectations{clock: c, timeout: timeout, m: make(map[string]*expectation)}
}

// Expect records that key waits to observe ids (for example "create
// ns/pod-x", "delete ns/pod-y").
func (e *Expectations) Expect(key string, ids ...string) {
	if len(ids) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.m[key]
	if x == nil {
		x = &expectation{pending: make(map[string]struct{}, len(ids))}
		e.m[key] = x
	}
	for _, id := range ids {
		x.pending[id] = struct{}{}
	}
	x.deadline = e.clock.Now().Add(e.timeout)
}

// Observe records that key's id has been seen (or will never be: call it
// too when the write failed).
func (e *Expectations) Observe(key, id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.m[key]; x != nil {
		delete(x.pending, id)
		if len(x.pending) == 0 {
			delete(e.m, key)
		}
	}
}

// Satisfied reports whether key has nothing pending (or its expectations
// have lapsed, which clears them). Otherwise it also returns how long until
// they lapse.
func (e *Expectations) Satisfied(key string) (bool, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.m[key]
	if x == nil {
		return true, 0
	}
	if left := x.deadline.Sub(e.clock.Now()); left > 0 {
		return false, left
	}
	delete(e.m, key)
	return true, 0
}

// Forget drops everything pending for key (the object is gone).
func (e *Expectations) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}

// WriteBarrier remembers, per controller key, the resourceVersion of the
// controller's latest write to objects of one cached kind, so a reconcile
// can wait until the cache shows its own writes instead of deciding again
// on a state it has already changed (and, say, creating a ReplicaSet that
// exists). Informers apply a kind's changes in resourceVersion order, so
// an informer at or past the write holds it.
type WriteBarrier struct {
	inf *Informer

	mu sync.Mutex
	m  map[string]uint64
}

// NewWriteBarrier returns a WriteBarrier for writes that inf caches.
func NewWriteBarrier(inf *Informer) *WriteBarrier {
	return &WriteBarrier{inf: inf, m: make(map[string]uint64)}
}

// Wrote records a write made for key; stored is the object as the Cluster
// returned it.
func (w *WriteBarrier) Wrote(key string, stored *pb.Object) {
	rv := stored.Meta().GetResourceVersion()
	w.mu.Lock()
	defer w.mu.Unlock()
	if rv > w.m[key] {
		w.m[key] = rv
	}
}

// Ready reports whether the cache holds every write recorded for key.
func (w *WriteBarrier) Ready(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	rv, ok := w.m[key]
	if !ok {
		return true
	}
	if w.inf.ResourceVersion() >= rv {
		delete(w.m, key)
		return true
	}
	return false
}

// Forget drops what is recorded for key.
func (w *WriteBarrier) Forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, key)
}
