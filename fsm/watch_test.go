package fsm_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

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
