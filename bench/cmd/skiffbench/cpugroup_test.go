package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestCPUCgroupsCountExitedProcesses checks what podstart relies on: a
// process started in a cgroup, and its children, are counted after they
// have exited (unreaped helpers are the point), and nothing else is.
func TestCPUCgroupsCountExitedProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creates cgroups: needs root (run the tests as root, as make test in CI does)")
	}
	cg, err := findCPUCgroups()
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/skiffbench-test-%d", os.Getpid())
	if err := cg.create(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.remove(path); err != nil {
			t.Errorf("remove %s: %v", cg.dir(path), err)
		}
	})
	if d, err := cg.usage(path); err != nil || d != 0 {
		t.Fatalf("a new cgroup's usage = %v, %v; want 0", d, err)
	}
	// A shell moves itself into the cgroup, then a child of it spins for
	// a while: both exit before the usage is read.
	spin := `echo $$ > "$1" && sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'`
	cmd := exec.Command("sh", "-c", spin, "sh", filepath.Join(cg.dir(path), "cgroup.procs"))
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	wall := time.Since(start)
	used, err := cg.usage(path)
	if err != nil {
		t.Fatal(err)
	}
	own := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() // the shell and its reaped child
	if used < own/2 || used > wall*2 {
		t.Fatalf("cgroup usage %v; the processes' own rusage says %v, wall time %v", used, own, wall)
	}
	if own < 10*time.Millisecond {
		t.Fatalf("the spinning child used only %v: the check above proves little", own)
	}
	if d, err := cg.usage("/skiffbench-test-absent"); err != nil || d != 0 {
		t.Fatalf("a missing cgroup's usage = %v, %v; want 0, nil", d, err)
	}

	// What is left in a cgroup is killed, so that it can be removed. The
	// shell says "in" once it has moved itself there.
	left := exec.Command("sh", "-c", `echo $$ > "$1" && echo in && exec sleep 60`, "sh", filepath.Join(cg.dir(path), "cgroup.procs"))
	stdout, err := left.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := left.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = left.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "in\n" {
		t.Fatalf("the process did not enter the cgroup: %q, %v", line, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- left.Wait() }()
	if n, err := cg.killAll(path, 5*time.Second); err != nil || n != 1 {
		t.Fatalf("killAll = %d, %v; want 1 killed", n, err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed process did not exit")
	}
}
