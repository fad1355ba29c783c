package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
	"github.com/skiff-sh/skiff/server"
	"github.com/skiff-sh/skiff/worker"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

type devOptions struct {
	dataDir  string
	basePort int
	masters  int
	fresh    bool
	logLevel string
	// worker runs one worker (w1) in the process; demoBinary is packed
	// into the demo image the dev registry serves.
	worker     bool
	demoBinary string
	insecure   bool
	// cgroupParent is the worker's cgroup parent; "" keeps the worker's
	// default (/skiff/w1). Two dev clusters on one machine (or a test
	// beside a real one) need different parents, or one would remove the
	// other's pod cgroups when it stops.
	cgroupParent string
	timerSlack   time.Duration
}

func newDevCommand() *cobra.Command {
	o := devOptions{masters: 3, basePort: 7000, logLevel: "info", worker: os.Geteuid() == 0, timerSlack: defaultTimerSlack}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local cluster of three masters and a worker on loopback, for trying skiff out",
		Long: `dev starts three masters and one worker (w1, when run as root) in this process on 127.0.0.1,
and an OCI registry on 127.0.0.1:BASE+400 that the worker may pull from over plain HTTP. It waits
for a leader and writes the CLI configuration so that other skiff commands in another terminal
talk to it. --demo-binary packs a static program into the image BASE+400/hello:v1 (make run
builds examples/hello for it), so examples/pod.yaml runs without internet. Ctrl-C stops
everything cleanly, the worker's containers included; the state is kept in --data-dir and reused
next time (--fresh wipes it).`,
		Example: `  skiff dev
  skiff dev --fresh --data-dir /tmp/skiff-dev
  skiff dev --base-port 17000 --data-dir /tmp/skiff-dev2 --cgroup-parent /skiff-dev2
  CGO_ENABLED=0 go build -o bin/hello ./examples/hello && skiff dev --demo-binary bin/hello`,
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
	f.BoolVar(&o.worker, "worker", o.worker, "also run a worker, w1 (needs root; on by default as root)")
	f.BoolVar(&o.insecure, "insecure", false, "no TLS, no authentication, unencrypted gossip: only for local experiments")
	f.StringVar(&o.demoBinary, "demo-binary", "", "a static program to serve as the image BASE+400/hello:v1 from the dev registry")
	f.DurationVar(&o.timerSlack, "timer-slack", o.timerSlack, timerSlackUsage+", as skiff server and skiff worker do")
	f.StringVar(&o.cgroupParent, "cgroup-parent", "", "cgroup under which the worker creates pod cgroups (default /skiff/w1); give a second dev cluster its own")
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
		// A dev cluster that was killed leaves its worker's state tmpfs
		// mounted: never delete through it.
		if err := wrt.UnmountStateTmpfs(filepath.Join(o.dataDir, "w1", "state")); err != nil {
			return fmt.Errorf("--fresh: %w (a dev cluster may still be running on %s)", err, o.dataDir)
		}
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
	if err := setTimerSlack(o.timerSlack); err != nil {
		logger.Warn(timerSlackWarning, "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var gossip, apis []string
	for i := 1; i <= o.masters; i++ {
		gossip = append(gossip, fmt.Sprintf("127.0.0.1:%d", o.basePort+200+i))
		apis = append(apis, fmt.Sprintf("127.0.0.1:%d", o.basePort+100+i))
	}
	// Secrets are encrypted at rest with one key shared by the masters,
	// made on the first run.
	keyFile, err := devEncryptionKey(o.dataDir)
	if err != nil {
		return err
	}
	// Secure by default: one cluster token in the data dir, made on the
	// first run, for the masters, the worker and the CLI.
	tokenFile := ""
	if o.insecure {
		fmt.Fprintln(out, "INSECURE: plaintext, no authentication, unencrypted gossip; only for local experiments")
	} else {
		tokenFile = filepath.Join(o.dataDir, "token")
		if _, _, err := pki.LoadOrCreateTokenFile(tokenFile); err != nil {
			return err
		}
	}
	var servers []*server.Server
	for i := 1; i <= o.masters; i++ {
		cfg := server.DefaultConfig()
		cfg.EncryptionKeyFile = keyFile
		cfg.TokenFile, cfg.Insecure = tokenFile, o.insecure
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
	// The masters stop together: each hands leadership on if it leads,
	// leaves gossip, drains its API and shuts raft down (server.Run). A
	// sequence would not be safer (acknowledged writes are on a quorum's
	// disks either way) and would pay each master's gossip leave in turn.
	shutdown := func() {
		fmt.Fprintln(out, "Stopping masters...")
		start := time.Now()
		cancel()
		wg.Wait()
		logger.Info("dev: masters stopped", "took", time.Since(start).Round(time.Millisecond))
		fmt.Fprintln(out, "Stopped.")
	}

	leader, err := waitForLeader(ctx, apis, tokenFile, errs)
	if err != nil {
		shutdown()
		return err
	}
	cfgPath := client.ConfigPath()
	if err := client.WriteConfig(cfgPath, client.ConfigFile{Servers: apis, TokenFile: tokenFile, Insecure: o.insecure}); err != nil {
		shutdown()
		return err
	}
	extra, stopWorker, err := startDevWorker(out, o, gossip, tokenFile, logger, errs)
	if err != nil {
		shutdown()
		return err
	}
	fmt.Fprintf(out, `skiff dev cluster is up: %d masters, leader %s.
  API addresses: %s
%s  The CLI configuration is in %s, so in another terminal try:
    skiff cluster status
    skiff get nodes
    skiff apply -f examples/pod.yaml
    skiff get pods -o wide
    skiff logs hello
  (or export %s=%s)
Press Ctrl-C to stop.
`, o.masters, leader, strings.Join(apis, ","), extra, cfgPath, client.EnvServer, strings.Join(apis, ","))

	select {
	case <-ctx.Done():
	case err := <-errs:
		fmt.Fprintln(out, "error:", err)
	}
	// The worker first: it leaves while the masters can still record that
	// (node w1 not ready, reason Left) and stops its containers; then the
	// masters.
	start := time.Now()
	stopWorker()
	shutdown()
	logger.Info("dev: stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitForLeader shows progress until the masters have elected a leader.
func waitForLeader(ctx context.Context, apis []string, tokenFile string, errs <-chan error) (string, error) {
	cfg := client.DefaultConfig()
	cfg.Servers = apis
	cfg.RetryFor = time.Second
	if tokenFile != "" {
		var err error
		if cfg.TLS, err = client.AdminTLS(tokenFile); err != nil {
			return "", err
		}
	}
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

// startDevWorker starts the dev registry and, with o.worker, the worker w1.
// It returns lines for the banner and a function that stops both.
func startDevWorker(out io.Writer, o devOptions, gossip []string, tokenFile string, logger *slog.Logger, errs chan<- error) (string, func(), error) {
	var lines strings.Builder
	reg, err := startDemoRegistry(fmt.Sprintf("127.0.0.1:%d", o.basePort+400))
	if err != nil {
		return "", nil, err
	}
	fmt.Fprintf(&lines, "  Registry (plain HTTP): %s\n", reg.addr)
	if o.demoBinary != "" {
		ref, err := reg.pushBinary(o.demoBinary, "hello", "hello:v1")
		if err != nil {
			reg.close()
			return "", nil, err
		}
		fmt.Fprintf(&lines, "  Demo image: %s\n", ref)
	}
	if !o.worker {
		lines.WriteString("  No worker (run as root, or pass --worker): pods stay Pending.\n")
		return lines.String(), func() { closeDevRegistry(reg, logger) }, nil
	}
	cfg := worker.DefaultConfig()
	cfg.Name = "w1"
	cfg.DataDir = filepath.Join(o.dataDir, "w1")
	cfg.Join = gossip
	cfg.NodeIP = "127.0.0.1"
	cfg.ListenAddr = fmt.Sprintf("127.0.0.1:%d", o.basePort+501)
	cfg.InsecureRegistries = []string{reg.addr}
	cfg.StopPodsOnExit = true
	cfg.CgroupParent = o.cgroupParent
	cfg.TokenFile, cfg.Insecure = tokenFile, o.insecure
	cfg.Logger = logger
	cfg.Version = version
	w, runWorker, err := newWorker(cfg, logger)
	if err != nil {
		reg.close()
		return "", nil, fmt.Errorf("start worker w1: %w", err)
	}
	// The pod network (bridge skiff0, 10.244.0.0/16), netproxy (nftables
	// table skiff-proxy) and the node's DNS server, all removed on exit.
	svc, err := newNodeServices(w, cfg, defaultNodeServiceOptions(), logger)
	if err != nil {
		reg.close()
		return "", nil, fmt.Errorf("start worker w1: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.run(ctx, runWorker, cfg.StopPodsOnExit); err != nil {
			errs <- fmt.Errorf("worker w1: %w", err)
		}
	}()
	fmt.Fprintf(&lines, "  Worker: w1 (node agent %s, data in %s)\n", w.AgentAddr(), cfg.DataDir)
	return lines.String(), func() {
		fmt.Fprintln(out, "Stopping worker w1 and its containers...")
		start := time.Now()
		cancel()
		<-done
		logger.Info("dev: worker w1 stopped", "took", time.Since(start).Round(time.Millisecond))
		closeDevRegistry(reg, logger)
	}, nil
}

// closeDevRegistry stops the dev registry at the end of a run, once the
// worker (its client in this process) has stopped: no pull dev needs is in
// flight any more, so every connection is closed at once. A graceful
// Shutdown (demoRegistry.close) would also wait, up to its 2 s bound, for
// a connection that has not sent a request yet, which Shutdown counts as
// busy for its first 5 s; Go's HTTP client leaves such a connection behind
// now and then (a dial that lost the race to a connection freed by an
// earlier request of the push), and that held a quick Ctrl-C for 2 s.
func closeDevRegistry(reg *demoRegistry, logger *slog.Logger) {
	if err := reg.srv.Close(); err != nil {
		logger.Warn("dev: stop the registry", "addr", reg.addr, "err", err)
	}
}

// devEncryptionKey returns the dev cluster's Secret encryption key file,
// creating it (one random AES-256 key) if it does not exist.
func devEncryptionKey(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "encryption-keys")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte("dev1:"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the encryption key %s: %w", path, err)
	}
	return path, nil
}
