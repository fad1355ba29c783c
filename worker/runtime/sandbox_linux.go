package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

func (r *Runtime) sandboxDir(podUID string) string { return filepath.Join(r.sandboxesDir(), podUID) }

func (r *Runtime) podCgroup(podUID string) string {
	return path.Join(r.cfg.CgroupParent, "pod"+podUID)
}

// CreateSandbox creates the sandbox of pod podUID: pinned network, IPC and
// UTS namespaces (only IPC with HostNetwork), a /dev/shm tmpfs and the pod
// cgroup. If the sandbox exists it is returned as it is.
func (r *Runtime) CreateSandbox(ctx context.Context, podUID string, opts SandboxOptions) (_ *Sandbox, retErr error) {
	if err := validPodUID(podUID); err != nil {
		return nil, err
	}
	defer r.locks.lock("sandbox/" + podUID)()
	if sb, err := r.GetSandbox(podUID); err == nil {
		return sb, nil
	}
	// Whatever a crashed earlier attempt left.
	if err := r.removeSandboxFiles(podUID); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", podUID, err)
	}
	dir := r.sandboxDir(podUID)
	defer func() {
		if retErr != nil {
			_ = r.removeSandboxFiles(podUID)
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o700); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", podUID, err)
	}
	sb := &Sandbox{
		PodUID:      podUID,
		HostNetwork: opts.HostNetwork,
		Hostname:    opts.Hostname,
		IPCNSPath:   filepath.Join(dir, "ns", "ipc"),
		ShmPath:     filepath.Join(dir, "shm"),
		CgroupPath:  r.podCgroup(podUID),
		CreatedAt:   time.Now().UTC(),
	}
	pins := map[int]string{unix.CLONE_NEWIPC: sb.IPCNSPath}
	if opts.HostNetwork {
		if h, err := os.Hostname(); err == nil {
			sb.Hostname = h
		}
	} else {
		if sb.Hostname == "" {
			sb.Hostname = "pod-" + podUID[:min(8, len(podUID))]
		}
		sb.NetNSPath = filepath.Join(dir, "ns", "net")
		sb.UTSNSPath = filepath.Join(dir, "ns", "uts")
		pins[unix.CLONE_NEWNET] = sb.NetNSPath
		pins[unix.CLONE_NEWUTS] = sb.UTSNSPath
	}
	if err := pinNamespaces(pins, sb.Hostname); err != nil {
		return nil, fmt.Errorf("create sandbox %s: namespaces: %w", podUID, err)
	}

	shmSize := opts.ShmSize
	if shmSize == 0 {
		shmSize = r.cfg.ShmSize
	}
	if err := os.Mkdir(sb.ShmPath, 0o1777); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", podUID, err)
	}
	if err := unix.Mount("shm", sb.ShmPath, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=1777,size="+strconv.FormatInt(shmSize, 10)); err != nil {
		return nil, fmt.Errorf("create sandbox %s: mount shm: %w", podUID, err)
	}

	cm, err := manager.New(&cgroups.Cgroup{Path: sb.CgroupPath, Resources: &cgroups.Resources{SkipDevices: true}})
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: cgroup: %w", podUID, err)
	}
	if err := cm.Apply(-1); err != nil {
		return nil, fmt.Errorf("create sandbox %s: cgroup: %w", podUID, err)
	}
	if err := shim.WriteJSON(filepath.Join(dir, "sandbox.json"), sb); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", podUID, err)
	}
	r.log.Info("created sandbox", "pod", podUID, "hostNetwork", sb.HostNetwork)
	return sb, nil
}

// GetSandbox returns the sandbox of pod podUID, or ErrSandboxNotFound.
func (r *Runtime) GetSandbox(podUID string) (*Sandbox, error) {
	if validPodUID(podUID) != nil {
		return nil, fmt.Errorf("sandbox %q: %w", podUID, ErrSandboxNotFound)
	}
	sb, err := shim.ReadJSON[Sandbox](filepath.Join(r.sandboxDir(podUID), "sandbox.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sandbox %s: %w", podUID, ErrSandboxNotFound)
	}
	return sb, err
}

// ListSandboxes returns every sandbox, including ones an earlier worker
// process created.
func (r *Runtime) ListSandboxes() ([]*Sandbox, error) {
	entries, err := os.ReadDir(r.sandboxesDir())
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var out []*Sandbox
	for _, e := range entries {
		sb, err := r.GetSandbox(e.Name())
		if errors.Is(err, ErrSandboxNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, sb)
	}
	return out, nil
}

// RemoveSandbox removes every container of pod podUID (killing those still
// running), then the sandbox: namespace pins, /dev/shm and the pod cgroup.
// Removing an unknown sandbox is a no-op.
func (r *Runtime) RemoveSandbox(ctx context.Context, podUID string) error {
	if err := validPodUID(podUID); err != nil {
		return err
	}
	cs, err := r.ListPod(podUID)
	if err != nil {
		return fmt.Errorf("remove sandbox %s: %w", podUID, err)
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, r.Remove(ctx, c.ID))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", podUID, err)
	}
	defer r.locks.lock("sandbox/" + podUID)()
	if err := r.removeSandboxFiles(podUID); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", podUID, err)
	}
	return nil
}

func (r *Runtime) removeSandboxFiles(podUID string) error {
	dir := r.sandboxDir(podUID)
	var errs []error
	// sandbox.json goes first, so a half-removed sandbox is not found.
	if err := os.Remove(filepath.Join(dir, "sandbox.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	mounted := false
	for _, p := range []string{filepath.Join(dir, "ns", "net"), filepath.Join(dir, "ns", "ipc"), filepath.Join(dir, "ns", "uts"), filepath.Join(dir, "shm")} {
		if err := shim.UnmountAll(p); err != nil {
			errs = append(errs, err)
			mounted = true
		}
	}
	if cm, err := manager.New(&cgroups.Cgroup{Path: r.podCgroup(podUID), Resources: &cgroups.Resources{SkipDevices: true}}); err == nil {
		errs = append(errs, cm.Destroy())
	} else {
		errs = append(errs, err)
	}
	if !mounted {
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}

// pinNamespaces creates new namespaces of the given kinds (CLONE_NEW*) and
// bind-mounts each onto its path (an empty file is created there). It does
// so on a locked OS thread and then moves the thread back into its old
// namespaces before unlocking it. Relying on Go to end a locked thread with
// its goroutine is not enough: when the goroutine runs on the main thread,
// Go parks that thread for good instead, and the main thread's namespaces
// are what /proc/self/ns shows (podnet opens /proc/self/ns/net as the
// node's network namespace). If moving back fails, the thread stays
// locked and Go retires it.
func pinNamespaces(pins map[int]string, hostname string) error {
	for _, p := range pins {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			return err
		}
		f.Close()
	}
	names := map[int]string{unix.CLONE_NEWNET: "net", unix.CLONE_NEWIPC: "ipc", unix.CLONE_NEWUTS: "uts"}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig := map[int]*os.File{}
		defer func() {
			for _, f := range orig {
				f.Close()
			}
		}()
		errc <- func() error {
			flags := 0
			for kind := range pins {
				flags |= kind
				f, err := os.Open("/proc/thread-self/ns/" + names[kind])
				if err != nil {
					return fmt.Errorf("open the current %s namespace: %w", names[kind], err)
				}
				orig[kind] = f
			}
			if err := unix.Unshare(flags); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if _, ok := pins[unix.CLONE_NEWUTS]; ok && hostname != "" {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("sethostname: %w", err)
				}
			}
			if _, ok := pins[unix.CLONE_NEWNET]; ok {
				if err := loopbackUp(); err != nil {
					return fmt.Errorf("loopback up: %w", err)
				}
			}
			for kind, p := range pins {
				src := fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), unix.Gettid(), names[kind])
				if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("pin %s: %w", names[kind], err)
				}
			}
			return nil
		}()
		for kind, f := range orig {
			if err := unix.Setns(int(f.Fd()), kind); err != nil {
				return // stay locked: Go retires (or parks) the thread
			}
		}
		if len(orig) == len(pins) {
			goruntime.UnlockOSThread()
		}
	}()
	return <-errc
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func validPodUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || len(uid) > 128 {
		return fmt.Errorf("%w: pod UID %q", ErrInvalidSpec, uid)
	}
	for _, c := range uid {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: pod UID %q", ErrInvalidSpec, uid)
		}
	}
	return nil
}
