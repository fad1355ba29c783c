package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/skiff-sh/skiff/controllers"
	"github.com/skiff-sh/skiff/controllers/builtin"
	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// LeaderTask is work that runs only while this master leads, such as the
// controller manager.
//
// Run is started after the new leader has committed a barrier (its store
// holds everything committed before it took over) and blocks until ctx ends.
// ctx is cancelled the moment leadership is lost or the server stops, and the
// server waits for Run to return before it acts as leader again, so a task
// never overlaps with itself. A task that returns early with an error is
// restarted with backoff while leadership lasts.
type LeaderTask interface {
	Name() string
	Run(ctx context.Context) error
}

// Raft timing for RaftMultiplier = 1. They are tuned for a LAN: failover in
// well under a second on an idle network, while still leaving the leader
// ten heartbeats (sent every HeartbeatTimeout/10) before a follower
// suspects it. The lease (how long a leader keeps leading without hearing
// from a quorum) is the whole heartbeat timeout, the most hashicorp/raft
// allows: on a loaded machine, with one master down, half of it made leaders
// step down for nothing. Writes and linearizable reads do not rely on the
// lease (they commit through a quorum).
// Like Nomad's raft_multiplier, a larger multiplier trades failover time for
// tolerance of slow disks, loaded machines and long GC pauses; 3 is close to
// the library defaults (1s). 300ms measured a failover median of 0.74-0.79s
// against 1.16-1.23s with 500ms, at a load average of 14-20 on 2 cores, with
// no spurious elections in those runs.
const (
	baseHeartbeatTimeout   = 300 * time.Millisecond
	baseElectionTimeout    = 300 * time.Millisecond
	baseLeaderLeaseTimeout = 300 * time.Millisecond
	// CommitTimeout is not scaled: it bounds how long a follower waits to
	// learn a new commit index when there are no new entries to carry it,
	// which delays watches and linearizable reads served by followers
	// (50 ms measured 81-87 ms of follower lag, 5 ms 8.5 ms).
	baseCommitTimeout = 10 * time.Millisecond
)

// maxResponseBytes bounds one gRPC response (a large List).
const maxResponseBytes = 256 << 20

// Bounds of Config.MaxObjectBytes. Below 4 KiB ordinary Deployments no
// longer fit; above 7 MiB a request would pass the Go client's 8 MiB send
// limit (package client), and every watcher and snapshot would carry such
// objects.
const (
	minObjectBytes = 4 << 10
	maxObjectBytes = 7 << 20
	// recvMsgOverhead is what a write request adds around its object
	// (WriteRequest framing, with room to spare).
	recvMsgOverhead = 256 << 10
)

// MaxRecvMsgSizeFor returns the Config.MaxRecvMsgSize that goes with an
// object size limit: a request carrying an object just over the limit still
// arrives, and is refused with an error naming MaxObjectBytes.
func MaxRecvMsgSizeFor(maxObjectBytes int) int {
	return maxObjectBytes + recvMsgOverhead
}

// Config configures one master.
type Config struct {
	// Name identifies the master: its Raft server ID and its gossip node
	// name. It must be unique in the cluster and stable across restarts.
	Name string
	// DataDir holds the Raft log (raft/raft.db) and snapshots (raft/snapshots).
	DataDir string

	// RaftAddr is the host:port of the Raft TCP transport; it is also the
	// address the other masters dial, so it must not be a wildcard address.
	// Port 0 picks a free port, which is only useful for a master that is
	// never restarted.
	RaftAddr string
	// APIAddr is the host:port the gRPC API listens on. Port 0 picks a free
	// port (see Server.APIAddr). The bound address is advertised to the other
	// masters through gossip, so followers can forward writes.
	APIAddr string
	// GossipAddr is the host:port memberlist binds (TCP and UDP).
	GossipAddr string
	// HTTPAddr serves /metrics, /healthz and /readyz; "" disables it.
	HTTPAddr string
	// EnablePprof serves Go's profiler at /debug/pprof/ on HTTPAddr
	// (admins only unless Insecure).
	EnablePprof bool

	// BootstrapExpect is how many masters form a new cluster: 0 never
	// bootstraps (join an existing cluster), 1 is a single master, N waits
	// until N masters with the same setting and no Raft state are visible in
	// gossip and then bootstraps them together. It is ignored once the data
	// dir holds Raft state.
	BootstrapExpect int
	// Join lists gossip addresses of other masters. They are retried until
	// one answers.
	Join []string
	// JoinRetryInterval is the pause between join attempts.
	JoinRetryInterval time.Duration

	// RaftMultiplier scales every Raft timeout (as Nomad's raft_multiplier):
	// with 1 the heartbeat and election timeouts are 300ms and the leader
	// lease 300ms, suited to a LAN. Raise it (up to 10) on slow or busy
	// machines to avoid needless elections, at the cost of slower failover.
	RaftMultiplier int
	// RaftTimeout, if set, is the heartbeat and election timeout itself
	// (and the leader lease), in place of RaftMultiplier's 300ms steps.
	RaftTimeout time.Duration
	// SnapshotThreshold is how many new log entries trigger a snapshot;
	// SnapshotInterval is how often that is checked; TrailingLogs is how
	// many entries are kept after a snapshot so a lagging follower can catch
	// up without a full snapshot.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// LogStoreStallTimeout is how long the leader's log write may wait for
	// the one before it to land before it fails and the master steps down
	// (hashicorp/raft issue #503: a leader with a hung disk keeps
	// heartbeating and so is never replaced).
	LogStoreStallTimeout time.Duration

	// ApplyTimeout bounds how long a write waits to enter the leader's Raft
	// queue.
	ApplyTimeout time.Duration
	// MaxInflightBatches is how many batches of writes the leader keeps in
	// Raft at once; writes arriving meanwhile wait and go together as the
	// next batch. 1 makes batches as large as the load allows, and so the
	// fewest log syncs per write on every master; 0 is no limit (raft
	// pipelines every batch: lower latency at low concurrency, when fsync
	// is cheap and the masters are far apart). See inflightBatches.
	MaxInflightBatches int
	// BatchLinger is the most the leader holds a small batch of writes
	// for the writers of the batch before it to come back (with
	// MaxInflightBatches 1; never more than half the batch before's time
	// in Raft): fewer, larger batches from closed-loop writers, at up to
	// this much latency for others. 0 never waits. See inflightBatches.
	BatchLinger time.Duration
	// HeartbeatBatchDelay is the most a node's lease renewal waits, when
	// nothing else is being written, for other writes to share its raft
	// batch (and so its log sync on every master): 1,000 nodes renew 100
	// leases a second. 0 never waits. See inflightBatches.
	HeartbeatBatchDelay time.Duration
	// NoLeaderWait is how long a request waits for a leader (election in
	// progress, new leader not yet ready) before failing with Unavailable.
	NoLeaderWait time.Duration
	// ShutdownTimeout bounds each step of a graceful shutdown (leadership
	// transfer, draining gRPC calls).
	ShutdownTimeout time.Duration
	// ReconcileInterval is how often the leader compares gossip membership
	// with the Raft configuration, besides on every membership event.
	ReconcileInterval time.Duration
	// PeerStatusTimeout bounds how long Status waits for each peer's own
	// report.
	PeerStatusTimeout time.Duration
	// ReadyMaxLag is how many committed entries the store may be behind
	// and still report ready on /readyz.
	ReadyMaxLag uint64

	// MaxObjectBytes is the largest object, in protobuf wire bytes (what
	// goes into the Raft log), that a write may store; larger ones are
	// refused with ResourceExhausted naming the limit. Default
	// proto.MaxObjectBytes (1 MiB). Every master should use the same value:
	// the master that receives a write checks it. Each object is in the
	// log, in every snapshot and in every watch event, so raise it with care.
	MaxObjectBytes int
	// MaxRecvMsgSize is the largest gRPC message the API accepts. It must be
	// above MaxObjectBytes so that an oversized object gets a clear error
	// naming the object limit instead of a transport error: set it with
	// MaxRecvMsgSizeFor(MaxObjectBytes) when changing MaxObjectBytes.
	MaxRecvMsgSize int
	// EventWindow is how many watch events each master keeps for resuming
	// watches.
	EventWindow int

	// TokenFile holds the cluster token (package pki): the API, Raft,
	// forwarding and gossip are then TLS 1.3 with mutual authentication
	// (gossip encrypted). If the file does not exist the master creates a
	// new cluster's token in it; every other master and worker needs a
	// copy. Required unless Insecure.
	TokenFile string
	// Insecure runs everything in plaintext without authentication, for
	// local experiments only.
	Insecure bool
	// CertLifetime is how long the certificates this master issues (its
	// own, nodes') are valid; they are renewed at 2/3 of it.
	CertLifetime time.Duration

	// EncryptionKeyFile turns on encryption of Secrets at rest (see
	// secrets.go): lines NAME:BASE64 of 32-byte AES-256 keys; the first
	// encrypts, all decrypt. Every master needs the same file. "" stores
	// new Secrets in plaintext.
	EncryptionKeyFile string
	// AuditLogFile receives one JSON line per mutating request made to this
	// master; "" disables it. It is rotated to AuditLogFile.1 when it would
	// grow past AuditLogMaxBytes.
	AuditLogFile     string
	AuditLogMaxBytes int64

	// MaxRequestsPerSecond and MaxRequestBurst are each client's token
	// bucket for unary API calls on this master; 0 requests/s disables it.
	// A client is a connection until authentication names clients.
	MaxRequestsPerSecond float64
	MaxRequestBurst      int
	// MaxWatchesPerClient and MaxWatches cap open watch streams on this
	// master per client and in total; 0 means no cap.
	MaxWatchesPerClient int
	MaxWatches          int

	// Logger receives every log line; the server adds server=<Name> to it
	// (and component=raft, memberlist, ... for the libraries' lines).
	Logger  *slog.Logger
	Version string
	// LeaderTasks run only while this master leads, besides the
	// controllers.
	LeaderTasks []LeaderTask

	// NodeMonitorGracePeriod is how long a node may go without a heartbeat
	// before the leader marks it Ready=Unknown (Kubernetes'
	// --node-monitor-grace-period, 50s). A new leader gives every node a
	// fresh grace period.
	NodeMonitorGracePeriod time.Duration
	// NodeMonitorPeriod is how often the leader checks nodes' heartbeats
	// and registers workers it has not registered yet, besides on every
	// gossip change.
	NodeMonitorPeriod time.Duration

	// ServiceCIDR is the range Service clusterIPs are allocated from
	// (kube-apiserver's --service-cluster-ip-range). Its network and
	// broadcast addresses are never used and its first host is kept for a
	// future "kubernetes" Service. Every master must use the same value: the
	// leader of the moment allocates.
	ServiceCIDR string
	// ServiceNodePortRange is the "min-max" range NodePort Services' node
	// ports are allocated from (--service-node-port-range); the same on
	// every master.
	ServiceNodePortRange string

	// Controllers selects the built-in controllers (scheduler, replicaset,
	// ...) that run while this master leads, like kube-controller-manager's
	// --controllers: "*" for those on by default, "name" to add one, "-name"
	// to leave one out. Empty runs none.
	Controllers []string
	// ControllerConfig tunes the built-in controllers.
	ControllerConfig builtin.Config
}

// Default addresses: loopback, the ports `skiff dev` gives its first master.
const (
	DefaultRaftAddr   = "127.0.0.1:7001"
	DefaultAPIAddr    = "127.0.0.1:7101"
	DefaultGossipAddr = "127.0.0.1:7201"
	DefaultHTTPAddr   = "127.0.0.1:7301"
)

// DefaultConfig returns a configuration with every tunable set and loopback
// addresses; the caller fills in Name and DataDir, and real addresses for a
// cluster that spans machines.
func DefaultConfig() Config {
	return Config{
		Controllers:          []string{"*"},
		ControllerConfig:     builtin.DefaultConfig(),
		RaftAddr:             DefaultRaftAddr,
		APIAddr:              DefaultAPIAddr,
		GossipAddr:           DefaultGossipAddr,
		HTTPAddr:             DefaultHTTPAddr,
		RaftMultiplier:       1,
		JoinRetryInterval:    time.Second,
		SnapshotThreshold:    8192,
		SnapshotInterval:     2 * time.Minute,
		TrailingLogs:         10240,
		LogStoreStallTimeout: 5 * time.Second,
		ApplyTimeout:         10 * time.Second,
		MaxInflightBatches:   1,
		BatchLinger:          2 * time.Millisecond,
		HeartbeatBatchDelay:  200 * time.Millisecond,
		NoLeaderWait:         5 * time.Second,
		ShutdownTimeout:      5 * time.Second,
		ReconcileInterval:    10 * time.Second,
		PeerStatusTimeout:    time.Second,
		ReadyMaxLag:          1024,
		MaxObjectBytes:       pb.MaxObjectBytes,
		MaxRecvMsgSize:       MaxRecvMsgSizeFor(pb.MaxObjectBytes),
		EventWindow:          50000,
		AuditLogMaxBytes:     100 << 20,
		CertLifetime:         pki.DefaultLifetime,
		MaxRequestsPerSecond: 1000,
		MaxRequestBurst:      2000,
		MaxWatchesPerClient:  100,
		MaxWatches:           10000,
		Logger:               slog.Default(),
		Version:              "dev",

		NodeMonitorGracePeriod: 50 * time.Second,
		NodeMonitorPeriod:      5 * time.Second,

		ServiceCIDR:          DefaultServiceCIDR,
		ServiceNodePortRange: DefaultServiceNodePortRange,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("server config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if c.Name == "" {
		return bad("Name", "required: a name unique among the masters")
	}
	if c.DataDir == "" {
		return bad("DataDir", "required: a directory for the Raft log and snapshots")
	}
	if err := checkHostPort(c.RaftAddr, false); err != nil {
		return bad("RaftAddr", "%v", err)
	}
	if err := checkHostPort(c.APIAddr, true); err != nil {
		return bad("APIAddr", "%v", err)
	}
	if err := checkHostPort(c.GossipAddr, false); err != nil {
		return bad("GossipAddr", "%v", err)
	}
	if host, _, _ := net.SplitHostPort(c.GossipAddr); net.ParseIP(host) == nil {
		return bad("GossipAddr", "%q: the host must be an IP address (memberlist binds by IP)", c.GossipAddr)
	}
	if c.HTTPAddr != "" {
		if err := checkHostPort(c.HTTPAddr, true); err != nil {
			return bad("HTTPAddr", "%v", err)
		}
	}
	if c.BootstrapExpect < 0 {
		return bad("BootstrapExpect", "%d is negative: use 0 to join an existing cluster", c.BootstrapExpect)
	}
	for i, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return bad(fmt.Sprintf("Join[%d]", i), "%q is not host:port: %v", j, err)
		}
	}
	if c.BootstrapExpect == 0 && len(c.Join) == 0 {
		return bad("Join", "required when BootstrapExpect is 0: list the gossip address of a master to join")
	}
	if c.RaftTimeout != 0 && (c.RaftTimeout < 50*time.Millisecond || c.RaftTimeout > 30*time.Second) {
		return bad("RaftTimeout", "%s is outside 50ms..30s", c.RaftTimeout)
	}
	if c.RaftMultiplier < 1 || c.RaftMultiplier > 10 {
		return bad("RaftMultiplier", "%d is outside 1..10", c.RaftMultiplier)
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"JoinRetryInterval", c.JoinRetryInterval},
		{"SnapshotInterval", c.SnapshotInterval},
		{"LogStoreStallTimeout", c.LogStoreStallTimeout},
		{"ApplyTimeout", c.ApplyTimeout},
		{"NoLeaderWait", c.NoLeaderWait},
		{"ShutdownTimeout", c.ShutdownTimeout},
		{"ReconcileInterval", c.ReconcileInterval},
		{"PeerStatusTimeout", c.PeerStatusTimeout},
		{"NodeMonitorGracePeriod", c.NodeMonitorGracePeriod},
		{"NodeMonitorPeriod", c.NodeMonitorPeriod},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return bad(p.name, "must be positive (start from DefaultConfig)")
		}
	}
	if c.SnapshotThreshold == 0 {
		return bad("SnapshotThreshold", "must be positive")
	}
	if c.BatchLinger < 0 {
		return bad("BatchLinger", "%s is negative: use 0 to never wait", c.BatchLinger)
	}
	if c.HeartbeatBatchDelay < 0 || c.HeartbeatBatchDelay > time.Second {
		return bad("HeartbeatBatchDelay", "%s: must be from 0 (never wait) to 1s", c.HeartbeatBatchDelay)
	}
	if c.MaxInflightBatches < 0 {
		return bad("MaxInflightBatches", "%d is negative: use 0 for no limit", c.MaxInflightBatches)
	}
	if c.MaxObjectBytes < minObjectBytes || c.MaxObjectBytes > maxObjectBytes {
		return bad("MaxObjectBytes", "%d is outside %d..%d bytes (default %d)", c.MaxObjectBytes, minObjectBytes, maxObjectBytes, pb.MaxObjectBytes)
	}
	if c.MaxRecvMsgSize <= c.MaxObjectBytes {
		return bad("MaxRecvMsgSize", "%d must exceed MaxObjectBytes (%d): use MaxRecvMsgSizeFor(MaxObjectBytes), %d",
			c.MaxRecvMsgSize, c.MaxObjectBytes, MaxRecvMsgSizeFor(c.MaxObjectBytes))
	}
	if c.EventWindow < 1 {
		return bad("EventWindow", "must be at least 1")
	}
	switch {
	case c.TokenFile == "" && !c.Insecure:
		return bad("TokenFile", "required: a file holding the cluster token (created if it does not exist; copy it to the other masters and workers), or Insecure for a plaintext local experiment")
	case c.TokenFile != "" && c.Insecure:
		return bad("Insecure", "set together with TokenFile: choose one")
	case !c.Insecure && c.CertLifetime < time.Second:
		return bad("CertLifetime", "%s is below 1s", c.CertLifetime)
	}
	if c.EncryptionKeyFile != "" {
		if _, err := loadSecretBox(c.EncryptionKeyFile); err != nil {
			return bad("EncryptionKeyFile", "%v", err)
		}
	}
	if c.AuditLogFile != "" && c.AuditLogMaxBytes < 4096 {
		return bad("AuditLogMaxBytes", "%d is below 4096 bytes", c.AuditLogMaxBytes)
	}
	if c.MaxRequestsPerSecond < 0 {
		return bad("MaxRequestsPerSecond", "%g is negative: use 0 for no limit", c.MaxRequestsPerSecond)
	}
	if c.MaxRequestsPerSecond > 0 && c.MaxRequestBurst < 1 {
		return bad("MaxRequestBurst", "%d: must be at least 1 while MaxRequestsPerSecond is set", c.MaxRequestBurst)
	}
	if c.MaxWatchesPerClient < 0 {
		return bad("MaxWatchesPerClient", "%d is negative: use 0 for no cap", c.MaxWatchesPerClient)
	}
	if c.MaxWatches < 0 {
		return bad("MaxWatches", "%d is negative: use 0 for no cap", c.MaxWatches)
	}
	if c.Logger == nil {
		return bad("Logger", "required")
	}
	if _, err := parseServiceCIDR(c.ServiceCIDR); err != nil {
		return bad("ServiceCIDR", "%v", err)
	}
	if _, err := parseNodePortRange(c.ServiceNodePortRange); err != nil {
		return bad("ServiceNodePortRange", "%v", err)
	}
	if len(c.Controllers) > 0 {
		if _, err := controllers.Select(c.Controllers, builtin.Registrations(c.ControllerConfig)); err != nil {
			return bad("Controllers", "%v", err)
		}
		if err := c.ControllerConfig.Validate(); err != nil {
			return bad("ControllerConfig", "%v", err)
		}
	}
	return nil
}

// checkHostPort accepts host:port with a concrete host (others dial it),
// or, when wildcard is set, any listen address.
func checkHostPort(addr string, wildcard bool) error {
	if addr == "" {
		return errors.New("required (host:port)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	if !wildcard {
		if host == "" {
			return fmt.Errorf("%q has no host: other masters must be able to dial it", addr)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("%q is a wildcard address: other masters must be able to dial it; use a concrete IP", addr)
		}
	}
	return nil
}

// raftTimeouts returns the heartbeat, election and leader lease timeouts.
func (c Config) raftTimeouts() (heartbeat, election, lease time.Duration) {
	if c.RaftTimeout > 0 {
		return c.RaftTimeout, c.RaftTimeout, c.RaftTimeout
	}
	m := time.Duration(c.RaftMultiplier)
	return baseHeartbeatTimeout * m, baseElectionTimeout * m, baseLeaderLeaseTimeout * m
}
