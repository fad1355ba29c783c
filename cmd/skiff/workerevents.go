package main

import (
	"context"
	"log/slog"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker"
)

// newWorker creates the worker of cfg with its event recorder: the Events
// it records about its pods (Pulled, Started, BackOff, Unhealthy, ...) are
// written by the controllers' Recorder, with repeats folded into counts and
// the same spam filter, over the worker's own connection to the masters.
// (The worker package may not import controllers, so main joins them.) run
// runs both until ctx ends.
func newWorker(cfg worker.Config, log *slog.Logger) (a *worker.Agent, run func(context.Context) error, err error) {
	w := &agentWriter{}
	rec := controllers.NewRecorder(controllers.RecorderConfig{Writer: w, Logger: log, Host: cfg.Name})
	cfg.Events = rec.For("worker")
	if w.a, err = worker.New(cfg); err != nil {
		return nil, nil, err
	}
	return w.a, func(ctx context.Context) error {
		done := make(chan struct{})
		rctx, cancel := context.WithCancel(ctx)
		go func() { defer close(done); rec.Run(rctx) }()
		defer func() { cancel(); <-done }()
		return w.a.Run(ctx)
	}, nil
}

// agentWriter writes through the agent's API client, which follows the
// masters the agent learns by gossip.
type agentWriter struct{ a *worker.Agent }

func (w *agentWriter) Create(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	c, err := w.a.APIClient(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.Create(ctx, obj)
	return resp.GetObject(), err
}

func (w *agentWriter) Update(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	c, err := w.a.APIClient(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.Update(ctx, obj)
	return resp.GetObject(), err
}
