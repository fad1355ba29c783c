package runtime

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExeSealWarning: a runtime whose state is inside the directory of its
// binary (the test binary here) warns that every container start copies
// the binary, since overlayfs refuses the overlapping layers; one whose
// state is elsewhere does not.
func TestExeSealWarning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (libcontainer's overlayfs binary protection)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, parent string
		warn         bool
	}{
		{"inside the binary's directory", filepath.Dir(exe), true},
		{"elsewhere", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, err := os.MkdirTemp(tc.parent, "skiff-rt-exeseal-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(base) })
			if isWithin(filepath.Dir(exe), base) != tc.warn {
				t.Fatalf("%s: the test binary %s is in an unexpected place (is TMPDIR the test binary's directory?)", base, exe)
			}
			// The handler serializes its writes, and New logs before it
			// returns: a plain buffer is safe.
			var log bytes.Buffer
			cfg := DefaultConfig()
			cfg.DataDir = filepath.Join(base, "data")
			cfg.StateDir = filepath.Join(base, "state")
			cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
			if _, err := New(cfg); err != nil {
				t.Fatal(err)
			}
			out := log.String()
			if warned := strings.Contains(out, "every container start copies the skiff binary"); warned != tc.warn {
				t.Fatalf("warned = %v, want %v; log:\n%s", warned, tc.warn, out)
			}
			if tc.warn && !strings.Contains(out, "the state directory is inside the binary's directory") {
				t.Errorf("the warning does not name the cause:\n%s", out)
			}
			if entries, _ := os.ReadDir(filepath.Join(cfg.StateDir, "libcontainer")); len(entries) > 0 {
				t.Errorf("the probe left %v", entries)
			}
		})
	}
}
