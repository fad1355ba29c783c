package runtime

import (
	"fmt"
	"path"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
)

// ContainerUsage reads the counters of container id's cgroup (with the
// memory controller's too when withMemory is set: the CPU counter alone
// is the cheap read a sampler repeats). It fails with ErrNotFound for an
// unknown container and ErrNotRunning once the cgroup is gone.
func (r *Runtime) ContainerUsage(id string, withMemory bool) (Usage, error) {
	sum, err := r.readSummary(id)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of container %s: %w", id, err)
	}
	sb, err := r.GetSandbox(sum.PodUID)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of container %s: %w", id, err)
	}
	// The path containerConfig gave libcontainer.
	u, err := cgroupUsage(path.Join(sb.CgroupPath, id), withMemory)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of container %s: %w", id, err)
	}
	return u, nil
}

// NodeUsage reads the counters of the root cgroup: every process on the
// machine (in the worker's cgroup namespace), which is what the kubelet
// reports as the node's usage.
func (r *Runtime) NodeUsage(withMemory bool) (Usage, error) {
	u, err := cgroupUsage("/", withMemory)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of the node: %w", err)
	}
	return u, nil
}

// cgroupUsage reads the cgroup at p (from the cgroup mount roots) through
// the cgroups library, on v1 or v2.
func cgroupUsage(p string, withMemory bool) (Usage, error) {
	m, err := manager.New(&cgroups.Cgroup{Path: p, Resources: &cgroups.Resources{SkipDevices: true}})
	if err != nil {
		return Usage{}, err
	}
	if !m.Exists() {
		// The library reads a missing cgroup as zeros.
		return Usage{}, fmt.Errorf("cgroup %s: %w", p, ErrNotRunning)
	}
	ctrls := cgroups.CPU
	if withMemory {
		ctrls |= cgroups.Memory
	}
	now := time.Now()
	st, err := m.Stats(&cgroups.StatsOptions{Controllers: ctrls})
	if err != nil {
		return Usage{}, fmt.Errorf("cgroup %s: %w", p, err)
	}
	u := Usage{Time: now, CPUNanos: st.CpuStats.CpuUsage.TotalUsage}
	if withMemory {
		u.HasMemory = true
		u.MemoryUsage = st.MemoryStats.Usage.Usage
		u.MemoryWorkingSet = workingSet(st.MemoryStats, cgroups.IsCgroup2UnifiedMode())
	}
	return u, nil
}

// workingSet is memory usage minus inactive file pages, as cAdvisor
// computes it: the hierarchical total_inactive_file on v1, inactive_file
// on v2.
func workingSet(ms cgroups.MemoryStats, v2 bool) uint64 {
	key := "total_inactive_file"
	if v2 {
		key = "inactive_file"
	}
	ws := ms.Usage.Usage
	if inactive, ok := ms.Stats[key]; ok {
		if inactive >= ws {
			return 0
		}
		ws -= inactive
	}
	return ws
}
