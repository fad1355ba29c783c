package fsm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// next returns w's next event, failing the test if none comes within a
// generous deadline (a hang, not a timing assumption).
func next(t testing.TB, w *fsm.Watcher) fsm.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

type wantEvent struct {
	typ   string
	name  string
	index uint64
}

func expect(t *testing.T, w *fsm.Watcher, want ...wantEvent) {
	t.Helper()
	for i, we := range want {
		ev := next(t, w)
		if ev.Type != we.typ || ev.Object.Meta().GetName() != we.name || ev.Index != we.index {
			t.Fatalf("event %d: %s %s at %d, want %s %s at %d", i, ev.Type, ev.Object.Meta().GetName(), ev.Index, we.typ, we.name, we.index)
		}
		if ev.Type == fsm.Deleted && ev.Object.Meta().ResourceVersion != ev.Index {
			t.Fatalf("event %d: deleted object at resourceVersion %d, want %d", i, ev.Object.Meta().ResourceVersion, ev.Index)
		}
	}
}

func TestWatchOrderAndResume(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod", Namespace: "default"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	i1 := c.must(createCmd(pod("default", "a", nil))).Index
	i2 := c.must(createCmd(pod("default", "b", nil))).Index
	c.must(createCmd(configMap("default", "not-a-pod", nil)))
	_, listedAt, _ := c.f.List(fsm.Query{Kind: "Pod"})
	i3 := c.must(bindCmd("default", "a", "n1")).Index
	i4 := c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "b"})).Index
	expect(t, w,
		wantEvent{fsm.Added, "a", i1}, wantEvent{fsm.Added, "b", i2},
		wantEvent{fsm.Modified, "a", i3}, wantEvent{fsm.Deleted, "b", i4})

	// Resuming from a List's index delivers exactly what came after it.
	w2, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, listedAt)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w2, wantEvent{fsm.Modified, "a", i3}, wantEvent{fsm.Deleted, "b", i4})
	if p := w2.Progress(); p != c.index {
		t.Fatalf("progress %d, want %d", p, c.index)
	}

	// A batch makes several events at one index; resuming before it gets all.
	res := c.must(batchCmd(createCmd(pod("default", "c", nil)), createCmd(pod("default", "d", nil))))
	w3, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, res.Index-1)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w3, wantEvent{fsm.Added, "c", res.Index}, wantEvent{fsm.Added, "d", res.Index})
}

func TestWatchExpiry(t *testing.T) {
	c := newCluster(t, 3)
	c.must(createCmd(namespace("default"))) // event at 1
	slow, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ { // events at 2..5; the window keeps 3..5
		c.must(createCmd(pod("default", fmt.Sprint("p", i), nil)))
	}
	if _, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 1); !errors.Is(err, fsm.ErrExpired) {
		t.Fatalf("watch from 1: %v", err)
	}
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w, wantEvent{fsm.Added, "p1", 3}, wantEvent{fsm.Added, "p2", 4}, wantEvent{fsm.Added, "p3", 5})

	// The watcher that never read has fallen out of the window.
	for i := 0; i < 2; i++ {
		if _, err := slow.Next(context.Background()); !errors.Is(err, fsm.ErrExpired) {
			t.Fatalf("slow watcher: %v", err)
		}
	}
	if p := slow.Progress(); p != 0 {
		t.Fatalf("expired watcher progress %d", p)
	}
}

func TestWatchSelectorsEnterAndLeave(t *testing.T) {
	c := newCluster(t, 0)
	c.must(createCmd(namespace("default")))
	w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod", LabelSelector: "app=web"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	setLabels := func(labels map[string]string) uint64 {
		cur := c.get("Pod", "default", "p")
		return c.must(updateCmd(edit(cur, func(o *pb.Object) { o.Meta().Labels = labels }))).Index
	}
	c.must(createCmd(pod("default", "p", map[string]string{"app": "db"})))
	enter := setLabels(map[string]string{"app": "web"})
	change := setLabels(map[string]string{"app": "web", "v": "2"})
	leave := setLabels(map[string]string{"app": "db"})
	setLabels(map[string]string{"app": "db", "v": "3"})
	c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "p"}))
	marker := c.must(createCmd(pod("default", "marker", map[string]string{"app": "web"}))).Index
	expect(t, w,
		wantEvent{fsm.Added, "p", enter}, wantEvent{fsm.Modified, "p", change},
		wantEvent{fsm.Deleted, "p", leave}, wantEvent{fsm.Added, "marker", marker})

	// The node's watch: a pod appears when bound to it and leaves when gone.
	nw, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod", FieldSelector: "spec.nodeName=n1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.must(createCmd(pod("default", "q", nil)))
	c.must(createCmd(pod("default", "elsewhere", nil)))
	c.must(bindCmd("default", "elsewhere", "n2"))
	bound := c.must(bindCmd("default", "q", "n1")).Index
	deleting := c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "q"})).Index
	gone := c.must(deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "q", GracePeriodSeconds: ptr[int64](0)})).Index
	expect(t, nw, wantEvent{fsm.Added, "q", bound}, wantEvent{fsm.Modified, "q", deleting}, wantEvent{fsm.Deleted, "q", gone})

	if _, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Pod", FieldSelector: "spec.host=x"}, 0); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("bad field selector: %v", err)
	}
}

func TestWatchEnds(t *testing.T) {
	c := newCluster(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.f.Watch(ctx, fsm.Query{Kind: "Namespace"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A deadline on one Next leaves the watcher usable.
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if _, err := w.Next(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled ctx: %v", err)
	}
	idx := c.must(createCmd(namespace("a"))).Index
	expect(t, w, wantEvent{fsm.Added, "a", idx})

	done := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		done <- err
	}()
	cancel() // the watch's own ctx ends it, even while blocked
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after the watch ended: %v", err)
	}
}

func TestWatchWakesManyWatchers(t *testing.T) {
	c := newCluster(t, 0)
	const n = 20
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		w, err := c.f.Watch(context.Background(), fsm.Query{Kind: "Namespace"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for want := uint64(1); want <= 3; want++ {
				ev, err := w.Next(ctx)
				if err == nil && ev.Index != want {
					err = fmt.Errorf("event at %d, want %d", ev.Index, want)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for _, ns := range []string{"a", "b", "c"} {
		c.must(createCmd(namespace(ns)))
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestDroppedObjectsDecodeAlike: a store that keeps no event decoded, or
// only the newest few, delivers exactly what one keeping all of them
// does, to live watches and to watches resumed from old indices alike,
// and answers Created alike.
func TestDroppedObjectsDecodeAlike(t *testing.T) {
	queries := []fsm.Query{
		{Kind: "Pod"},
		{Kind: "Pod", LabelSelector: "app"},
		{Kind: "Pod", LabelSelector: "!app"},
		{Kind: "Pod", FieldSelector: "spec.nodeName=n1"},
		{Kind: "Pod", FieldSelector: "spec.nodeName="},
		{Kind: "ConfigMap", Namespace: "default"},
	}
	type stream struct {
		events []fsm.Event
		err    error
	}
	// drain reads a watcher's events up to the first of the objects every
	// query matches one of, written last (end).
	drain := func(w *fsm.Watcher) stream {
		var s stream
		for {
			ev, err := w.Next(t.Context())
			if err != nil {
				s.err = err
				return s
			}
			if strings.HasPrefix(ev.Object.Meta().GetName(), "end-") {
				return s
			}
			s.events = append(s.events, ev)
		}
	}
	end := func(f *fsm.FSM, index uint64) {
		c := &cluster{t: t, f: f, index: index}
		c.must(createCmd(configMap("default", "end-cm", nil)))
		c.must(createCmd(pod("default", "end-a", map[string]string{"app": "end"})))
		c.must(bindCmd("default", "end-a", "n1"))
		c.must(createCmd(pod("default", "end-b", nil)))
	}
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			logs := randomLogs(t, seed, 400)
			var stores []*fsm.FSM
			var streams [][]stream
			for _, decoded := range []int{1000, 0, 7} { // the first keeps every event decoded
				cfg := fsm.DefaultConfig()
				cfg.Logger, cfg.EventWindow, cfg.DecodedEvents = slog.New(slog.DiscardHandler), 1000, decoded
				f, err := fsm.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				var live []*fsm.Watcher
				for _, q := range queries {
					w, err := f.Watch(t.Context(), q, 0)
					if err != nil {
						t.Fatal(err)
					}
					live = append(live, w)
				}
				for _, l := range logs {
					f.Apply(l)
				}
				end(f, logs[len(logs)-1].Index)
				var got []stream
				for _, w := range live {
					got = append(got, drain(w))
				}
				for _, from := range []uint64{1, 100, 250, 390} {
					for _, q := range queries {
						w, err := f.Watch(t.Context(), q, from)
						if err != nil {
							t.Fatal(err)
						}
						got = append(got, drain(w))
					}
				}
				stores, streams = append(stores, f), append(streams, got)
			}
			want := streams[0]
			for s := 1; s < len(stores); s++ {
				for i, st := range streams[s] {
					if len(st.events) != len(want[i].events) || (st.err == nil) != (want[i].err == nil) {
						t.Fatalf("store %d, watch %d: %d events (%v), want %d (%v)", s, i, len(st.events), st.err, len(want[i].events), want[i].err)
					}
					for j, ev := range st.events {
						w := want[i].events[j]
						if ev.Type != w.Type || ev.Index != w.Index || !bytes.Equal(ev.Encoded, w.Encoded) ||
							!gproto.Equal(ev.Object, w.Object) || !gproto.Equal(ev.Old, w.Old) {
							t.Fatalf("store %d, watch %d, event %d: %s at %d\n%v (old %v)\nwant %s at %d\n%v (old %v)",
								s, i, j, ev.Type, ev.Index, ev.Object, ev.Old, w.Type, w.Index, w.Object, w.Old)
						}
					}
				}
			}
			created := 0
			for _, ev := range want[0].events {
				if ev.Type != fsm.Added {
					continue
				}
				m := ev.Object.Meta()
				obj, ok := stores[0].Created("Pod", m.GetNamespace(), m.GetName(), m.GetUid())
				for s := 1; s < len(stores); s++ {
					got, gotOK := stores[s].Created("Pod", m.GetNamespace(), m.GetName(), m.GetUid())
					if gotOK != ok || !gproto.Equal(got, obj) {
						t.Fatalf("store %d: Created(%s) = %v, %v; want %v, %v", s, m.Key(), got, gotOK, obj, ok)
					}
				}
				if ok {
					created++
				}
			}
			if created == 0 || len(want[0].events) == 0 {
				t.Fatal("nothing compared")
			}
		})
	}
}

// TestWatchWindowBytes: a large object written again and again leaves only
// as many of its versions in the event window as EventWindowBytes allows;
// watches from before them expire, later ones resume.
func TestWatchWindowBytes(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.Logger, cfg.EventWindowBytes = slog.New(slog.DiscardHandler), 100<<10
	f, err := fsm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, f: f}
	c.must(createCmd(namespace("default")))
	slow, err := f.Watch(context.Background(), fsm.Query{Kind: "ConfigMap"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var last *fsm.Result
	for i := range 10 { // 20 KB each: an update's event holds 40 KB of encodings
		cm := configMap("default", "big", map[string]string{"k": strings.Repeat(fmt.Sprint(i), 20<<10)})
		if i == 0 {
			last = c.must(createCmd(cm))
			continue
		}
		cm.Meta().ResourceVersion = last.Index
		last = c.must(updateCmd(cm))
	}
	// The two newest updates fit in 100 KB, the third does not.
	if n, b, start := f.EventWindow(); n != 2 || b > 100<<10 || b < 80<<10 || start != last.Index-2 {
		t.Fatalf("event window: %d events, %d bytes, from index %d; want 2, 80-100 KB, from %d", n, b, start, last.Index-2)
	}
	if _, err := f.Watch(context.Background(), fsm.Query{Kind: "ConfigMap"}, last.Index-3); !errors.Is(err, fsm.ErrExpired) {
		t.Fatalf("watch from %d: %v, want ErrExpired", last.Index-3, err)
	}
	if _, err := slow.Next(context.Background()); !errors.Is(err, fsm.ErrExpired) {
		t.Fatalf("slow watcher: %v, want ErrExpired", err)
	}
	w, err := f.Watch(context.Background(), fsm.Query{Kind: "ConfigMap"}, last.Index-2)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w, wantEvent{fsm.Modified, "big", last.Index - 1}, wantEvent{fsm.Modified, "big", last.Index})
}
