package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRolloutCLI drives a Deployment through the operator commands against
// real masters and two hollow workers: rollout status, set image, history,
// undo, scale, cordon and drain.
func TestRolloutCLI(t *testing.T) {
	c := startClusterArgs(t, 3)
	c.waitLeader(60 * time.Second)
	hollowWorker(t, c, "h1")
	hollowWorker(t, c, "h2")
	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !regexpLine(out, "h1", "Ready") || !regexpLine(out, "h2", "Ready") {
			return fmt.Errorf("get nodes: %v\n%s", err, out)
		}
		return nil
	})
	run := func(args ...string) string {
		t.Helper()
		out, err := c.cli("", args...)
		if err != nil {
			t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out, err := c.cli(`
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
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	want := `deployment "web" successfully rolled out`
	if out := run("rollout", "status", "deployment/web", "--request-timeout", "60s"); !strings.Contains(out, want) {
		t.Fatalf("rollout status: %s", out)
	}

	run("set", "image", "deployment/web", "app=example/web:v2")
	if out := run("rollout", "status", "deployment/web", "--request-timeout", "60s"); !strings.Contains(out, want) {
		t.Fatalf("rollout status after set image: %s", out)
	}
	if out := run("get", "deploy", "web", "-o", "wide"); !strings.Contains(out, "example/web:v2") || !regexpLine(out, "web", "4/4") {
		t.Errorf("after set image:\n%s", out)
	}
	out := run("rollout", "history", "deployment/web")
	if !regexpLine(out, "1") || !regexpLine(out, "2") {
		t.Errorf("rollout history lacks revisions 1 and 2:\n%s", out)
	}

	run("rollout", "undo", "deployment/web")
	if out := run("rollout", "status", "deployment/web", "--request-timeout", "60s"); !strings.Contains(out, want) {
		t.Fatalf("rollout status after undo: %s", out)
	}
	if out := run("get", "deploy", "web", "-o", "wide"); !strings.Contains(out, "example/web:v1") {
		t.Errorf("undo did not bring back v1:\n%s", out)
	}

	run("scale", "deployment", "web", "--replicas", "2")
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pods", "-l", "app=web")
		if n := strings.Count(out, "Running"); err != nil || n != 2 || strings.Count(out, "\n") != 3 {
			return fmt.Errorf("want exactly 2 Running pods after scale: %v\n%s", err, out)
		}
		return nil
	})

	// cordon + drain h1: every pod ends up on h2.
	run("cordon", "h1")
	if out := run("get", "nodes"); !regexpLine(out, "h1", "Ready,SchedulingDisabled") {
		t.Errorf("cordoned node:\n%s", out)
	}
	if out := run("drain", "h1", "--ignore-daemonsets", "--timeout", "60s"); !strings.Contains(out, "node/h1 drained") {
		t.Fatalf("drain: %s", out)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pods", "-l", "app=web", "-o", "wide")
		// Match the NODE column: a pod's random name may contain "h2".
		onH1, onH2 := 0, 0
		for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			switch f := strings.Fields(line); f[len(f)-1] {
			case "h1":
				onH1++
			case "h2":
				onH2++
			}
		}
		if err != nil || onH2 != 2 || onH1 != 0 {
			return fmt.Errorf("want both pods on h2 after draining h1: %v\n%s", err, out)
		}
		return nil
	})
	run("uncordon", "h1")
	if out := run("get", "nodes"); !regexpLine(out, "h1", "Ready") || strings.Contains(out, "SchedulingDisabled") {
		t.Errorf("uncordoned node:\n%s", out)
	}
}
