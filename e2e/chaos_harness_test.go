package e2e

// The chaos harness: fault injection on the masters of a cluster (SIGKILL,
// SIGSTOP/SIGCONT, SIGTERM, restart with the same data dir, network cuts
// with nftables) and the probes the scenarios need (who leads, is every
// master caught up, do all masters hold identical state).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

var (
	chaosFull = flag.Bool("chaos.full", false,
		"run the long chaos suite (what `make chaos` runs); without it a short version runs inside `go test ./...`")
	chaosDuration = flag.Duration("chaos.duration", 0,
		"how long each looping chaos scenario injects faults (default 15s, 2m with -chaos.full)")
	chaosKillInterval = flag.Duration("chaos.kill-interval", 0,
		"time between two fault injections (default 4s, 5s with -chaos.full)")
	chaosReport = flag.String("chaos.report", "",
		"write every chaos scenario's results as JSON to this file (default with -chaos.full: a new file under the system temp dir, its path printed; without it, none)")
	chaosSeed = flag.Int64("chaos.seed", 0,
		"seed of the workload's random choices (0: a random seed, printed)")
	chaosClients = flag.Int("chaos.clients", 8,
		"concurrent clients of the chaos workloads (besides clients pinned to one master)")
)

// chaosParams are the resolved knobs of one run.
type chaosParams struct {
	full         bool
	duration     time.Duration // fault phase of looping scenarios
	interval     time.Duration // between two faults
	minKills     int           // leader kills at least
	minPauses    int
	minCuts      int
	restartAll   int // rounds of kill-all-and-restart
	rollingRound int // rounds of rolling restarts
	clients      int
	seed         int64
	opTimeout    time.Duration
}

func chaosConfig(t *testing.T) chaosParams {
	p := chaosParams{duration: 15 * time.Second, interval: 4 * time.Second, minKills: 3, minPauses: 2, minCuts: 2,
		restartAll: 2, rollingRound: 1, clients: *chaosClients, seed: *chaosSeed, opTimeout: 12 * time.Second}
	if *chaosFull {
		p.full = true
		p.duration, p.interval = 2*time.Minute, 5*time.Second
		p.minKills, p.minPauses, p.minCuts, p.restartAll, p.rollingRound = 10, 5, 4, 5, 3
	}
	if *chaosDuration > 0 {
		p.duration = *chaosDuration
	}
	if *chaosKillInterval > 0 {
		p.interval = *chaosKillInterval
	}
	if p.clients < 1 {
		p.clients = 1
	}
	if p.seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		p.seed = int64(binary.LittleEndian.Uint64(b[:]) >> 1)
	}
	t.Logf("chaos: full=%v duration=%s interval=%s clients=%d seed=%d (rerun with -chaos.seed %d)",
		p.full, p.duration, p.interval, p.clients, p.seed, p.seed)
	return p
}

// newGID returns a group id for one master process, high enough not to be
// anyone's real group. Two clusters sharing one is harmless: the nftables
// rules match the masters' ports as well.
func newGID() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return 2_000_000_000 + binary.LittleEndian.Uint32(b[:])%1_000_000_000
}

// chaosCluster is a cluster under fault injection.
type chaosCluster struct {
	*cluster
	t      *testing.T
	origin time.Time // the scenario's clock: every recorded time is relative to it
	net    *chaosNet // nil without nftables

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn // raw API connections per master, for local status
	pinned  map[string]*client.Client   // clients that talk to one master only
	paused  map[string]bool
	running map[string]bool
}

// startChaosCluster starts n masters and waits until they have a leader.
// partitions asks for per-master group ids and nftables (skipping the test
// if they are not available).
func startChaosCluster(t *testing.T, n int, partitions bool) *chaosCluster {
	t.Helper()
	var cn *chaosNet
	if partitions {
		var err error
		if cn, err = newChaosNet(t); err != nil {
			t.Fatalf("network partitions need nftables and root (run the suite as root): %v", err)
		}
	}
	c := startClusterWith(t, n, clusterOptions{gids: partitions, logLevel: "debug"})
	cc := &chaosCluster{cluster: c, t: t, origin: time.Now(), net: cn,
		conns: map[string]*grpc.ClientConn{}, pinned: map[string]*client.Client{},
		paused: map[string]bool{}, running: map[string]bool{}}
	for _, m := range c.masters {
		cc.running[m.name] = true
	}
	t.Cleanup(func() {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for _, conn := range cc.conns {
			conn.Close()
		}
	})
	// Registered after startCluster's cleanup, so it runs first: the logs
	// are still there.
	t.Cleanup(func() {
		if t.Failed() {
			cc.keepLogs()
		}
	})
	if _, err := cc.waitHealthy(90*time.Second, c.masters); err != nil {
		t.Fatalf("cluster did not come up: %v", err)
	}
	return cc
}

// keepLogs copies the masters' logs out of the test's temp dir (which is
// removed) so that a failure can be investigated.
func (cc *chaosCluster) keepLogs() {
	dir, err := os.MkdirTemp("", "skiff-chaos-logs-"+sanitize(cc.t.Name())+"-")
	if err != nil {
		cc.t.Logf("keep logs: %v", err)
		return
	}
	for _, m := range cc.masters {
		src, err := os.Open(m.logPath)
		if err != nil {
			continue
		}
		dst, err := os.Create(filepath.Join(dir, m.name+".log"))
		if err == nil {
			_, _ = io.Copy(dst, src)
			dst.Close()
		}
		src.Close()
	}
	cc.t.Logf("masters' logs kept in %s", dir)
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func sanitize(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// now is the scenario clock.
func (cc *chaosCluster) now() time.Duration { return time.Since(cc.origin) }

func (cc *chaosCluster) others(m *master) []*master {
	var out []*master
	for _, o := range cc.masters {
		if o != m {
			out = append(out, o)
		}
	}
	return out
}

// conn is a raw API connection to one master that reconnects quickly after
// the master restarts (gRPC's default backoff grows to two minutes).
func (cc *chaosCluster) conn(m *master) *grpc.ClientConn {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if c, ok := cc.conns[m.name]; ok {
		return c
	}
	creds := insecure.NewCredentials()
	if cc.token != "" {
		tc, err := client.AdminTLS(cc.token)
		if err != nil {
			cc.t.Fatal(err)
		}
		creds = credentials.NewTLS(tc)
	}
	c, err := grpc.NewClient("passthrough:///"+m.apiAddr,
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		cc.t.Fatalf("connect to %s: %v", m.name, err)
	}
	cc.conns[m.name] = c
	return c
}

// pinnedClient is a skiff client that only knows master m: what a program
// configured with a single master sees.
func (cc *chaosCluster) pinnedClient(m *master) *client.Client {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if c, ok := cc.pinned[m.name]; ok {
		return c
	}
	c := cc.newClient([]string{m.apiAddr})
	cc.pinned[m.name] = c
	return c
}

// newClient returns a client for the given addresses.
func (cc *chaosCluster) newClient(addrs []string) *client.Client {
	cfg := client.DefaultConfig()
	cfg.Servers = addrs
	cfg.RetryFor = 10 * time.Second
	if cc.token != "" {
		var err error
		if cfg.TLS, err = client.AdminTLS(cc.token); err != nil {
			cc.t.Fatal(err)
		}
	}
	cl, err := client.New(cfg)
	if err != nil {
		cc.t.Fatal(err)
	}
	cc.t.Cleanup(func() { cl.Close() })
	return cl
}

// rotatedClient is a client for every master, starting with the i-th, so
// that concurrent clients spread over the masters.
func (cc *chaosCluster) rotatedClient(i int) *client.Client {
	addrs := cc.apiAddrs()
	n := len(addrs)
	rot := make([]string, 0, n)
	for j := range n {
		rot = append(rot, addrs[(i+j)%n])
	}
	return cc.newClient(rot)
}

// --- faults ---

func (cc *chaosCluster) setRunning(m *master, running bool) {
	cc.mu.Lock()
	cc.running[m.name] = running
	if !running {
		delete(cc.paused, m.name)
	}
	cc.mu.Unlock()
}

// crash SIGKILLs a master.
func (cc *chaosCluster) crash(m *master) {
	cc.kill(m)
	cc.setRunning(m, false)
}

// restart starts a stopped master again with its data dir and flags.
func (cc *chaosCluster) restart(m *master) {
	cc.start(m)
	cc.setRunning(m, true)
}

// terminate stops a master gracefully (SIGTERM: a leader transfers
// leadership first).
func (cc *chaosCluster) terminate(m *master, within time.Duration) {
	cc.stop(m, within)
	cc.setRunning(m, false)
}

func (cc *chaosCluster) signal(m *master, sig syscall.Signal) {
	cc.t.Helper()
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil {
		cc.t.Fatalf("%s is not running", m.name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		cc.t.Fatalf("signal %s to %s: %v", sig, m.name, err)
	}
}

// pause freezes a master (SIGSTOP): its sockets stay open, so peers and
// clients see a master that accepts bytes and never answers.
func (cc *chaosCluster) pause(m *master) {
	cc.signal(m, syscall.SIGSTOP)
	cc.mu.Lock()
	cc.paused[m.name] = true
	cc.mu.Unlock()
}

func (cc *chaosCluster) resume(m *master) {
	cc.signal(m, syscall.SIGCONT)
	cc.mu.Lock()
	delete(cc.paused, m.name)
	cc.mu.Unlock()
}

// live lists the masters that run and are not paused.
func (cc *chaosCluster) live() []*master {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var out []*master
	for _, m := range cc.masters {
		if cc.running[m.name] && !cc.paused[m.name] {
			out = append(out, m)
		}
	}
	return out
}

// --- probes ---

// masterView is one master's own report.
type masterView struct {
	m       *master
	state   string // Leader, Follower, Candidate
	leader  string // the leader it knows of
	term    uint64
	commit  uint64
	applied uint64
	err     error
}

func (cc *chaosCluster) views(ms []*master, timeout time.Duration) []masterView {
	out := make([]masterView, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			v := masterView{m: m}
			st, err := pb.NewOperatorClient(cc.conn(m)).Status(ctx, &pb.StatusRequest{Local: true}, grpc.WaitForReady(false))
			switch {
			case err != nil:
				v.err = err
			case len(st.GetServers()) != 1:
				v.err = fmt.Errorf("local status of %s lists %d servers", m.name, len(st.GetServers()))
			default:
				self := st.GetServers()[0]
				v.state, v.leader, v.term, v.commit, v.applied = self.GetState(), st.GetLeader(), st.GetTerm(), st.GetCommitIndex(), self.GetAppliedIndex()
			}
			out[i] = v
		}()
	}
	wg.Wait()
	return out
}

// leaderOf returns the master among views that says it leads, in the
// highest term, and that a majority of the whole cluster follows.
func (cc *chaosCluster) leaderOf(views []masterView) (*masterView, error) {
	var best *masterView
	for i := range views {
		v := &views[i]
		if v.err == nil && v.state == "Leader" && (best == nil || v.term > best.term) {
			best = v
		}
	}
	if best == nil {
		return nil, errors.New("no master reports itself leader")
	}
	agree := 0
	for _, v := range views {
		if v.err == nil && v.leader == best.m.name && v.term == best.term {
			agree++
		}
	}
	if quorum := len(cc.masters)/2 + 1; agree < quorum {
		return nil, fmt.Errorf("%s leads in term %d but only %d masters agree (quorum %d)", best.m.name, best.term, agree, quorum)
	}
	return best, nil
}

func describeViews(views []masterView) string {
	var parts []string
	for _, v := range views {
		if v.err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", v.m.name, v.err))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s term %d leader %q applied %d commit %d", v.m.name, v.state, v.term, v.leader, v.applied, v.commit))
	}
	return strings.Join(parts, "; ")
}

// poll runs f every 50ms until it returns nil or within passes.
func poll(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", within, err)
		}
		<-tick.C
	}
}

// waitLeaderAmong polls until the masters ms have a leader that a quorum
// follows, and returns it.
func (cc *chaosCluster) waitLeaderAmong(within time.Duration, ms []*master) (*master, error) {
	var leader *master
	err := poll(within, func() error {
		l, err := cc.leaderOf(cc.views(ms, time.Second))
		if err != nil {
			return err
		}
		leader = l.m
		return nil
	})
	return leader, err
}

// waitHealthy polls until every master of ms answers, they agree on a
// leader, and each has applied what that leader had committed when it was
// first seen: the cluster is whole again and nobody lags behind.
func (cc *chaosCluster) waitHealthy(within time.Duration, ms []*master) (*master, error) {
	var (
		leader *master
		target uint64
		last   []masterView
	)
	err := poll(within, func() error {
		views := cc.views(ms, time.Second)
		last = views
		l, err := cc.leaderOf(views)
		if err != nil {
			return err
		}
		if leader != l.m {
			leader, target = l.m, l.commit
		}
		for _, v := range views {
			if v.err != nil {
				return v.err
			}
			if v.leader != leader.name {
				return fmt.Errorf("%s follows %q, not %s", v.m.name, v.leader, leader.name)
			}
			if v.applied < target {
				return fmt.Errorf("%s applied %d of %d", v.m.name, v.applied, target)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, describeViews(last))
	}
	return leader, nil
}

// digest is one master's full state: every object of every kind, read
// stale from that master alone.
type digest struct {
	sum     string
	objects map[string][]byte      // kind/namespace/name -> deterministic encoding
	index   uint64                 // the store index the lists were served at
	cms     map[string]finalObject // the workload's ConfigMaps
}

func (cc *chaosCluster) stateOf(m *master) (digest, error) {
	cl := cc.pinnedClient(m)
	d := digest{objects: map[string][]byte{}, cms: map[string]finalObject{}}
	var keys []string
	for _, k := range pb.Kinds() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		items, rv, err := cl.List(ctx, k.Kind, client.ListOptions{Stale: true})
		cancel()
		if err != nil {
			return d, fmt.Errorf("list %s on %s: %w", k.Plural, m.name, err)
		}
		if d.index != 0 && rv != d.index {
			return d, fmt.Errorf("%s applied entries while being listed (%d, then %d)", m.name, d.index, rv)
		}
		d.index = rv
		for _, it := range items {
			b, err := gproto.MarshalOptions{Deterministic: true}.Marshal(it)
			if err != nil {
				return d, err
			}
			key := k.Kind + "/" + it.Meta().GetNamespace() + "/" + it.Meta().GetName()
			d.objects[key] = b
			keys = append(keys, key)
			if cm := it.GetConfigMap(); cm != nil && it.Meta().GetNamespace() == chaosNS {
				d.cms[it.Meta().GetName()] = finalObject{RV: it.Meta().GetResourceVersion(), Value: cm.GetData()["v"]}
			}
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%d\x00", k, len(d.objects[k]))
		h.Write(d.objects[k])
	}
	d.sum = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// waitConverged polls until every master has applied the same index and
// holds byte-identical objects of every kind, and returns one master's
// digest.
func (cc *chaosCluster) waitConverged(within time.Duration) (digest, error) {
	var (
		out  digest
		last string
	)
	err := poll(within, func() error {
		views := cc.views(cc.masters, 2*time.Second)
		for _, v := range views {
			if v.err != nil {
				return v.err
			}
			if v.applied != views[0].applied {
				last = describeViews(views)
				return fmt.Errorf("applied indexes differ: %s", last)
			}
		}
		var ds []digest
		for _, m := range cc.masters {
			d, err := cc.stateOf(m)
			if err != nil {
				return err
			}
			ds = append(ds, d)
		}
		for i, d := range ds[1:] {
			if d.index != ds[0].index {
				return fmt.Errorf("%s listed at %d, %s at %d", cc.masters[0].name, ds[0].index, cc.masters[i+1].name, d.index)
			}
			if d.sum != ds[0].sum {
				return fmt.Errorf("%s and %s both at index %d hold different state: %s",
					cc.masters[0].name, cc.masters[i+1].name, d.index, diffDigests(ds[0], d))
			}
		}
		out = ds[0]
		return nil
	})
	return out, err
}

func diffDigests(a, b digest) string {
	var diffs []string
	for k, va := range a.objects {
		vb, ok := b.objects[k]
		switch {
		case !ok:
			diffs = append(diffs, "only first has "+k)
		case !bytes.Equal(va, vb):
			diffs = append(diffs, "differs: "+k)
		}
	}
	for k := range b.objects {
		if _, ok := a.objects[k]; !ok {
			diffs = append(diffs, "only second has "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("... %d more", len(diffs)-10))
	}
	return strings.Join(diffs, ", ")
}

// --- network partitions ---

// chaosNet cuts masters off from each other with nftables. All masters
// share 127.0.0.1, so a packet is told apart by the group id of the
// process that sent it (meta skgid, on the output hook, where loopback
// traffic is seen with its socket) and the ports it goes to: a cut master's
// packets to the other masters' ports are dropped, and so are the others'
// packets to its ports. The test process (group 0) still reaches every
// master, so clients pinned to either side keep talking to it. Each cut is
// a table of its own, named after this process, deleted on heal and in
// t.Cleanup; tables left by a test binary that died are deleted the next
// time one starts.
type chaosNet struct {
	t   *testing.T
	seq int
}

const nftPrefix = "skiff_chaos_"

var staleTables sync.Once

func newChaosNet(t *testing.T) (*chaosNet, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, err
	}
	if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft list tables: %v: %s", err, out)
	}
	staleTables.Do(func() { removeStaleTables(t) })
	return &chaosNet{t: t}, nil
}

var tableName = regexp.MustCompile(`^table inet (` + nftPrefix + `(\d+)_\d+)$`)

// removeStaleTables deletes the tables of test processes that are gone.
func removeStaleTables(t *testing.T) {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		m := tableName.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[2])
		if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", "inet", m[1]).CombinedOutput(); err != nil {
			t.Logf("delete stale nftables table %s: %v: %s", m[1], err, out)
		} else {
			t.Logf("deleted nftables table %s left by process %d", m[1], pid)
		}
	}
}

func masterPorts(m *master) []string {
	var out []string
	for _, a := range []string{m.raftAddr, m.apiAddr, m.gossip, m.httpAd} {
		out = append(out, a[strings.LastIndex(a, ":")+1:])
	}
	return out
}

// netCut is one cut made by isolate.
type netCut struct {
	t     *testing.T
	table string
	once  sync.Once
}

// isolate cuts m off from the others, both ways, until heal (also run at
// cleanup).
func (n *chaosNet) isolate(m *master, others []*master) *netCut {
	n.t.Helper()
	if m.gid == 0 {
		n.t.Fatalf("%s has no group id of its own", m.name)
	}
	n.seq++
	cut := &netCut{t: n.t, table: fmt.Sprintf("%s%d_%d", nftPrefix, os.Getpid(), n.seq)}
	var otherPorts, otherGIDs []string
	for _, o := range others {
		otherPorts = append(otherPorts, masterPorts(o)...)
		otherGIDs = append(otherGIDs, strconv.FormatUint(uint64(o.gid), 10))
	}
	rules := fmt.Sprintf(`table inet %[1]s {
	chain out {
		type filter hook output priority filter - 5; policy accept;
		ip daddr 127.0.0.1 meta skgid %[2]d meta l4proto { tcp, udp } th dport { %[3]s } counter drop
		ip daddr 127.0.0.1 meta skgid { %[4]s } meta l4proto { tcp, udp } th dport { %[5]s } counter drop
	}
}
`, cut.table, m.gid, strings.Join(otherPorts, ", "), strings.Join(otherGIDs, ", "), strings.Join(masterPorts(m), ", "))
	n.t.Cleanup(cut.heal)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("nft: %v: %s\n%s", err, out, rules)
	}
	return cut
}

// heal removes the cut.
func (c *netCut) heal() {
	c.once.Do(func() {
		out, err := exec.Command("nft", "delete", "table", "inet", c.table).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "No such file") {
			c.t.Errorf("heal: nft delete table %s: %v: %s", c.table, err, out)
		}
	})
}

var counterRE = regexp.MustCompile(`counter packets (\d+)`)

// dropped reports the packets the cut's two rules dropped so far, as
// "from the cut master/to it".
func (c *netCut) dropped() string {
	out, err := exec.Command("nft", "list", "table", "inet", c.table).Output()
	if err != nil {
		return "?"
	}
	var parts []string
	for _, m := range counterRE.FindAllStringSubmatch(string(out), -1) {
		parts = append(parts, m[1])
	}
	return strings.Join(parts, "/")
}

// scrapeGauge reads one unlabelled gauge from a master's /metrics: over
// HTTPS with an admin certificate made from the cluster's token file when
// one is given (the masters require a credential for /metrics), else over
// plain HTTP (a cluster run with --insecure).
func scrapeGauge(httpAddr, name string, tokenFile ...string) (float64, error) {
	hc, err := metricsClient(tokenFile...)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hc.Scheme+"://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics: %s: %s", httpAddr, resp.Status, strings.TrimSpace(string(body)))
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", httpAddr, name)
}
