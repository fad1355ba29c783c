package worker

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// onTmpfs tells whether path is on a tmpfs.
func onTmpfs(t *testing.T, path string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return st.Type == unix.TMPFS_MAGIC
}

// A secret volume is written into a tmpfs of its own, once; a write that
// stopped halfway (mounted, no marker) or a tmpfs that went with a reboot
// (marker, nothing mounted) is written again. Needs root (mount).
func TestSecretVolumeInMemory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "sec")
	t.Cleanup(func() {
		for _, m := range mountsBelow(base) {
			_ = unmount(m)
		}
	})
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "nested", "pw"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	files := func(body string) []keyFile { return []keyFile{{rel: "nested/pw", body: []byte(body), mode: 0o400}} }

	if err := writeKeysInMemory(dir, files("one")); err != nil {
		t.Fatal(err)
	}
	if !mounted(dir) || !onTmpfs(t, dir) || read() != "one" {
		t.Fatalf("after the first write: mounted %v, tmpfs %v, %q", mounted(dir), onTmpfs(t, dir), read())
	}
	if fi, err := os.Stat(filepath.Join(dir, "nested", "pw")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("the key's mode: %v, %v", fi.Mode(), err)
	}

	// Written already: left alone, as a running container sees it.
	if err := writeKeysInMemory(dir, files("two")); err != nil || read() != "one" {
		t.Fatalf("a second write changed the volume: %q, %v", read(), err)
	}
	if n := len(mountsBelow(base)); n != 1 {
		t.Fatalf("%d mounts, want 1: %v", n, mountsBelow(base))
	}

	// A write that stopped halfway: the marker is missing.
	if err := os.Remove(dir + ".written"); err != nil {
		t.Fatal(err)
	}
	if err := writeKeysInMemory(dir, files("three")); err != nil || read() != "three" {
		t.Fatalf("a half-written volume was not written again: %q, %v", read(), err)
	}
	if n := len(mountsBelow(base)); n != 1 {
		t.Fatalf("%d mounts after the rewrite, want 1: %v", n, mountsBelow(base))
	}

	// A reboot: the marker is there, the tmpfs is not.
	if err := unmount(dir); err != nil {
		t.Fatal(err)
	}
	if err := writeKeysInMemory(dir, files("four")); err != nil || !onTmpfs(t, dir) || read() != "four" {
		t.Fatalf("after a reboot: tmpfs %v, %q, %v", onTmpfs(t, dir), read(), err)
	}
	// Nothing of the secret on the disk below the mount.
	if err := unmount(dir); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("below the tmpfs, on the disk: %v, %v", entries, err)
	}
}
