package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOperatorCLI drives the operator commands against real masters the way
// a person would: watch, describe, delete, leadership transfer, and a
// snapshot saved from one cluster and restored onto a fresh one.
func TestOperatorCLI(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, err := c.cli(stdin, args...)
		if err != nil {
			t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// get -w prints the list, then every change.
	var watchOut syncBuffer
	watch := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), "get", "configmaps", "-n", "default", "-w")...)
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	watch.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(watchOut.String(), "No configmaps found") {
			return fmt.Errorf("watch output so far: %q", watchOut.String())
		}
		return nil
	})
	run(`
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {tier: web}}
data: {color: blue}
`, "apply", "-f", "-")
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(watchOut.String(), "settings") {
			return fmt.Errorf("watch did not show the new configmap: %q", watchOut.String())
		}
		return nil
	})
	// Interrupt ends the watch cleanly.
	watch.Process.Signal(syscall.SIGINT)
	if err := watch.Wait(); err != nil {
		t.Errorf("get -w after Ctrl-C: %v\n%s", err, watchOut.String())
	}

	out := run("", "describe", "configmap/settings")
	for _, want := range []string{"Name:", "settings", "Labels:", "tier=web", "Data:", "color: blue", "Events:"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}

	// Leadership moves where it is asked to.
	out = run("", "cluster", "transfer-leadership", "--to", "m2")
	if !strings.Contains(out, "m2") {
		t.Errorf("transfer-leadership --to m2: %s", out)
	}
	if l := c.waitLeader(10 * time.Second); l.name != "m2" {
		t.Errorf("leader after transfer is %s, want m2", l.name)
	}

	// Snapshot from this cluster, restore onto a fresh one.
	snap := filepath.Join(t.TempDir(), "backup.snap")
	out = run("", "cluster", "snapshot", "save", snap)
	if !strings.Contains(out, "saved snapshot") {
		t.Errorf("snapshot save: %s", out)
	}
	fresh := startCluster(t, 1)
	fresh.waitLeader(30 * time.Second)
	if out, err := fresh.cli("", "get", "configmap", "settings"); err == nil {
		t.Fatalf("fresh cluster already has the configmap:\n%s", out)
	}
	if out, err := fresh.cli("", "cluster", "snapshot", "restore", snap); err != nil || !strings.Contains(out, "restored") {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	out, err := fresh.cli("", "get", "configmap", "settings", "-o", "yaml")
	if err != nil || !strings.Contains(out, "color: blue") {
		t.Errorf("restored cluster lacks the configmap (err %v):\n%s", err, out)
	}
	// The restored cluster takes writes after the restored state.
	if out, err := fresh.cli("", "delete", "configmap", "settings"); err != nil || !strings.Contains(out, "configmap/settings deleted") {
		t.Errorf("delete on the restored cluster (err %v): %s", err, out)
	}

	// delete on the original cluster, then the object is gone.
	out = run("", "delete", "configmap", "settings")
	if !strings.Contains(out, "configmap/settings deleted") {
		t.Errorf("delete: %s", out)
	}
	if out, err := c.cli("", "get", "configmap", "settings"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("get after delete: want not found, got (err %v) %s", err, out)
	}
}
