// Command controller is an out-of-process controller: it connects to the
// masters with the API client and runs a controller (mirror, which copies
// annotated ConfigMaps into other namespaces) through the same framework
// the built-in controllers use on the leader: informers, work queue,
// Reconciler, event recorder and Manager. It connects as the skiff CLI
// does (client.Connection: flags, then $SKIFF_SERVER, $SKIFF_TOKEN_FILE,
// $SKIFF_TOKEN, then the CLI's configuration file), so a controller token
// made with `skiff token create --role controller --print-config` is all
// it needs. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/controllers"
)

func main() { os.Exit(run()) }

func run() int {
	var conn client.Connection
	flag.StringVar(&conn.Servers, "server", "", "comma-separated API addresses of masters (default $"+client.EnvServer+", then the CLI's config "+client.ConfigPath()+")")
	flag.StringVar(&conn.TokenFile, "token-file", "", "the cluster token file: connect with an admin certificate made from it (default $"+client.EnvTokenFile+", then tokenFile in the config)")
	flag.StringVar(&conn.Token, "token", "", "a bearer token, best one of role controller from `skiff token create --role controller` (default $"+client.EnvToken+", then token in the config); needs --ca-file or ca in the config")
	flag.StringVar(&conn.CAFile, "ca-file", "", "the cluster CA certificate (PEM) to verify the masters with when using --token")
	flag.BoolVar(&conn.Insecure, "insecure", false, "plaintext, no authentication: only for masters run with --insecure")
	workers := flag.Int("workers", 2, "reconciles at once")
	verbose := flag.Bool("v", false, "log every reconcile")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ccfg, err := conn.ClientConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}
	ccfg.Logger = log.With("component", "client")
	c, err := client.New(ccfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}
	defer c.Close()

	host, _ := os.Hostname()
	m, err := newManager(c, *workers, host, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("running", "controllers", m.Enabled(), "servers", ccfg.Servers, "tls", ccfg.TLS != nil)
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

// newManager runs the mirror controller against the cluster c reaches.
func newManager(c *client.Client, workers int, host string, log *slog.Logger) (*controllers.Manager, error) {
	cfg := controllers.DefaultConfig()
	cfg.Cluster = clientCluster{c}
	cfg.Logger = log
	cfg.Registrations = []controllers.Registration{MirrorRegistration()}
	cfg.Workers = workers
	cfg.Host = host
	return controllers.NewManager(cfg)
}
