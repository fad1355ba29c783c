//go:build !linux

package runtime

// SeccompAvailable reports whether this binary can apply seccomp filters:
// never off Linux.
func SeccompAvailable() bool { return false }
