package runtime

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"

	"github.com/moby/sys/devices"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	lcseccomp "github.com/opencontainers/runc/libcontainer/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// SeccompAvailable reports whether this binary can apply seccomp filters.
// libcontainer's seccomp support needs cgo, libseccomp (Debian's
// libseccomp-dev to build) and the "seccomp" build tag; without them
// containers run without the default profile.
func SeccompAvailable() bool { return lcseccomp.Enabled }

// seccompWarned latches the one warning per process about missing seccomp
// support: it is a property of the binary, not of a runtime.
var seccompWarned sync.Once

// seccompFor returns the filter a container's record asks its shim for:
// the default profile for caps (the bounding set), or nil for none
// (Unconfined, or a binary without libseccomp). noX32
// (kernelRejectsX32) leaves the x32 ABI out of it.
func seccompFor(profile SeccompProfile, caps []string, noX32 bool, log *slog.Logger) *shim.SeccompDefault {
	if profile == SeccompUnconfined {
		return nil
	}
	if !lcseccomp.Enabled {
		seccompWarned.Do(func() {
			log.Warn(SeccompUnavailableMessage,
				"effect", "containers run without the default seccomp profile",
				"fix", "install libseccomp-dev and build with CGO_ENABLED=1 -tags seccomp")
		})
		return nil
	}
	return &shim.SeccompDefault{Caps: slices.Clone(caps), NoX32: noX32}
}

// DefaultSeccompSpec is the default profile's filter, in its OCI form, as
// this machine's workers give it to a container whose bounding set is caps
// (DefaultCapabilities for a container that does not change them). The
// benchmark gives it to runc, to compare container starts under the same
// filter.
func DefaultSeccompSpec(caps []string) (*specs.LinuxSeccomp, error) {
	return (&shim.SeccompDefault{Caps: caps, NoX32: kernelRejectsX32()}).Spec()
}

// x32SyscallBit marks a system call as the x32 ABI's on amd64
// (__X32_SYSCALL_BIT).
const x32SyscallBit = 0x40000000

// kernelRejectsX32 reports whether the kernel refuses x32 system calls
// (amd64 built without CONFIG_X86_X32_ABI, as Ubuntu's and Fedora's are,
// or with it disabled at boot, Debian's default), so container filters
// need no x32 rules. It asks the kernel: an x32 getpid fails with ENOSYS there.
// It does not ask when a seccomp filter already confines this process (a
// worker in a container): a filter without x32 rules would kill the
// asking thread. Not knowing keeps the x32 rules.
func kernelRejectsX32() bool {
	if goruntime.GOARCH != "amd64" {
		return false
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil || !bytes.Contains(status, []byte("\nSeccomp:\t0\n")) {
		return false
	}
	_, _, errno := unix.RawSyscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
	return errno == unix.ENOSYS
}

// hostDevices returns the host's device nodes for a privileged container,
// except those whose path is in have (libcontainer's default nodes).
func hostDevices(have []*devconfig.Device) ([]*devconfig.Device, error) {
	host, err := devices.HostDevices()
	if err != nil {
		return nil, fmt.Errorf("list host devices: %w", err)
	}
	seen := map[string]bool{}
	for _, d := range have {
		seen[d.Path] = true
	}
	var out []*devconfig.Device
	for _, d := range host {
		// /dev/ptmx is libcontainer's link to the container's devpts.
		if seen[d.Path] || d.Path == "/dev/ptmx" {
			continue
		}
		seen[d.Path] = true
		out = append(out, d)
	}
	return out, nil
}

// splitFilters holds the compiled first parts of split seccomp filters
// (shim.SeccompDefault.Split), one per profile: the bounding set and the
// x32 choice.
type splitFilters struct {
	mu sync.Mutex
	m  map[string]*splitFilter
}

type splitFilter struct {
	once sync.Once
	prog []byte
	err  error
}

// splitSeccomp sets sd.Program, so that the container starts under the
// profile's compiled first part and its init compiles only the small
// second part (shim.Split). The first container of a profile compiles it
// (about 30 ms, once per worker); where that fails, the init compiles
// the whole filter, as before, and the worker says why once.
func (r *Runtime) splitSeccomp(sd *shim.SeccompDefault) {
	if sd == nil {
		return
	}
	caps := slices.Sorted(slices.Values(sd.Caps))
	key := fmt.Sprintf("%s/%v", strings.Join(caps, ","), sd.NoX32)
	r.filters.mu.Lock()
	if r.filters.m == nil {
		r.filters.m = map[string]*splitFilter{}
	}
	f := r.filters.m[key]
	if f == nil {
		f = &splitFilter{}
		r.filters.m[key] = f
	}
	r.filters.mu.Unlock()
	f.once.Do(func() {
		pre, _, err := sd.Split()
		if f.err = err; err != nil {
			// Some profiles cannot be split (every capability: bpf has
			// conditional rules); their containers start as before.
			r.log.Info("seccomp filter compiled in each container's init", "caps", len(caps), "reason", err)
			return
		}
		if f.prog, f.err = shim.CompileFilter(r.cfg.ShimCommand, pre); f.err != nil {
			r.log.Warn("seccomp filter not split: every container's init compiles it whole",
				"err", f.err, "effect", "about 25 ms more CPU per container start",
				"fix", "the worker needs CAP_SYS_ADMIN and ptrace (PTRACE_SECCOMP_GET_FILTER, CONFIG_CHECKPOINT_RESTORE)")
		}
	})
	if f.err != nil {
		return
	}
	// On the state tmpfs, named by its hash: a stat once written.
	path, err := shim.WriteProgram(filepath.Join(r.cfg.StateDir, "seccomp"), f.prog)
	if err != nil {
		r.log.Warn("seccomp filter not split for this container", "err", err)
		return
	}
	sd.Program = path
}
