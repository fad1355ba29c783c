package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	skiffruntime "github.com/skiff-sh/skiff/worker/runtime"
)

// errNoRunc: the reference needs runc on PATH (`make bench` installs
// Debian's for BENCH=cluster or podstart).
var errNoRunc = errors.New("runc is not installed (Debian: apt-get install runc)")

// runcRef is what runc itself spends to start a container like a podstart
// pod's: the reference for skiff's own start (its shim and container init).
type runcRef struct {
	version string
	perCtr  time.Duration // CPU per container: runc, its helpers, the container's init
}

// runcReference starts n containers at once with the runc on PATH, as
// `runc run -d`, and measures their CPU: each runc starts in a cgroup of
// its own (a shell moves itself there and execs runc), so everything runc
// forks is counted until libcontainer moves the container's init into the
// container's cgroup, which is counted too. The containers run the same
// program as the pods (hello, its binary as a read-only rootfs), under the
// filter skiff's workers apply by default (Docker's default profile for the
// default capabilities, the same architectures), with Docker's default
// capabilities, and join this process's network namespace as a pod's
// containers join their pod's. Unlike skiff, runc mounts no overlay for the
// rootfs. Everything is removed before it returns.
func runcReference(ctx context.Context, dir, helloBin string, n int, cg cpuCgroups) (ref runcRef, retErr error) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return ref, errNoRunc
	}
	out, err := exec.CommandContext(ctx, runc, "--version").Output()
	if err != nil {
		return ref, fmt.Errorf("runc --version: %w", err)
	}
	ref.version, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")

	bundle := filepath.Join(dir, "runc-bundle")
	// runc's state and the containers' bundles (config.json, log) on a
	// tmpfs, as runc's default root (/run/runc) and containerd's bundles
	// (/run/containerd) are on a systemd host, and as skiff's worker keeps
	// its runtime state (--state-tmpfs).
	run := filepath.Join(dir, "runc-run")
	if err := os.MkdirAll(run, 0o700); err != nil {
		return ref, err
	}
	if err := syscall.Mount("tmpfs", run, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0700"); err != nil {
		return ref, fmt.Errorf("tmpfs for runc's state: %w", err)
	}
	defer func() {
		if err := syscall.Unmount(run, 0); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("unmount %s: %w", run, err))
		}
	}()
	state := filepath.Join(run, "state")
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(bundle, "rootfs", d), 0o755); err != nil {
			return ref, err
		}
	}
	body, err := os.ReadFile(helloBin)
	if err != nil {
		return ref, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "rootfs", "hello"), body, 0o755); err != nil {
		return ref, err
	}
	filter, err := skiffruntime.DefaultSeccompSpec(skiffruntime.DefaultCapabilities())
	if err != nil {
		return ref, err
	}

	prefix := fmt.Sprintf("/skiffbench-%d-runc", os.Getpid())
	launch := prefix + "-launch"
	if err := cg.create(launch); err != nil {
		return ref, fmt.Errorf("cgroup for runc: %w", err)
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("skiffbench-ref-%d", i)
	}
	defer func() {
		for _, id := range ids {
			// delete -f kills the container and removes its cgroups.
			if out, err := exec.Command(runc, "--root", state, "delete", "-f", id).CombinedOutput(); err != nil &&
				!bytes.Contains(out, []byte("does not exist")) {
				retErr = errors.Join(retErr, fmt.Errorf("runc delete %s: %v: %s", id, err, out))
			}
		}
		// A runc killed half-way (Ctrl-C) leaves its container's init
		// here, unknown to runc delete.
		if n, err := cg.killAll(launch, 5*time.Second); err != nil || n > 0 {
			retErr = errors.Join(retErr, fmt.Errorf("runc left %d processes in %s", n, cg.dir(launch)), err)
		}
		if err := cg.remove(launch); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, id := range ids {
		cfgDir := filepath.Join(run, id)
		if err := os.MkdirAll(cfgDir, 0o755); err != nil {
			return ref, err
		}
		spec := runcSpec(filepath.Join(bundle, "rootfs"), prefix+"-"+id, 20000+i, filter)
		data, err := json.Marshal(spec)
		if err != nil {
			return ref, err
		}
		if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), data, 0o644); err != nil {
			return ref, err
		}
		logf, err := os.Create(filepath.Join(cfgDir, "runc.log"))
		if err != nil {
			return ref, err
		}
		cmd := exec.CommandContext(ctx, "sh", "-c", `echo $$ > "$1" && shift && exec "$@"`, "sh",
			filepath.Join(cg.dir(launch), "cgroup.procs"), runc, "--root", state, "run", "-d", "--bundle", cfgDir, id)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer logf.Close()
			if err := cmd.Run(); err != nil {
				log, _ := os.ReadFile(logf.Name())
				errs[i] = fmt.Errorf("runc run %s: %v: %s", id, err, bytes.TrimSpace(log))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return ref, err
	}
	total, err := cg.usage(launch)
	if err != nil {
		return ref, err
	}
	for _, id := range ids {
		d, err := cg.usage(prefix + "-" + id)
		if err != nil {
			return ref, err
		}
		total += d
	}
	ref.perCtr = total / time.Duration(n)
	return ref, nil
}

// runcSpec is the OCI configuration of one reference container: runc's
// own defaults (`runc spec`) where skiff has no say, otherwise what a
// podstart pod's container gets.
func runcSpec(rootfs, cgroupsPath string, port int, filter *specs.LinuxSeccomp) *specs.Spec {
	caps := skiffruntime.DefaultCapabilities()
	nosuid := []string{"nosuid", "noexec", "nodev"}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args:         []string{"/hello"},
			Env:          []string{"PATH=/", fmt.Sprintf("PORT=%d", port)},
			Cwd:          "/",
			Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: "runc",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: append(nosuid, "mode=1777", "size=65536k")},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: nosuid},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: append(nosuid, "ro")},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: append(nosuid, "relatime", "ro")},
		},
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
				{Type: specs.NetworkNamespace, Path: fmt.Sprintf("/proc/%d/ns/net", os.Getpid())},
			},
			Seccomp: filter,
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}
