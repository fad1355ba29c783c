package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/controllers/scheduler"
	"github.com/skiff-sh/skiff/server"
)

func newServerCommand() *cobra.Command {
	cfg := server.DefaultConfig()
	var join, logLevel, logFormat, ctrls string
	gcPercent := defaultGCPercent
	timerSlack := defaultTimerSlack
	strategy := string(cfg.ControllerConfig.Scheduler.Policy.Strategy)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a master: Raft member, API server and (while leader) scheduler and controllers",
		Long: `server runs one master. Masters find each other through gossip (--join) and, once
--bootstrap-expect of them are up and none has state yet, bootstrap one Raft cluster together.
A master restarted with its --data-dir rejoins by itself, with the same flags.`,
		Example: `  # three masters on one machine (use real addresses across machines)
  skiff server --name m1 --data-dir /var/lib/skiff/m1 --raft-addr 127.0.0.1:7001 --api-addr 127.0.0.1:7101 \
    --gossip-addr 127.0.0.1:7201 --bootstrap-expect 3 --join 127.0.0.1:7202,127.0.0.1:7203
  # a single master
  skiff server --name m1 --data-dir /var/lib/skiff/m1 --bootstrap-expect 1
  # a single master that packs pods onto as few workers as possible and keeps fewer events
  skiff server --name m1 --data-dir /var/lib/skiff/m1 --bootstrap-expect 1 \
    --scheduler-strategy MostAllocated --event-ttl 30m --max-events 5000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.ControllerConfig.Scheduler.Policy.Strategy = scheduler.Strategy(strategy)
			if err := checkControllerFlags(cfg); err != nil {
				return err
			}
			if cfg.TokenFile == "" && !cfg.Insecure {
				return errors.New("--token-file is required: the first master creates the cluster token in it, the others and the workers need a copy (skiff token show); or pass --insecure for a plaintext local experiment")
			}
			if err := setGCPercent(gcPercent, cmd.Flags().Changed("gc-percent")); err != nil {
				return err
			}
			if err := setTimerSlack(timerSlack); err != nil {
				logger.Warn(timerSlackWarning, "err", err)
			}
			if cfg.Insecure {
				fmt.Fprintln(os.Stderr, "INSECURE: this master talks plaintext and authenticates nobody; only for local experiments")
			}
			cfg.Join = splitComma(join)
			cfg.Controllers = splitComma(ctrls)
			cfg.Logger = logger
			cfg.Version = version
			cfg.MaxRecvMsgSize = server.MaxRecvMsgSizeFor(cfg.MaxObjectBytes)
			if err := cfg.Validate(); err != nil {
				return err
			}
			s, err := server.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			setMemoryLimit(ctx, logger)
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", cfg.Name, "unique name of this master (its Raft server ID)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, snapshots and state")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "host:port for Raft traffic between masters")
	f.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "host:port of the gRPC API")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "host:port for gossip with masters and workers")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "host:port for /metrics, /healthz and /readyz (empty disables): HTTPS with the master's certificate, plain HTTP only with --insecure; /healthz and /readyz are anonymous, /metrics needs a client certificate from the cluster CA or \"Authorization: Bearer <token>\" of any role")
	f.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "serve Go's profiler at /debug/pprof/ on --http-addr, for admin callers (anyone with --insecure); e.g. go tool pprof https://HOST:7301/debug/pprof/profile")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "number of masters to wait for before bootstrapping a new cluster (1: single master, 0: join an existing cluster)")
	f.StringVar(&join, "join", "", "comma-separated gossip addresses of other masters")
	f.IntVar(&cfg.RaftMultiplier, "raft-multiplier", cfg.RaftMultiplier, "scale Raft timeouts for slow or distant machines (1 = LAN: heartbeat and election timeouts 300ms)")
	f.DurationVar(&cfg.RaftTimeout, "raft-timeout", 0, "the Raft heartbeat and election timeout itself, in place of --raft-multiplier (the leader lease too)")
	f.DurationVar(&cfg.NodeMonitorGracePeriod, "node-monitor-grace-period", cfg.NodeMonitorGracePeriod, "how long a worker may go without a heartbeat before its node is marked Ready=Unknown")
	f.StringVar(&cfg.ServiceCIDR, "service-cluster-ip-range", cfg.ServiceCIDR,
		"CIDR that Service cluster IPs are allocated from (its first host is kept for the kubernetes Service); must be the same on every master")
	f.StringVar(&cfg.ServiceNodePortRange, "service-node-port-range", cfg.ServiceNodePortRange,
		"min-max range that NodePort Services' node ports are allocated from; must be the same on every master")
	f.StringVar(&cfg.ControllerConfig.NodeIPAM.ClusterCIDR, "cluster-cidr", cfg.ControllerConfig.NodeIPAM.ClusterCIDR,
		"IPv4 CIDR that pod addresses come from; each node gets a subnet of it (its spec.podCIDR); must be the same on every master and worker")
	f.IntVar(&cfg.ControllerConfig.NodeIPAM.NodeCIDRMaskSize, "node-cidr-mask-size", cfg.ControllerConfig.NodeIPAM.NodeCIDRMaskSize,
		"prefix length of each node's pod subnet within --cluster-cidr (24: 256 nodes of up to 254 pods in a /16)")
	f.StringVar(&ctrls, "controllers", "*", "controllers to run while leading: * for the defaults, -name to leave one out, e.g. *,-eventttl (empty runs none)")
	f.DurationVar(&cfg.ControllerConfig.NodeLifecycle.StartupGracePeriod, "node-startup-grace-period", cfg.ControllerConfig.NodeLifecycle.StartupGracePeriod,
		"after becoming leader, how long to wait before evicting pods from unready nodes (gives every node a fresh grace period)")
	f.Int64Var(&cfg.ControllerConfig.NodeLifecycle.DefaultTolerationSeconds, "default-toleration-seconds", cfg.ControllerConfig.NodeLifecycle.DefaultTolerationSeconds,
		"how long pods without their own toleration stay on a not-ready or unreachable node before eviction")
	f.StringVar(&strategy, "scheduler-strategy", strategy,
		"how the scheduler scores a node's resource use: LeastAllocated spreads pods over the emptiest nodes, MostAllocated packs them onto the fullest nodes that fit (bin packing)")
	f.Int32Var(&cfg.ControllerConfig.Scheduler.Policy.PercentageOfNodesToScore, "scheduler-percentage-of-nodes-to-score", cfg.ControllerConfig.Scheduler.Policy.PercentageOfNodesToScore,
		"in clusters of more than 100 nodes, the share of nodes that must fit a pod before the scheduler stops searching and scores them, as Kubernetes' percentageOfNodesToScore: 0 adapts to the cluster's size (42% of 1,000 nodes), 100 scores every node")
	f.DurationVar(&cfg.ControllerConfig.EventTTL.TTL, "event-ttl", cfg.ControllerConfig.EventTTL.TTL,
		"how long an Event is kept after it last happened")
	f.IntVar(&cfg.ControllerConfig.EventTTL.MaxEvents, "max-events", cfg.ControllerConfig.EventTTL.MaxEvents,
		"Events kept cluster-wide: beyond this many the oldest are deleted (down to a tenth below it) before their --event-ttl (0: no cap)")
	f.StringVar(&cfg.EncryptionKeyFile, "encryption-key-file", "",
		"file of NAME:BASE64 lines of 32-byte AES-256 keys that encrypt Secrets at rest; the first encrypts, all decrypt; the same file on every master")
	f.StringVar(&cfg.AuditLogFile, "audit-log", "", "file to append one JSON line per mutating request to (empty disables)")
	f.Int64Var(&cfg.AuditLogMaxBytes, "audit-log-max-bytes", cfg.AuditLogMaxBytes, "size at which the audit log is rotated to FILE.1")
	f.IntVar(&cfg.MaxInflightBatches, "max-inflight-batches", cfg.MaxInflightBatches,
		"batches of writes the leader keeps in Raft at once; writes arriving meanwhile go together as the next batch (1: the fewest log syncs per write; 0: no limit, lower latency at low load when fsync is cheap)")
	f.DurationVar(&cfg.BatchLinger, "batch-linger", cfg.BatchLinger,
		"most the leader holds a small batch of writes for the writers of the previous batch to come back (fewer, larger batches; 0: never wait)")
	f.DurationVar(&cfg.HeartbeatBatchDelay, "heartbeat-batch-delay", cfg.HeartbeatBatchDelay,
		"most a node's lease renewal waits for other writes to share its Raft batch and log sync (0: never wait)")
	f.Float64Var(&cfg.MaxRequestsPerSecond, "max-requests-per-second", cfg.MaxRequestsPerSecond, "API requests per second each client may make to this master (0: no limit)")
	f.IntVar(&cfg.MaxRequestBurst, "max-request-burst", cfg.MaxRequestBurst, "requests a client may make at once above --max-requests-per-second")
	f.IntVar(&cfg.MaxWatchesPerClient, "max-watches-per-client", cfg.MaxWatchesPerClient, "open watches each client may have on this master (0: no cap)")
	f.IntVar(&cfg.MaxWatches, "max-watches", cfg.MaxWatches, "open watches this master serves in total (0: no cap)")
	f.IntVar(&cfg.MaxObjectBytes, "max-object-bytes", cfg.MaxObjectBytes,
		"largest object, in protobuf bytes, a write may store (4096..7340032); use the same value on every master")
	f.StringVar(&cfg.TokenFile, "token-file", "", "the cluster token: created (0600) if the file does not exist; every master and worker needs the same one")
	f.BoolVar(&cfg.Insecure, "insecure", false, "no TLS, no authentication, unencrypted gossip: only for local experiments")
	f.DurationVar(&cfg.CertLifetime, "cert-lifetime", cfg.CertLifetime, "lifetime of the certificates this master issues (renewed at 2/3)")
	_ = f.MarkHidden("cert-lifetime")
	f.IntVar(&gcPercent, "gc-percent", gcPercent,
		"Go GC target: the heap may grow to (1 + N/100) x the live data before a collection; higher trades memory for CPU (the environment's GOGC applies when this flag is not given). In a cgroup with a memory limit, Go's memory limit is 90% of it, so the collector works harder near it (GOMEMLIMIT in the environment wins; AUTOMEMLIMIT=off leaves it unset)")
	f.DurationVar(&timerSlack, "timer-slack", timerSlack, timerSlackUsage)
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

// defaultGCPercent is the masters' Go GC target. A master's heap is mostly
// the store, which lives for ever, and every write allocates a few KB that
// die at once: with Go's default of 100 the collector ran so often that it
// took a fifth of the masters' CPU under write load. At 200 the masters use
// about 10 % less CPU per write and 64 writing clients get 20-30 % more
// through (docs/performance-history.md, fifth session), for a heap of at
// most three times the live data (a master holding 1,000 nodes and 10,000
// pods: ~300 MB RSS).
const defaultGCPercent = 200

// setGCPercent applies --gc-percent; without the flag a GOGC in the
// environment (already applied by the runtime) wins over the default.
func setGCPercent(percent int, flagGiven bool) error {
	if percent < 25 {
		return fmt.Errorf("--gc-percent %d: must be at least 25 (100 is Go's default; %d the masters')", percent, defaultGCPercent)
	}
	if flagGiven || os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
	return nil
}

// checkControllerFlags reports a bad controller flag by its flag name
// (server.Config.Validate would name the config field instead).
func checkControllerFlags(cfg server.Config) error {
	cc := cfg.ControllerConfig
	if p := cc.Scheduler.Policy; p.Strategy != scheduler.LeastAllocated && p.Strategy != scheduler.MostAllocated {
		return fmt.Errorf("--scheduler-strategy %q: use %s (spread, the default) or %s (bin packing)",
			p.Strategy, scheduler.LeastAllocated, scheduler.MostAllocated)
	}
	if pct := cc.Scheduler.Policy.PercentageOfNodesToScore; pct < 0 || pct > 100 {
		return fmt.Errorf("--scheduler-percentage-of-nodes-to-score %d: use 0 (adapts to the cluster's size, the default) to 100 (every node)", pct)
	}
	if err := cc.Scheduler.Policy.Validate(); err != nil {
		return err
	}
	if cc.EventTTL.TTL <= 0 {
		return fmt.Errorf("--event-ttl %s: must be positive, e.g. 1h", cc.EventTTL.TTL)
	}
	if cc.EventTTL.MaxEvents < 0 {
		return fmt.Errorf("--max-events %d: must not be negative (0 for no cap)", cc.EventTTL.MaxEvents)
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
