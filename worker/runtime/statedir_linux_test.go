package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// mountsAt lists the mounts whose mount point is dir, as "source fstype".
func mountsAt(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Source+" "+m.FSType)
	}
	return out
}

func onTmpfs(t *testing.T, dir string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type == unix.TMPFS_MAGIC
}

func TestStateTmpfs(t *testing.T) {
	requireContainers(t)
	base, err := os.MkdirTemp("", "skiff-statedir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range mountsUnder(base) {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
		_ = os.RemoveAll(base)
	})
	if onTmpfs(t, base) {
		t.Fatalf("%s is on a tmpfs: this test needs a disk-backed temporary directory (set TMPDIR)", base)
	}

	dir := filepath.Join(base, "state")
	place, err := MountStateTmpfs(dir)
	if err != nil || place != StateTmpfsMounted {
		t.Fatalf("first mount: %v, %v; want %v", place, err, StateTmpfsMounted)
	}
	if got := mountsAt(t, dir); len(got) != 1 || got[0] != StateTmpfsSource+" tmpfs" {
		t.Fatalf("mounts at %s: %q, want one %q tmpfs", dir, got, StateTmpfsSource)
	}
	// A restarted worker finds its own tmpfs and mounts no second one.
	if place, err := MountStateTmpfs(dir); err != nil || place != StateTmpfsFound {
		t.Fatalf("second mount: %v, %v; want %v", place, err, StateTmpfsFound)
	}
	if got := mountsAt(t, dir); len(got) != 1 {
		t.Fatalf("mounts at %s after a second call: %q", dir, got)
	}

	// Not while a container is recorded there.
	if err := os.MkdirAll(filepath.Join(dir, "containers", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = UnmountStateTmpfs(dir)
	if err == nil || !strings.Contains(err.Error(), "containers still recorded") {
		t.Fatalf("unmount with a container recorded: %v", err)
	}
	if !onTmpfs(t, dir) {
		t.Fatal("unmounted with a container recorded")
	}
	if err := os.RemoveAll(filepath.Join(dir, "containers", "c1")); err != nil {
		t.Fatal(err)
	}
	if err := UnmountStateTmpfs(dir); err != nil {
		t.Fatal(err)
	}
	if onTmpfs(t, dir) || len(mountsAt(t, dir)) != 0 {
		t.Fatalf("still mounted: %q", mountsAt(t, dir))
	}
	if err := UnmountStateTmpfs(dir); err != nil {
		t.Fatalf("unmount of a plain directory: %v", err)
	}

	// An earlier worker's containers on disk stay where they are.
	if err := os.MkdirAll(filepath.Join(dir, "sandboxes", "pod1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if place, err := MountStateTmpfs(dir); err != nil || place != StateKeptOnDisk {
		t.Fatalf("mount over an earlier worker's state: %v, %v; want %v", place, err, StateKeptOnDisk)
	}
	if onTmpfs(t, dir) {
		t.Fatal("mounted over an earlier worker's state")
	}

	// A tmpfs the operator mounted is used as it is and never unmounted.
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if place, err := MountStateTmpfs(other); err != nil || place != StateTmpfsOther {
		t.Fatalf("mount at an operator's tmpfs: %v, %v; want %v", place, err, StateTmpfsOther)
	}
	if err := UnmountStateTmpfs(other); err != nil {
		t.Fatal(err)
	}
	if got := mountsAt(t, other); len(got) != 1 || got[0] != "tmpfs tmpfs" {
		t.Fatalf("mounts at the operator's tmpfs: %q, want it alone", got)
	}
}

// After a reboot a StateDir on a tmpfs is empty while the containers'
// data directories remain: New removes those, and only those.
func TestNewRemovesDataWithoutState(t *testing.T) {
	base := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.StateDir = filepath.Join(base, "data"), filepath.Join(base, "state")
	cfg.Logger = quietLogger()
	for _, d := range []string{
		filepath.Join(cfg.StateDir, "containers", "kept"),
		filepath.Join(cfg.DataDir, "containers", "kept", "upper"),
		filepath.Join(cfg.DataDir, "containers", "orphan", "upper", "etc"),
	} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "containers", "orphan", "container.log"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(cfg.DataDir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != "kept" {
		t.Fatalf("data directories after New: %v, want [kept]", names)
	}
}
