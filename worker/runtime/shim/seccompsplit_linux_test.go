package shim

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RunUnder's filter stays on the thread it ran on, which ends: never on
// the process's main thread, which the Go runtime parks instead of ending
// when a goroutine locked to it exits (it would show the whole process
// as filtered, in /proc/PID/status, to every later check).
func TestRunUnderLeavesNoFilter(t *testing.T) {
	// Allow everything: only where the filter lands matters here.
	allow := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	for range 200 {
		var mode []byte
		if err := RunUnder(allow, func() error {
			b, err := os.ReadFile("/proc/thread-self/status")
			mode = b
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(mode, []byte("\nSeccomp:\t2\n")) {
			t.Fatal("f did not run under the filter")
		}
		status, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(status, []byte("\nSeccomp:\t0\n")) {
			t.Fatal("the main thread has the filter")
		}
	}
}
