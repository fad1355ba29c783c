package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hollowWorker starts a `skiff worker --hollow` process: a node that runs
// no containers but registers, heartbeats and reports pod status like a
// real one, with the cluster's token (its own certificate) unless the
// cluster is insecure.
func hollowWorker(t *testing.T, c *cluster, name string) *workerProc {
	t.Helper()
	dir := t.TempDir()
	var joins []string
	for _, m := range c.masters {
		joins = append(joins, m.gossip)
	}
	w := &workerProc{t: t, logPath: filepath.Join(dir, name+".log"), args: []string{
		"worker", "--hollow", "--name", name, "--data-dir", filepath.Join(dir, name),
		"--join", strings.Join(joins, ","), "--listen-addr", "127.0.0.1:0",
		"--heartbeat-interval", "1s", "--log-level", "debug",
	}}
	w.args = append(w.args, c.securityArgs()...)
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("---- last log lines of %s ----\n%s", name, tailFile(w.logPath, 40))
		}
	})
	w.start()
	return w
}

// TestKilledWorkerPodsReplaced: a Deployment's pods on a worker that is
// SIGKILLed are evicted once the node is unreachable for their
// tolerationSeconds, and the ReplicaSet replaces them on the other worker.
func TestKilledWorkerPodsReplaced(t *testing.T) {
	c := startClusterArgs(t, 3, "--node-monitor-grace-period", "3s", "--node-startup-grace-period", "1s",
		"--default-toleration-seconds", "2")
	c.waitLeader(60 * time.Second)
	w1 := hollowWorker(t, c, "h1")
	hollowWorker(t, c, "h2")
	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "h1", "Ready") || !regexpLine(out, "h2", "Ready") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		return nil
	})
	out, err := c.cli(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: example/web:v1
        resources: {requests: {cpu: 10m, memory: 16Mi}}
`, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// podsOn counts Running pods of the Deployment per node.
	podsOn := func() (map[string]int, string, error) {
		out, err := c.cli("", "get", "pods", "-l", "app=web", "-o", "wide")
		if err != nil {
			return nil, out, err
		}
		n := map[string]int{}
		for _, line := range strings.Split(out, "\n")[1:] {
			f := strings.Fields(line)
			if len(f) >= 7 && f[2] == "Running" {
				n[f[6]]++
			}
		}
		return n, out, nil
	}
	eventually(t, 60*time.Second, func() error {
		n, out, err := podsOn()
		if err != nil || n["h1"]+n["h2"] != 4 || n["h1"] == 0 {
			return fmt.Errorf("want 4 Running pods spread over h1 and h2: %v\n%s", err, out)
		}
		return nil
	})

	killed := time.Now()
	w1.kill()
	eventually(t, 60*time.Second, func() error {
		n, out, err := podsOn()
		if err != nil || n["h2"] != 4 || n["h1"] != 0 {
			return fmt.Errorf("want all 4 pods Running on h2: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("pods of the killed worker replaced on h2 %.1fs after the kill (grace 3s, toleration 2s)", time.Since(killed).Seconds())
	// The evicted pods cannot be confirmed by their dead worker; once their
	// grace period has passed they are removed, leaving exactly 4.
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pods", "-l", "app=web")
		if got := strings.Count(out, "\n") - 1; err != nil || got != 4 {
			return fmt.Errorf("%d pods remain, want exactly 4 (%v):\n%s", got, err, out)
		}
		return nil
	})
}
