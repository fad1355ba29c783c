package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/worker"
)

func newWorkerCommand() *cobra.Command {
	cfg := worker.DefaultConfig()
	var join, labels, logLevel, logFormat string
	var registries, registryCAs []string
	var hollowCount int
	var cleanupOnExit bool
	timerSlack := defaultTimerSlack
	netOpts := defaultNodeServiceOptions()
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: joins the masters by gossip and runs the pods bound to it",
		Long: `worker runs one node. It joins the masters' gossip pool (--join: the gossip address of any
master), learns the API addresses from gossip, is registered as a Node by the leader, keeps
its Ready condition fresh with heartbeats, and runs the pods bound to it with libcontainer.

A restarted worker (same --name and --data-dir) re-adopts the containers that still run.
With --hollow it runs no containers but behaves the same towards the masters; --hollow-count
runs many such nodes in one process for scale tests. Needs root (except --hollow).`,
		Example: `  skiff worker --name w1 --data-dir /var/lib/skiff/w1 --join 127.0.0.1:7201
  skiff worker --name w2 --data-dir /var/lib/skiff/w2 --join 10.0.0.1:7201 --labels zone=a,disk=ssd \
    --insecure-registry 10.0.0.5:5000 --registry-ca-file /etc/skiff/registry-ca.pem
  skiff worker --hollow --hollow-count 500 --name hollow --join 127.0.0.1:7201 --listen-addr 127.0.0.1:0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			if err := setTimerSlack(timerSlack); err != nil {
				logger.Warn(timerSlackWarning, "err", err)
			}
			if cfg.TokenFile == "" && !cfg.Insecure {
				return errors.New("--token-file is required: a copy of the masters' cluster token (skiff token show on a master); or pass --insecure against masters run with --insecure")
			}
			if cfg.Insecure {
				fmt.Fprintln(os.Stderr, "INSECURE: this worker talks plaintext and authenticates nobody; only for local experiments")
			}
			cfg.Join = splitComma(join)
			cfg.Logger = logger
			cfg.Version = version
			for _, r := range registries {
				cfg.InsecureRegistries = append(cfg.InsecureRegistries, splitComma(r)...)
			}
			for _, f := range registryCAs {
				abs, err := filepath.Abs(f)
				if err != nil {
					return fmt.Errorf("--registry-ca-file %s: %w", f, err)
				}
				cfg.RegistryCAFiles = append(cfg.RegistryCAFiles, abs)
			}
			if cfg.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if cfg.DataDir != "" {
				if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			setMemoryLimit(ctx, logger)
			if cfg.Hollow && hollowCount > 0 {
				return worker.RunHollow(ctx, cfg, hollowCount)
			}
			cfg.StopPodsOnExit = cleanupOnExit
			a, run, err := newWorker(cfg, logger)
			if err != nil {
				return err
			}
			svc, err := newNodeServices(a, cfg, netOpts, logger)
			if err != nil {
				return err
			}
			return svc.run(ctx, run, cleanupOnExit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", cfg.Name, "node name: unique in the cluster and stable across restarts")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the worker's state, images, container layers and logs")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for runtime state such as container records, mounts and namespace pins (default DATA-DIR/state)")
	f.BoolVar(&cfg.StateTmpfs, "state-tmpfs", cfg.StateTmpfs,
		"mount a tmpfs (source skiff-state) at --state-dir unless it is on one already: that state goes with the machine, as its containers do")
	f.StringVar(&join, "join", "", "comma-separated gossip addresses of masters (any one is enough)")
	f.StringVar(&cfg.NodeIP, "node-ip", cfg.NodeIP, "the node's InternalIP (default: the local address of the route to the first --join address)")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "host:port for gossip (default NODE-IP and a free port)")
	f.StringVar(&cfg.ListenAddr, "listen-addr", cfg.ListenAddr, "host:port of the node agent (logs, exec, registration); port 0 picks a free port")
	f.StringVar(&labels, "labels", "", "labels for the Node object, comma-separated key=value pairs")
	f.StringVar(&cfg.CapacityCPU, "capacity-cpu", cfg.CapacityCPU, "CPU capacity to report (default: the host's CPUs)")
	f.StringVar(&cfg.CapacityMemory, "capacity-memory", cfg.CapacityMemory, "memory capacity to report, e.g. 8Gi (default: the host's memory)")
	f.IntVar(&cfg.MaxPods, "max-pods", cfg.MaxPods, "how many pods the node takes")
	f.StringArrayVar(&registries, "insecure-registry", nil, "registry HOST:PORT that may be pulled from over plain HTTP (repeatable)")
	f.StringArrayVar(&registryCAs, "registry-ca-file", nil,
		"PEM file of CA certificates to trust for registry TLS besides the system's (a private registry's own CA; repeatable)")
	f.StringVar(&cfg.PodNetwork, "pod-network", cfg.PodNetwork,
		`pod network: "bridge" (a bridge, a veth and an IP per pod from the Node's spec.podCIDR, host-gw routes to the other nodes) or "none" (pods get only loopback)`)
	f.StringVar(&cfg.ClusterCIDR, "cluster-cidr", cfg.ClusterCIDR, "CIDR holding every node's pod CIDR (must match the masters' --cluster-cidr); pod traffic leaving it is masqueraded")
	f.StringVar(&cfg.Bridge, "bridge", cfg.Bridge, "name of the pods' bridge")
	f.StringVar(&netOpts.proxyMode, "proxy-mode", netOpts.proxyMode,
		`how Services are forwarded on this node: "nftables" (kernel rules), "userspace" (for hosts without nftables) or "none"`)
	f.StringVar(&netOpts.clusterDomain, "cluster-domain", netOpts.clusterDomain, "DNS domain of Services (NAME.NAMESPACE.svc.DOMAIN), answered by the node's DNS server on the pod gateway")
	f.StringVar(&netOpts.dnsUpstreams, "dns-upstream", netOpts.dnsUpstreams,
		`comma-separated HOST:PORT servers for names outside the cluster domain ("" = the host's /etc/resolv.conf, "none" = refuse them)`)
	f.BoolVar(&cleanupOnExit, "cleanup-on-exit", false,
		"when the worker exits, stop every pod and remove the pod network and the Service rules (a node leaving for good); by default pods keep running and a restarted worker re-adopts them")
	f.StringVar(&cfg.CgroupParent, "cgroup-parent", cfg.CgroupParent, "cgroup under which pod cgroups are created (default /skiff/NAME)")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often the node renews its lease (kube-node-lease/NAME) and checks that the masters hold its current status")
	f.DurationVar(&cfg.NodeStatusReportFrequency, "node-status-report-frequency", cfg.NodeStatusReportFrequency, "how often the node posts its status when nothing in it changed")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", cfg.SyncInterval, "how often the state of the node's containers is read: a container exit is noticed this fast")
	f.DurationVar(&cfg.ResyncInterval, "resync-interval", cfg.ResyncInterval, "how often each pod is synced when nothing about it changed")
	f.DurationVar(&cfg.StatsInterval, "stats-interval", cfg.StatsInterval, "how often the CPU counters of the node and its containers are read, so skiff top shows a recent rate at once (0: only when asked)")
	f.IntVar(&cfg.MaxParallelStarts, "max-parallel-starts", cfg.MaxParallelStarts, "how many containers may be being created and started at once (0: no bound)")
	f.DurationVar(&cfg.BackoffBase, "backoff-base", cfg.BackoffBase, "first CrashLoopBackOff delay (doubles up to --backoff-max)")
	f.DurationVar(&cfg.BackoffMax, "backoff-max", cfg.BackoffMax, "longest CrashLoopBackOff delay")
	f.BoolVar(&cfg.Hollow, "hollow", false, "run no containers: pods only go through their status transitions (scale tests)")
	f.IntVar(&hollowCount, "hollow-count", 0, "with --hollow: run this many nodes in this process, named NAME-0001, ...")
	f.StringVar(&cfg.TokenFile, "token-file", "", "a copy of the masters' cluster token file")
	f.BoolVar(&cfg.Insecure, "insecure", false, "no TLS, no authentication, unencrypted gossip (masters must run with --insecure too): only for local experiments")
	f.DurationVar(&timerSlack, "timer-slack", timerSlack, timerSlackUsage+"; containers start with the kernel's default whatever this is")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

// parseLabels parses "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range splitComma(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
