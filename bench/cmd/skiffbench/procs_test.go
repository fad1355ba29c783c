package main

import (
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// TestCPUMeter measures a busy child process and this process's own spin.
func TestCPUMeter(t *testing.T) {
	child := exec.Command("sh", "-c", "while :; do :; done")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	m := startCPU([]int{child.Process.Pid, 1 << 30}) // the second PID does not exist
	// Spin until this process has used 100ms of CPU and the child 50ms.
	deadline := time.Now().Add(20 * time.Second)
	var servers []time.Duration
	var self time.Duration
	for x := 0; ; x++ {
		if x%100000 == 0 {
			servers, self = m.stop()
			if self >= 100*time.Millisecond && servers[0] >= 50*time.Millisecond {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 20s: self %v, child %v", self, servers[0])
			}
		}
	}
	if len(servers) != 2 || servers[1] != 0 {
		t.Fatalf("servers = %v, want the missing process counted as 0", servers)
	}
	if servers[0] > 30*time.Second || self > 30*time.Second {
		t.Fatalf("implausible CPU: child %v, self %v", servers[0], self)
	}
}

func TestCPUPerWrite(t *testing.T) {
	r := writeResult{ops: 1000, elapsed: time.Second,
		serverCPU: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond},
		clientCPU: 400 * time.Millisecond}
	servers, clients, busy := r.cpuPerWrite()
	if servers != 600*time.Microsecond || clients != 400*time.Microsecond {
		t.Fatalf("per write: servers %v, clients %v; want 600us, 400us", servers, clients)
	}
	if want := 1.0 / float64(runtime.NumCPU()); busy < want-1e-9 || busy > want+1e-9 {
		t.Fatalf("busy = %v, want %v", busy, want)
	}
	if s, c, b := (writeResult{ops: 10, elapsed: time.Second}).cpuPerWrite(); s != 0 || c != 0 || b != 0 {
		t.Fatalf("without servers: %v %v %v, want zeros", s, c, b)
	}
}
