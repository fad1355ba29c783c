package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// TestServerTimerSlack: a master runs every thread with a timer slack of
// 1 ms (--timer-slack), or the kernel's 50 us with --timer-slack 0.
func TestServerTimerSlack(t *testing.T) {
	c := startClusterWith(t, 1, clusterOptions{insecure: true, logLevel: "info"})
	m := c.masters[0]
	pid := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.cmd.Process.Pid
	}
	c.waitLeader(60 * time.Second)
	assertTimerSlack(t, "master", pid(), "1000000")

	c.kill(m)
	m.args = append(m.args, "--timer-slack", "0")
	c.start(m)
	c.waitLeader(60 * time.Second)
	assertTimerSlack(t, "master with --timer-slack 0", pid(), "50000")
}

// assertWorkerTimerSlack checks that the worker and the shims of its
// running containers run with the worker's timer slack (1 ms by default),
// and the containers' programs with the kernel's (shim.ContainerTimerSlack).
func assertWorkerTimerSlack(t *testing.T, w *workerProc) {
	t.Helper()
	assertTimerSlack(t, "worker", w.cmd.Process.Pid, "1000000")
	states, _ := filepath.Glob(filepath.Join(w.dataDir, "state", "containers", "*", "shim.json"))
	if len(states) == 0 {
		t.Fatalf("no container shim state under %s", w.dataDir)
	}
	for _, p := range states {
		ss, err := shim.ReadJSON[shim.State](p)
		if err != nil {
			t.Fatal(err)
		}
		assertTimerSlack(t, "shim", ss.ShimPid, "1000000")
		assertTimerSlack(t, "container", ss.InitPid, fmt.Sprint(shim.ContainerTimerSlack.Nanoseconds()))
	}
}

// assertTimerSlack checks the timer slack of every thread of process pid.
func assertTimerSlack(t *testing.T, what string, pid int, want string) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("%s (pid %d): %v", what, pid, err)
	}
	var got []string
	for _, task := range tasks {
		// Per thread, under /proc/TID.
		b, err := os.ReadFile("/proc/" + task.Name() + "/timerslack_ns")
		if err != nil {
			continue // the thread ended
		}
		if s := strings.TrimSpace(string(b)); !slices.Contains(got, s) {
			got = append(got, s)
		}
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("%s (pid %d): its threads' timer slack %v ns, want %s", what, pid, got, want)
	}
}
