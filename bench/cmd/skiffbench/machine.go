package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machineCPU is the machine's CPU time so far, in clock ticks, from the
// first line of /proc/stat: all of it, and steal, the time this virtual
// machine's CPUs had work while the hypervisor ran something else. On a
// shared VM that is the noise a run cannot tell from its own figures: a
// run with 20 % stolen had a fifth less CPU than a quiet one.
type machineCPU struct {
	total, steal uint64
	ok           bool
}

func readMachineCPU() machineCPU {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return parseMachineCPU(line)
}

// parseMachineCPU reads the "cpu" line: user nice system idle iowait irq
// softirq steal [guest guest_nice], where guest time is already in user.
func parseMachineCPU(line string) machineCPU {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	for i := 1; i <= 8; i++ {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return machineCPU{}
		}
		m.total += v
		if i == 8 {
			m.steal = v
		}
	}
	m.ok = true
	return m
}

// stealSince is the share of the machine's CPU time since earlier that the
// hypervisor took, or -1 when it is not known (no /proc/stat, or no tick
// passed).
func (m machineCPU) stealSince(earlier machineCPU) float64 {
	if !m.ok || !earlier.ok || m.total <= earlier.total || m.steal < earlier.steal {
		return -1
	}
	return float64(m.steal-earlier.steal) / float64(m.total-earlier.total)
}

// stealNote is a share from stealSince for a row's note.
func stealNote(share float64) string {
	if share < 0 {
		return ""
	}
	return fmt.Sprintf("host steal %.1f%%", 100*share)
}

// joinNotes joins the non-empty parts of a note.
func joinNotes(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

// syncProbe is what a small write and its fdatasync cost on the disk the
// runs keep their data on: every raft round costs each master a bolt
// commit of two of them, so this sets the floor of a write at one client
// and a good part of its CPU (on a virtual disk each sync is a round trip
// to the hypervisor that the guest also pays for in CPU time).
type syncProbe struct {
	p50, p99 time.Duration // wall time of a 4 KB pwrite + fdatasync
	cpu      time.Duration // mean CPU time of the calling thread per sync
}

func (p syncProbe) String() string {
	return fmt.Sprintf("4 KB write + fdatasync p50 %.0f us, p99 %.0f us, %.0f us CPU", us(p.p50), us(p.p99), us(p.cpu))
}

// probeSync writes n 4 KB blocks, each followed by fdatasync, into a file
// in dir whose blocks are already allocated and written (as bolt reuses
// its freed pages), and measures them.
func probeSync(dir string, n int) (syncProbe, error) {
	f, err := os.CreateTemp(dir, "skiffbench-sync-*")
	if err != nil {
		return syncProbe{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const blocks = 256
	block := make([]byte, 4096)
	if _, err := f.Write(make([]byte, blocks*len(block))); err != nil {
		return syncProbe{}, err
	}
	if err := f.Sync(); err != nil {
		return syncProbe{}, err
	}
	// The thread's own CPU time: this goroutine stays on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, err := threadCPU()
	if err != nil {
		return syncProbe{}, err
	}
	walls := make([]time.Duration, 0, n)
	fd := int(f.Fd())
	for i := 0; i < n; i++ {
		block[0] = byte(i)
		t0 := time.Now()
		if _, err := unix.Pwrite(fd, block, int64(i%blocks)*int64(len(block))); err != nil {
			return syncProbe{}, fmt.Errorf("probe %s: %w", filepath.Base(f.Name()), err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			return syncProbe{}, fmt.Errorf("probe %s: fdatasync: %w", filepath.Base(f.Name()), err)
		}
		walls = append(walls, time.Since(t0))
	}
	cpu1, err := threadCPU()
	if err != nil {
		return syncProbe{}, err
	}
	sortDurations(walls)
	return syncProbe{p50: percentile(walls, 50), p99: percentile(walls, 99), cpu: (cpu1 - cpu0) / time.Duration(n)}, nil
}

func threadCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
