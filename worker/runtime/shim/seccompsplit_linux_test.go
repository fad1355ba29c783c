package shim

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
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

// Starts of one profile may store its program at once; each gets the
// file whole, and a file whose content is not its name is refused.
func TestProgramFile(t *testing.T) {
	dir := t.TempDir()
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, prog); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	paths := make([]string, 16)
	for i := range paths {
		wg.Go(func() {
			p, err := WriteProgram(dir, b.Bytes())
			if err != nil {
				t.Error(err)
				return
			}
			if got, err := ReadProgram(p); err != nil || !slices.Equal(got, prog) {
				t.Errorf("read back %v, %v", got, err)
			}
			paths[i] = p
		})
	}
	wg.Wait()
	distinct := slices.Compact(slices.Sorted(slices.Values(paths)))
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || len(distinct) != 1 {
		t.Fatalf("dir holds %d entries, paths %q; want one file", len(ents), distinct)
	}
	if err := os.WriteFile(distinct[0], append(b.Bytes(), b.Bytes()...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadProgram(distinct[0]); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("tampered program: %v, want refused", err)
	}
}

// A compile helper that never answers is given up on, and the start goes
// on with the whole filter compiled in its init.
func TestCompileFilterTimeout(t *testing.T) {
	defer func(d time.Duration) { compileTimeout = d }(compileTimeout)
	compileTimeout = 100 * time.Millisecond
	start := time.Now()
	// "exec": the helper is sleep itself, which the timeout kills.
	_, err := CompileFilter([]string{"sh", "-c", "exec sleep 60"}, &configs.Seccomp{})
	if err == nil {
		t.Fatal("a silent helper compiled a filter")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// A helper that answers but loaded no filter is read, refused and ended.
func TestCompileFilterNoFilter(t *testing.T) {
	// The shell's pid, then sleep in its place: a thread to read.
	_, err := CompileFilter([]string{"sh", "-c", "echo $$; exec sleep 60"}, &configs.Seccomp{})
	if err == nil || !strings.Contains(err.Error(), "read the filter back") {
		t.Fatalf("helper without a filter: %v, want refused", err)
	}
}
