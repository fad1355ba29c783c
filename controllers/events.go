package controllers

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/utils/clock"

	pb "github.com/skiff-sh/skiff/proto"
)

// Event types.
const (
	EventTypeNormal  = "Normal"
	EventTypeWarning = "Warning"
)

// EventRecorder records Events about objects. Recording never blocks and
// never fails: events are written in the background, repeats are folded
// into one Event whose count grows, and when too many are waiting new ones
// are dropped (and counted in skiff_controller_events_dropped_total). A
// source that records too many events about one object has the excess
// dropped too (the spam filter; counted in
// skiff_controller_events_spam_filtered_total).
type EventRecorder interface {
	Event(obj *pb.Object, eventType, reason, message string)
	Eventf(obj *pb.Object, eventType, reason, format string, args ...any)
}

// Writer creates and updates objects, as Cluster does. A Recorder writes
// Events through one: the leader's Cluster, or a thin adapter over an API
// client (a worker's, for the events it records about its pods).
type Writer interface {
	Create(ctx context.Context, obj *pb.Object) (*pb.Object, error)
	Update(ctx context.Context, obj *pb.Object) (*pb.Object, error)
}

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	Writer Writer
	Logger *slog.Logger
	Clock  clock.PassiveClock
	// Host is the source host written into events (the master's name).
	Host string
	// MaxPending bounds distinct events waiting to be written.
	MaxPending int
	// CacheSize bounds how many written events are remembered for counting
	// repeats, and how many objects the spam filter tracks.
	CacheSize int
	// SpamBurst and SpamInterval are the spam filter, client-go's
	// EventSourceObjectSpamFilter: each source may record SpamBurst events
	// about one object at once and one more each SpamInterval after that
	// (a token bucket per source and object, on Clock); the rest are
	// dropped. Repeats count too: they are writes as well. Defaults:
	// Kubernetes' 25 and 5 minutes.
	SpamBurst    int
	SpamInterval time.Duration
}

// Recorder writes Events through a Writer. Make one per manager run
// (or per worker) and run it with Run; For gives each component its own EventRecorder.
type Recorder struct {
	cfg     RecorderConfig
	metrics *metrics

	mu      sync.Mutex
	pending map[eventKey]*pendingEvent
	order   []eventKey
	wake    chan struct{}

	// Written events, for folding repeats into a count; only Run uses it.
	cache   map[eventKey]*list.Element
	lru     *list.List
	maxSize int
	// lastNano is the time suffix of the last event name made; only Run
	// uses it.
	lastNano int64

	// The spam filter's token buckets, least recently used last; under mu.
	spam    map[spamKey]*list.Element
	spamLRU *list.List
}

// spamKey names a source and an involved object, as client-go's
// getSpamKey does (the host is the same for every event of a Recorder).
type spamKey struct {
	component, kind, namespace, name, uid string
}

type spamBucket struct {
	key     spamKey
	limiter *rate.Limiter
}

type eventKey struct {
	component, kind, namespace, name, uid, typ, reason, message string
}

type pendingEvent struct {
	ref         *pb.ObjectReference
	count       int32
	first, last time.Time
}

type cachedEvent struct {
	key   eventKey
	event *pb.Event
}

// NewRecorder returns a Recorder; defaults fill unset sizes.
func NewRecorder(cfg RecorderConfig) *Recorder {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1000
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 4096
	}
	if cfg.SpamBurst <= 0 {
		cfg.SpamBurst = 25
	}
	if cfg.SpamInterval <= 0 {
		cfg.SpamInterval = 5 * time.Minute
	}
	m, _ := newMetrics(nil)
	return &Recorder{
		cfg: cfg, metrics: m,
		pending: make(map[eventKey]*pendingEvent),
		wake:    make(chan struct{}, 1),
		cache:   make(map[eventKey]*list.Element),
		lru:     list.New(),
		maxSize: cfg.CacheSize,
		spam:    make(map[spamKey]*list.Element),
		spamLRU: list.New(),
	}
}

// For returns an EventRecorder whose events name component as their source.
func (r *Recorder) For(component string) EventRecorder {
	return componentRecorder{r: r, component: component}
}

type componentRecorder struct {
	r         *Recorder
	component string
}

func (c componentRecorder) Event(obj *pb.Object, eventType, reason, message string) {
	c.r.record(c.component, obj, eventType, reason, message)
}

func (c componentRecorder) Eventf(obj *pb.Object, eventType, reason, format string, args ...any) {
	c.r.record(c.component, obj, eventType, reason, fmt.Sprintf(format, args...))
}

// maxMessage is Kubernetes' limit on an event's message.
const maxMessage = 1024

func (r *Recorder) record(component string, obj *pb.Object, typ, reason, message string) {
	m := obj.Meta()
	if m == nil {
		return
	}
	if len(message) > maxMessage {
		message = message[:maxMessage-3] + "..."
	}
	kind := obj.KindName()
	key := eventKey{component, kind, m.GetNamespace(), m.GetName(), m.GetUid(), typ, reason, message}
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.allowLocked(spamKey{component, kind, m.GetNamespace(), m.GetName(), m.GetUid()}, now) {
		r.metrics.eventsFiltered.Inc()
		return
	}
	if p, ok := r.pending[key]; ok {
		p.count++
		p.last = now
		return
	}
	if len(r.pending) >= r.cfg.MaxPending {
		r.metrics.eventsDropped.Inc()
		return
	}
	info, _ := pb.LookupKind(kind)
	r.pending[key] = &pendingEvent{
		ref: &pb.ObjectReference{
			Kind: kind, ApiVersion: info.APIVersion, Namespace: m.GetNamespace(), Name: m.GetName(),
			Uid: m.GetUid(), ResourceVersion: m.GetResourceVersion(),
		},
		count: 1, first: now, last: now,
	}
	r.order = append(r.order, key)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// allowLocked takes a token from key's bucket at now, reporting whether
// there was one. Buckets of the least recently seen objects are forgotten
// beyond CacheSize (such an object starts again with a full bucket, as in
// client-go). r.mu is held.
func (r *Recorder) allowLocked(key spamKey, now time.Time) bool {
	el, ok := r.spam[key]
	if ok {
		r.spamLRU.MoveToFront(el)
	} else {
		el = r.spamLRU.PushFront(&spamBucket{key: key, limiter: rate.NewLimiter(rate.Every(r.cfg.SpamInterval), r.cfg.SpamBurst)})
		r.spam[key] = el
		if r.spamLRU.Len() > r.cfg.CacheSize {
			last := r.spamLRU.Back()
			r.spamLRU.Remove(last)
			delete(r.spam, last.Value.(*spamBucket).key)
		}
	}
	return el.Value.(*spamBucket).limiter.AllowN(now, 1)
}

// Run writes recorded events until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		pending, order := r.pending, r.order
		r.pending, r.order = make(map[eventKey]*pendingEvent), nil
		r.mu.Unlock()
		// Repeats update their event one by one; new events are created
		// together, as one Raft entry where the Writer can batch
		// (CreateMany), so a burst of pods costs one write for its
		// "Created" or "Scheduled" events, not one each.
		var keys []eventKey
		var objs []*pb.Object
		for _, key := range order {
			if ctx.Err() != nil {
				return
			}
			if r.update(ctx, key, pending[key]) {
				continue
			}
			keys, objs = append(keys, key), append(objs, r.newEvent(key, pending[key]))
		}
		if len(objs) == 0 {
			continue
		}
		stored, errs := CreateMany(ctx, r.cfg.Writer, objs)
		for i, key := range keys {
			if errs[i] != nil {
				r.drop(key, errs[i])
				continue
			}
			r.remember(key, stored[i].GetEvent())
			r.metrics.eventsWritten.Inc()
		}
	}
}

// update counts p into the event already written for key, if there is
// one; it reports whether p is dealt with (written or dropped).
func (r *Recorder) update(ctx context.Context, key eventKey, p *pendingEvent) bool {
	if el, ok := r.cache[key]; ok {
		ev := el.Value.(*cachedEvent).event
		next := pb.Wrap(ev).Clone()
		n := next.GetEvent()
		n.Count += p.count
		n.LastTimestamp = timestamppb.New(p.last)
		stored, err := r.cfg.Writer.Update(ctx, next)
		if err == nil {
			r.remember(key, stored.GetEvent())
			r.metrics.eventsWritten.Inc()
			return true
		}
		if !IsNotFound(err) && !IsConflict(err) {
			r.drop(key, err)
			return true
		}
		// Gone (aged out) or changed by someone else: start a new one.
		r.lru.Remove(el)
		delete(r.cache, key)
	}
	return false
}

// newEvent is the Event to create for p.
func (r *Recorder) newEvent(key eventKey, p *pendingEvent) *pb.Object {
	ns := p.ref.GetNamespace()
	if ns == "" {
		ns = "default" // events about cluster-scoped objects, as Kubernetes
	}
	// Kubernetes' name, <object>.<first occurrence in hex nanoseconds>,
	// made unique: distinct events about one object recorded at one clock
	// reading (a coarse or fake clock) must not share a name.
	r.lastNano = max(p.first.UnixNano(), r.lastNano+1)
	ev := &pb.Event{
		Metadata: &pb.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", p.ref.GetName(), r.lastNano),
			Namespace: ns,
		},
		InvolvedObject:     p.ref,
		Reason:             key.reason,
		Message:            key.message,
		Type:               key.typ,
		Source:             &pb.EventSource{Component: key.component, Host: r.cfg.Host},
		FirstTimestamp:     timestamppb.New(p.first),
		LastTimestamp:      timestamppb.New(p.last),
		Count:              p.count,
		ReportingComponent: key.component,
		ReportingInstance:  r.cfg.Host,
	}
	return pb.Wrap(ev)
}

func (r *Recorder) drop(key eventKey, err error) {
	r.metrics.eventsDropped.Inc()
	r.cfg.Logger.Debug("event not written", "object", Key(key.namespace, key.name), "reason", key.reason, "err", err)
}

func (r *Recorder) remember(key eventKey, ev *pb.Event) {
	if ev == nil {
		return
	}
	if el, ok := r.cache[key]; ok {
		el.Value.(*cachedEvent).event = ev
		r.lru.MoveToFront(el)
		return
	}
	r.cache[key] = r.lru.PushFront(&cachedEvent{key: key, event: ev})
	if r.lru.Len() > r.maxSize {
		last := r.lru.Back()
		r.lru.Remove(last)
		delete(r.cache, last.Value.(*cachedEvent).key)
	}
}
