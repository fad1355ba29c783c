package fsm

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func podOn(node string) *pb.Object {
	return &pb.Object{Kind: &pb.Object_Pod{Pod: &pb.Pod{Spec: &pb.PodSpec{NodeName: node}}}}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A write wakes the watchers of its kind and of its pod's nodes (before and
// after), no others; every quarter window all are woken.
func TestWakeTableWakesOnlyConcernedWatchers(t *testing.T) {
	var tab wakeTable
	onA := tab.wait(wakeKey{kind: "Pod", node: "a", byNode: true})
	onB := tab.wait(wakeKey{kind: "Pod", node: "b", byNode: true})
	unbound := tab.wait(wakeKey{kind: "Pod", node: "", byNode: true})
	pods := tab.wait(wakeKey{kind: "Pod"})
	cms := tab.wait(wakeKey{kind: "ConfigMap"})

	var l eventLog = newEventLog(Config{EventWindow: 1000, DecodedEvents: 1000}, 0, 0)
	bind := []Event{{Type: Modified, Object: podOn("b"), Old: podOn("")}}
	l.append(bind)
	tab.publish(bind, l.next, len(l.buf))
	if closed(onA) || closed(cms) {
		t.Fatal("a bind to node b woke the watchers of node a or of ConfigMaps")
	}
	if !closed(onB) || !closed(unbound) || !closed(pods) {
		t.Fatal("a bind to node b did not wake the watchers of node b, of unbound pods and of all pods")
	}

	// The sweep: a quarter window of writes that concern nobody waiting
	// still wakes everyone, so no watcher falls out of the window.
	for i := 0; i < 250; i++ {
		evs := []Event{{Type: Added, Object: podOn("c")}}
		l.append(evs)
		tab.publish(evs, l.next, len(l.buf))
	}
	if !closed(onA) || !closed(cms) {
		t.Fatal("a quarter window of writes did not sweep every watcher along")
	}
}

// A watcher of one node's pods, blocked in Next while writes for other
// nodes and kinds pass through several event windows, is swept along (its
// position follows the log) and then gets its node's event: no ErrExpired
// for events it never wanted.
func TestNodeWatchSweptAlongWithoutExpiring(t *testing.T) {
	const window = 16
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.EventWindow = window
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var index uint64
	apply := func(o *pb.Object, bindTo string) uint64 {
		t.Helper()
		index++
		cmd := &pb.Command{Op: &pb.Command_Create{Create: o}}
		if bindTo != "" {
			m := o.Meta()
			cmd = &pb.Command{Op: &pb.Command_Bind{Bind: &pb.BindOp{Namespace: m.GetNamespace(), Name: m.GetName(), NodeName: bindTo}}}
		}
		cmd.Time, cmd.Uid = timestamppb.New(time.Unix(int64(index), 0)), fmt.Sprint("uid-", index)
		if res := f.ApplyCommand(index, cmd); res.Err != nil {
			t.Fatalf("index %d: %v", index, res.Err)
		}
		return index
	}
	newPod := func(name, node string) *pb.Object {
		return pb.Wrap(&pb.Pod{
			Metadata: &pb.ObjectMeta{Namespace: "default", Name: name},
			Spec:     &pb.PodSpec{NodeName: node, Containers: []*pb.Container{{Name: "app", Image: "busybox"}}},
		})
	}
	apply(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}), "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := f.Watch(ctx, Query{Kind: "Pod", FieldSelector: "spec.nodeName=a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Event, 1)
	errs := make(chan error, 1)
	go func() {
		ev, err := w.Next(ctx)
		if err != nil {
			errs <- err
			return
		}
		got <- ev
	}()
	caughtUp := func() bool {
		f.mu.Lock() // excludes take, which moves w.seq under the read lock
		defer f.mu.Unlock()
		return f.events.next-w.seq < window/4
	}
	for round := 0; round < 10*4; round++ {
		for i := 0; i < window/4; i++ {
			name := fmt.Sprint("r", round, "-", i)
			if i%2 == 0 {
				apply(newPod(name, "b"), "")
			} else {
				apply(pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Namespace: "default", Name: name}}), "")
			}
		}
		// Every quarter window the sweep wakes the watcher: it keeps within
		// a quarter window of the log (or the deadline says it was not
		// woken).
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(time.Millisecond)
		for !caughtUp() {
			select {
			case err := <-errs:
				t.Fatalf("round %d: the watcher of node a failed: %v", round, err)
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the watcher of node a was not swept along the log", round)
			}
		}
		tick.Stop()
	}
	apply(newPod("x", ""), "")
	bound := apply(newPod("x", ""), "a")
	select {
	case ev := <-got:
		if ev.Type != Added || ev.Object.Meta().GetName() != "x" || ev.Index != bound {
			t.Fatalf("watcher of node a got %s %s at %d, want Added x at %d", ev.Type, ev.Object.Meta().GetName(), ev.Index, bound)
		}
	case err := <-errs:
		t.Fatalf("the watcher of node a failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher of node a was not woken by a bind to node a")
	}
}

// The per-node index finds, for every watcher and every position in the
// window, the same next event as reading every event in turn: random pod
// events (created on a node or unbound, bound, moved by delete and create
// again) and ConfigMaps, in batches, through a small window that evicts,
// compacts the node lists and forgets nodes whose events all left.
func TestEventLogNodeIndexMatchesScan(t *testing.T) {
	nodes := []string{"", "a", "b", "c", "d"}
	keys := []wakeKey{{kind: "Pod"}, {kind: "ConfigMap"}}
	for _, n := range nodes {
		keys = append(keys, wakeKey{kind: "Pod", node: n, byNode: true})
	}
	scan := func(l *eventLog, k wakeKey, seq uint64) uint64 {
		for ; seq < l.next; seq++ {
			if k.concerns(&l.buf[seq%uint64(len(l.buf))]) {
				return seq
			}
		}
		return l.next
	}
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 1))
		l := newEventLog(Config{EventWindow: 16, DecodedEvents: 16}, 0, 0)
		for step := range 300 {
			var evs []Event
			for range 1 + r.IntN(5) {
				var ev Event
				switch r.IntN(4) {
				case 0:
					ev = Event{Type: Added, Object: &pb.Object{Kind: &pb.Object_ConfigMap{ConfigMap: &pb.ConfigMap{}}}}
				case 1:
					ev = Event{Type: Added, Object: podOn(nodes[r.IntN(len(nodes))])}
				case 2: // a bind, or a status update on the same node
					from := nodes[r.IntN(len(nodes))]
					to := from
					if from == "" {
						to = nodes[1+r.IntN(len(nodes)-1)]
					}
					ev = Event{Type: Modified, Object: podOn(to), Old: podOn(from)}
				default:
					ev = Event{Type: Deleted, Object: podOn(nodes[r.IntN(len(nodes))])}
				}
				evs = append(evs, ev)
			}
			l.append(evs)
			for _, k := range keys {
				for seq := l.oldest(); seq <= l.next; seq++ {
					if got, want := l.nextFor(k, seq), scan(&l, k, seq); got != want {
						t.Fatalf("seed %d step %d: next event for %+v from %d = %d, reading every event finds %d", seed, step, k, seq, got, want)
					}
				}
			}
			for node, seqs := range l.byNode {
				if len(seqs) > 0 && seqs[len(seqs)-1] < l.oldest() && l.next%4 == 0 {
					t.Fatalf("seed %d step %d: node %q kept after all its events left", seed, step, node)
				}
			}
		}
		if len(l.byNode[""]) > 2*len(l.buf)+8 {
			t.Errorf("the list of unbound pods' events holds %d entries for a window of %d", len(l.byNode[""]), len(l.buf))
		}
	}
}

// TestEventLogDropsOlderObjects: only the newest DecodedEvents events keep
// their objects; older ones keep their encodings, and one without an
// encoding keeps its objects.
func TestEventLogDropsOlderObjects(t *testing.T) {
	l := newEventLog(Config{EventWindow: 10, DecodedEvents: 3}, 0, 0)
	for i := range 8 {
		obj, old := podOn(fmt.Sprint("n", i)), podOn("")
		ev := Event{Type: Modified, Object: obj, Old: old, Index: uint64(i + 1)}
		if i != 2 {
			ev.Encoded, ev.oldEncoded = mustMarshal(t, obj), mustMarshal(t, old)
		}
		l.append([]Event{ev})
	}
	for seq := range uint64(8) {
		ev := l.buf[seq]
		if want := seq >= 5 || seq == 2; (ev.Object != nil) != want || (ev.Old != nil) != want {
			t.Fatalf("event %d: object kept %v, old kept %v; want %v", seq, ev.Object != nil, ev.Old != nil, want)
		}
		if seq < 5 && seq != 2 {
			if err := ev.decode(); err != nil || ev.Object.GetPod().GetSpec().GetNodeName() != fmt.Sprint("n", seq) || ev.Old == nil {
				t.Fatalf("event %d decoded to %v, %v (%v)", seq, ev.Object, ev.Old, err)
			}
		}
	}
}

func mustMarshal(t *testing.T, o *pb.Object) []byte {
	t.Helper()
	b, err := pb.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEventLogDecodedBytes: the newest events keep their objects only
// while their encodings stay within DecodedEventBytes, always the newest
// one; events leaving the window leave the count.
func TestEventLogDecodedBytes(t *testing.T) {
	add := func(l *eventLog, i, size int) {
		obj := podOn(strings.Repeat("n", size))
		l.append([]Event{{Type: Added, Object: obj, Index: uint64(i + 1), Encoded: mustMarshal(t, obj)}})
	}
	kept := func(l *eventLog) (seqs []uint64) {
		for seq := l.oldest(); seq < l.next; seq++ {
			if l.buf[seq%uint64(len(l.buf))].Object != nil {
				seqs = append(seqs, seq)
			}
		}
		return seqs
	}
	check := func(l *eventLog, want ...uint64) {
		t.Helper()
		if got := kept(l); !slices.Equal(got, want) {
			t.Fatalf("events keeping their objects: %v, want %v", got, want)
		}
		var sum uint64
		for _, seq := range want {
			sum += l.buf[seq%uint64(len(l.buf))].encodedSize()
		}
		if l.decBytes != sum {
			t.Fatalf("counted %d bytes of decoded events, they have %d", l.decBytes, sum)
		}
	}
	one := uint64(len(mustMarshal(t, podOn(strings.Repeat("n", 1000)))))

	l := newEventLog(Config{EventWindow: 10, DecodedEvents: 100, DecodedEventBytes: int(2*one + one/2)}, 0, 0)
	for i := range 5 {
		add(&l, i, 1000)
	}
	check(&l, 3, 4)
	// Larger than the bound by itself: it stays decoded while it is the
	// newest, and is the first to go after.
	add(&l, 5, 4000)
	check(&l, 5)
	add(&l, 6, 1000)
	check(&l, 6)
	add(&l, 7, 1000)
	check(&l, 6, 7)

	// No byte bound: the count decides; events leaving the window leave
	// the bytes.
	l = newEventLog(Config{EventWindow: 4, DecodedEvents: 100}, 0, 0)
	for i := range 7 {
		add(&l, i, 1000)
	}
	check(&l, 3, 4, 5, 6)
	l = newEventLog(Config{EventWindow: 4, DecodedEvents: 100, DecodedEventBytes: int(10 * one)}, 0, 0)
	for i := range 7 {
		add(&l, i, 1000)
	}
	check(&l, 3, 4, 5, 6)
}

// TestEventLogWindowBytes: the window keeps the newest events whose
// encodings fit in EventWindowBytes, always the newest one, and counts
// exactly what it keeps, with the count bound and the decoded bound.
func TestEventLogWindowBytes(t *testing.T) {
	add := func(l *eventLog, i, size int) {
		obj := podOn(strings.Repeat("n", size))
		l.append([]Event{{Type: Added, Object: obj, Index: uint64(i + 1), Encoded: mustMarshal(t, obj)}})
	}
	check := func(l *eventLog, oldest, start uint64) {
		t.Helper()
		if l.oldest() != oldest || l.start != start {
			t.Fatalf("oldest event %d, resumable from index %d; want %d, %d", l.oldest(), l.start, oldest, start)
		}
		var sum, dec uint64
		for seq := l.oldest(); seq < l.next; seq++ {
			ev := &l.buf[seq%uint64(len(l.buf))]
			sum += ev.encodedSize()
			if ev.Object != nil {
				dec += ev.encodedSize()
			}
		}
		if l.bytes != sum || l.decBytes != dec {
			t.Fatalf("counted %d bytes, %d decoded; the window holds %d, %d", l.bytes, l.decBytes, sum, dec)
		}
		for seq := uint64(0); seq < l.oldest(); seq++ {
			if ev := &l.buf[seq%uint64(len(l.buf))]; seq+uint64(len(l.buf)) >= l.next && ev.Encoded != nil {
				t.Fatalf("event %d left the window but its slot still holds it", seq)
			}
		}
	}
	one := uint64(len(mustMarshal(t, podOn(strings.Repeat("n", 1000)))))

	l := newEventLog(Config{EventWindow: 100, DecodedEvents: 2, EventWindowBytes: int(3*one + one/2)}, 0, 0)
	for i := range 6 {
		add(&l, i, 1000)
	}
	check(&l, 3, 3) // events 3..5 (indexes 4..6) fit; index 3 left
	add(&l, 6, 5000)
	check(&l, 6, 6) // alone over the bound: kept, alone
	add(&l, 7, 1000)
	check(&l, 7, 7)

	// The count bound still evicts, and an event the bytes took is not
	// evicted again when the ring comes round to its slot.
	l = newEventLog(Config{EventWindow: 4, DecodedEvents: 4, EventWindowBytes: int(2*one + one/2)}, 0, 0)
	for i := range 3 {
		add(&l, i, 1000)
	}
	check(&l, 1, 1)
	add(&l, 3, 100)
	add(&l, 4, 100) // into the slot of event 0, which the bytes took
	check(&l, 1, 1)
	add(&l, 5, 100) // the count takes event 1
	check(&l, 2, 2)
	for i := 6; i < 12; i++ {
		add(&l, i, 100)
	}
	check(&l, 8, 8)
}
