package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAllGroup: all is the whole suite as root, and without root the
// benchmarks that need it are left out, not run to fail.
func TestAllGroup(t *testing.T) {
	root := allGroup(true)
	for _, b := range append([]string{"micro", "raft", "writes", "failover", "scale"}, groups["cluster"]...) {
		if !slices.Contains(root, b) {
			t.Errorf("all as root lacks %s: %v", b, root)
		}
	}
	user := allGroup(false)
	if len(user) != 5 || slices.ContainsFunc(user, func(b string) bool { return slices.Contains(groups["cluster"], b) }) {
		t.Errorf("all without root = %v, want the five that need no root", user)
	}
	if len(groups["all"]) != 8 {
		t.Errorf("allGroup(false) changed groups[all]: %v", groups["all"])
	}
}

// TestPlaceSkiff: a binary whose directory holds the benchmark's data dir is
// benchmarked as a copy elsewhere; any other binary as it is.
func TestPlaceSkiff(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "skiffbench-1")
	binDir := filepath.Join(root, "bin")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	inTop := filepath.Join(top, "skiff")
	if err := os.WriteFile(inTop, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := placeSkiff(inTop, root, binDir)
	if err != nil {
		t.Fatal(err)
	}
	if got != filepath.Join(binDir, "skiff") {
		t.Fatalf("binary above the data dir: placed at %s, want a copy in %s", got, binDir)
	}
	if b, err := os.ReadFile(got); err != nil || string(b) != "#!/bin/true\n" {
		t.Fatalf("copy = %q, %v", b, err)
	}
	if fi, err := os.Stat(got); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("copy not executable: %v %v", fi, err)
	}

	elsewhere := filepath.Join(t.TempDir(), "skiff")
	if err := os.WriteFile(elsewhere, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := placeSkiff(elsewhere, root, binDir); err != nil || got != elsewhere {
		t.Fatalf("binary elsewhere: placed at %s (%v), want %s unchanged", got, err, elsewhere)
	}
}

// TestDataFS: the report names the file system the data dirs are on, the
// deepest mount holding the directory, and for ext4 whether it has a
// journal.
func TestDataFS(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	got := dataFS(dir)
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		if !strings.HasPrefix(got, "ext4 on ") || !strings.Contains(got, "journal") {
			t.Fatalf("dataFS(%s) = %q, want ext4 and whether it has a journal", dir, got)
		}
		// jbd2 says it too: it lists a directory per journal it runs.
		dev, _, _ := strings.Cut(strings.TrimPrefix(got, "ext4 on "), ",")
		journals, err := filepath.Glob("/proc/fs/jbd2/" + filepath.Base(dev) + "-*")
		if err != nil {
			t.Fatal(err)
		}
		want := ", without a journal"
		if len(journals) > 0 {
			want = ", journaled"
		}
		if !strings.HasSuffix(got, want) {
			t.Errorf("dataFS(%s) = %q; /proc/fs/jbd2 says %q", dir, got, want)
		}
	case unix.TMPFS_MAGIC:
		if !strings.HasPrefix(got, "tmpfs on ") {
			t.Errorf("dataFS(%s) = %q, want tmpfs", dir, got)
		}
	default:
		if got == "" {
			t.Errorf("dataFS(%s) is empty", dir)
		}
	}
	if got := dataFS("/proc/self"); !strings.HasPrefix(got, "proc on ") {
		t.Errorf("dataFS(/proc/self) = %q, want the proc mount, the deepest one", got)
	}
}
