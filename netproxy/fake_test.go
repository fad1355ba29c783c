package netproxy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// fakeAPI is an in-memory cluster with an event log, implementing source.
type fakeAPI struct {
	mu        sync.Mutex
	rv        uint64
	objs      map[string]map[string]*pb.Object // kind -> ns/name
	log       []*pb.WatchEvent
	compacted uint64 // watches from before this index expire
	changed   chan struct{}
	listFails map[string]int // kind -> lists left to fail
	lists     map[string]int // kind -> lists served
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{
		objs:    map[string]map[string]*pb.Object{kindService: {}, kindEndpoints: {}},
		changed: make(chan struct{}), listFails: map[string]int{}, lists: map[string]int{},
	}
}

func (f *fakeAPI) connect(ctx context.Context) (source, error) { return f, nil }

func kindOf(o *pb.Object) string {
	if o.GetService() != nil {
		return kindService
	}
	return kindEndpoints
}

func (f *fakeAPI) put(r pb.Resource) { f.record("MODIFIED", r) }
func (f *fakeAPI) del(r pb.Resource) { f.record("DELETED", r) }

func (f *fakeAPI) record(typ string, r pb.Resource) {
	o := pb.Wrap(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	k := key(r.GetMetadata())
	if typ == "DELETED" {
		delete(f.objs[kindOf(o)], k)
	} else {
		f.objs[kindOf(o)][k] = o
	}
	f.log = append(f.log, &pb.WatchEvent{Type: typ, Object: o, ResourceVersion: f.rv})
	close(f.changed)
	f.changed = make(chan struct{})
}

// expire forgets the event log: open watches end with ErrExpired.
func (f *fakeAPI) expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.compacted = f.rv + 1
	f.rv++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAPI) List(ctx context.Context, kind string) ([]*pb.Object, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listFails[kind] > 0 {
		f.listFails[kind]--
		return nil, 0, errors.New("fake: master unavailable")
	}
	f.lists[kind]++
	var out []*pb.Object
	for _, o := range f.objs[kind] {
		out = append(out, o)
	}
	return out, f.rv, nil
}

func (f *fakeAPI) listCount(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[kind]
}

func (f *fakeAPI) Watch(ctx context.Context, kind string, rv uint64) (eventStream, error) {
	return &fakeWatch{f: f, kind: kind, rv: rv}, nil
}

type fakeWatch struct {
	f    *fakeAPI
	kind string
	rv   uint64
}

func (w *fakeWatch) Next(ctx context.Context) (*pb.WatchEvent, error) {
	for {
		w.f.mu.Lock()
		if w.rv < w.f.compacted {
			w.f.mu.Unlock()
			return nil, client.ErrExpired
		}
		for _, ev := range w.f.log {
			if ev.ResourceVersion > w.rv && kindOf(ev.Object) == w.kind {
				w.rv = ev.ResourceVersion
				w.f.mu.Unlock()
				return ev, nil
			}
		}
		ch := w.f.changed
		w.f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

func (w *fakeWatch) Close() {}

// fakeBackend records what it is asked to program.
type fakeBackend struct {
	mu      sync.Mutex
	fail    int // syncs left to fail
	syncs   []RuleSet
	times   []time.Time
	cleaned bool
	changed chan struct{}
}

func newFakeBackend() *fakeBackend { return &fakeBackend{changed: make(chan struct{})} }

func (b *fakeBackend) Sync(rs RuleSet) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail > 0 {
		b.fail--
		return errors.New("fake: netlink busy")
	}
	b.syncs = append(b.syncs, rs)
	b.times = append(b.times, time.Now())
	close(b.changed)
	b.changed = make(chan struct{})
	return nil
}

func (b *fakeBackend) Cleanup() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleaned = true
	return nil
}

// waitFor polls the backend until cond holds for its syncs.
func (b *fakeBackend) waitFor(t *testing.T, within time.Duration, what string, cond func(syncs []RuleSet) bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		ok := cond(b.syncs)
		ch := b.changed
		last := ""
		if n := len(b.syncs); n > 0 {
			last = b.syncs[n-1].String()
		}
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("within %s: %s; last sync:\n%s", within, what, last)
		}
	}
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
