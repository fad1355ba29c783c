// Package builtin lists skiff's built-in controllers, so the server's
// controller manager can be configured in one line:
//
//	cfg := controllers.DefaultConfig()
//	cfg.Registrations = builtin.Registrations(builtin.DefaultConfig())
//
// Adding a controller means adding its sub-package and one line here.
package builtin

import (
	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/deployment"
	"github.com/skiff-sh/skiff/controllers/eventttl"
	"github.com/skiff-sh/skiff/controllers/replicaset"
	"github.com/skiff-sh/skiff/controllers/scheduler"
)

// Config holds each built-in controller's configuration.
type Config struct {
	Scheduler  scheduler.Config
	ReplicaSet replicaset.Config
	EventTTL   eventttl.Config
}

// DefaultConfig returns every controller's defaults.
func DefaultConfig() Config {
	return Config{Scheduler: scheduler.DefaultConfig(), ReplicaSet: replicaset.DefaultConfig(), EventTTL: eventttl.DefaultConfig()}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Scheduler.Validate(); err != nil {
		return err
	}
	if err := c.ReplicaSet.Validate(); err != nil {
		return err
	}
	return c.EventTTL.Validate()
}

// Registrations returns the built-in controllers, in the order the manager
// starts them.
func Registrations(cfg Config) []controllers.Registration {
	return []controllers.Registration{
		scheduler.NewRegistration(cfg.Scheduler),
		replicaset.NewRegistration(cfg.ReplicaSet),
		deployment.NewRegistration(),
		eventttl.NewRegistration(cfg.EventTTL),
	}
}
