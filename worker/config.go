package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiff-sh/skiff/worker/podnet"
)

// Config configures one worker node agent.
type Config struct {
	// Name is the node's name: its gossip name and its Node object's name.
	// It must be a DNS subdomain, unique in the cluster and stable across
	// restarts (a restarted worker re-adopts its pods by it).
	Name string
	// DataDir holds the worker's state (worker.db), images, containers'
	// writable layers and logs, and pod volumes.
	DataDir string
	// StateDir holds runtime state (container records, namespace pins,
	// rootfs mounts). Default DataDir/state.
	StateDir string
	// StateTmpfs mounts a tmpfs at StateDir unless it is on one already
	// (runtime.MountStateTmpfs): the state of containers goes with the
	// machine, as the containers do. Default true.
	StateTmpfs bool

	// Join lists gossip addresses (host:port) of masters; any one that
	// answers is enough. The worker learns the masters' API addresses from
	// gossip, so no API address is configured.
	Join []string
	// JoinRetryInterval is the pause between join attempts.
	JoinRetryInterval time.Duration
	// NodeIP is the address the masters and other nodes reach this node on
	// (the Node's InternalIP). Default: the local address of the route to
	// the first Join address.
	NodeIP string
	// GossipAddr is the host:port memberlist binds. Default NodeIP with a
	// free port.
	GossipAddr string
	// ListenAddr is the host:port the NodeAgent gRPC service (logs, exec,
	// registration) listens on; a wildcard host is advertised as NodeIP.
	// Port 0 picks a free port (the Node's daemon endpoint follows it).
	ListenAddr string

	// TokenFile holds the cluster token the masters were started with
	// (package pki): the worker then verifies the masters, obtains its
	// certificate from them, serves the node agent over mutual TLS and
	// gossips encrypted. Required unless Insecure.
	TokenFile string
	// Insecure runs in plaintext without authentication, against masters
	// that run with Insecure; for local experiments only.
	Insecure bool

	// Labels are added to the Node object when it is registered, besides
	// kubernetes.io/hostname, kubernetes.io/os and kubernetes.io/arch.
	Labels map[string]string
	// CapacityCPU and CapacityMemory override the host's CPU count and
	// memory (Kubernetes quantities, e.g. "4", "8Gi"); MaxPods is the
	// node's pod capacity.
	CapacityCPU    string
	CapacityMemory string
	MaxPods        int

	// InsecureRegistries may be pulled from over plain HTTP (HOST:PORT as
	// in image references).
	InsecureRegistries []string
	// RegistryCAFiles are PEM files of CA certificates trusted for registry
	// TLS besides the system's roots (a private registry's own CA).
	RegistryCAFiles []string
	// CgroupParent is the cgroup under which pod cgroups are created.
	// Default "/skiff/" + Name.
	CgroupParent string

	// HeartbeatInterval is how often the worker renews its node Lease and
	// checks that the masters hold its current Node status (Kubernetes'
	// nodeStatusUpdateFrequency, 10s).
	HeartbeatInterval time.Duration
	// NodeStatusReportFrequency is how often the worker posts its Node
	// status when nothing in it changed (Kubernetes'
	// nodeStatusReportFrequency, 5m).
	NodeStatusReportFrequency time.Duration
	// SyncInterval is how often the node reads the state of its pods'
	// containers from the runtime, waking the pod workers of those that
	// changed (the kubelet's relist, 1s): a container exit is noticed this
	// fast.
	SyncInterval time.Duration
	// ResyncInterval is how often a pod worker syncs its pod when nothing
	// wakes it: pod updates, probe results, container state changes and
	// backoffs do (Kubernetes' --sync-frequency, 1m).
	ResyncInterval time.Duration
	// StatsInterval is how often the node reads the CPU counters of
	// itself and its running containers, so that NodeAgent.Stats (skiff
	// top) reports a rate over a recent span at once (the kubelet's
	// cAdvisor housekeeping, 10s). Zero reads them only on request: a
	// rate then spans the time since the previous request, or since the
	// container started.
	StatsInterval time.Duration
	// BackoffBase, BackoffMax and BackoffReset shape CrashLoopBackOff: a
	// container that keeps failing is restarted at once, then after
	// BackoffBase, doubling up to BackoffMax; the delay starts over once a
	// container ran for BackoffReset (Kubernetes: 10s, 5m, 10m).
	BackoffBase  time.Duration
	BackoffMax   time.Duration
	BackoffReset time.Duration
	// ShutdownTimeout bounds each step of a graceful stop.
	ShutdownTimeout time.Duration
	// MaxParallelStarts bounds how many containers are being created and
	// started at once (the shim, libcontainer's init, mounts and cgroups:
	// mostly CPU work, ~50 ms of CPU each). Pods beyond it wait their turn,
	// so a large burst finishes pod after pod instead of all at the end,
	// and does not hold hundreds of half-started containers in memory. A
	// tight bound costs tail latency on a busy node (fewer runnable
	// processes get less of the CPUs: measured on 2 CPUs at load 20, a
	// bound of 4 gave 20 pods at once a 0.4-1.0x p50 but a 0.6-1.9x p99
	// against no bound), hence the generous default. 0 means no bound.
	// Default: four per CPU, at least 8.
	MaxParallelStarts int

	// PodNetwork is "bridge" (each pod gets its own network namespace on
	// the node's bridge, with an IP from the Node's spec.podCIDR and
	// host-gw routes to the other nodes' pods) or "none" (pods have only
	// loopback). Hollow nodes create nothing; with "bridge" their pods get
	// addresses from the pod CIDR in memory.
	PodNetwork string
	// ClusterCIDR holds every node's pod CIDR: pod traffic to it is not
	// masqueraded. It must match the masters' cluster CIDR.
	ClusterCIDR string
	// Bridge is the name of the pods' bridge.
	Bridge string
	// podNetNS, when set, is the network namespace the bridge, routes and
	// nftables table go into instead of the process's (tests).
	podNetNS string

	// Hollow runs no containers: pods go through the same transitions
	// towards the masters (Pending, Running, deletion) against an in-memory
	// runtime, for scale tests (as kubemark's hollow nodes).
	Hollow bool
	// StopPodsOnExit stops and removes every container when the agent
	// stops (the pods stay bound and restart with the agent). `skiff dev`
	// uses it so that nothing outlives the command; a real worker leaves
	// its containers running and re-adopts them.
	StopPodsOnExit bool

	Logger  *slog.Logger
	Version string
	// Events records the worker's Events about its pods; nil records none
	// (hollow nodes). See EventRecorder.
	Events EventRecorder

	// Runtime and Images replace the libcontainer runtime and the image
	// store built from DataDir (tests, hollow nodes).
	Runtime Runtime
	Images  Images
	// Server is a NodeAgent server shared by several agents of one process
	// (hollow nodes); nil starts one on ListenAddr.
	Server *Server
	// api, when set, is shared by the agents of one process (insecure
	// hollow nodes: without certificates they have no identity to keep
	// apart).
	api *masterSet
	// hollowTLS, when set, is the key material shared by the secure hollow
	// nodes of one process; each still gets a key, certificate and API
	// client of its own.
	hollowTLS *hollowTLS
	// testProber replaces the prober (tests).
	testProber prober
}

// DefaultConfig returns a configuration with every tunable set; the caller
// fills in Name, DataDir and Join.
func DefaultConfig() Config {
	return Config{
		ListenAddr:                ":10250",
		MaxPods:                   110,
		JoinRetryInterval:         time.Second,
		HeartbeatInterval:         10 * time.Second,
		NodeStatusReportFrequency: 5 * time.Minute,
		SyncInterval:              time.Second,
		ResyncInterval:            time.Minute,
		StatsInterval:             10 * time.Second,
		BackoffBase:               10 * time.Second,
		BackoffMax:                5 * time.Minute,
		BackoffReset:              10 * time.Minute,
		ShutdownTimeout:           5 * time.Second,
		MaxParallelStarts:         max(8, 4*runtime.NumCPU()),
		PodNetwork:                PodNetworkBridge,
		StateTmpfs:                true,
		ClusterCIDR:               "10.244.0.0/16",
		Bridge:                    "skiff0",
		Logger:                    slog.Default(),
		Version:                   "dev",
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("worker config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if c.Name == "" {
		return bad("Name", "required: the node's name")
	}
	if errs := validation.IsDNS1123Subdomain(c.Name); len(errs) > 0 {
		return bad("Name", "%q: %s", c.Name, strings.Join(errs, "; "))
	}
	if c.DataDir == "" && !c.Hollow {
		return bad("DataDir", "required: a directory for the worker's state, images and logs")
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		return bad("DataDir", "%q must be absolute", c.DataDir)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		return bad("StateDir", "%q must be absolute", c.StateDir)
	}
	switch {
	case c.TokenFile == "" && !c.Insecure:
		return bad("TokenFile", "required: a copy of the masters' token file, or Insecure against masters run with Insecure")
	case c.TokenFile != "" && c.Insecure:
		return bad("Insecure", "set together with TokenFile: choose one")
	}
	if len(c.Join) == 0 {
		return bad("Join", "required: the gossip address (host:port) of at least one master")
	}
	for i, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return bad(fmt.Sprintf("Join[%d]", i), "%q is not host:port: %v", j, err)
		}
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		return bad("NodeIP", "%q is not an IP address", c.NodeIP)
	}
	if c.GossipAddr != "" {
		host, _, err := net.SplitHostPort(c.GossipAddr)
		if err != nil {
			return bad("GossipAddr", "%q is not host:port: %v", c.GossipAddr, err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return bad("GossipAddr", "%q: the host must be a concrete IP address (memberlist binds and advertises it)", c.GossipAddr)
		}
	}
	if c.Server == nil {
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			return bad("ListenAddr", "%q is not host:port: %v", c.ListenAddr, err)
		}
	}
	for k, v := range c.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return bad("Labels", "key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return bad("Labels", "value %q of %q: %s", v, k, strings.Join(errs, "; "))
		}
	}
	for _, q := range []struct{ name, v string }{{"CapacityCPU", c.CapacityCPU}, {"CapacityMemory", c.CapacityMemory}} {
		if q.v == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.v)
		if err != nil {
			return bad(q.name, "%q is not a quantity: %v", q.v, err)
		}
		if v.Sign() <= 0 {
			return bad(q.name, "%q must be positive", q.v)
		}
	}
	for i, f := range c.RegistryCAFiles {
		if f == "" {
			return bad(fmt.Sprintf("RegistryCAFiles[%d]", i), "empty: give the path of a PEM file of the registry's CA certificate")
		}
	}
	if c.MaxPods < 1 {
		return bad("MaxPods", "must be at least 1")
	}
	if c.MaxParallelStarts < 0 {
		return bad("MaxParallelStarts", "%d: must be 0 (no bound) or more", c.MaxParallelStarts)
	}
	if c.CgroupParent != "" && (!filepath.IsAbs(c.CgroupParent) || filepath.Clean(c.CgroupParent) != c.CgroupParent || c.CgroupParent == "/") {
		return bad("CgroupParent", "%q must be a clean absolute cgroup path below the root", c.CgroupParent)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"JoinRetryInterval", c.JoinRetryInterval}, {"HeartbeatInterval", c.HeartbeatInterval},
		{"NodeStatusReportFrequency", c.NodeStatusReportFrequency},
		{"SyncInterval", c.SyncInterval}, {"ResyncInterval", c.ResyncInterval},
		{"BackoffBase", c.BackoffBase}, {"BackoffMax", c.BackoffMax},
		{"BackoffReset", c.BackoffReset}, {"ShutdownTimeout", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			return bad(d.name, "must be positive (start from DefaultConfig)")
		}
	}
	if c.StatsInterval < 0 {
		return bad("StatsInterval", "must not be negative (0 reads usage only on request)")
	}
	if c.BackoffMax < c.BackoffBase {
		return bad("BackoffMax", "%s is below BackoffBase %s", c.BackoffMax, c.BackoffBase)
	}
	switch c.PodNetwork {
	case PodNetworkBridge:
		_, cidr, err := net.ParseCIDR(c.ClusterCIDR)
		switch {
		case err != nil:
			return bad("ClusterCIDR", "%q is not a CIDR: %v", c.ClusterCIDR, err)
		case cidr.IP.To4() == nil:
			return bad("ClusterCIDR", "%q: only IPv4 is supported", c.ClusterCIDR)
		case cidr.String() != c.ClusterCIDR:
			return bad("ClusterCIDR", "%q has host bits set (the network is %s)", c.ClusterCIDR, cidr)
		}
		if err := podnet.ValidBridgeName(c.Bridge); err != nil {
			return bad("Bridge", "%v", err)
		}
	case PodNetworkNone:
	default:
		return bad("PodNetwork", "%q: must be %q or %q", c.PodNetwork, PodNetworkBridge, PodNetworkNone)
	}
	if c.Logger == nil {
		return bad("Logger", "required")
	}
	return nil
}

// ErrUnsupported is returned where a hollow node has nothing to offer (logs,
// exec).
var ErrUnsupported = errors.New("not supported on a hollow node: it runs no containers")
