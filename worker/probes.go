package worker

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// Probes follow the kubelet: one goroutine per probe of a running
// container instance. Startup gates the others: until it succeeds neither
// liveness nor readiness runs and the container is not started. Readiness
// starts failed, liveness and startup results only act after
// failureThreshold consecutive failures (successThreshold successes for
// readiness to turn true). A failed liveness or startup probe gets the
// container killed by its pod worker, which then restarts it or not under
// the pod's restart policy.
//
// Two things differ from probing strictly every periodSeconds, both so that
// a pod is Ready soon after its program listens rather than a period later
// (every step of a rolling update waits for it; the kubelet gets there by
// probing again when it next sees the container running):
//   - until a container has first been ready, its readiness probe runs again
//     sooner: after readinessRetry, doubling up to periodSeconds;
//   - liveness and readiness probe at once when the startup probe succeeds,
//     not at their next period.
//
// And one thing waits longer: without a startup probe, a container's first
// liveness probe comes a period after it starts (after initialDelaySeconds
// too), not at once. The kubelet's comes up to a period after the start,
// whenever its probe worker next ticks; a probe at once would count the
// moment before the program listens as a failure (and record it as an
// Unhealthy event), and with failureThreshold 1 kill a healthy container.

type probeKind int

const (
	probeLiveness probeKind = iota
	probeReadiness
	probeStartup
)

func (k probeKind) String() string {
	return [...]string{"liveness", "readiness", "startup"}[k]
}

// probeTarget is the container instance a probe runs against.
type probeTarget struct {
	containerID string
	container   *pb.Container
	// netNS is the pod's network namespace to dial in; "" dials from the
	// host (hostNetwork pods).
	netNS string
	// host is the address probes dial when the probe names none: loopback
	// inside the pod's network namespace, the node IP for hostNetwork pods.
	host string
}

// prober runs one probe once. ok reports success; msg says why not.
type prober interface {
	probe(ctx context.Context, t probeTarget, p *pb.Probe) (ok bool, msg string)
}

// runtimeProber runs exec probes through the runtime and dials HTTP and
// TCP probes in the pod's network namespace.
type runtimeProber struct{ rt Runtime }

func (r runtimeProber) probe(ctx context.Context, t probeTarget, p *pb.Probe) (bool, string) {
	switch {
	case p.GetExec() != nil:
		code, err := r.rt.Exec(ctx, t.containerID, p.GetExec().GetCommand(), wrt.ExecIO{}, false)
		if err != nil {
			return false, fmt.Sprintf("exec probe: %v", err)
		}
		if code != 0 {
			return false, fmt.Sprintf("exec probe: command exited with %d", code)
		}
		return true, ""
	case p.GetHttpGet() != nil:
		return httpProbe(ctx, t, p.GetHttpGet())
	case p.GetTcpSocket() != nil:
		port, err := probePort(t.container, p.GetTcpSocket().GetPort())
		if err != nil {
			return false, err.Error()
		}
		host := p.GetTcpSocket().GetHost()
		if host == "" {
			host = t.host
		}
		c, err := dialInNetNS(ctx, t.netNS, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, fmt.Sprintf("tcp probe: %v", err)
		}
		c.Close()
		return true, ""
	}
	return false, "probe has no handler (exec, httpGet or tcpSocket)"
}

func httpProbe(ctx context.Context, t probeTarget, h *pb.HTTPGetAction) (bool, string) {
	port, err := probePort(t.container, h.GetPort())
	if err != nil {
		return false, err.Error()
	}
	host := h.GetHost()
	if host == "" {
		host = t.host
	}
	scheme := "http"
	if h.GetScheme() == "HTTPS" {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	path := h.GetPath()
	if path == "" {
		path = "/"
	}
	target, err := u.Parse(path)
	if err != nil {
		return false, fmt.Sprintf("http probe: path %q: %v", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return false, fmt.Sprintf("http probe: %v", err)
	}
	req.Header.Set("User-Agent", "skiff-probe/1.0")
	for _, hd := range h.GetHttpHeaders() {
		if hd.GetName() == "Host" {
			req.Host = hd.GetValue()
			continue
		}
		req.Header.Add(hd.GetName(), hd.GetValue())
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetNS(ctx, t.netNS, network, addr)
		},
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet: probes do not verify certificates
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false, fmt.Sprintf("http probe: %v", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return false, fmt.Sprintf("http probe: HTTP %d", resp.StatusCode)
	}
	return true, ""
}

// probePort resolves an int-or-string port: a number, or the name of one of
// the container's ports.
func probePort(c *pb.Container, port string) (int, error) {
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			return 0, fmt.Errorf("probe port %d is out of range", n)
		}
		return n, nil
	}
	for _, p := range c.GetPorts() {
		if p.GetName() == port {
			return int(p.GetContainerPort()), nil
		}
	}
	return 0, fmt.Errorf("probe port %q is not a number nor the name of a container port", port)
}

// containerProbes runs the probes of one container instance and holds
// their results.
type containerProbes struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// startedCh is closed when the startup probe succeeds (at once without
	// one).
	startedCh chan struct{}

	mu      sync.Mutex
	started bool       // the startup probe succeeded (true without one)
	ready   bool       // the readiness probe succeeded (true without one)
	kill    *probeKill // liveness or startup failed: kill the container
}

// probeKill says which probe failed its container, and how.
type probeKill struct {
	kind probeKind
	// reason is the failure count and the last probe's message.
	reason string
}

// startProbes starts c's probes against t. wake is called whenever a
// result changes; failed (if not nil) with every failed probe that the
// kubelet would have run (see unhealthy), for the Unhealthy events.
func startProbes(t probeTarget, pr prober, wake func(), failed func(kind probeKind, msg string)) *containerProbes {
	ctx, cancel := context.WithCancel(context.Background())
	cp := &containerProbes{cancel: cancel, startedCh: make(chan struct{})}
	c := t.container
	cp.started = c.GetStartupProbe() == nil
	if cp.started {
		close(cp.startedCh)
	}
	cp.ready = c.GetReadinessProbe() == nil
	for kind, p := range map[probeKind]*pb.Probe{probeLiveness: c.GetLivenessProbe(), probeReadiness: c.GetReadinessProbe(), probeStartup: c.GetStartupProbe()} {
		if p == nil {
			continue
		}
		cp.wg.Add(1)
		go func() {
			defer cp.wg.Done()
			cp.run(ctx, kind, p, t, pr, wake, failed)
		}()
	}
	return cp
}

// stop ends the probes and waits for them.
func (cp *containerProbes) stop() {
	if cp == nil {
		return
	}
	cp.cancel()
	cp.wg.Wait()
}

// results returns started, ready and, if a probe wants the container
// killed, which and why.
func (cp *containerProbes) results() (started, ready bool, kill *probeKill) {
	if cp == nil {
		return true, true, nil
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.kill != nil {
		return cp.started, false, cp.kill
	}
	return cp.started, cp.started && cp.ready, nil
}

func (cp *containerProbes) isStarted() bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.started
}

func seconds(n int32, def time.Duration) time.Duration {
	if n <= 0 {
		return def
	}
	return time.Duration(n) * time.Second
}

// readinessRetry is the first wait before a readiness probe runs again
// while its container has not been ready yet.
const readinessRetry = 250 * time.Millisecond

func (cp *containerProbes) run(ctx context.Context, kind probeKind, p *pb.Probe, t probeTarget, pr prober, wake func(), failed func(probeKind, string)) {
	period := seconds(p.GetPeriodSeconds(), 10*time.Second)
	timeout := seconds(p.GetTimeoutSeconds(), time.Second)
	success := max(int(p.GetSuccessThreshold()), 1)
	failure := max(int(p.GetFailureThreshold()), 1)
	delay := time.Duration(p.GetInitialDelaySeconds()) * time.Second
	if kind == probeLiveness && t.container.GetStartupProbe() == nil {
		// The first liveness probe of a container comes a period after
		// it starts, not the moment before its program listens.
		delay += period
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	var oks, fails int
	tick := time.NewTicker(period)
	defer tick.Stop()
	// Readiness only: whether the container has been ready, and the wait
	// before the next probe until it has.
	beenReady, retry := false, time.Duration(0)
	for {
		started := kind == probeStartup || cp.isStarted()
		if started {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			ok, msg := pr.probe(pctx, t, p)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if ok {
				oks, fails = oks+1, 0
			} else {
				oks, fails = 0, fails+1
				// Not the quicker retries of a container not yet ready:
				// the kubelet would not have probed then.
				if failed != nil && (kind != probeReadiness || beenReady || retry >= period) {
					failed(kind, msg)
				}
			}
			changed, done := false, false
			cp.mu.Lock()
			switch kind {
			case probeStartup:
				switch {
				case ok:
					cp.started, changed, done = true, true, true
					close(cp.startedCh)
				case fails >= failure:
					cp.kill, changed, done = &probeKill{kind, fmt.Sprintf("startup probe failed %d times: %s", fails, msg)}, true, true
				}
			case probeLiveness:
				if fails >= failure {
					cp.kill, changed, done = &probeKill{kind, fmt.Sprintf("liveness probe failed %d times: %s", fails, msg)}, true, true
				}
			case probeReadiness:
				switch {
				case ok && oks >= success && !cp.ready:
					cp.ready, changed, beenReady = true, true, true
				case !ok && fails >= failure && cp.ready:
					cp.ready, changed = false, true
				}
			}
			cp.mu.Unlock()
			if changed {
				wake()
			}
			if done {
				return
			}
		}
		var soon <-chan time.Time
		var timer *time.Timer
		if started && kind == probeReadiness && !beenReady {
			retry = min(max(2*retry, readinessRetry), period)
			timer = time.NewTimer(retry)
			soon = timer.C
		}
		var startedCh <-chan struct{}
		if !started {
			startedCh = cp.startedCh
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		case <-soon:
		case <-startedCh:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}
