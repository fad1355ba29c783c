package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/cli"
	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/server"
)

type devOptions struct {
	dataDir  string
	basePort int
	masters  int
	fresh    bool
	logLevel string
}

func newDevCommand() *cobra.Command {
	o := devOptions{masters: 3, basePort: 7000, logLevel: "info"}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local cluster of three masters on loopback, for trying skiff out",
		Long: `dev starts three masters in this process on 127.0.0.1, waits for a leader, and writes the
CLI configuration so that other skiff commands in another terminal talk to it. Ctrl-C stops
everything cleanly; the state is kept in --data-dir and reused next time (--fresh wipes it).`,
		Example: `  skiff dev
  skiff dev --fresh --data-dir /tmp/skiff-dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", defaultDevDir(), "where the masters keep their state")
	f.IntVar(&o.basePort, "base-port", o.basePort, "ports used: raft base+1.., api base+101.., gossip base+201.., http base+301..")
	f.IntVar(&o.masters, "masters", o.masters, "number of masters (1 or 3 make sense)")
	f.BoolVar(&o.fresh, "fresh", false, "delete the state of a previous dev cluster first")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "level of the log written to DATA-DIR/dev.log")
	return cmd
}

func defaultDevDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "skiff", "dev")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "skiff", "dev")
	}
	return filepath.Join(os.TempDir(), "skiff-dev")
}

func runDev(cmd *cobra.Command, o devOptions) error {
	out := cmd.OutOrStdout()
	if o.masters < 1 {
		return errors.New("--masters must be at least 1")
	}
	if o.fresh {
		if err := os.RemoveAll(o.dataDir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(o.dataDir, "dev.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger, err := newLogger(logFile, o.logLevel, "text")
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var gossip, apis []string
	for i := 1; i <= o.masters; i++ {
		gossip = append(gossip, fmt.Sprintf("127.0.0.1:%d", o.basePort+200+i))
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", o.basePort+100+i))
	}
	var servers []*server.Server
	for i := 1; i <= o.masters; i++ {
		cfg := server.DefaultConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.DataDir = filepath.Join(o.dataDir, cfg.Name)
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", o.basePort+i)
		cfg.APIAddr = apis[i-1]
		cfg.GossipAddr = gossip[i-1]
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", o.basePort+300+i)
		cfg.BootstrapExpect = o.masters
		cfg.Join = gossip
		cfg.Logger = logger
		cfg.Version = version
		s, err := server.New(cfg)
		if err != nil {
			return fmt.Errorf("start master %s: %w (is another skiff dev running? try --base-port)", cfg.Name, err)
		}
		servers = append(servers, s)
	}
	fmt.Fprintf(out, "Starting %d masters (state in %s, log in %s)...\n", o.masters, o.dataDir, logPath)

	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, len(servers))
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(runCtx); err != nil {
				errs <- fmt.Errorf("master %s: %w", s.Name(), err)
			}
		}()
	}
	shutdown := func() {
		fmt.Fprintln(out, "Stopping masters...")
		cancel()
		wg.Wait()
		fmt.Fprintln(out, "Stopped.")
	}

	leader, err := waitForLeader(ctx, apis, errs)
	if err != nil {
		shutdown()
		return err
	}
	cfgPath := cli.ConfigPath()
	if err := cli.WriteConfig(cfgPath, cli.Config{Servers: apis}); err != nil {
		shutdown()
		return err
	}
	fmt.Fprintf(out, `skiff dev cluster is up: %d masters, leader %s.
  API addresses: %s
  The CLI configuration is in %s, so in another terminal try:
    skiff cluster status
    skiff apply -f examples/
    skiff get namespaces
  (or export %s=%s)
Press Ctrl-C to stop.
`, o.masters, leader, strings.Join(apis, ","), cfgPath, cli.EnvServer, strings.Join(apis, ","))

	select {
	case <-ctx.Done():
	case err := <-errs:
		fmt.Fprintln(out, "error:", err)
	}
	shutdown()
	return nil
}

// waitForLeader shows progress until the masters have elected a leader.
func waitForLeader(ctx context.Context, apis []string, errs <-chan error) (string, error) {
	cfg := client.DefaultConfig()
	cfg.Servers = apis
	cfg.RetryFor = time.Second
	c, err := client.New(cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Status(sctx)
		cancel()
		if err == nil && st.GetLeader() != "" {
			return st.GetLeader(), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader after 60s (last error: %v); see the log", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case err := <-errs:
			return "", err
		case <-tick.C:
		}
	}
}
