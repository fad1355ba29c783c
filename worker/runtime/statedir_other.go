//go:build !linux

package runtime

// StateTmpfsSource is the source name of the tmpfs MountStateTmpfs mounts.
const StateTmpfsSource = "skiff-state"

// MountStateTmpfs returns ErrUnsupported.
func MountStateTmpfs(dir string) (StatePlace, error) { return 0, ErrUnsupported }

// OnStateTmpfs reports false: nothing is mounted off Linux.
func OnStateTmpfs(dir string) (bool, error) { return false, nil }

// UnmountStateTmpfs does nothing off Linux.
func UnmountStateTmpfs(dir string) error { return nil }
