package runtime

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/devices"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	lcseccomp "github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
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
func seccompConfig(profile SeccompProfile, caps []string, log *slog.Logger) (*configs.Seccomp, error) {
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
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}}
	prof, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	cfg, err := specconv.SetupSeccomp(prof)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return cfg, nil
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
