package worker

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// removeCgroupDirs removes the (empty) cgroup directories at and below
// parent in every hierarchy, deepest first. The runtime removes pod cgroups;
// this removes the node's parent when the worker stops everything.
func removeCgroupDirs(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		roots = []string{"/sys/fs/cgroup"}
	}
	var dirs []string
	for _, root := range roots {
		_ = filepath.WalkDir(filepath.Join(root, parent), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = unix.Rmdir(d)
	}
	// Parents the runtime created on the way ("/skiff" of "/skiff/w1"),
	// when nothing else uses them.
	for p := filepath.Dir(parent); p != "/" && p != "."; p = filepath.Dir(p) {
		for _, root := range roots {
			_ = unix.Rmdir(filepath.Join(root, p))
		}
	}
}

// mountTmpfs mounts a tmpfs at dir (memory-backed emptyDir and secret volumes).
func mountTmpfs(dir, opts string) error {
	return unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
}

// unmount unmounts path, lazily if it is busy.
func unmount(path string) error {
	if err := unix.Unmount(path, 0); err != nil {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return err
		}
	}
	return nil
}

// bootTime is when the machine booted (now less its uptime): the root
// cgroup's CPU counter started then.
func bootTime() time.Time {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return time.Time{}
	}
	return time.Now().Add(-time.Duration(si.Uptime) * time.Second)
}
