package shim

import (
	"fmt"
	"slices"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// SeccompDefault asks the shim to give its container the default seccomp
// profile, Docker's (moby/profiles), for the container's bounding set: a
// container with CAP_SYS_ADMIN may call mount, one with CAP_SYS_PTRACE
// ptrace, and so on.
//
// The worker sends this instead of the filter itself: as libcontainer's
// config the profile is 25 KB of JSON, nearly all of a record, which the
// worker would encode and the shim decode for every container start (about
// 1 ms each in a fresh process), while building it here takes a tenth of
// that.
type SeccompDefault struct {
	// Caps is the container's bounding set.
	Caps []string `json:"caps"`
	// NoX32 leaves the x32 ABI out of the filter: the worker sets it where
	// the kernel refuses x32 system calls (see Spec).
	NoX32 bool `json:"noX32,omitempty"`
	// Program, when set, is the file (WriteProgram) of the compiled first
	// part of the split filter (Split): the shim starts the container
	// under it and gives libcontainer the second part only.
	Program string `json:"program,omitempty"`
}

// Spec returns the profile in its OCI form.
func (d *SeccompDefault) Spec() (*specs.LinuxSeccomp, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: d.Caps}}}
	prof, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	if d.NoX32 {
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

// Config returns the profile as libcontainer's filter.
func (d *SeccompDefault) Config() (*configs.Seccomp, error) {
	prof, err := d.Spec()
	if err != nil {
		return nil, err
	}
	cfg, err := specconv.SetupSeccomp(prof)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return cfg, nil
}
