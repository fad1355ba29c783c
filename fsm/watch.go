package fsm

import (
	"context"
	"fmt"
	"slices"
	"sync"

	pb "github.com/skiff-sh/skiff/proto"
)

// wakeKey is what a watcher waits for: writes of one kind, or (byNode) of
// the pods bound to one node, the kubelet's watch. With a thousand nodes
// each watching its own pods, waking every watcher on every write cost a
// thousand goroutine wake-ups and filter scans per write; keyed, a write
// wakes the watchers of its kind or its node.
type wakeKey struct {
	kind   string
	node   string
	byNode bool
}

// keyOf is the wake key of a compiled query.
func keyOf(m *matcher) wakeKey {
	if node, ok := m.nodeName(); ok {
		return wakeKey{kind: m.kind.Kind, node: node, byNode: true}
	}
	return wakeKey{kind: m.kind.Kind}
}

// concerns reports whether ev may matter to a watcher of k: a cheap test
// before the full filter.
func (k wakeKey) concerns(ev *Event) bool {
	if ev.kind != k.kind {
		return false
	}
	// A pod's node only goes from "" to a name (a bind), so the event
	// matters to the watchers of either.
	return !k.byNode || ev.node == k.node || ev.hasOld && ev.oldNode == k.node
}

// wakeTable holds one channel per key that a watcher waits on; publish
// closes the channels of the keys a batch of events concerns. Its mutex is
// taken inside FSM.mu (write lock in publish, read lock in take), so a
// watcher that found no event and takes its channel cannot miss the next
// publish.
type wakeTable struct {
	mu    sync.Mutex
	chans map[wakeKey]chan struct{}
	// swept is the event sequence at which every channel was last closed.
	// A watcher whose key no write concerns still has to move its position
	// past the events it skips before the ring evicts them, or its next
	// Next would report ErrExpired for events it never wanted: so every
	// quarter of the event window, all are woken.
	swept uint64
}

func (t *wakeTable) wait(k wakeKey) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.chans == nil {
		t.chans = make(map[wakeKey]chan struct{})
	}
	ch := t.chans[k]
	if ch == nil {
		ch = make(chan struct{})
		t.chans[k] = ch
	}
	return ch
}

// publish wakes the watchers events concern; next is the event log's next
// sequence and window its size.
func (t *wakeTable) publish(events []Event, next uint64, window int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if next-t.swept >= uint64(window/4) {
		t.allLocked(next)
		return
	}
	if len(t.chans) == 0 {
		return
	}
	for i := range events {
		ev := &events[i]
		t.closeLocked(wakeKey{kind: ev.kind})
		if ev.kind != "Pod" {
			continue
		}
		t.closeLocked(wakeKey{kind: ev.kind, node: ev.node, byNode: true})
		if ev.hasOld {
			t.closeLocked(wakeKey{kind: ev.kind, node: ev.oldNode, byNode: true})
		}
	}
}

func (t *wakeTable) closeLocked(k wakeKey) {
	if ch := t.chans[k]; ch != nil {
		close(ch)
		delete(t.chans, k)
	}
}

// all wakes every watcher (a restore, or the periodic sweep).
func (t *wakeTable) all(next uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.allLocked(next)
}

func (t *wakeTable) allLocked(next uint64) {
	for k, ch := range t.chans {
		close(ch)
		delete(t.chans, k)
	}
	t.swept = next
}

// eventLog is the ring of the last window watch events, in index order. It
// is guarded by FSM.mu.
type eventLog struct {
	buf  []Event
	next uint64 // sequence number of the next event; event seq lives in buf[seq%len(buf)]
	// start is the index after which every event is still retained: a watch
	// may resume from start or later.
	start uint64
	// epoch changes on Restore: history before it is gone, so every watcher
	// of an older epoch expires.
	epoch uint64
	// byNode lists, per node name, the sequence numbers of the retained
	// Pod events that concern that node's watchers (wakeKey.concerns), in
	// order: a node's pod watch (a thousand nodes, a thousand watches) goes
	// straight to its events instead of reading every event since its last
	// one. Entries older than the window are dropped as lists grow and in
	// a sweep every quarter window.
	byNode map[string][]uint64
	// decoded is how many of the newest events keep their objects decoded
	// (Config.DecodedEvents), and decodedBytes how many bytes of encodings
	// those events may have (Config.DecodedEventBytes; 0: no bound); older
	// ones keep their encodings only.
	decoded, decodedBytes uint64
	// The events from seq dec on have their objects, which are
	// decBytes of encodings.
	dec, decBytes uint64
	// maxBytes bounds the encodings the window holds
	// (Config.EventWindowBytes; 0: no bound), which are bytes; the events
	// before seq first left the window for it.
	maxBytes, bytes, first uint64
}

func newEventLog(cfg Config, start, epoch uint64) eventLog {
	return eventLog{buf: make([]Event, cfg.EventWindow), start: start, epoch: epoch, byNode: make(map[string][]uint64),
		decoded: uint64(cfg.DecodedEvents), decodedBytes: uint64(cfg.DecodedEventBytes), maxBytes: uint64(cfg.EventWindowBytes)}
}

// oldest returns the sequence number of the oldest retained event.
func (l *eventLog) oldest() uint64 {
	if n := uint64(len(l.buf)); l.next > n && l.next-n > l.first {
		return l.next - n
	}
	return l.first
}

func (l *eventLog) append(evs []Event) {
	n := uint64(len(l.buf))
	for i := range evs {
		e := &evs[i]
		slot := &l.buf[l.next%n]
		if l.next >= n && l.next-n >= l.first {
			l.evict(l.next - n)
		}
		e.kind, e.hasOld = e.Object.KindName(), e.Old != nil
		if e.Type == Added {
			m := e.Object.Meta()
			e.namespace, e.name = m.GetNamespace(), m.GetName()
		}
		if p := e.Object.GetPod(); p != nil {
			e.node, e.oldNode = p.GetSpec().GetNodeName(), e.Old.GetPod().GetSpec().GetNodeName()
			l.index(e.node, l.next)
			if e.hasOld && e.oldNode != e.node {
				l.index(e.oldNode, l.next)
			}
		}
		*slot = *e
		l.next++
		l.bytes += e.encodedSize()
		l.decBytes += e.encodedSize()
		for l.maxBytes > 0 && l.bytes > l.maxBytes && l.oldest() < l.next-1 {
			l.evict(l.oldest())
		}
		l.dropOlderObjects()
		if l.next%uint64(max(1, len(l.buf)/4)) == 0 {
			l.prune()
		}
	}
}

// evict takes the oldest event, seq, out of the window.
func (l *eventLog) evict(seq uint64) {
	slot := &l.buf[seq%uint64(len(l.buf))]
	// Evicting an event at index i may leave others at i (a batch), so
	// only resuming from i or later stays exact.
	l.start = slot.Index
	size := slot.encodedSize()
	l.bytes -= size
	if seq >= l.dec {
		l.decBytes -= size
		l.dec = seq + 1
	}
	*slot = Event{}
	l.first = seq + 1
}

// dropOlderObjects drops the objects of the oldest events that keep them
// until the newest decoded events and their bytes are within the bounds.
// The byte bound keeps at least the newest event decoded: every watcher
// reads it now, and each would decode a copy of its own.
func (l *eventLog) dropOlderObjects() {
	n := uint64(len(l.buf))
	for l.dec < l.next {
		overCount := l.next-l.dec > l.decoded
		overBytes := l.decodedBytes > 0 && l.decBytes > l.decodedBytes && l.dec < l.next-1
		if !overCount && !overBytes {
			return
		}
		ev := &l.buf[l.dec%n]
		l.decBytes -= ev.encodedSize()
		ev.dropObjects()
		l.dec++
	}
}

// encodedSize is what an event's encodings hold: about what its decoded
// objects hold for large objects, a third or less for small ones.
func (e *Event) encodedSize() uint64 { return uint64(len(e.Encoded) + len(e.oldEncoded)) }

// dropObjects lets the decoded objects of an event that is no longer new
// go, keeping their encodings; decode brings them back for a watcher.
func (e *Event) dropObjects() {
	if e.Encoded == nil || e.hasOld && e.oldEncoded == nil {
		return // not encoded (every store event is): keep the objects
	}
	e.Object, e.Old = nil, nil
}

// decode gives an event whose objects were dropped objects of its own,
// decoded from the encodings the log kept.
func (e *Event) decode() error {
	obj := &pb.Object{}
	if err := obj.UnmarshalVT(e.Encoded); err != nil {
		return fmt.Errorf("fsm: decode the watch event at index %d: %w", e.Index, err)
	}
	e.Object = obj
	if e.hasOld {
		old := &pb.Object{}
		if err := old.UnmarshalVT(e.oldEncoded); err != nil {
			return fmt.Errorf("fsm: decode the watch event at index %d: %w", e.Index, err)
		}
		e.Old = old
	}
	return nil
}

// index lists event seq under node, first dropping the node's entries that
// have left the window once they are more than half of its list. Dropping
// them as soon as there is one moved the whole list for every event once
// the window was full (up to a window of entries per pod event for the
// unbound pods); this way each entry is moved at most once, on average, and
// a list holds at most twice the window.
func (l *eventLog) index(node string, seq uint64) {
	seqs := l.byNode[node]
	if n := len(seqs); n > 0 && seqs[n/2] < l.oldest() {
		i, _ := slices.BinarySearch(seqs, l.oldest())
		seqs = append(seqs[:0], seqs[i:]...)
	}
	l.byNode[node] = append(seqs, seq)
}

// prune forgets the nodes none of whose events are retained any more.
func (l *eventLog) prune() {
	oldest := l.oldest()
	for node, seqs := range l.byNode {
		if seqs[len(seqs)-1] < oldest {
			delete(l.byNode, node)
		}
	}
}

// nextFor returns the sequence number of the first retained event at or
// after seq that concerns the watchers of k, or l.next.
func (l *eventLog) nextFor(k wakeKey, seq uint64) uint64 {
	for ; seq < l.next; seq++ {
		if k.byNode {
			if seq = l.nextForNode(k.node, seq); seq == l.next {
				break
			}
		}
		if k.concerns(&l.buf[seq%uint64(len(l.buf))]) {
			return seq
		}
	}
	return l.next
}

// nextForNode returns the sequence number of the first retained event at
// or after seq that concerns the watchers of node's pods, or l.next.
func (l *eventLog) nextForNode(node string, seq uint64) uint64 {
	seqs := l.byNode[node]
	if i, _ := slices.BinarySearch(seqs, seq); i < len(seqs) {
		return seqs[i]
	}
	return l.next
}

// seek returns the sequence number of the first retained event after index.
func (l *eventLog) seek(index uint64) uint64 {
	lo, hi := l.oldest(), l.next
	for lo < hi {
		mid := lo + (hi-lo)/2
		if l.buf[mid%uint64(len(l.buf))].Index > index {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// Watch streams events after fromIndex (0: from now) that match q. An object
// that stops matching the label selector is sent as Deleted, one that starts
// matching as Added. fromIndex older than the retained window is ErrExpired.
// The watch ends when ctx ends; a watcher too slow to keep up gets ErrExpired.
func (f *FSM) Watch(ctx context.Context, q Query, fromIndex uint64) (*Watcher, error) {
	m, err := f.compile(q)
	if err != nil {
		return nil, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	w := &Watcher{f: f, m: m, key: keyOf(m), ctx: ctx, epoch: f.events.epoch}
	switch {
	case fromIndex == 0:
		w.seq = f.events.next
	case fromIndex < f.events.start:
		return nil, errorf(ErrExpired, "resourceVersion %d is older than the oldest retained (%d): list again", fromIndex, f.events.start)
	default:
		w.seq = f.events.seek(fromIndex)
	}
	return w, nil
}

// Watcher delivers events in index order. It reads the store's shared event
// log at its own pace: no per-watcher buffer, no goroutine. Next must not be
// called concurrently.
type Watcher struct {
	f     *FSM
	m     *matcher
	key   wakeKey
	ctx   context.Context
	epoch uint64
	seq   uint64 // the next event to look at
	err   error  // sticky ErrExpired
}

// Next blocks for the next event. It returns ctx's error when ctx ends and
// ErrExpired if the watcher fell out of the retained window. A Next that
// ends because its own ctx ended (a deadline for bookmarks, say) leaves the
// Watcher usable.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		if w.err != nil {
			return Event{}, w.err
		}
		if err := w.ctx.Err(); err != nil {
			return Event{}, err
		}
		if err := ctx.Err(); err != nil {
			return Event{}, err
		}
		ev, ok, wait := w.take()
		if ok {
			if ev.Object == nil {
				if err := ev.decode(); err != nil {
					return Event{}, err
				}
			}
			if out, ok := w.m.filter(ev); ok {
				return out, nil
			}
			continue
		}
		if wait == nil {
			continue // w.err is set
		}
		select {
		case <-wait:
		case <-ctx.Done():
		case <-w.ctx.Done():
		}
	}
}

// take returns the next event that may concern the watcher (skipping the
// others under one lock), or the channel to wait on when there is none yet,
// or (nil) after setting w.err.
func (w *Watcher) take() (ev Event, ok bool, wait <-chan struct{}) {
	f := w.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := &f.events
	if l.epoch != w.epoch || w.seq < l.oldest() {
		w.err = errorf(ErrExpired, "watch fell behind the retained events (the last %d, at most %d MiB of objects): list again",
			len(l.buf), l.maxBytes>>20)
		return Event{}, false, nil
	}
	if seq := l.nextFor(w.key, w.seq); seq < l.next {
		w.seq = seq + 1
		return l.buf[seq%uint64(len(l.buf))], true, nil
	}
	w.seq = l.next
	return Event{}, false, f.wake.wait(w.key)
}

// Progress returns an index from which a new watch would miss nothing this
// one has not delivered yet: the resourceVersion for a BOOKMARK event. It is
// 0 once the watcher has expired.
func (w *Watcher) Progress() uint64 {
	f := w.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := &f.events
	switch {
	case l.epoch != w.epoch || w.seq < l.oldest():
		return 0
	case w.seq >= l.next:
		return f.applied
	}
	// Events at this index may already have been delivered (a batch); a
	// resume repeats them rather than losing any.
	return l.buf[w.seq%uint64(len(l.buf))].Index - 1
}

// Created returns the object as the command that created it left it (its
// resourceVersion is that command's index), if that Added event is still
// in the event window: how a create whose reply was lost is answered
// faithfully even after later writes changed the object.
func (f *FSM) Created(kind, namespace, name, uid string) (*pb.Object, bool) {
	km, err := f.kind(kind)
	if err != nil {
		return nil, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := uint64(len(f.events.buf))
	for seq := f.events.next; seq > f.events.oldest(); {
		seq--
		ev := f.events.buf[seq%n]
		if ev.Type != Added || ev.kind != km.Kind || ev.name != name || ev.namespace != namespace {
			continue
		}
		var obj *pb.Object
		if ev.Object != nil {
			obj = ev.Object.Clone()
		} else if err := ev.decode(); err == nil {
			obj = ev.Object // decoded for this call alone
		} else {
			f.cfg.Logger.Error("a retained event is unreadable", "err", err)
			return nil, false
		}
		if obj.Meta().GetUid() == uid {
			return obj, true
		}
	}
	return nil, false
}
