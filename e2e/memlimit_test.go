package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServerMemoryLimitFromCgroup: a master started in a cgroup with a
// memory limit gives Go's collector 90% of it (GOMEMLIMIT), as the Go
// runtime reports on /metrics, and says so in its log; a GOMEMLIMIT in the
// environment wins.
func TestServerMemoryLimitFromCgroup(t *testing.T) {
	root, limitFile := memoryCgroupRoot(t)
	cg := filepath.Join(root, fmt.Sprintf("skiff-e2e-memlimit-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The master is killed before this runs (cleanups run last
		// first); its cgroup goes once it is empty.
		if err := poll(10*time.Second, func() error {
			if err := os.Remove(cg); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("remove cgroup %s: %v", cg, err)
		}
	})
	limit := uint64(512 << 20)
	if err := os.WriteFile(filepath.Join(cg, limitFile), []byte(fmt.Sprint(limit)), 0o644); err != nil {
		t.Fatal(err)
	}

	c := startClusterWith(t, 1, clusterOptions{insecure: true, logLevel: "info", cgroup: cg})
	m := c.masters[0]
	gomemlimit := func(want float64) {
		t.Helper()
		waitGauge(t, m.httpAd, "go_gc_gomemlimit_bytes", want)
	}
	gomemlimit(float64(uint64(float64(limit) * 0.9))) // memlimit truncates the product
	if log, _ := os.ReadFile(m.logPath); !strings.Contains(string(log), "Go's memory limit follows the cgroup's") {
		t.Errorf("the master's log does not tell its memory limit:\n%s", tailFile(m.logPath, 20))
	}

	c.kill(m)
	m.cgroup, m.env = "", []string{"GOMEMLIMIT=300MiB"}
	c.start(m)
	gomemlimit(300 << 20)
}

// memoryCgroupRoot is where the test can make a cgroup with a memory
// limit: cgroup v1's memory hierarchy, or the v2 root when it delegates the
// memory controller; and the limit's file there.
func memoryCgroupRoot(t *testing.T) (dir, limitFile string) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		return "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control"); err == nil && slices.Contains(strings.Fields(string(b)), "memory") {
		return "/sys/fs/cgroup", "memory.max"
	}
	t.Fatal("no memory cgroup controller to start a master under: run the e2e suite as root on a host with cgroup v1's memory hierarchy or cgroup v2's memory controller")
	return "", ""
}
