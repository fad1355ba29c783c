package runtime

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

var (
	// ErrNotFound is returned for an unknown container.
	ErrNotFound = errors.New("container not found")
	// ErrSandboxNotFound is returned for an unknown pod sandbox.
	ErrSandboxNotFound = errors.New("pod sandbox not found")
	// ErrNotRunning is returned by Exec on a container that is not running.
	ErrNotRunning = errors.New("container is not running")
	// ErrInvalidSpec is returned for a container spec the runtime cannot run.
	ErrInvalidSpec = errors.New("invalid container spec")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("container runtime is only supported on linux")
	// ErrRunAsNonRoot is returned by StartContainer for a container with
	// runAsNonRoot whose user is root (Kubernetes reports it as
	// CreateContainerConfigError).
	ErrRunAsNonRoot = errors.New("container has runAsNonRoot and image will run as root")
)

// Config configures a Runtime.
type Config struct {
	// DataDir holds what must survive a reboot: containers' writable
	// layers and logs. Required, absolute, without ':' or ','.
	DataDir string
	// StateDir holds runtime state: container and sandbox records,
	// namespace pins, rootfs mounts and libcontainer state. It may be on
	// a tmpfs (MountStateTmpfs; the data of containers whose state is
	// gone, after a reboot, is removed). Required, absolute, without ':'
	// or ','.
	StateDir string
	// CgroupParent is the cgroup (path from the cgroup mount roots) under
	// which pod cgroups are created. Default "/skiff".
	CgroupParent string
	// Images, if set, lets StartContainer pull a container's image itself
	// when ContainerSpec.Image is nil.
	Images *image.Store
	// ShimCommand is the argv that starts a shim; the runtime appends the
	// container's state directory. Default (ShimCommandFor): skiff-shim
	// beside this executable if it is of the same build, else this
	// executable, with shim.Subcommand.
	ShimCommand []string
	// LogMaxSize is the size at which a container log file is rotated.
	// Default 10 MiB.
	LogMaxSize int64
	// LogMaxFiles is how many log files a container keeps, the current
	// one included. Default 3.
	LogMaxFiles int
	// ShmSize is the default size of a pod's /dev/shm. Default 64 MiB.
	ShmSize int64
	// Logger receives runtime events. Default slog.Default().
	Logger *slog.Logger
}

// StatePlace says where MountStateTmpfs left a StateDir.
type StatePlace int

const (
	// StateTmpfsMounted: on the tmpfs MountStateTmpfs mounted now.
	StateTmpfsMounted StatePlace = iota + 1
	// StateTmpfsFound: on the tmpfs it mounted in an earlier run.
	StateTmpfsFound
	// StateTmpfsOther: on a tmpfs it did not mount (one the operator chose).
	StateTmpfsOther
	// StateKeptOnDisk: on disk, because containers or sandboxes of an
	// earlier worker are recorded there.
	StateKeptOnDisk
)

func (p StatePlace) String() string {
	switch p {
	case StateTmpfsMounted:
		return "on a tmpfs mounted for it"
	case StateTmpfsFound:
		return "on its tmpfs, mounted by an earlier run"
	case StateTmpfsOther:
		return "on a tmpfs"
	case StateKeptOnDisk:
		return "on disk: it holds containers of an earlier worker (a restart with none left moves it to a tmpfs)"
	}
	return "unknown"
}

// DefaultConfig returns a Config with everything but DataDir and StateDir
// set.
func DefaultConfig() Config {
	cfg := Config{
		CgroupParent: "/skiff",
		LogMaxSize:   10 << 20,
		LogMaxFiles:  3,
		ShmSize:      64 << 20,
		Logger:       slog.Default(),
	}
	if exe, err := os.Executable(); err == nil {
		cfg.ShimCommand = ShimCommandFor(exe)
	}
	return cfg
}

// ShimCommandFor returns the command that starts a shim for a runtime in
// executable exe: skiff-shim in exe's directory when it is of exe's build
// (shim.SameBuild), else exe itself with shim.Subcommand. A container start
// runs the shim's binary twice (the shim, then libcontainer's init), and
// skiff-shim starts in a fraction of skiff's CPU; one of another build
// could disagree with this runtime on the records they share.
func ShimCommandFor(exe string) []string {
	p := filepath.Join(filepath.Dir(exe), shim.Binary)
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 || !shim.SameBuild(exe, p) {
		return []string{exe, shim.Subcommand}
	}
	return []string{p, shim.Subcommand}
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	for _, d := range []struct{ name, v string }{{"DataDir", c.DataDir}, {"StateDir", c.StateDir}} {
		switch {
		case d.v == "":
			return fmt.Errorf("runtime config: %s is required", d.name)
		case !filepath.IsAbs(d.v):
			return fmt.Errorf("runtime config: %s %q must be absolute", d.name, d.v)
		case strings.ContainsAny(d.v, ":,"):
			return fmt.Errorf("runtime config: %s %q must not contain ':' or ',' (overlayfs options)", d.name, d.v)
		}
	}
	switch {
	case c.CgroupParent == "" || !filepath.IsAbs(c.CgroupParent) || filepath.Clean(c.CgroupParent) != c.CgroupParent || c.CgroupParent == "/":
		return fmt.Errorf("runtime config: CgroupParent %q must be a clean absolute cgroup path below the root", c.CgroupParent)
	case len(c.ShimCommand) == 0 || c.ShimCommand[0] == "":
		return errors.New("runtime config: ShimCommand is required")
	case c.LogMaxSize < 4096:
		return errors.New("runtime config: LogMaxSize must be at least 4096")
	case c.LogMaxFiles < 1:
		return errors.New("runtime config: LogMaxFiles must be at least 1")
	case c.ShmSize < 0:
		return errors.New("runtime config: ShmSize must not be negative")
	case c.Logger == nil:
		return errors.New("runtime config: Logger is required")
	}
	return nil
}

// SandboxOptions configures a pod sandbox.
type SandboxOptions struct {
	// HostNetwork runs the pod in the host's network and UTS namespaces
	// (as Kubernetes' hostNetwork does); otherwise the pod gets its own,
	// with only loopback up.
	HostNetwork bool
	// Hostname is set in the pod's UTS namespace. Default: "pod-" and the
	// first 8 characters of the pod UID. Ignored with HostNetwork.
	Hostname string
	// ShmSize is the size of the pod's /dev/shm in bytes; 0 means
	// Config.ShmSize.
	ShmSize int64
}

// Sandbox is the shared environment of one pod's containers.
type Sandbox struct {
	PodUID      string `json:"podUID"`
	HostNetwork bool   `json:"hostNetwork"`
	Hostname    string `json:"hostname"`
	// NetNSPath is the pinned network namespace ("" with HostNetwork).
	// Pod networking (veth, addresses) is configured into it by its path.
	NetNSPath string `json:"netNSPath,omitempty"`
	IPCNSPath string `json:"ipcNSPath"`
	// UTSNSPath is the pinned UTS namespace ("" with HostNetwork).
	UTSNSPath string `json:"utsNSPath,omitempty"`
	// ShmPath is the tmpfs mounted at /dev/shm in every container.
	ShmPath string `json:"shmPath"`
	// CgroupPath is the pod cgroup, from the cgroup mount roots.
	CgroupPath string    `json:"cgroupPath"`
	CreatedAt  time.Time `json:"createdAt"`
}

// Mount is a host directory or file bind-mounted into a container.
type Mount struct {
	HostPath      string
	ContainerPath string
	ReadOnly      bool
}

// ContainerSpec is what StartContainer runs.
type ContainerSpec struct {
	// Container is the pod spec's container. Used: name, image and
	// imagePullPolicy (only when Image is nil), command, args, workingDir,
	// env (Name/Value: the caller resolves valueFrom and envFrom into
	// plain values first), resources, securityContext, tty.
	//
	// securityContext: privileged, capabilities (add/drop, names with or
	// without "CAP_", "ALL"), allowPrivilegeEscalation, runAsUser,
	// runAsGroup, runAsNonRoot and readOnlyRootFilesystem; container-level
	// fields win over PodSecurityContext's.
	Container *pb.Container
	// Image is the container's image from the image store. If nil, the
	// runtime ensures Container.Image through Config.Images.
	Image *image.Image
	// PodSecurityContext supplies pod-level runAsUser, runAsGroup,
	// runAsNonRoot, supplementalGroups and fsGroup (added to the
	// process's groups, as the kubelet does). May be nil.
	PodSecurityContext *pb.PodSecurityContext
	// Security holds the security settings the securityContext cannot
	// express. Nil means the defaults.
	Security *Security
	// Mounts are the container's volumes, resolved to host paths by the
	// caller.
	Mounts []Mount
	// Labels are kept with the container and returned by Status and List,
	// so a restarted worker can tell which pod container (and which
	// attempt) it is.
	Labels map[string]string
}

// Security is what a container's hardening depends on beyond its pod's
// and its own securityContext, which StartContainer reads from
// ContainerSpec.Container and ContainerSpec.PodSecurityContext. The zero
// value is the secure default.
type Security struct {
	// Seccomp is the container's seccomp profile; "" means
	// SeccompRuntimeDefault. Privileged containers are always Unconfined.
	// (The API has no securityContext.seccompProfile yet; the worker takes
	// it from the pod's seccomp annotations.)
	Seccomp SeccompProfile
}

// State is a container's lifecycle state.
type State string

const (
	// StateCreated: the shim is starting the container.
	StateCreated State = "Created"
	// StateRunning: the container's init process is alive.
	StateRunning State = "Running"
	// StateExited: the container's init has exited; the exit fields are set.
	StateExited State = "Exited"
)

// Reasons set in ContainerStatus.Reason for exited containers, as in
// Kubernetes' ContainerStateTerminated.
const (
	ReasonCompleted = shim.ReasonCompleted
	ReasonError     = shim.ReasonError
	ReasonOOMKilled = shim.ReasonOOMKilled
	// ReasonUnknown: the shim died without recording an exit status.
	ReasonUnknown = shim.ReasonUnknown
)

// ContainerStatus is a container's observed state.
type ContainerStatus struct {
	ID     string
	PodUID string
	Name   string
	Labels map[string]string
	// Image is the reference the container was started from; ImageID its
	// repository digest.
	Image   string
	ImageID string
	State   State
	// Pid is the host PID of the container's init while it runs.
	Pid        int
	ExitCode   int
	Signal     int
	OOMKilled  bool
	Reason     string
	Message    string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
	LogPath    string
}

// ExecIO is the stdio of an exec'd process. Nil streams mean /dev/null
// (stdin) or discard (stdout, stderr). With a TTY, stderr is not used: the
// terminal carries both output streams.
type ExecIO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Size is the terminal's size with a TTY; zero means 80x24.
	Size TerminalSize
	// Resize, if set, delivers later sizes of the caller's terminal (a TTY
	// only); it is read until the process exits.
	Resize <-chan TerminalSize
}

// Usage is what a cgroup's counters said at one moment, as the kubelet's
// summary API reports them.
type Usage struct {
	// Time is when they were read.
	Time time.Time
	// CPUNanos is the CPU time the cgroup's processes used since it was
	// created.
	CPUNanos uint64
	// HasMemory is set when the memory fields were read.
	HasMemory bool
	// MemoryUsage includes the page cache; MemoryWorkingSet leaves out
	// the inactive file pages (cAdvisor's working set, which kubectl top
	// shows).
	MemoryUsage      uint64
	MemoryWorkingSet uint64
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct {
	Width, Height uint16
}
