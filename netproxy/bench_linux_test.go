package netproxy

// The service proxy benchmark (issue 8, item 6): from a pod, the request
// rate and the throughput to a ClusterIP against the same backends' pod IPs,
// in nftables and in userspace mode.
//
// Three processes, all copies of the test binary:
//
//   - the driver (BenchmarkProxy, or TestProxyBenchHarness) in the host's
//     network namespace, which only sends commands and keeps the figures;
//   - the node, started with CLONE_NEWNET: it builds, inside its fresh
//     namespace, the client "pod" and two backend namespaces (each running
//     an HTTP server and a TCP sink) joined by veth pairs, programs the
//     Service with the mode's backend, and dies with everything it made;
//   - the client, forked by the node from a thread that sits in the client
//     namespace, so the whole process is the pod: its sockets need no
//     per-dial namespace switching, whose thread hand-offs would weigh on
//     the new-connection figures.
//
// The driver talks to the client through two pipes passed as fds 3 and 4
// (JSON lines; the node only hands them on), so the tests' own output on
// stdout and stderr stays free for diagnostics. Each command is one
// measurement window; the driver alternates direct and ClusterIP windows
// (A B, B A, ...) and reports the ratio of each adjacent pair, which cancels
// most of the noise of a shared machine.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	pb "github.com/skiff-sh/skiff/proto"
)

// Environment of the node and client processes.
const (
	benchRoleEnv = "SKIFF_NETPROXY_BENCH_ROLE" // "node" or "client"
	benchModeEnv = "SKIFF_NETPROXY_BENCH_MODE" // the node's proxy mode
)

// The benchmark's addresses: peers get NET.2 (netns_linux_test.go), the
// Services are ClusterIPs in front of both backends.
const (
	benchCIDR      = "10.77.0.0/16" // the pod network: no masquerade from the client
	benchClientNet = "10.77.1"
	benchB1Net     = "10.77.2"
	benchB2Net     = "10.77.3"
	// Each server listens on two ports: one for direct connections, one
	// behind the Service. With a single port, a direct connection and an
	// earlier ClusterIP one would often share the 4-tuple the backend
	// sees (the client cycles through its ports thousands of times a
	// second) while the client chose their sequence numbers and timestamps
	// for different peers, so the backend's TIME_WAIT socket answers the
	// new SYN with a challenge ACK and the client waits for its RST to
	// clear it: a cost of the benchmark's mix, not of the Service.
	benchHTTPPort      = 8080         // direct
	benchHTTPSvcPort   = 8081         // the Service's targetPort
	benchSinkPort      = 9000         // direct
	benchSinkSvcPort   = 9001         // the Service's targetPort
	benchHTTPClusterIP = "10.96.0.10" // port 80 -> backends:8081
	benchSinkClusterIP = "10.96.0.11" // port 9000 -> backends:9001
)

// benchWindow is one measurement; a round is two of them. Short windows
// and many rounds: on a shared machine a window now and then gets a
// fraction of the CPU, and the median of many paired ratios shrugs that off
// where a few long windows cannot.
var benchWindow = flag.Duration("proxy-window", 100*time.Millisecond, "BenchmarkProxy: length of one measurement window")

// Workloads the client runs.
const (
	kindKeepalive = "keepalive" // HTTP GETs over one keep-alive connection per client
	kindNewConn   = "newconn"   // one HTTP GET per TCP connection, closed by the server
	kindStream    = "stream"    // bulk TCP writes into a sink
)

// benchCmd asks the client for one measurement window.
type benchCmd struct {
	Kind   string        `json:"kind"`
	Conns  int           `json:"conns"`
	Addrs  []string      `json:"addrs"` // spread over the clients (and, for newconn, the connections)
	Window time.Duration `json:"window"`
}

// benchResult is the client's answer (or, first, its Ready).
type benchResult struct {
	Ready    bool             `json:"ready,omitempty"`
	Ops      int64            `json:"ops"`   // requests or connections completed
	Bytes    int64            `json:"bytes"` // bytes the sink acknowledged (stream)
	Secs     float64          `json:"secs"`  // from the start until the last operation ended
	Backends map[string]int64 `json:"backends,omitempty"`
	// Slowest is the longest request, in seconds (keepalive, newconn).
	Slowest float64 `json:"slowest"`
	Err     string  `json:"err,omitempty"`
}

// rate is the figure of the workload: req/s, conn/s or MB/s.
func (r benchResult) rate(kind string) float64 {
	if r.Secs <= 0 {
		return 0
	}
	if kind == kindStream {
		return float64(r.Bytes) / r.Secs / 1e6
	}
	return float64(r.Ops) / r.Secs
}

type benchCase struct {
	name  string
	kind  string
	conns int
	unit  string
}

func benchCases() []benchCase {
	return []benchCase{
		{"keepalive-c1", kindKeepalive, 1, "req/s"},
		{"keepalive-c16", kindKeepalive, 16, "req/s"},
		{"newconn-c1", kindNewConn, 1, "conn/s"},
		{"newconn-c16", kindNewConn, 16, "conn/s"},
		{"stream", kindStream, 1, "MB/s"},
	}
}

// targets returns the direct (pod IP) and the ClusterIP addresses of a
// workload.
func (c benchCase) targets() (direct, clusterIP []string) {
	port, cip, cport := benchHTTPPort, benchHTTPClusterIP, 80
	if c.kind == kindStream {
		port, cip, cport = benchSinkPort, benchSinkClusterIP, benchSinkPort
	}
	for _, n := range []string{benchB1Net, benchB2Net} {
		direct = append(direct, fmt.Sprintf("%s.2:%d", n, port))
	}
	return direct, []string{fmt.Sprintf("%s:%d", cip, cport)}
}

func (c benchCase) cmd(addrs []string, window time.Duration) benchCmd {
	return benchCmd{Kind: c.kind, Conns: c.conns, Addrs: addrs, Window: window}
}

// BenchmarkProxy measures, per mode and workload, the ClusterIP against the
// pod IPs directly. Each b.Loop iteration is one round (a direct and a
// ClusterIP window, order alternating), so -benchtime sets the time spent
// per workload (about 1.2 times it) and -benchtime Nx the rounds. ns/op is
// left out: the figures are the metrics.
//
//	go test -run '^$' -bench Proxy -benchtime 5s ./netproxy/
//	go test -run '^$' -bench Proxy ./netproxy/ -args -proxy-window 250ms
func BenchmarkProxy(b *testing.B) {
	for _, mode := range []string{ModeNFTables, ModeUserspace} {
		b.Run(mode, func(b *testing.B) {
			d := startBenchNode(b, mode)
			for _, c := range benchCases() {
				b.Run(c.name, func(b *testing.B) { d.measure(b, mode, c) })
			}
		})
	}
}

// measure runs rounds of one workload and reports the medians of the
// direct and ClusterIP figures and of the paired ratios, with the range of
// the ratios.
func (d *benchDriver) measure(b *testing.B, mode string, c benchCase) {
	direct, cip := c.targets()
	// Warm-up, not counted: first connections, neighbour entries, the
	// servers' goroutine stacks.
	d.run(b, c.cmd(direct, *benchWindow/2))
	d.run(b, c.cmd(cip, *benchWindow/2))
	var dRates, cRates, ratios []float64
	var slowest [2]float64
	for round := 0; b.Loop(); round++ {
		var pair [2]float64
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, k := range order {
			addrs := direct
			if k == 1 {
				addrs = cip
			}
			r := d.run(b, c.cmd(addrs, *benchWindow))
			pair[k] = r.rate(c.kind)
			slowest[k] = max(slowest[k], r.Slowest)
		}
		dRates = append(dRates, pair[0])
		cRates = append(cRates, pair[1])
		if pair[0] > 0 {
			ratios = append(ratios, pair[1]/pair[0])
		}
	}
	if len(ratios) == 0 {
		b.Fatalf("%s %s: no direct measurement moved anything", mode, c.name)
	}
	ratio := benchMedian(ratios)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMedian(dRates), "direct-"+c.unit)
	b.ReportMetric(benchMedian(cRates), "clusterip-"+c.unit)
	b.ReportMetric(ratio, "clusterip/direct")
	b.ReportMetric(slices.Min(ratios), "min-clusterip/direct")
	b.ReportMetric(slices.Max(ratios), "max-clusterip/direct")
	slow := ""
	if c.kind != kindStream {
		// A stall of about a second would be a retransmitted SYN.
		slow = fmt.Sprintf("; slowest request direct %.1fms, ClusterIP %.1fms", slowest[0]*1e3, slowest[1]*1e3)
	}
	b.Logf("%s %s: direct %.1f %s, ClusterIP %.1f %s, ClusterIP/direct %.3f (paired rounds %.3f-%.3f, n=%d%s)",
		mode, c.name, benchMedian(dRates), c.unit, benchMedian(cRates), c.unit, ratio,
		slices.Min(ratios), slices.Max(ratios), len(ratios), slow)
}

func benchMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestProxyBenchHarness is the node and client of the benchmark when its
// role is set; otherwise it checks the harness itself: every workload moves
// data both ways in both modes, and the ClusterIP really spreads over the
// two backends (so the measured path is the Service's).
func TestProxyBenchHarness(t *testing.T) {
	switch os.Getenv(benchRoleEnv) {
	case "node":
		benchNodeMain(t, os.Getenv(benchModeEnv))
		return
	case "client":
		benchClientMain(t)
		return
	}
	for _, mode := range []string{ModeNFTables, ModeUserspace} {
		t.Run(mode, func(t *testing.T) {
			d := startBenchNode(t, mode)
			for _, c := range benchCases() {
				direct, cip := c.targets()
				for _, addrs := range [][]string{direct, cip} {
					r := d.run(t, c.cmd(addrs, 100*time.Millisecond))
					if r.Ops == 0 || r.Secs <= 0 || (c.kind == kindStream && r.Bytes == 0) {
						t.Errorf("%s to %v: nothing measured: %+v", c.name, addrs, r)
					}
					// One keep-alive connection stays on one backend; every
					// other HTTP workload makes enough connections to reach
					// both (a miss has odds below 2^-15).
					if c.kind != kindStream && (c.kind != kindKeepalive || c.conns > 1) {
						if r.Backends["b1"] == 0 || r.Backends["b2"] == 0 {
							t.Errorf("%s to %v: answers by backend %v, want both", c.name, addrs, r.Backends)
						}
					}
					t.Logf("%s to %v: %.0f %s, slowest %.1fms", c.name, addrs, r.rate(c.kind), c.unit, r.Slowest*1e3)
				}
			}
		})
	}
}

// benchDriver drives one node process and, through it, its client.
type benchDriver struct {
	tb   testing.TB
	cmd  *exec.Cmd
	ctl  *os.File // commands, to the client's fd 3
	res  *os.File // results, from the client's fd 4
	enc  *json.Encoder
	dec  *json.Decoder
	out  *benchOutput
	done chan struct{}
	err  error // of cmd.Wait, once done is closed
}

// benchOutput collects the node's and the client's stdout and stderr.
type benchOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *benchOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *benchOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// startBenchNode starts the node process of a mode in a new network
// namespace and waits until its client is ready.
func startBenchNode(tb testing.TB, mode string) *benchDriver {
	tb.Helper()
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	d := &benchDriver{tb: tb, ctl: cmdW, res: resR, enc: json.NewEncoder(cmdW), dec: json.NewDecoder(resR),
		out: &benchOutput{}, done: make(chan struct{})}
	d.cmd = exec.Command(os.Args[0], "-test.run=^TestProxyBenchHarness$", "-test.count=1", "-test.timeout=10m")
	d.cmd.Env = append(os.Environ(), benchRoleEnv+"=node", benchModeEnv+"="+mode)
	d.cmd.ExtraFiles = []*os.File{cmdR, resW}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err = d.cmd.Start()
	// The child has its copies; without closing ours, the driver would
	// never see the end of the results when the child dies.
	cmdR.Close()
	resW.Close()
	if err != nil {
		cmdW.Close()
		resR.Close()
		tb.Fatalf("start the benchmark node: %v", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	tb.Cleanup(d.stop)
	var r benchResult
	if err := d.recv(&r, time.Minute); err != nil || !r.Ready {
		tb.Fatalf("the %s benchmark node did not come up (%v, %+v); its output:\n%s", mode, err, r, d.output())
	}
	return d
}

// output waits briefly for the node to end, so its last words are in.
func (d *benchDriver) output() string {
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
	return d.out.String()
}

func (d *benchDriver) recv(r *benchResult, within time.Duration) error {
	if err := d.res.SetReadDeadline(time.Now().Add(within)); err != nil {
		return err
	}
	return d.dec.Decode(r)
}

// run does one measurement.
func (d *benchDriver) run(tb testing.TB, c benchCmd) benchResult {
	tb.Helper()
	if err := d.enc.Encode(c); err != nil {
		tb.Fatalf("send %s to the benchmark client: %v; node output:\n%s", c.Kind, err, d.output())
	}
	var r benchResult
	if err := d.recv(&r, c.Window+time.Minute); err != nil {
		tb.Fatalf("%s to %v: no result: %v; node output:\n%s", c.Kind, c.Addrs, err, d.output())
	}
	if r.Err != "" {
		tb.Fatalf("%s to %v: %s", c.Kind, c.Addrs, r.Err)
	}
	return r
}

// stop ends the client (end of its commands), then the node, which removes
// everything it made as its test ends.
func (d *benchDriver) stop() {
	d.ctl.Close()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		d.tb.Errorf("the benchmark node did not stop within 30s of the end of its commands; killed it")
	}
	d.res.Close()
	if d.err != nil {
		d.tb.Errorf("benchmark node: %v; its output:\n%s", d.err, d.out.String())
	}
}

// benchNodeMain is the node: it runs in a fresh network namespace.
func benchNodeMain(t *testing.T, mode string) {
	ctlIn, ctlOut := os.NewFile(3, "bench-commands"), os.NewFile(4, "bench-results")
	if _, err := ctlIn.Stat(); err != nil {
		t.Fatalf("no command pipe on fd 3 (%v): only the benchmark driver starts this role", err)
	}
	mustBeFreshNetNS(t)
	client := newPeer(t, "client", benchClientNet)
	b1 := newPeer(t, "b1", benchB1Net)
	b2 := newPeer(t, "b2", benchB2Net)
	for _, p := range []*peer{b1, b2} {
		serveBenchHTTP(t, p)
		serveBenchSink(t, p)
	}

	cfg := DefaultConfig()
	cfg.Mode = mode
	cfg.ClusterCIDR = benchCIDR
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	be, err := newBackend(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the Sync: a half-made rule set goes too.
	t.Cleanup(func() {
		if err := be.Cleanup(); err != nil {
			t.Errorf("clean up the %s backend: %v", mode, err)
		}
	})
	backends := ips(b1.ip, b2.ip)
	rs := Translate(
		[]*pb.Service{
			testService("bench", "http", benchHTTPClusterIP, "ClusterIP", fmt.Sprintf("80->%d", benchHTTPSvcPort)),
			testService("bench", "sink", benchSinkClusterIP, "ClusterIP", fmt.Sprintf("%d->%d", benchSinkPort, benchSinkSvcPort)),
		},
		[]*pb.Endpoints{
			testEndpoints("bench", "http", testSubset(backends, nil, fmt.Sprint(benchHTTPSvcPort))),
			testEndpoints("bench", "sink", testSubset(backends, nil, fmt.Sprint(benchSinkSvcPort))),
		})
	if len(rs.Ports) != 2 || len(rs.Ports[0].Endpoints) != 2 || len(rs.Ports[1].Endpoints) != 2 {
		t.Fatalf("rule set:\n%s\nwant two service ports with two endpoints each", rs)
	}
	if err := be.Sync(rs); err != nil {
		t.Fatalf("program the %s backend: %v", mode, err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyBenchHarness$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), benchRoleEnv+"=client")
	cmd.ExtraFiles = []*os.File{ctlIn, ctlOut}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// The client dies with the thread that forks it, which lives until
	// the client has ended, and so with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	ended := make(chan error, 1)
	go func() {
		// A fork inherits the namespaces of the forking thread: this one
		// joins the client's and is never given back to the runtime.
		runtime.LockOSThread()
		if err := netns.Set(client.ns); err != nil {
			started <- fmt.Errorf("join the client namespace: %w", err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		ended <- cmd.Wait()
	}()
	err = <-started
	ctlIn.Close()
	ctlOut.Close()
	if err != nil {
		t.Fatalf("start the benchmark client: %v", err)
	}
	if err := <-ended; err != nil {
		t.Fatalf("benchmark client: %v", err)
	}
}

// benchListen listens in p's namespace on each port.
func benchListen(t *testing.T, p *peer, ports ...int) []net.Listener {
	t.Helper()
	var lns []net.Listener
	for _, port := range ports {
		ln, err := inThread(p.ns, func() (net.Listener, error) { return net.Listen("tcp4", fmt.Sprintf(":%d", port)) })
		if err != nil {
			t.Fatalf("listen on %d in %s: %v", port, p.name, err)
		}
		lns = append(lns, ln)
	}
	return lns
}

// serveBenchHTTP answers GET / with the backend's name on both HTTP ports,
// keeping connections alive unless the client asks otherwise.
func serveBenchHTTP(t *testing.T, p *peer) {
	t.Helper()
	body := []byte(p.name)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	var wg sync.WaitGroup
	for _, ln := range benchListen(t, p, benchHTTPPort, benchHTTPSvcPort) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = srv.Serve(ln)
		}()
	}
	t.Cleanup(func() { srv.Close(); wg.Wait() })
}

// serveBenchSink reads each connection on both sink ports to its end, then
// writes back how many bytes it got (8 bytes, big endian) and closes.
func serveBenchSink(t *testing.T, p *peer) {
	t.Helper()
	lns := benchListen(t, p, benchSinkPort, benchSinkSvcPort)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	sink := func(c net.Conn) {
		defer wg.Done()
		defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	}
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				wg.Add(1)
				go sink(c)
			}
		}()
	}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// benchClientMain is the client: the whole process sits in the client
// namespace. It answers commands until the driver closes them.
func benchClientMain(t *testing.T) {
	in, out := os.NewFile(3, "bench-commands"), os.NewFile(4, "bench-results")
	if _, err := in.Stat(); err != nil {
		t.Fatalf("no command pipe on fd 3 (%v): only the benchmark node starts this role", err)
	}
	// Refuse to load anything but the pod's namespace.
	if _, err := netlink.LinkByName("eth0"); err != nil {
		t.Fatalf("not in the client namespace (no eth0): %v", err)
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(benchResult{Ready: true}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var c benchCmd
		var r benchResult
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			r.Err = fmt.Sprintf("bad command %q: %v", sc.Text(), err)
		} else {
			r = runBenchCmd(c)
		}
		if err := enc.Encode(r); err != nil {
			t.Fatalf("send a result: %v", err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// benchWorker is one concurrent client of a workload: prepare connects (not
// timed), then loop runs until the deadline, at least one operation (a
// worker scheduled late on a busy machine still measures something).
type benchWorker struct {
	prepare func() error
	loop    func(deadline time.Time) error
	close   func()
	ops     int64
	bytes   int64
	names   map[string]int64
	slowest time.Duration
}

// runBenchCmd runs a workload: every worker prepares, then all start
// together and stop at the end of the window; the time is until the last
// one has finished its last operation, so every counted operation is inside
// it.
func runBenchCmd(c benchCmd) benchResult {
	if c.Conns < 1 || len(c.Addrs) == 0 || c.Window <= 0 {
		return benchResult{Err: fmt.Sprintf("bad command %+v", c)}
	}
	ws := make([]*benchWorker, c.Conns)
	for i := range ws {
		w := &benchWorker{names: map[string]int64{}}
		switch c.Kind {
		case kindKeepalive:
			w.keepalive(c.Addrs[i%len(c.Addrs)])
		case kindNewConn:
			w.newConn(c.Addrs, i)
		case kindStream:
			w.stream(c.Addrs[i%len(c.Addrs)])
		default:
			return benchResult{Err: fmt.Sprintf("unknown workload %q", c.Kind)}
		}
		ws[i] = w
	}
	defer func() {
		for _, w := range ws {
			w.close()
		}
	}()
	for _, w := range ws {
		if err := w.prepare(); err != nil {
			return benchResult{Err: err.Error()}
		}
	}
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(c.Window)
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.loop(deadline)
		}()
	}
	wg.Wait()
	r := benchResult{Secs: time.Since(start).Seconds(), Backends: map[string]int64{}}
	for _, w := range ws {
		r.Ops += w.ops
		r.Bytes += w.bytes
		r.Slowest = max(r.Slowest, w.slowest.Seconds())
		for n, k := range w.names {
			r.Backends[n] += k
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.Err = err.Error()
	}
	return r
}

// readName reads a backend's short answer to its end.
func readName(r io.Reader) (string, error) {
	var buf [32]byte
	n, err := io.ReadFull(r, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	if err == nil {
		return "", errors.New("answer longer than a backend's name")
	}
	return string(buf[:n]), nil
}

func (w *benchWorker) keepalive(addr string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + addr + "/"
	get := func() error {
		resp, err := cl.Get(url)
		if err != nil {
			return err
		}
		name, err := readName(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read from %s: %w", addr, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		w.names[name]++
		return nil
	}
	w.close = tr.CloseIdleConnections
	// The keep-alive connection is made before the window.
	w.prepare = func() error {
		if err := get(); err != nil {
			return err
		}
		w.names = map[string]int64{}
		return nil
	}
	w.loop = func(deadline time.Time) error {
		for began := time.Now(); w.ops == 0 || began.Before(deadline); began = time.Now() {
			if err := get(); err != nil {
				return err
			}
			w.ops++
			w.slowest = max(w.slowest, time.Since(began))
		}
		return nil
	}
}

// newConn: worker i's k-th connection goes to addrs[(i+k) % len], so the
// direct runs spread over the backends as the Service does.
func (w *benchWorker) newConn(addrs []string, i int) {
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
	d := net.Dialer{Timeout: 10 * time.Second}
	br := bufio.NewReaderSize(nil, 4096)
	w.prepare = func() error { return nil }
	w.close = func() {}
	w.loop = func(deadline time.Time) error {
		for k, began := i, time.Now(); w.ops == 0 || began.Before(deadline); k, began = k+1, time.Now() {
			addr := addrs[k%len(addrs)]
			c, err := d.Dial("tcp4", addr)
			if err != nil {
				return err
			}
			err = func() error {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(req); err != nil {
					return err
				}
				br.Reset(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return err
				}
				name, err := readName(resp.Body)
				if err != nil {
					return err
				}
				// Wait for the server's FIN: the server closes first and
				// keeps the TIME_WAIT, so the client's ports are free again
				// at once, as with any server-closed HTTP connection.
				if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
					return fmt.Errorf("%s did not close the connection after its answer (%v)", addr, err)
				}
				w.names[name]++
				return nil
			}()
			if err != nil {
				return fmt.Errorf("connection to %s: %w", addr, err)
			}
			w.ops++
			w.slowest = max(w.slowest, time.Since(began))
		}
		return nil
	}
}

// stream writes into a sink until the deadline, then half-closes and waits
// for the sink's count: the time includes draining the socket buffers, so
// the rate is of bytes delivered.
func (w *benchWorker) stream(addr string) {
	var c net.Conn
	w.close = func() {
		if c != nil {
			c.Close()
		}
	}
	w.prepare = func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	}
	w.loop = func(deadline time.Time) error {
		buf := make([]byte, 256<<10)
		_ = c.SetDeadline(deadline.Add(time.Minute))
		var sent int64
		for sent == 0 || time.Now().Before(deadline) {
			n, err := c.Write(buf)
			sent += int64(n)
			if err != nil {
				return fmt.Errorf("write to %s: %w", addr, err)
			}
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		var ack [8]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return fmt.Errorf("the sink %s's count: %w", addr, err)
		}
		if got := int64(binary.BigEndian.Uint64(ack[:])); got != sent {
			return fmt.Errorf("sent %d bytes to %s, the sink got %d", sent, addr, got)
		}
		w.ops, w.bytes = 1, sent
		return nil
	}
}
