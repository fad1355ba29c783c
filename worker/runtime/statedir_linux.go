package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// StateTmpfsSource is the source name of the tmpfs MountStateTmpfs mounts,
// as mount(8) and findmnt show it; UnmountStateTmpfs unmounts only that.
const StateTmpfsSource = "skiff-state"

// MountStateTmpfs mounts a tmpfs at dir, a Runtime's StateDir, so that the
// records, fifos and namespace pins of containers live in memory and go
// with the machine, as runc's /run/runc and containerd's /run/containerd
// do. Starting a container creates about twenty of them and removing it
// deletes them again: on disk that is inode allocation and writeback for
// state a reboot makes worthless (on ext4 without a journal, each new
// inode is found by scanning past the ones freed in the last minutes).
//
// It mounts nothing when dir is on a tmpfs already (its own mount, found
// again after a restart, or one the operator chose) and when dir holds
// containers or sandboxes on disk: those of a worker of an earlier
// release, which must stay visible until they are gone.
func MountStateTmpfs(dir string) (StatePlace, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		if ours, _ := OnStateTmpfs(dir); ours {
			return StateTmpfsFound, nil
		}
		return StateTmpfsOther, nil
	}
	if sub, _, err := recorded(dir); err != nil {
		return 0, err
	} else if sub != "" {
		return StateKeptOnDisk, nil
	}
	// No noexec: nothing runs from here, but the overlays mounted below
	// are their own mounts and keep their own flags anyway.
	if err := unix.Mount(StateTmpfsSource, dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0711"); err != nil {
		return 0, fmt.Errorf("mount a tmpfs at %s: %w", dir, err)
	}
	return StateTmpfsMounted, nil
}

// OnStateTmpfs reports whether dir is the mount point of a tmpfs that
// MountStateTmpfs mounted.
func OnStateTmpfs(dir string) (bool, error) {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(filepath.Clean(dir)))
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.FSType == "tmpfs" && m.Source == StateTmpfsSource {
			return true, nil
		}
	}
	return false, nil
}

// UnmountStateTmpfs unmounts the tmpfs MountStateTmpfs mounted at dir,
// with whatever state is left in it; it refuses while a container or
// sandbox is recorded there (their mounts would be lost from sight). A dir
// without such a mount is left as it is.
func UnmountStateTmpfs(dir string) error {
	ours, err := OnStateTmpfs(dir)
	if err != nil || !ours {
		return err
	}
	if sub, n, err := recorded(dir); err != nil {
		return err
	} else if sub != "" {
		return fmt.Errorf("unmount %s: %d %s still recorded there; remove them first", dir, n, sub)
	}
	if err := unix.Unmount(dir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// recorded returns the first of StateDir dir's containers and sandboxes
// directories that holds records, and how many; "" when neither does.
func recorded(dir string) (string, int, error) {
	for _, sub := range []string{"containers", "sandboxes"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", 0, err
		}
		if len(entries) > 0 {
			return sub, len(entries), nil
		}
	}
	return "", 0, nil
}

// removeOrphanedData removes the data directories (writable layers, logs)
// of containers that have no state directory: after a reboot emptied a
// StateDir on a tmpfs, nothing else would ever remove them. StartContainer
// creates a container's state directory before its data directory, so a
// container another Runtime is starting is never taken for one (one it is
// removing loses its data directory anyway).
func (r *Runtime) removeOrphanedData() {
	entries, err := os.ReadDir(r.containersDataDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		id := e.Name()
		if validID(id) != nil {
			continue
		}
		if _, err := os.Lstat(r.stateDir(id)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(r.dataDir(id)); err != nil {
			r.log.Warn("remove the data of a container with no state", "id", id, "err", err)
			continue
		}
		r.log.Info("removed the data of a container with no state (the machine restarted)", "id", id)
	}
}
