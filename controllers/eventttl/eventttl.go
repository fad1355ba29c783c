// Package eventttl bounds the Events kept in the store, by age and by
// number. Kubernetes' API server gives events a one-hour TTL; skiff's store
// has no TTLs, so a controller deletes each Event a TTL after it last
// happened. Age alone does not bound them: pod churn records distinct
// events (one per pod created, scheduled, started) that each live the whole
// TTL, so the controller also deletes the oldest Events beyond MaxEvents.
// The recorder bounds how fast any one source writes events about any one
// object (its spam filter).
package eventttl

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/btree"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "eventttl"

// Config configures the controller.
type Config struct {
	// TTL is how long an Event is kept after its lastTimestamp.
	TTL time.Duration
	// MaxEvents caps the Events kept cluster-wide: beyond it the oldest
	// (by lastTimestamp) are deleted, however young. 0 means no cap.
	MaxEvents int
}

// DefaultConfig returns Kubernetes' TTL of one hour and a cap of 10,000
// events.
func DefaultConfig() Config { return Config{TTL: time.Hour, MaxEvents: 10000} }

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.TTL <= 0 {
		return fmt.Errorf("eventttl config: TTL must be positive, got %s", c.TTL)
	}
	if c.MaxEvents < 0 {
		return fmt.Errorf("eventttl config: MaxEvents must not be negative (0 for no cap), got %d", c.MaxEvents)
	}
	return nil
}

// NewRegistration returns the controller's Registration with cfg.
func NewRegistration(cfg Config) controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		c, err := New(env, cfg)
		if err != nil {
			return nil, err
		}
		return c.Loop, nil
	}}
}

// capKey is the queue key of the MaxEvents check. It cannot be an Event's
// key: parentheses are not allowed in object names.
const capKey = "(max-events)"

// Results counted in skiff_controller_objects_total{controller="eventttl"}.
const (
	resultExpired = "expired"
	resultOverCap = "over-cap"
)

// Controller deletes expired Events, and the oldest ones beyond the cap.
type Controller struct {
	*controllers.Loop
	env    controllers.Env
	cfg    Config
	events *controllers.Informer

	// byAge holds every cached Event, oldest first, kept up to date by the
	// informer's handlers, so that a trim takes the oldest from its front
	// instead of sorting every event (it sorted 10,000 events for each
	// thousand new ones: a twentieth of the leader's CPU while pods were
	// created and scheduled). Events a trim deleted leave it at once,
	// before the cache shows them gone, so they are not counted twice.
	mu    sync.Mutex
	byAge *btree.BTreeG[agedEvent]
}

// lowWater is what a trim leaves: a tenth below the cap, so that a steady
// stream of new events costs one trim per tenth of the cap, not one list,
// sort and write per event.
func (c Config) lowWater() int { return c.MaxEvents - max(1, c.MaxEvents/10) }

// New builds the controller.
func New(env controllers.Env, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{env: env, cfg: cfg, events: env.Informers.For("Event"), byAge: btree.NewG(32, agedEvent.less)}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{Workers: 1, WaitFor: []*controllers.Informer{c.events}})
	c.events.AddHandler(controllers.HandlerFuncs{
		AddFunc: func(o *pb.Object) {
			c.mu.Lock()
			c.byAge.ReplaceOrInsert(agedOf(o))
			over := c.cfg.MaxEvents > 0 && c.byAge.Len() > c.cfg.MaxEvents
			c.mu.Unlock()
			c.Queue().Add(controllers.KeyOf(o))
			// The queue holds capKey once however many events arrive
			// meanwhile, so a burst is trimmed in one batch of deletes.
			if over {
				c.Queue().Add(capKey)
			}
		},
		UpdateFunc: func(old, o *pb.Object) {
			c.mu.Lock()
			c.byAge.Delete(agedOf(old))
			c.byAge.ReplaceOrInsert(agedOf(o))
			c.mu.Unlock()
			c.Queue().Add(controllers.KeyOf(o))
		},
		DeleteFunc: func(o *pb.Object) {
			c.mu.Lock()
			c.byAge.Delete(agedOf(o))
			c.mu.Unlock()
		},
	})
	return c, nil
}

// Reconcile deletes the event if it has expired, or looks again when it
// will have; for capKey it deletes the oldest events beyond the cap.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	if key == capKey {
		return controllers.Result{}, c.trim(ctx)
	}
	o, ok := c.events.Get(key)
	if !ok {
		return controllers.Result{}, nil
	}
	left := lastSeen(o.GetEvent()).Add(c.cfg.TTL).Sub(c.env.Clock.Now())
	if left > 0 {
		return controllers.Result{RequeueAfter: left}, nil
	}
	m := o.Meta()
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Event", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()})
	switch {
	case err == nil:
		c.env.CountObjects(resultExpired, 1)
	case !controllers.IsNotFound(err):
		return controllers.Result{}, fmt.Errorf("delete expired event %s: %w", key, err)
	}
	return controllers.Result{}, nil
}

// trim deletes the oldest events, down to the low-water mark, in one batch
// write, once there are more than MaxEvents.
func (c *Controller) trim(ctx context.Context) error {
	c.mu.Lock()
	n := c.byAge.Len()
	if c.cfg.MaxEvents <= 0 || n <= c.cfg.MaxEvents {
		c.mu.Unlock()
		return nil
	}
	oldest := make([]agedEvent, 0, n-c.cfg.lowWater())
	c.byAge.Ascend(func(e agedEvent) bool {
		oldest = append(oldest, e)
		return len(oldest) < cap(oldest)
	})
	c.mu.Unlock()
	ops := make([]*pb.DeleteOp, len(oldest))
	for i, e := range oldest {
		ops[i] = &pb.DeleteOp{Kind: "Event", Namespace: e.namespace, Name: e.name, Uid: e.uid}
	}
	deleted := 0
	var firstErr error
	for i, err := range controllers.DeleteMany(ctx, c.env.Cluster, ops) {
		switch {
		case err == nil:
			deleted++
		case controllers.IsNotFound(err):
		default:
			firstErr = cmp.Or(firstErr, fmt.Errorf("delete event %s over the cap of %d: %w", controllers.Key(ops[i].GetNamespace(), ops[i].GetName()), c.cfg.MaxEvents, err))
			continue
		}
		c.mu.Lock()
		c.byAge.Delete(oldest[i])
		c.mu.Unlock()
	}
	c.env.CountObjects(resultOverCap, deleted)
	if deleted > 0 {
		c.env.Logger.Info("deleted the oldest events over the cap", "deleted", deleted, "maxEvents", c.cfg.MaxEvents)
	}
	return firstErr // retried with backoff
}

// agedEvent places one Event in byAge: oldest (lastSeen) first, ties by
// namespace, name and UID.
type agedEvent struct {
	at                   time.Time
	namespace, name, uid string
}

func agedOf(o *pb.Object) agedEvent {
	m := o.Meta()
	return agedEvent{at: lastSeen(o.GetEvent()), namespace: m.GetNamespace(), name: m.GetName(), uid: m.GetUid()}
}

func (a agedEvent) less(b agedEvent) bool {
	return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name), cmp.Compare(a.uid, b.uid)) < 0
}

// lastSeen is when ev last happened: its lastTimestamp, else its
// firstTimestamp, else when it was created.
func lastSeen(ev *pb.Event) time.Time {
	last := ev.GetLastTimestamp()
	if last == nil {
		last = ev.GetFirstTimestamp()
	}
	if last == nil {
		last = ev.GetMetadata().GetCreationTimestamp()
	}
	return last.AsTime()
}
