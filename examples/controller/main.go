// Command controller is an out-of-process controller: it connects to the
// masters with the API client and runs a controller (mirror, which copies
// annotated ConfigMaps into other namespaces) through the same framework
// the built-in controllers use on the leader: informers, work queue,
// Reconciler, event recorder and Manager. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/controllers"
)

func main() { os.Exit(run()) }

func run() int {
	servers := flag.String("server", os.Getenv("SKIFF_SERVER"), "comma-separated API addresses of masters (default $SKIFF_SERVER)")
	workers := flag.Int("workers", 2, "reconciles at once")
	verbose := flag.Bool("v", false, "log every reconcile")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ccfg := client.DefaultConfig()
	for _, s := range strings.Split(*servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			ccfg.Servers = append(ccfg.Servers, s)
		}
	}
	ccfg.Logger = log.With("component", "client")
	c, err := client.New(ccfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}
	defer c.Close()

	host, _ := os.Hostname()
	cfg := controllers.DefaultConfig()
	cfg.Cluster = clientCluster{c}
	cfg.Logger = log
	cfg.Registrations = []controllers.Registration{MirrorRegistration()}
	cfg.Workers = *workers
	cfg.Host = host
	m, err := controllers.NewManager(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("running", "controllers", m.Enabled(), "servers", ccfg.Servers)
	// The manager returns an error only when a controller cannot go on;
	// start it again after a pause, as the masters do.
	for {
		err := m.Run(ctx)
		if ctx.Err() != nil {
			return 0
		}
		log.Error("controllers stopped; restarting", "err", err)
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(5 * time.Second):
		}
	}
}
