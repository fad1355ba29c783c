package runtime

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// TestShimCommandFor: skiff-shim beside the executable runs the shims only
// when it is an executable file of the executable's own build; otherwise
// the executable runs them itself.
func TestShimCommandFor(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Another Go program, of another build: the go command.
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	other, err := buildinfo.ReadFile(goTool)
	if err != nil {
		t.Fatal(err)
	}
	if mine := shim.Build(); shim.BuildOf(other) == mine || mine == "" {
		t.Fatalf("the go command's build %q is this test's %q: no other build to test with", shim.BuildOf(other), mine)
	}
	for _, tc := range []struct {
		name      string
		exe, shim string // files copied in; "" for none, "dir" for a directory
		mode      os.FileMode
		useShim   bool
	}{
		{"none beside", self, "", 0o755, false},
		{"the same build", self, self, 0o755, true},
		{"another build", self, goTool, 0o755, false},
		{"not executable", self, self, 0o644, false},
		{"a directory", self, "dir", 0o755, false},
		{"an executable without Go's build record", "script", self, 0o755, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			exe, p := filepath.Join(dir, "skiff"), filepath.Join(dir, shim.Binary)
			if tc.exe == "script" {
				if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				copyFile(t, tc.exe, exe, 0o755)
			}
			switch tc.shim {
			case "":
			case "dir":
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			default:
				copyFile(t, tc.shim, p, tc.mode)
			}
			want := []string{exe, shim.Subcommand}
			if tc.useShim {
				want = []string{p, shim.Subcommand}
			}
			if got := ShimCommandFor(exe); !slices.Equal(got, want) {
				t.Errorf("ShimCommandFor = %q, want %q", got, want)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
