package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runc/libcontainer/exeseal"
)

// probeExeSeal warns if every container start will copy this binary into
// memory. libcontainer protects the binary from containers (CVE-2019-5736)
// on each start: through a read-only overlayfs over the binary's directory
// and the container's libcontainer state directory if it can, else by
// copying the whole binary into a sealed memfd (tens of ms of CPU per
// start). The probe does what a start does, once.
func (r *Runtime) probeExeSeal() {
	root := r.libcontainerRoot()
	dir, err := os.MkdirTemp(root, "exeseal-probe-")
	if err != nil {
		r.log.Debug("probe binary protection", "err", err)
		return
	}
	defer os.RemoveAll(dir)
	f, err := exeseal.CloneSelfExe(dir)
	if err != nil {
		r.log.Debug("probe binary protection", "err", err)
		return
	}
	defer f.Close()
	// A sealed memfd is a copy; the overlayfs way returns a path handle.
	if !exeseal.IsCloned(f) {
		return
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	bin, _ := os.Executable()
	if p, err := filepath.EvalSymlinks(bin); err == nil {
		bin = p
	}
	cause := "overlayfs could not be mounted over the binary's directory"
	fix := "run the worker as root on Linux 5.2 or later with overlayfs"
	if realRoot, err := filepath.EvalSymlinks(root); err == nil && isWithin(filepath.Dir(bin), realRoot) {
		// overlayfs refuses overlapping layers.
		cause = "the state directory is inside the binary's directory, so overlayfs cannot protect it"
		fix = "install the binary outside --data-dir/--state-dir, e.g. /usr/local/bin/skiff"
	}
	r.log.Warn(fmt.Sprintf("every container start copies the skiff binary (%d MB) into memory", size>>20),
		"binary", bin, "state_dir", r.cfg.StateDir, "cause", cause, "fix", fix)
}

// isWithin reports whether path is dir or below it.
func isWithin(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
