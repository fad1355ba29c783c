package runtime

import (
	"path"
	"strings"
	"sync"

	"github.com/moby/sys/capability"
	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// Paths hidden from containers and paths made read-only, as in containerd's
// default spec.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
		"/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// allCapabilities lists every capability the worker can give a container,
// in libcontainer's "CAP_X" form: those the kernel supports and the worker
// holds in its own bounding set (a worker inside a restricted VM or
// container lacks some, and a container cannot get more than its creator
// has; containerd's privileged mode does the same).
var allCapabilities = sync.OnceValue(func() []string {
	caps, err := capability.ListSupported()
	if err != nil {
		caps = capability.ListKnown()
	}
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		if ok, err := capability.GetBound(c); err == nil && !ok {
			continue
		}
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
})

// containerConfig builds the libcontainer config of container id in sb.
// The process (args, env, user) is not part of it: the shim supplies that
// once the user is resolved against the rootfs. caps is the container's
// capability set (resolveCapabilities); it is the bounding, effective and
// permitted set, with none inheritable or ambient, as runc's default spec
// has it, so a non-root user's processes hold none after exec. The seccomp
// filter is returned apart, for the shim to build (shim.SeccompDefault).
func (r *Runtime) containerConfig(id string, sb *Sandbox, rootfs string, spec ContainerSpec, res resources, caps []string) (*configs.Config, *shim.SeccompDefault) {
	sc := spec.Container.GetSecurityContext()
	privileged := sc.GetPrivileged()

	ns := configs.Namespaces{
		{Type: configs.NEWNS},
		{Type: configs.NEWPID},
		{Type: configs.NEWIPC, Path: sb.IPCNSPath},
	}
	if !sb.HostNetwork {
		ns = append(ns,
			configs.Namespace{Type: configs.NEWNET, Path: sb.NetNSPath},
			configs.Namespace{Type: configs.NEWUTS, Path: sb.UTSNSPath})
	}
	if r.cgroupns {
		// A cgroup namespace of its own, on cgroup v1 too (Docker's
		// default gives one on v2 only): the container sees its own
		// cgroup as the root, in /proc/self/cgroup and under
		// /sys/fs/cgroup, not the node's hierarchy. On v1 libcontainer
		// then mounts each controller's hierarchy directly, where without
		// one it bind-mounts each controller's directory with path checks
		// before and after every mount: 13 % of a container init's CPU on
		// a cgroup v1 host (docs/performance.md).
		ns = append(ns, configs.Namespace{Type: configs.NEWCGROUP})
	}

	const noexec = unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV
	mounts := []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: noexec},
		{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
		{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{Source: sb.ShmPath, Destination: "/dev/shm", Device: "bind", Flags: unix.MS_BIND | noexec},
		{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: noexec},
		{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: noexec | unix.MS_RDONLY},
		{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup", Flags: noexec | unix.MS_RELATIME | unix.MS_RDONLY},
	}
	if privileged {
		// /sys and the cgroup tree writable, as Docker's --privileged.
		mounts[5].Flags &^= unix.MS_RDONLY
		mounts[6].Flags &^= unix.MS_RDONLY
	}
	for _, m := range spec.Mounts {
		flags := unix.MS_BIND | unix.MS_REC
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		mounts = append(mounts, &configs.Mount{
			Source:           m.HostPath,
			Destination:      path.Clean(m.ContainerPath),
			Device:           "bind",
			Flags:            flags,
			PropagationFlags: []int{unix.MS_PRIVATE | unix.MS_REC},
		})
	}

	var rules []*devices.Rule
	var devs []*devices.Device
	for _, d := range specconv.AllowedDevices {
		rules = append(rules, &d.Rule)
		if d.Path != "" {
			devs = append(devs, d)
		}
	}
	if privileged {
		// Every device is accessible, and the host's nodes exist in /dev.
		rules = []*devices.Rule{{Type: devices.WildcardDevice, Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: "rwm", Allow: true}}
		host, err := hostDevices(devs)
		if err != nil {
			r.log.Warn("privileged container gets only the default devices", "id", id, "err", err)
		}
		devs = append(devs, host...)
	}

	resources := &cgroups.Resources{
		Devices:   rules,
		CpuShares: res.CPUShares,
		CpuQuota:  res.CPUQuota,
		CpuPeriod: res.CPUPeriod,
		Memory:    res.Memory,
	}
	if res.Memory > 0 && r.memsw {
		// No swap beyond the memory limit, as the kubelet does.
		resources.MemorySwap = res.Memory
	}

	cfg := &configs.Config{
		Rootfs:     rootfs,
		Readonlyfs: sc.GetReadOnlyRootFilesystem(),
		Capabilities: &configs.Capabilities{
			Bounding:  caps,
			Effective: caps,
			Permitted: caps,
		},
		Namespaces: ns,
		Mounts:     mounts,
		Devices:    devs,
		Cgroups: &cgroups.Cgroup{
			Path:      path.Join(sb.CgroupPath, id),
			Resources: resources,
		},
		NoNewPrivileges: noNewPrivileges(sc),
	}
	if !privileged {
		cfg.MaskPaths = maskedPaths
		cfg.ReadonlyPaths = readonlyPaths
	}
	return cfg, seccompFor(seccompProfile(sc, spec.Security), caps, r.noX32, r.log)
}
