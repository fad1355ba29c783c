package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// skiff port-forward carries connections from a local port to a pod on a
// real worker, through the masters, one stream per connection; a
// deployment or service names one of its running pods, and a service's
// port is forwarded to its targetPort.
func TestPortForward(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("runs real containers: run the e2e suite as root")
	}
	imageRef := demoImage(t)
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	startWorker(t, c, imageRef)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: pf
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hello
    image: %[1]s
    env:
    - {name: GREETING, value: hello via port-forward}
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: pfweb
spec:
  replicas: 1
  selector:
    matchLabels: {app: pfweb}
  template:
    metadata:
      labels: {app: pfweb}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: hello
        image: %[1]s
        env:
        - {name: GREETING, value: hello via a service}
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: pfweb
spec:
  selector: {app: pfweb}
  ports:
  - {name: web, port: 80, targetPort: http}
`, imageRef)
	c.mustCLI(t, manifest, "apply", "-f", "-")
	eventually(t, 90*time.Second, func() error {
		out, err := c.cli("", "get", "pods")
		if err != nil || !regexpLine(out, "pf", "1/1", "Running") {
			return fmt.Errorf("get pods: %v\n%s", err, out)
		}
		if out, err := c.cli("", "get", "pods", "-l", "app=pfweb"); err != nil || !regexpLine(out, "1/1", "Running") {
			return fmt.Errorf("get pods -l app=pfweb: %v\n%s", err, out)
		}
		return nil
	})

	// A free local port (":8080"); two requests are two connections, so
	// two streams.
	pf := startPortForward(t, c, "pod/pf", ":8080")
	local := pf.waitForwarding(t, `Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
	for i := range 2 {
		if body := httpGet(t, local); body != "hello via port-forward from pf\n" {
			t.Errorf("request %d through port %s: %q, want the pod's greeting", i, local, body)
		}
	}
	pf.waitOutput(t, fmt.Sprintf("Handling connection for %s\nHandling connection for %s\n", local, local))
	pf.stop(t)

	// A service's port 80 is its targetPort http, 8080, on a pod of the
	// deployment; deployment/NAME picks the same pod.
	port := strconv.Itoa(freePort(t))
	pf = startPortForward(t, c, "service/pfweb", port+":80")
	pf.waitForwarding(t, `Forwarding from 127\.0\.0\.1:(`+port+`) -> 8080`)
	if body := httpGet(t, port); !strings.HasPrefix(body, "hello via a service from pfweb-") {
		t.Errorf("through service/pfweb: %q, want the deployment's pod's greeting", body)
	}
	pf.stop(t)
	pf = startPortForward(t, c, "deployment/pfweb", ":http")
	local = pf.waitForwarding(t, `Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
	if body := httpGet(t, local); !strings.HasPrefix(body, "hello via a service from pfweb-") {
		t.Errorf("through deployment/pfweb: %q, want its pod's greeting", body)
	}
	pf.stop(t)

	// Nothing listens on the pod's port 9: the connection is refused, and
	// the command says so and keeps forwarding.
	pf = startPortForward(t, c, "pf", ":9")
	local = pf.waitForwarding(t, `Forwarding from 127\.0\.0\.1:(\d+) -> 9`)
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://127.0.0.1:" + local + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("a request to the pod's closed port 9 answered %s", resp.Status)
	}
	pf.waitOutput(t, "connect to pod default/pf port 9: connection refused")
	pf.stop(t)

	if out, err := c.cli("", "port-forward", "pf", "abc:8080"); err == nil || !strings.Contains(out, `port "abc:8080": local port "abc"`) {
		t.Errorf("a bad port: %v\n%s", err, out)
	}

	// The pod goes: the command says so and fails, as kubectl's does,
	// instead of listening for a pod that is not there.
	pf = startPortForward(t, c, "pod/pf", ":8080")
	pf.waitForwarding(t, `Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
	c.mustCLI(t, "", "delete", "pod", "pf", "--wait=false")
	select {
	case <-pf.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("port-forward still running 60s after its pod was deleted:\n%s", pf.output())
	}
	if pf.err == nil || !strings.Contains(pf.output(), "error: lost connection to pod") {
		t.Errorf("port-forward after its pod was deleted exited with %v:\n%s", pf.err, pf.output())
	}
}

// portForward is a running skiff port-forward.
type portForward struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer // stdout and stderr
	done chan struct{}
	err  error
}

func (p *portForward) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *portForward) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startPortForward(t *testing.T, c *cluster, args ...string) *portForward {
	t.Helper()
	p := &portForward{done: make(chan struct{})}
	p.cmd = exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), append([]string{"port-forward"}, args...)...)...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start port-forward: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitForwarding waits for the "Forwarding from" line that re matches and
// returns its first group (the local port).
func (p *portForward) waitForwarding(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var port string
	eventually(t, 30*time.Second, func() error {
		if m := rx.FindStringSubmatch(p.output()); m != nil {
			port = m[1]
			return nil
		}
		select {
		case <-p.done:
			t.Fatalf("port-forward exited (%v) before listening:\n%s", p.err, p.output())
		default:
		}
		return fmt.Errorf("no line matching %s in:\n%s", re, p.output())
	})
	return port
}

func (p *portForward) waitOutput(t *testing.T, want string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(p.output(), want) {
			return fmt.Errorf("no %q in:\n%s", want, p.output())
		}
		return nil
	})
}

// stop interrupts the command, as Ctrl-C does, and waits for it to exit
// successfully.
func (p *portForward) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatalf("interrupt port-forward: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("port-forward still running 30s after Ctrl-C:\n%s", p.output())
	}
	if p.err != nil {
		t.Errorf("port-forward exited with %v:\n%s", p.err, p.output())
	}
}

// httpGet fetches http://127.0.0.1:port/ on a connection of its own.
func httpGet(t *testing.T, port string) string {
	t.Helper()
	cl := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatalf("GET through port %s: %v", port, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET through port %s: %v", port, err)
	}
	return string(body)
}
