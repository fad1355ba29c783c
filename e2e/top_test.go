package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTopCLI runs skiff top against three masters, a real worker and a
// hollow one. A pod's container burns CPU under a 250m limit and holds
// 64 MiB (the demo image's `hello spin`) beside one serving HTTP: top pods
// shows the pod busy and holding its memory, --containers tells the two
// apart, top nodes shows the real node's usage and percentages and the
// hollow one as <unknown>, with a warning on stderr, and once the worker
// is killed its node is <unknown> too, at once.
func TestTopCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("runs real containers: run the e2e suite as root")
	}
	imageRef := demoImage(t)
	c := startClusterArgs(t, 3)
	c.waitLeader(60 * time.Second)
	w := startNamedWorker(t, c, "w1", imageRef, "--stats-interval", "1s")
	hollowWorker(t, c, "h1")
	waitNodesReady(t, c, "w1", "h1")

	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: burner
spec:
  nodeName: w1
  terminationGracePeriodSeconds: 2
  containers:
  - name: spin
    image: %[1]s
    command: [/hello, spin, "64"]
    resources:
      limits: {cpu: 250m, memory: 256Mi}
  - name: web
    image: %[1]s
---
apiVersion: v1
kind: Pod
metadata:
  name: ghost
spec:
  nodeName: h1
  containers:
  - name: app
    image: %[1]s
`, imageRef)
	c.mustCLI(t, manifest, "apply", "-f", "-")
	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "pod", "burner")
		if err != nil || !regexpLine(out, "burner", "2/2", "Running") {
			return fmt.Errorf("get pod burner: %v\n%s", err, out)
		}
		return nil
	})

	// The pod's row: CPU near its limit, memory what it holds.
	var stdout, stderr string
	eventually(t, 60*time.Second, func() error {
		var err error
		stdout, stderr, err = topCLI(c, "top", "pods")
		if err != nil {
			return fmt.Errorf("top pods: %v\n%s%s", err, stdout, stderr)
		}
		if !strings.HasPrefix(stdout, "NAME") || !regexpLine(stdout, "NAME", "CPU(cores)", "MEMORY(bytes)") {
			return fmt.Errorf("top pods: no kubectl header:\n%s", stdout)
		}
		cpu, mem, ok := topCells(stdout, "burner")
		if !ok {
			return fmt.Errorf("top pods: no row for burner:\n%s", stdout)
		}
		return plausible("burner", cpu, mem, 50, 400, 64, 250)
	})
	t.Logf("skiff top pods:\n%s", stdout)
	// The pod on the hollow node is left out, with a warning that says so.
	if strings.Contains(stdout, "ghost") || !strings.Contains(stderr, "warning: no usage from hollow nodes (they run no containers): h1") {
		t.Errorf("top pods with a pod on a hollow node:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}

	out, _, err := topCLI(c, "top", "pod", "burner", "--containers")
	if err != nil || !regexpLine(out, "POD", "NAME", "CPU(cores)", "MEMORY(bytes)") {
		t.Fatalf("top pod burner --containers: %v\n%s", err, out)
	}
	if cpu, mem, ok := topCells(out, "burner", "spin"); !ok {
		t.Errorf("top pod burner --containers: no row for spin:\n%s", out)
	} else if err := plausible("spin", cpu, mem, 50, 400, 64, 250); err != nil {
		t.Errorf("top pod burner --containers: %v\n%s", err, out)
	}
	if cpu, mem, ok := topCells(out, "burner", "web"); !ok || cpu > 50 || mem < 1 || mem > 100 {
		t.Errorf("top pod burner --containers: the web container should be nearly idle:\n%s", out)
	}

	out, _, err = topCLI(c, "top", "pods", "-A", "--sort-by=cpu", "--no-headers")
	if _, _, ok := topCells(out, "default", "burner"); err != nil || !ok || strings.Contains(out, "NAME") {
		t.Errorf("top pods -A --sort-by=cpu --no-headers: %v\n%s", err, out)
	}

	// --sum: kubectl's rule and totals below the rows; here the one pod
	// with usage, so its figures again.
	out, _, err = topCLI(c, "top", "pods", "--sum")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) < 4 ||
		!regexp.MustCompile(`^\s+________\s+________$`).MatchString(lines[len(lines)-2]) ||
		!regexp.MustCompile(`^\s+[0-9]+m\s+[0-9]+Mi$`).MatchString(lines[len(lines)-1]) {
		t.Errorf("top pods --sum: %v\n%s", err, out)
	}

	// --field-selector: the pods of the real node only, so no warning
	// about the hollow one.
	out, stderr, err = topCLI(c, "top", "pods", "-A", "--field-selector", "spec.nodeName=w1")
	if _, _, ok := topCells(out, "default", "burner"); err != nil || !ok || strings.Contains(out, "ghost") || stderr != "" {
		t.Errorf("top pods --field-selector spec.nodeName=w1: %v\n%s%s", err, out, stderr)
	}

	// A pod without usage says why.
	out, stderr, err = topCLI(c, "top", "pod", "ghost")
	if err == nil || !strings.Contains(stderr, "no usage for pod default/ghost: node h1 is hollow") {
		t.Errorf("top pod ghost: %v\n%s%s", err, out, stderr)
	}

	// Nodes: the real one's usage covers the pod's; the hollow one is
	// unknown.
	out, stderr, err = topCLI(c, "top", "nodes")
	if err != nil || !regexpLine(out, "NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)") {
		t.Fatalf("top nodes: %v\n%s%s", err, out, stderr)
	}
	t.Logf("skiff top nodes:\n%s", out)
	m := regexp.MustCompile(`(?m)^w1\s+(\d+)m\s+(\d+)%\s+(\d+)Mi\s+(\d+)%\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("top nodes: no row for w1:\n%s", out)
	}
	cpu, _ := strconv.Atoi(m[1])
	cpuPct, _ := strconv.Atoi(m[2])
	mem, _ := strconv.Atoi(m[3])
	memPct, _ := strconv.Atoi(m[4])
	if cpu < 50 || cpuPct < 1 || cpuPct > 100 || mem < 64 || memPct < 1 || memPct > 100 {
		t.Errorf("top nodes: w1 uses %dm (%d%%) and %dMi (%d%%), want at least the pod's 50m and 64Mi, in percentages of its allocatable resources", cpu, cpuPct, mem, memPct)
	}
	if !regexpLine(out, "h1", "<unknown>", "<unknown>", "<unknown>", "<unknown>") || !strings.Contains(stderr, "hollow nodes") {
		t.Errorf("top nodes: h1 should be <unknown>, with a warning:\n%s%s", out, stderr)
	}

	// A killed worker's node cannot be reached: unknown, and the answer
	// does not wait for it.
	w.kill()
	start := time.Now()
	out, stderr, err = topCLI(c, "top", "node", "w1")
	if err != nil || !regexpLine(out, "w1", "<unknown>", "<unknown>", "<unknown>", "<unknown>") ||
		!strings.Contains(stderr, "warning: no usage from node w1: cannot reach the worker of node w1") {
		t.Errorf("top node w1 after killing its worker: %v\n%s%s", err, out, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("top node w1 took %v with its worker down, want an answer at once", d)
	}
	// So do the logs of its pod: the masters would all relay to the same
	// worker, so the client does not try them one after another for its
	// whole retry time (15 s).
	start = time.Now()
	out, stderr, err = topCLI(c, "logs", "burner", "-c", "web")
	if err == nil || !strings.Contains(stderr, "cannot reach the worker of node w1") {
		t.Errorf("logs of a pod on a killed worker: %v\n%s%s", err, out, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("logs of a pod on a killed worker took %v, want an error at once", d)
	}
}

// topCLI runs skiff and returns its stdout and stderr apart: the tables
// go to one, warnings to the other.
func topCLI(c *cluster, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(c.t.TempDir(), "none.yaml"))
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// topCells finds the row whose leading cells are lead and returns its CPU
// in millicores and memory in MiB.
func topCells(table string, lead ...string) (milli, mib int, ok bool) {
	re := `(?m)^` + strings.Join(lead, `\s+`) + `\s+(\d+)m\s+(\d+)Mi\s*$`
	m := regexp.MustCompile(re).FindStringSubmatch(table)
	if m == nil {
		return 0, 0, false
	}
	milli, _ = strconv.Atoi(m[1])
	mib, _ = strconv.Atoi(m[2])
	return milli, mib, true
}

// plausible checks a row's CPU and memory against the ranges a busy
// container under its limit should show.
func plausible(what string, milli, mib, minMilli, maxMilli, minMiB, maxMiB int) error {
	if milli < minMilli || milli > maxMilli || mib < minMiB || mib > maxMiB {
		return fmt.Errorf("%s uses %dm and %dMi, want %d-%dm and %d-%dMi", what, milli, mib, minMilli, maxMilli, minMiB, maxMiB)
	}
	return nil
}
