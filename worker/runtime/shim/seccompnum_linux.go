//go:build cgo && seccomp

package shim

import (
	"fmt"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

// withinProfile fails if a moved call is numbered past the last call of
// full on any of its ABIs: libcontainer answers the calls past the last
// one ENOSYS, and pre, which names the moved calls, would move that line.
func withinProfile(full *configs.Seccomp, moved map[string]*configs.Syscall) error {
	for _, a := range full.Architectures {
		arch, err := libseccomp.GetArchFromString(a)
		if err != nil {
			return fmt.Errorf("split seccomp filter: %w", err)
		}
		last := libseccomp.ScmpSyscall(0)
		for _, r := range full.Syscalls {
			if n, err := libseccomp.GetSyscallFromNameByArch(r.Name, arch); err == nil && n > last {
				last = n
			}
		}
		for name := range moved {
			if n, err := libseccomp.GetSyscallFromNameByArch(name, arch); err == nil && n > last {
				return fmt.Errorf("split seccomp filter: %s (%d on %s) is past the profile's last call (%d)", name, n, a, last)
			}
		}
	}
	return nil
}
