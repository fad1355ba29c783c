package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuCgroups measures the CPU of groups of processes, exited ones
// included, through the cgroup hierarchy that accounts CPU time: cgroup
// v1's cpuacct or the unified (v2) one. /proc/PID/stat counts in 10 ms
// ticks per process and loses the processes that were never reaped, which
// for short-lived starters (a shim's helpers, runc) is all of them.
type cpuCgroups struct {
	root string // where the hierarchy is mounted
	v2   bool
}

// findCPUCgroups finds the hierarchy in /proc/self/mountinfo: a v1 mount
// with the cpuacct controller, else the unified one.
func findCPUCgroups() (cpuCgroups, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cpuCgroups{}, err
	}
	defer f.Close()
	var unified string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch qf[0] {
		case "cgroup":
			for _, o := range strings.Split(qf[2], ",") {
				if o == "cpuacct" {
					return cpuCgroups{root: pf[4]}, nil
				}
			}
		case "cgroup2":
			if unified == "" {
				unified = pf[4]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return cpuCgroups{}, err
	}
	if unified == "" {
		return cpuCgroups{}, errors.New("no cgroup hierarchy accounts CPU time (neither cpuacct nor cgroup2 is mounted)")
	}
	return cpuCgroups{root: unified, v2: true}, nil
}

func (c cpuCgroups) dir(path string) string { return filepath.Join(c.root, path) }

// create makes the cgroup path (relative to the hierarchy's root).
func (c cpuCgroups) create(path string) error { return os.Mkdir(c.dir(path), 0o755) }

// remove removes the cgroup path, which must hold no process.
func (c cpuCgroups) remove(path string) error {
	if err := os.Remove(c.dir(path)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// killAll SIGKILLs every process left in the cgroup path and waits up to
// within for it to be empty. It returns how many it killed.
func (c cpuCgroups) killAll(path string, within time.Duration) (int, error) {
	killed := 0
	deadline := time.Now().Add(within)
	for {
		data, err := os.ReadFile(filepath.Join(c.dir(path), "cgroup.procs"))
		if os.IsNotExist(err) {
			return killed, nil
		}
		if err != nil {
			return killed, err
		}
		pids := strings.Fields(string(data))
		if len(pids) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("cgroup %s still holds processes %v after %s", c.dir(path), pids, within)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// move puts process pid into the cgroup path; its later children start
// there.
func (c cpuCgroups) move(path string, pid int) error {
	return os.WriteFile(filepath.Join(c.dir(path), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// usage is the CPU time the processes of path and of its descendants have
// used, 0 for a cgroup that does not exist.
func (c cpuCgroups) usage(path string) (time.Duration, error) {
	if c.v2 {
		data, err := os.ReadFile(filepath.Join(c.dir(path), "cpu.stat"))
		if os.IsNotExist(err) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return time.Duration(us) * time.Microsecond, err
			}
		}
		return 0, fmt.Errorf("%s: no usage_usec", filepath.Join(c.dir(path), "cpu.stat"))
	}
	data, err := os.ReadFile(filepath.Join(c.dir(path), "cpuacct.usage"))
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return time.Duration(ns), err
}
