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
	"github.com/skiff-sh/skiff/controllers/daemonset"
	"github.com/skiff-sh/skiff/controllers/deployment"
	"github.com/skiff-sh/skiff/controllers/endpoints"
	"github.com/skiff-sh/skiff/controllers/eventttl"
	"github.com/skiff-sh/skiff/controllers/gc"
	"github.com/skiff-sh/skiff/controllers/job"
	"github.com/skiff-sh/skiff/controllers/namespace"
	"github.com/skiff-sh/skiff/controllers/nodeipam"
	"github.com/skiff-sh/skiff/controllers/nodelifecycle"
	"github.com/skiff-sh/skiff/controllers/replicaset"
	"github.com/skiff-sh/skiff/controllers/scheduler"
)

// Config holds each built-in controller's configuration.
type Config struct {
	Scheduler     scheduler.Config
	ReplicaSet    replicaset.Config
	EventTTL      eventttl.Config
	NodeLifecycle nodelifecycle.Config
	Job           job.Config
	DaemonSet     daemonset.Config
	// NodeIPAM is the cluster CIDR and the size of each node's share of
	// it (the server's --cluster-cidr and --node-cidr-mask-size).
	NodeIPAM nodeipam.Config
}

// DefaultConfig returns every controller's defaults.
func DefaultConfig() Config {
	return Config{
		Scheduler:     scheduler.DefaultConfig(),
		ReplicaSet:    replicaset.DefaultConfig(),
		EventTTL:      eventttl.DefaultConfig(),
		NodeLifecycle: nodelifecycle.DefaultConfig(),
		Job:           job.DefaultConfig(),
		DaemonSet:     daemonset.DefaultConfig(),
		NodeIPAM:      nodeipam.DefaultConfig(),
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	for _, v := range []interface{ Validate() error }{c.Scheduler, c.ReplicaSet, c.EventTTL, c.NodeLifecycle, c.Job, c.DaemonSet, c.NodeIPAM} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Registrations returns the built-in controllers, in the order the manager
// starts them.
func Registrations(cfg Config) []controllers.Registration {
	return []controllers.Registration{
		// Nodes get their pod CIDR first: a worker cannot start pods
		// without one.
		nodeipam.NewRegistration(cfg.NodeIPAM),
		scheduler.NewRegistration(cfg.Scheduler),
		replicaset.NewRegistration(cfg.ReplicaSet),
		endpoints.NewRegistration(),
		deployment.NewRegistration(),
		daemonset.NewRegistration(cfg.DaemonSet),
		job.NewRegistration(cfg.Job),
		nodelifecycle.NewRegistration(cfg.NodeLifecycle),
		gc.NewRegistration(),
		namespace.NewRegistration(),
		eventttl.NewRegistration(cfg.EventTTL),
	}
}
