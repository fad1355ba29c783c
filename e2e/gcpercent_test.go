package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServerGCPercent: masters run with their own Go GC target (200) unless
// --gc-percent says otherwise, as the Go runtime reports it on /metrics,
// and a target too low to be sane is refused naming the flag.
func TestServerGCPercent(t *testing.T) {
	c := startClusterWith(t, 1, clusterOptions{insecure: true, logLevel: "info"})
	m := c.masters[0]
	gogc := func(want float64) {
		t.Helper()
		waitGauge(t, m.httpAd, "go_gc_gogc_percent", want)
	}
	gogc(200)

	c.kill(m)
	m.args = append(m.args, "--gc-percent", "150")
	c.start(m)
	gogc(150)

	out, err := exec.Command(skiffBin, "server", "--insecure", "--gc-percent", "10", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--gc-percent 10: must be at least 25") {
		t.Fatalf("--gc-percent 10: err %v, output:\n%s", err, out)
	}
}

// waitGauge waits until the master at httpAddr reports want for the gauge
// name on /metrics.
func waitGauge(t *testing.T, httpAddr, name string, want float64) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		v, err := scrapeGauge(httpAddr, name)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("%s = %v, want %v", name, v, want)
		}
		return nil
	})
}
