package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/system"
	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// Runtime runs pod sandboxes and containers. It keeps no state in memory
// that is not also on disk, so any number of Runtime values (in this or a
// later process) over the same directories see the same containers.
//
// Methods are safe for concurrent use. Calls for one container are
// serialized; the caller (one pod worker per pod) should not need to.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	locks keyedMutex
	// memsw is whether cgroup v1 swap accounting is on, so the memory
	// limit can cover swap too.
	memsw bool
	// noX32 is whether the kernel refuses x32 system calls, so seccomp
	// filters leave that ABI out (kernelRejectsX32).
	noX32 bool
	// cgroupns is whether the kernel has cgroup namespaces (Linux 4.6).
	cgroupns bool
	// filters are the compiled split seccomp filters (splitSeccomp).
	filters splitFilters
}

// On-disk layout:
//
//	StateDir/containers/<id>/container.json  shim.Record, written before the shim starts
//	StateDir/containers/<id>/summary.json    containerSummary, written right after it
//	StateDir/containers/<id>/shim.json       shim.State, written by the shim once the container runs
//	StateDir/containers/<id>/exit.json       shim.Exit, written by the shim when the container exits
//	StateDir/containers/<id>/shim.log        the shim's own stderr
//	StateDir/containers/<id>/rootfs/         the overlay mount (in the shim's mount namespace)
//	StateDir/pods/<podUID>/<id>              an empty file per container of the pod (the pod index)
//	StateDir/libcontainer/<id>/              libcontainer's state
//	StateDir/sandboxes/<podUID>/             sandbox.json, ns/{net,ipc,uts} pins, shm/
//	StateDir/seccomp/<sha256>.bpf            compiled first parts of split seccomp filters (shim.Split)
//	DataDir/containers/<id>/{upper,work}/    the container's writable layer
//	DataDir/containers/<id>/container.log*   its logs

// containerSummary is the part of a shim.Record that Status needs.
// The record carries the whole libcontainer config (3.7 KB of JSON for a
// default container; 28.7 KB when it held the seccomp filter, before
// shim.SeccompDefault); Status runs for every container on every List
// and every pod sync, so it reads this small copy instead.
// Containers of an older runtime have no summary: their record is read.
type containerSummary struct {
	ID               string            `json:"id"`
	PodUID           string            `json:"podUID"`
	Name             string            `json:"name"`
	Labels           map[string]string `json:"labels,omitempty"`
	Image            string            `json:"image"`
	ImageID          string            `json:"imageID"`
	CreatedAt        time.Time         `json:"createdAt"`
	LogPath          string            `json:"logPath"`
	LibcontainerRoot string            `json:"libcontainerRoot"`
}

func summaryOf(rec *shim.Record) *containerSummary {
	return &containerSummary{
		ID: rec.ID, PodUID: rec.PodUID, Name: rec.Name, Labels: rec.Labels, Image: rec.Image, ImageID: rec.ImageID,
		CreatedAt: rec.CreatedAt, LogPath: rec.LogPath, LibcontainerRoot: rec.LibcontainerRoot,
	}
}

// New returns a Runtime over cfg's directories, creating them if needed.
func New(cfg Config) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger.With("component", "runtime"), noX32: kernelRejectsX32()}
	if _, err := os.Stat("/proc/self/ns/cgroup"); err == nil {
		r.cgroupns = true
	}
	for _, d := range []string{r.containersStateDir(), r.sandboxesDir(), r.libcontainerRoot(), r.containersDataDir(), r.podsDir()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("new runtime: %w", err)
		}
	}
	if err := r.indexContainers(); err != nil {
		return nil, fmt.Errorf("new runtime: %w", err)
	}
	r.removeOrphanedData()
	if !cgroups.IsCgroup2UnifiedMode() {
		if mnt, err := cgroups.FindCgroupMountpoint("", "memory"); err == nil {
			_, err := os.Stat(filepath.Join(mnt, "memory.memsw.limit_in_bytes"))
			r.memsw = err == nil
		}
	}
	r.probeExeSeal()
	return r, nil
}

func (r *Runtime) containersStateDir() string { return filepath.Join(r.cfg.StateDir, "containers") }
func (r *Runtime) containersDataDir() string  { return filepath.Join(r.cfg.DataDir, "containers") }
func (r *Runtime) sandboxesDir() string       { return filepath.Join(r.cfg.StateDir, "sandboxes") }
func (r *Runtime) libcontainerRoot() string   { return filepath.Join(r.cfg.StateDir, "libcontainer") }
func (r *Runtime) podsDir() string            { return filepath.Join(r.cfg.StateDir, "pods") }
func (r *Runtime) podIndex(podUID string) string {
	return filepath.Join(r.podsDir(), podUID)
}
func (r *Runtime) stateDir(id string) string { return filepath.Join(r.containersStateDir(), id) }
func (r *Runtime) dataDir(id string) string  { return filepath.Join(r.containersDataDir(), id) }

// LogPath returns the current log file of container id (rotated files are
// LogPath + ".1", ".2", ...).
func (r *Runtime) LogPath(id string) string {
	return filepath.Join(r.dataDir(id), "container.log")
}

// StartContainer creates container spec in sandbox sb and starts it. It
// returns once the container's process runs (or failed to start, in which
// case nothing of the container is left behind).
func (r *Runtime) StartContainer(ctx context.Context, sb *Sandbox, spec ContainerSpec) (_ string, retErr error) {
	c := spec.Container
	if sb == nil || c == nil {
		return "", fmt.Errorf("start container: %w: sandbox and container are required", ErrInvalidSpec)
	}
	if _, err := r.GetSandbox(sb.PodUID); err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	img := spec.Image
	if img == nil {
		if r.cfg.Images == nil {
			return "", fmt.Errorf("start container %s: %w: no image and no image store", c.GetName(), ErrInvalidSpec)
		}
		var err error
		if img, err = r.cfg.Images.Ensure(ctx, c.GetImage(), c.GetImagePullPolicy()); err != nil {
			return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
		}
	}
	proc, err := resolveProcess(c, img.Config, spec.PodSecurityContext, sb.Hostname)
	if err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	res, err := resolveResources(c.GetResources())
	if err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	caps, err := resolveCapabilities(c.GetSecurityContext(), allCapabilities())
	if err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	stopSig, err := parseSignal(img.Config.StopSignal)
	if err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.HostPath) || !filepath.IsAbs(m.ContainerPath) {
			return "", fmt.Errorf("start container %s: %w: mount %s -> %s: paths must be absolute", c.GetName(), ErrInvalidSpec, m.HostPath, m.ContainerPath)
		}
	}

	id := newID()
	defer r.locks.lock(id)()
	start := time.Now()
	stateDir, dataDir := r.stateDir(id), r.dataDir(id)
	defer func() {
		if retErr != nil {
			if err := r.cleanup(context.WithoutCancel(ctx), id, nil); err != nil {
				r.log.Warn("cleanup after failed start", "id", id, "err", err)
			}
		}
	}()
	rootfs := shim.Rootfs{
		Lower:  img.Layers,
		Upper:  filepath.Join(dataDir, "upper"),
		Work:   filepath.Join(dataDir, "work"),
		Target: filepath.Join(stateDir, "rootfs"),
	}
	if len(rootfs.Lower) == 0 {
		// overlayfs needs at least one lower layer.
		rootfs.Lower = []string{filepath.Join(dataDir, "empty")}
	}
	for _, d := range []string{stateDir, dataDir, rootfs.Upper, rootfs.Work, rootfs.Target, rootfs.Lower[0]} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
		}
	}
	cfg, seccomp := r.containerConfig(id, sb, rootfs.Target, spec, res, caps)
	r.splitSeccomp(seccomp)
	rec := &shim.Record{
		ID:               id,
		PodUID:           sb.PodUID,
		Name:             c.GetName(),
		Labels:           spec.Labels,
		Image:            img.Ref,
		ImageID:          img.ID,
		CreatedAt:        start.UTC(),
		LogPath:          r.LogPath(id),
		LogMaxSize:       r.cfg.LogMaxSize,
		LogMaxFiles:      r.cfg.LogMaxFiles,
		Rootfs:           rootfs,
		Process:          proc,
		StopSignal:       int(stopSig),
		LibcontainerRoot: r.libcontainerRoot(),
		Config:           cfg,
		SeccompDefault:   seccomp,
	}
	if err := shim.WriteJSON(filepath.Join(stateDir, "container.json"), rec); err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	if err := shim.WriteJSON(filepath.Join(stateDir, "summary.json"), summaryOf(rec)); err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	if err := r.addToPodIndex(sb.PodUID, id); err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	if err := r.startShim(ctx, rec); err != nil {
		return "", fmt.Errorf("start container %s: %w", c.GetName(), err)
	}
	r.log.Info("started container", "id", id, "pod", sb.PodUID, "name", c.GetName(), "duration", time.Since(start))
	return id, nil
}

const errShimSilent = "shim exited without reporting"

// startShim starts the shim of rec and waits until it reports the container
// running or failed.
func (r *Runtime) startShim(ctx context.Context, rec *shim.Record) error {
	stateDir := r.stateDir(rec.ID)
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	shimLog, err := os.OpenFile(filepath.Join(stateDir, "shim.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		readyW.Close()
		return err
	}
	args := append(append([]string{}, r.cfg.ShimCommand[1:]...), stateDir)
	cmd := exec.Command(r.cfg.ShimCommand[0], args...)
	cmd.Stdout, cmd.Stderr = shimLog, shimLog
	cmd.Dir = "/" // do not pin the worker's working directory
	cmd.ExtraFiles = []*os.File{readyW}
	// Its own session: no terminal or process-group signal aimed at the
	// worker reaches the shim. Its own mount namespace (private, a copy of
	// the node's): the container's rootfs overlay is mounted there, not in
	// the node's mount table, which every process start reads (Go's
	// runtime reads /proc/self/mountinfo to find its cgroup CPU limit, and
	// a container's namespace starts as a copy of its shim's), so a
	// node's mount table grows by a few short lines per pod instead of an
	// overlay with every layer's path. The overlay goes with the shim and
	// the container. (Volume mounts are private, Kubernetes' default
	// mountPropagation None; HostToContainer would need the shim's copy to
	// be a slave of the node's.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	err = cmd.Start()
	readyW.Close()
	shimLog.Close()
	if err != nil {
		return fmt.Errorf("start shim: %w", err)
	}
	// Who the shim is, before it reports anything: Status and Remove need
	// it if this worker dies while the shim starts the container.
	if st, err := system.Stat(cmd.Process.Pid); err == nil {
		_ = shim.WriteJSON(filepath.Join(stateDir, "launch.json"), &shim.State{ShimPid: cmd.Process.Pid, ShimStartTime: st.StartTime})
	}
	// Reap the shim when it exits (after a worker restart, init does).
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	got := make(chan shim.Ready, 1)
	go func() {
		var res shim.Ready
		b, _ := io.ReadAll(readyR)
		if err := json.Unmarshal(b, &res); err != nil || (res.Pid == 0 && res.Error == "") {
			res.Error = errShimSilent
		}
		got <- res
	}()
	select {
	case res := <-got:
		if res.Error != "" {
			<-exited
			if res.Error == errShimSilent {
				return fmt.Errorf("%s%s", res.Error, shimLogTail(stateDir))
			}
			return errors.New(res.Error)
		}
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-exited
		return ctx.Err()
	}
}

func shimLogTail(stateDir string) string {
	b, err := os.ReadFile(filepath.Join(stateDir, "shim.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return "; shim log: " + strings.TrimSpace(string(b))
}

// Status returns the state of container id.
func (r *Runtime) Status(id string) (ContainerStatus, error) {
	rec, err := r.readSummary(id)
	if err != nil {
		return ContainerStatus{}, err
	}
	return r.statusOf(id, rec), nil
}

// statusOf returns the state of container id, whose summary is rec.
func (r *Runtime) statusOf(id string, rec *containerSummary) ContainerStatus {
	st := ContainerStatus{
		ID:        rec.ID,
		PodUID:    rec.PodUID,
		Name:      rec.Name,
		Labels:    rec.Labels,
		Image:     rec.Image,
		ImageID:   rec.ImageID,
		CreatedAt: rec.CreatedAt,
		LogPath:   rec.LogPath,
		State:     StateCreated,
	}
	launched := r.shimOf(id)
	alive := launched != nil && procAlive(launched.ShimPid, launched.ShimStartTime)
	// Read the shim's records after the liveness check: it writes them
	// before exiting, so a dead shim's records are visible by now.
	ss, _ := shim.ReadJSON[shim.State](filepath.Join(r.stateDir(id), "shim.json"))
	ex, _ := shim.ReadJSON[shim.Exit](filepath.Join(r.stateDir(id), "exit.json"))
	if ss != nil {
		st.StartedAt = ss.StartedAt
	}
	switch {
	case ex != nil:
		st.State = StateExited
		st.ExitCode, st.Signal, st.OOMKilled = ex.ExitCode, ex.Signal, ex.OOMKilled
		st.Reason, st.Message, st.FinishedAt = ex.Reason, ex.Message, ex.FinishedAt
	case launched == nil || (ss == nil && alive):
		// Being started. (A record without a shim whose starter died
		// stays Created; callers remove such containers.)
	case ss == nil:
		st.State, st.ExitCode, st.Reason = StateExited, 255, ReasonUnknown
		st.Message = "shim exited before it started the container"
	case alive:
		st.State, st.Pid = StateRunning, ss.InitPid
	default:
		// The shim died without recording an exit (killed, or the
		// machine rebooted). The container may even be running.
		if c, err := libcontainer.Load(rec.LibcontainerRoot, id); err == nil {
			if s, err := c.Status(); err == nil && s == libcontainer.Running {
				st.State, st.Pid = StateRunning, ss.InitPid
				st.Message = "shim is gone: exit status will not be recorded"
				return st
			}
		}
		st.State, st.ExitCode, st.Reason = StateExited, 255, ReasonUnknown
		st.Message = "shim exited without recording the container's exit status"
	}
	return st
}

// List returns the status of every container the runtime knows, including
// ones started by an earlier worker process.
func (r *Runtime) List() ([]ContainerStatus, error) { return r.list(nil) }

// ListPod returns what List returns for the containers of pod podUID. It
// reads only that pod's records, through the pod index: a pod worker lists
// its containers when it starts and when it stops, so reading every
// record on the node each time made draining a node quadratic.
func (r *Runtime) ListPod(podUID string) ([]ContainerStatus, error) {
	if err := validPodUID(podUID); err != nil {
		return nil, err
	}
	dir := r.podIndex(podUID)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list containers of pod %s: %w", podUID, err)
	}
	out := make([]ContainerStatus, 0, len(entries))
	for _, e := range entries {
		id := e.Name()
		rec, err := r.readSummary(id)
		if errors.Is(err, ErrNotFound) {
			// cleanup removes the state directory before the entry, and
			// StartContainer creates it before: an entry without one was
			// left by a cleanup that did not finish.
			if _, serr := os.Lstat(r.stateDir(id)); errors.Is(serr, fs.ErrNotExist) {
				_ = os.Remove(filepath.Join(dir, id))
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list containers of pod %s: %w", podUID, err)
		}
		if rec.PodUID == podUID {
			out = append(out, r.statusOf(id, rec))
		}
	}
	return out, nil
}

// list returns the status of the containers whose summary keep accepts
// (all if keep is nil).
func (r *Runtime) list(keep func(*containerSummary) bool) ([]ContainerStatus, error) {
	entries, err := os.ReadDir(r.containersStateDir())
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]ContainerStatus, 0, len(entries))
	for _, e := range entries {
		rec, err := r.readSummary(e.Name())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list containers: %w", err)
		}
		if keep == nil || keep(rec) {
			out = append(out, r.statusOf(e.Name(), rec))
		}
	}
	return out, nil
}

// addToPodIndex records container id under its pod. It runs after the
// container's record is written, so every entry names a record (until a
// cleanup removes both).
func (r *Runtime) addToPodIndex(podUID, id string) error {
	dir := r.podIndex(podUID)
	var err error
	// A cleanup of the pod's last other container may remove the empty
	// directory between the two steps: try again then.
	for range 3 {
		if err = os.MkdirAll(dir, 0o711); err != nil {
			return err
		}
		var f *os.File
		if f, err = os.OpenFile(filepath.Join(dir, id), os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			return f.Close()
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

// removeFromPodIndex forgets container id of pod podUID, and the pod's
// directory once it is empty.
func (r *Runtime) removeFromPodIndex(podUID, id string) error {
	if validPodUID(podUID) != nil {
		return nil
	}
	dir := r.podIndex(podUID)
	if err := os.Remove(filepath.Join(dir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_ = os.Remove(dir) // fails while the pod has other containers
	return nil
}

// indexContainers adds the containers of an older runtime, which kept no
// pod index, to it.
func (r *Runtime) indexContainers() error {
	entries, err := os.ReadDir(r.containersStateDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		rec, err := r.readSummary(e.Name())
		if err != nil || validPodUID(rec.PodUID) != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(r.podIndex(rec.PodUID), e.Name())); errors.Is(err, fs.ErrNotExist) {
			if err := r.addToPodIndex(rec.PodUID, e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Stop stops container id: its stop signal (the image's STOPSIGNAL,
// default SIGTERM), then SIGKILL if it is still running after grace. It
// returns once the exit is recorded; stopping an exited container is a
// no-op.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.locks.lock(id)()
	rec, err := r.readRecord(id)
	if err == nil {
		err = r.stop(ctx, id, rec, grace)
	}
	if err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	return nil
}

// stop stops container id, whose record is rec. The record carries the
// whole libcontainer config (tens of KB of JSON, most of it the seccomp
// profile): Remove reads it once for stop and cleanup both.
func (r *Runtime) stop(ctx context.Context, id string, rec *shim.Record, grace time.Duration) error {
	st := r.statusOf(id, summaryOf(rec))
	if st.State == StateExited {
		return nil
	}
	ss := r.shimOf(id)
	c, err := libcontainer.Load(rec.LibcontainerRoot, id)
	if err != nil {
		if !errors.Is(err, libcontainer.ErrNotExist) {
			return err
		}
		// Not created yet, or already destroyed by its shim.
		if ss == nil {
			return nil
		}
		if st.State == StateCreated && procAlive(ss.ShimPid, ss.ShimStartTime) {
			// A shim still starting the container (its starter died):
			// there is no exit to record. Whatever it created, cleanup
			// destroys.
			_ = unix.Kill(ss.ShimPid, unix.SIGKILL)
		}
		_, err := waitProcExit(ctx, ss.ShimPid, ss.ShimStartTime, -1)
		return err
	}
	if grace > 0 {
		if err := c.Signal(syscall.Signal(rec.StopSignal)); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			return err
		}
		if done, err := r.waitExited(ctx, id, rec, ss, grace); err != nil || done {
			return err
		}
	}
	if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return err
	}
	_, err = r.waitExited(ctx, id, rec, ss, -1)
	return err
}

// waitExited waits up to d (forever if negative) for container id to exit
// and have its exit recorded.
func (r *Runtime) waitExited(ctx context.Context, id string, rec *shim.Record, ss *shim.State, d time.Duration) (bool, error) {
	if ss != nil && procAlive(ss.ShimPid, ss.ShimStartTime) {
		// The shim records the exit, then destroys the container, then
		// exits: waiting for the shim waits for all of it.
		return waitProcExit(ctx, ss.ShimPid, ss.ShimStartTime, d)
	}
	// No shim (it died): watch the container's init and record the exit
	// ourselves; its real status is lost with the shim.
	pid, start := 0, uint64(0)
	if c, err := libcontainer.Load(rec.LibcontainerRoot, id); err == nil {
		if s, err := c.State(); err == nil {
			pid, start = s.InitProcessPid, s.InitProcessStartTime
		}
	}
	if pid != 0 {
		if done, err := waitProcExit(ctx, pid, start, d); err != nil || !done {
			return done, err
		}
	}
	if _, err := os.Stat(filepath.Join(r.stateDir(id), "exit.json")); err != nil {
		ex := &shim.Exit{
			ExitCode: 137, Signal: int(unix.SIGKILL), Reason: ReasonUnknown, FinishedAt: time.Now().UTC(),
			Message: "shim was gone: the container was stopped by the runtime and its exit status is unknown",
		}
		if err := shim.WriteJSON(filepath.Join(r.stateDir(id), "exit.json"), ex); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Remove kills container id if it still runs and deletes everything of it:
// the libcontainer state and cgroup, the rootfs mount, its writable layer,
// logs and records. Removing an unknown container is a no-op.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return fmt.Errorf("remove container %q: %w", id, err)
	}
	defer r.locks.lock(id)()
	rec, err := r.readRecord(id)
	if err == nil {
		if err := r.stop(ctx, id, rec, 0); err != nil {
			return fmt.Errorf("remove container %s: %w", id, err)
		}
	}
	if err := r.cleanup(ctx, id, rec); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// cleanup deletes what exists of container id, whose record is rec (read
// here if nil). Each step tolerates the absence of what it removes, so it
// works on half-started containers too.
func (r *Runtime) cleanup(ctx context.Context, id string, rec *shim.Record) error {
	if err := validID(id); err != nil {
		return err
	}
	if rec == nil {
		rec, _ = r.readRecord(id)
	}
	if ss := r.shimOf(id); ss != nil {
		if procAlive(ss.ShimPid, ss.ShimStartTime) {
			// A shim that did not exit by itself after its container was
			// killed: it has nothing left to record.
			if done, _ := waitProcExit(ctx, ss.ShimPid, ss.ShimStartTime, 10*time.Second); !done {
				_ = unix.Kill(ss.ShimPid, unix.SIGKILL)
				_, _ = waitProcExit(ctx, ss.ShimPid, ss.ShimStartTime, -1)
			}
		}
	}
	var errs []error
	if c, err := libcontainer.Load(r.libcontainerRoot(), id); err == nil {
		if err := c.Destroy(); errors.Is(err, libcontainer.ErrRunning) {
			_ = c.Signal(unix.SIGKILL)
			if s, err := c.State(); err == nil {
				_, _ = waitProcExit(ctx, s.InitProcessPid, s.InitProcessStartTime, -1)
			}
			err = c.Destroy()
			errs = append(errs, err)
		} else {
			errs = append(errs, err)
		}
	}
	if rec != nil && rec.Config != nil && rec.Config.Cgroups != nil {
		if m, err := manager.New(rec.Config.Cgroups); err == nil {
			errs = append(errs, m.Destroy())
		}
	}
	target := filepath.Join(r.stateDir(id), "rootfs")
	if err := shim.UnmountAll(target); err != nil {
		// Never delete through a mounted rootfs.
		return errors.Join(append(errs, err)...)
	}
	for _, d := range []string{filepath.Join(r.libcontainerRoot(), id), r.stateDir(id), r.dataDir(id)} {
		errs = append(errs, os.RemoveAll(d))
	}
	if rec != nil {
		// After the state directory: ListPod takes an entry without one
		// for a cleanup that did not finish.
		errs = append(errs, r.removeFromPodIndex(rec.PodUID, id))
	}
	return errors.Join(errs...)
}

// shimOf returns the identity of container id's shim, or nil if none was
// launched.
func (r *Runtime) shimOf(id string) *shim.State {
	if ss, err := shim.ReadJSON[shim.State](filepath.Join(r.stateDir(id), "launch.json")); err == nil {
		return ss
	}
	ss, _ := shim.ReadJSON[shim.State](filepath.Join(r.stateDir(id), "shim.json"))
	return ss
}

// readSummary returns what Status needs of container id's record.
func (r *Runtime) readSummary(id string) (*containerSummary, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	sum, err := shim.ReadJSON[containerSummary](filepath.Join(r.stateDir(id), "summary.json"))
	if errors.Is(err, fs.ErrNotExist) {
		rec, err := r.readRecord(id)
		if err != nil {
			return nil, err
		}
		return summaryOf(rec), nil
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	// The record defines the container: a summary without it is a
	// container being removed.
	if _, err := os.Lstat(filepath.Join(r.stateDir(id), "container.json")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
	}
	return sum, nil
}

func (r *Runtime) readRecord(id string) (*shim.Record, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	rec, err := shim.ReadJSON[shim.Record](filepath.Join(r.stateDir(id), "container.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	return rec, nil
}

// procAlive reports whether pid is still the process that started at
// startTime (so a recycled PID is not mistaken for it) and not a zombie.
func procAlive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := system.Stat(pid)
	if err != nil {
		return false
	}
	if startTime != 0 && st.StartTime != startTime {
		return false
	}
	return st.State != system.Zombie && st.State != system.Dead
}

// waitProcExit waits up to d (forever if negative) for the process to
// exit, through a pidfd when the kernel has them.
func waitProcExit(ctx context.Context, pid int, startTime uint64, d time.Duration) (bool, error) {
	var deadline time.Time
	if d >= 0 {
		deadline = time.Now().Add(d)
	}
	fd, pidfdErr := unix.PidfdOpen(pid, 0)
	if pidfdErr == nil {
		defer unix.Close(fd)
	}
	for {
		if !procAlive(pid, startTime) {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		step := 100 * time.Millisecond
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return false, nil
			}
			step = min(step, left)
		}
		if pidfdErr == nil {
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(step.Milliseconds())+1)
		} else {
			time.Sleep(min(step, 10*time.Millisecond))
		}
	}
}

func parseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	return 0, fmt.Errorf("%w: unknown stop signal %q", ErrInvalidSpec, s)
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return ErrNotFound
	}
	return nil
}

// keyedMutex serializes operations per key.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
