// Package eventttl deletes Events a while after they last happened, so
// that events never grow the store without bound (Kubernetes' API server
// gives events a one-hour TTL; skiff's store has no TTLs, so a controller
// does it). The recorder already bounds how fast events are written.
package eventttl

import (
	"context"
	"fmt"
	"time"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "eventttl"

// Config configures the controller.
type Config struct {
	// TTL is how long an Event is kept after its lastTimestamp.
	TTL time.Duration
}

// DefaultConfig returns Kubernetes' default of one hour.
func DefaultConfig() Config { return Config{TTL: time.Hour} }

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.TTL <= 0 {
		return fmt.Errorf("eventttl config: TTL must be positive, got %s", c.TTL)
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

// Controller deletes expired Events.
type Controller struct {
	*controllers.Loop
	env    controllers.Env
	cfg    Config
	events *controllers.Informer
}

// New builds the controller.
func New(env controllers.Env, cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{env: env, cfg: cfg, events: env.Informers.For("Event")}
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{Workers: 1, WaitFor: []*controllers.Informer{c.events}})
	c.events.AddHandler(controllers.HandlerFuncs{
		AddFunc:    func(o *pb.Object) { c.Queue().Add(controllers.KeyOf(o)) },
		UpdateFunc: func(_, o *pb.Object) { c.Queue().Add(controllers.KeyOf(o)) },
	})
	return c, nil
}

// Reconcile deletes the event if it has expired, or looks again when it
// will have.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	o, ok := c.events.Get(key)
	if !ok {
		return controllers.Result{}, nil
	}
	ev := o.GetEvent()
	last := ev.GetLastTimestamp()
	if last == nil {
		last = ev.GetFirstTimestamp()
	}
	if last == nil {
		last = ev.GetMetadata().GetCreationTimestamp()
	}
	left := last.AsTime().Add(c.cfg.TTL).Sub(c.env.Clock.Now())
	if left > 0 {
		return controllers.Result{RequeueAfter: left}, nil
	}
	m := o.Meta()
	err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Event", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()})
	if err != nil && !controllers.IsNotFound(err) {
		return controllers.Result{}, fmt.Errorf("delete expired event %s: %w", key, err)
	}
	return controllers.Result{}, nil
}
