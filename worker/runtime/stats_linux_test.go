package runtime

import (
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestWorkingSet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		usage uint64
		stats map[string]uint64
		v2    bool
		want  uint64
	}{
		{"v1 subtracts total_inactive_file", 100 << 20, map[string]uint64{"total_inactive_file": 30 << 20, "inactive_file": 1 << 20}, false, 70 << 20},
		{"v2 subtracts inactive_file", 100 << 20, map[string]uint64{"inactive_file": 30 << 20}, true, 70 << 20},
		{"no inactive file: usage", 5 << 20, map[string]uint64{}, false, 5 << 20},
		{"more inactive than usage: zero", 5 << 20, map[string]uint64{"total_inactive_file": 6 << 20}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := cgroups.MemoryStats{Usage: cgroups.MemoryData{Usage: tc.usage}, Stats: tc.stats}
			if got := workingSet(ms, tc.v2); got != tc.want {
				t.Errorf("workingSet = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestContainerUsage reads a busy container's cgroup through the
// library: its CPU counter grows at about its limit, its working set
// holds what it allocated, the node's counters cover it, and a removed
// container has no usage.
func TestContainerUsage(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-usage", SandboxOptions{})
	c := app("busy", "alloc", "48", "spin", "1h")
	c.Resources = &pb.ResourceRequirements{Limits: map[string]string{"cpu": "200m", "memory": "256Mi"}}
	id := e.start(t, sb, c)
	e.waitLog(t, id, "stdout: allocated 48 MiB")

	first, err := e.rt.ContainerUsage(id, true)
	if err != nil {
		t.Fatal(err)
	}
	if !first.HasMemory || first.MemoryWorkingSet < 48<<20 || first.MemoryUsage < first.MemoryWorkingSet || first.MemoryUsage > 256<<20 {
		t.Errorf("memory = %+v, want a working set of at least 48 MiB within the usage and the limit", first)
	}
	var last Usage
	eventually(t, 30*time.Second, "a second of the container's CPU counter", func() bool {
		u, err := e.rt.ContainerUsage(id, false)
		if err != nil {
			t.Fatal(err)
		}
		last = u
		return u.Time.Sub(first.Time) >= time.Second
	})
	if last.HasMemory || last.MemoryWorkingSet != 0 {
		t.Errorf("a CPU-only read has memory: %+v", last)
	}
	// Limited to 200m: a fifth of a core, as the CFS quota enforces it
	// over 100 ms periods; the machine may give it less when busy.
	rate := float64(last.CPUNanos-first.CPUNanos) / last.Time.Sub(first.Time).Seconds() / 1e9
	if rate < 0.02 || rate > 0.3 {
		t.Errorf("CPU rate = %.3f cores over %v, want about 0.2 (its limit)", rate, last.Time.Sub(first.Time))
	}
	t.Logf("container: %.3f cores, working set %d MiB, usage %d MiB", rate, first.MemoryWorkingSet>>20, first.MemoryUsage>>20)
	node, err := e.rt.NodeUsage(true)
	if err != nil {
		t.Fatal(err)
	}
	if node.CPUNanos < last.CPUNanos || node.MemoryWorkingSet < first.MemoryWorkingSet || node.MemoryUsage < node.MemoryWorkingSet {
		t.Errorf("node usage %+v does not cover the container's %+v", node, last)
	}

	if err := e.rt.Remove(ctxFor(t, 30*time.Second), id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.ContainerUsage(id, true); !errors.Is(err, ErrNotFound) {
		t.Errorf("usage of a removed container: %v, want ErrNotFound", err)
	}
}
