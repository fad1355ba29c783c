package runtime

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"slices"
	"sync"

	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/devices"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	lcseccomp "github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// SeccompAvailable reports whether this binary can apply seccomp filters.
// libcontainer's seccomp support needs cgo, libseccomp (Debian's
// libseccomp-dev to build) and the "seccomp" build tag; without them
// containers run without the default profile.
func SeccompAvailable() bool { return lcseccomp.Enabled }

// seccompWarned latches the one warning per process about missing seccomp
// support: it is a property of the binary, not of a runtime.
var seccompWarned sync.Once

// seccompConfig returns the libcontainer filter for profile, nil for none.
// The default profile depends on caps (the bounding set): a container with
// CAP_SYS_ADMIN may call mount, one with CAP_SYS_PTRACE ptrace, and so on.
// noX32 (kernelRejectsX32) leaves the x32 ABI out of the filter.
func seccompConfig(profile SeccompProfile, caps []string, noX32 bool, log *slog.Logger) (*configs.Seccomp, error) {
	if profile == SeccompUnconfined {
		return nil, nil
	}
	if !lcseccomp.Enabled {
		seccompWarned.Do(func() {
			log.Warn(SeccompUnavailableMessage,
				"effect", "containers run without the default seccomp profile",
				"fix", "install libseccomp-dev and build with CGO_ENABLED=1 -tags seccomp")
		})
		return nil, nil
	}
	prof, err := defaultSeccompSpec(caps, noX32)
	if err != nil {
		return nil, err
	}
	cfg, err := specconv.SetupSeccomp(prof)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return cfg, nil
}

// DefaultSeccompSpec is the default profile's filter, in its OCI form, as
// this machine's workers give it to a container whose bounding set is caps
// (DefaultCapabilities for a container that does not change them). The
// benchmark gives it to runc, to compare container starts under the same
// filter.
func DefaultSeccompSpec(caps []string) (*specs.LinuxSeccomp, error) {
	return defaultSeccompSpec(caps, kernelRejectsX32())
}

// defaultSeccompSpec is Docker's default profile for caps (a container
// with CAP_SYS_ADMIN may call mount, one with CAP_SYS_PTRACE ptrace, and so
// on), without the x32 ABI when noX32.
func defaultSeccompSpec(caps []string, noX32 bool) (*specs.LinuxSeccomp, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}}
	prof, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	if noX32 {
		// Every container's init compiles its filter with libseccomp,
		// and the x32 ABI is a third of that work: leaving it out cut
		// a start's CPU (worker, shim, init) from about 60 to 44 ms
		// here. On a kernel that cannot run x32 system calls those
		// rules guard nothing: without them libseccomp's x86_64 filter
		// sends a call with the x32 bit to its bad-architecture action
		// (the calling thread is killed) instead of to the allowlist
		// (EPERM, or ENOSYS from the kernel). Stricter, never looser.
		prof.Architectures = slices.DeleteFunc(prof.Architectures, func(a specs.Arch) bool { return a == specs.ArchX32 })
	}
	return prof, nil
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

// denyAllSeccomp is the filter of a container whose profile could not be
// built: its init cannot even exec, so it fails to start rather than run
// unconfined.
func denyAllSeccomp() *configs.Seccomp {
	return &configs.Seccomp{DefaultAction: configs.Errno, Syscalls: []*configs.Syscall{}}
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
