//go:build linux && (!cgo || !seccomp)

package shim

import (
	"errors"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// withinProfile needs libseccomp's syscall tables; without them there is
// no filter to split.
func withinProfile(*configs.Seccomp, map[string]*configs.Syscall) error {
	return errors.New("split seccomp filter: built without libseccomp")
}
