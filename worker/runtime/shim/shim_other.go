//go:build !linux

package shim

// Init does nothing: containers run only on Linux.
func Init() {}

// Main fails: containers run only on Linux.
func Main(args []string) int { return 1 }
