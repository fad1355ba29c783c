package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/mountinfo"
	"github.com/moby/sys/user"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/system"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// Main runs a container's shim; args are the arguments after Subcommand
// (the container's state directory). It returns the process exit code. The
// runtime starts the shim with a ready pipe as fd 3, on which
// the shim reports the container started (or why it did not).
func Main(args []string) int {
	if len(args) == 1 && args[0] == CompileArg {
		return compileMain()
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: "+Subcommand+" CONTAINER_STATE_DIR (the worker starts shims; they are not run by hand)")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("container", filepath.Base(args[0]))
	ready := os.NewFile(3, "ready")
	if err := run(args[0], ready, log); err != nil {
		log.Error("shim failed", "err", err)
		return 1
	}
	return 0
}

func run(dir string, ready *os.File, log *slog.Logger) (retErr error) {
	// The worker may die and its terminal or process group with it; the
	// shim stays. SIGTERM to the shim stops the container gracefully.
	signal.Ignore(unix.SIGHUP, unix.SIGINT, unix.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)

	reported := false
	report := func(r Ready) {
		if reported {
			return
		}
		reported = true
		_ = json.NewEncoder(ready).Encode(r)
		_ = ready.Close()
	}
	defer func() {
		if retErr != nil {
			report(Ready{Error: retErr.Error()})
		}
	}()

	t0 := time.Now()
	rec, err := ReadJSON[Record](filepath.Join(dir, "container.json"))
	if err != nil {
		return err
	}
	// Fail closed: a container whose filter cannot be had does not start.
	startUnder, err := seccompFilter(rec)
	if err != nil {
		return err
	}
	lw, err := openLogWriter(rec.LogPath, rec.LogMaxSize, rec.LogMaxFiles)
	if err != nil {
		return err
	}
	defer lw.Close()

	var undo []func()
	defer func() {
		for _, f := range slices.Backward(undo) {
			f()
		}
	}()

	if err := mountOverlay(rec.Rootfs); err != nil {
		return fmt.Errorf("mount rootfs: %w", err)
	}
	undo = append(undo, func() {
		if err := UnmountAll(rec.Rootfs.Target); err != nil {
			log.Warn("unmount rootfs", "err", err)
		}
	})

	execUser, err := resolveUser(rec.Rootfs.Target, rec.Process.User, rec.Process.AdditionalGids)
	if err != nil {
		return err
	}
	if rec.Process.RunAsNonRoot && execUser.Uid == 0 {
		return fmt.Errorf("container has runAsNonRoot and its user %q is root", rec.Process.User)
	}
	env := rec.Process.Env
	if !slices.ContainsFunc(env, func(s string) bool { return strings.HasPrefix(s, "HOME=") }) {
		home := execUser.Home
		if home == "" {
			home = "/"
		}
		env = append(env, "HOME="+home)
	}

	tMounted := time.Now()
	c, err := libcontainer.Create(rec.LibcontainerRoot, rec.ID, rec.Config)
	if err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	undo = append(undo, func() {
		if err := c.Destroy(); err != nil {
			log.Warn("destroy container", "err", err)
		}
	})

	p := &libcontainer.Process{
		Args:             rec.Process.Args,
		Env:              env,
		Cwd:              rec.Process.Cwd,
		UID:              execUser.Uid,
		GID:              execUser.Gid,
		AdditionalGroups: execUser.Sgids,
		Init:             true,
	}
	var copiers sync.WaitGroup
	var afterStart []*os.File
	var console <-chan *os.File
	if rec.Process.Terminal {
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return err
		}
		defer parent.Close()
		p.ConsoleSocket = child
		afterStart = append(afterStart, child)
		console = RecvConsole(parent)
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			return err
		}
		p.Stdout, p.Stderr = outW, errW
		afterStart = append(afterStart, outW, errW)
		copiers.Go(func() { logCopy(log, lw, StreamStdout, outR) })
		copiers.Go(func() { logCopy(log, lw, StreamStderr, errR) })
	}

	tCreated := time.Now()
	if err := startUnder(func() error { return c.Run(p) }); err != nil {
		for _, f := range afterStart {
			f.Close()
		}
		return fmt.Errorf("run container: %w", err)
	}
	startedAt := time.Now().UTC()
	// The container holds its own ends now; closing ours lets the log
	// copiers see EOF when the container's processes are gone.
	for _, f := range afterStart {
		f.Close()
	}
	if console != nil {
		master := <-console
		if master == nil {
			_ = c.Signal(unix.SIGKILL)
			_, _ = p.Wait()
			return errors.New("container did not send its console")
		}
		copiers.Go(func() { logCopy(log, lw, StreamStdout, master); master.Close() })
	}

	pid, _ := p.Pid()
	self, err := system.Stat(os.Getpid())
	if err != nil {
		return err
	}
	ss := &State{
		ShimPid: os.Getpid(), ShimStartTime: self.StartTime, InitPid: pid, StartedAt: startedAt,
		UID: execUser.Uid, GID: execUser.Gid, Groups: execUser.Sgids, Env: env,
	}
	if err := WriteJSON(filepath.Join(dir, "shim.json"), ss); err != nil {
		_ = c.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		return err
	}
	report(Ready{Pid: pid})
	// Where a start's time went, for whoever profiles pod starts.
	log.Info("container started", "pid", pid, "prepare", tMounted.Sub(t0), "create", tCreated.Sub(tMounted),
		"run", startedAt.Sub(tCreated), "total", time.Since(t0))

	go func() {
		for range term {
			_ = c.Signal(unix.SIGTERM)
		}
	}()

	ps, _ := p.Wait()
	finishedAt := time.Now().UTC()
	ex := &Exit{FinishedAt: finishedAt, ExitCode: 255, Reason: ReasonError}
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				ex.Signal = int(ws.Signal())
				ex.ExitCode = 128 + ex.Signal
			case ws.Exited():
				ex.ExitCode = ws.ExitStatus()
			}
		}
	}
	ex.OOMKilled = oomKilled(rec, ex.Signal == int(unix.SIGKILL))
	switch {
	case ex.OOMKilled:
		ex.Reason = ReasonOOMKilled
	case ex.ExitCode == 0:
		ex.Reason = ReasonCompleted
	}

	// Output written just before the exit is still in the pipes; a
	// process that escaped the PID namespace could hold them forever.
	drained := make(chan struct{})
	go func() { copiers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		log.Warn("log copiers did not finish after the container exited")
	}
	if err := WriteJSON(filepath.Join(dir, "exit.json"), ex); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	log.Info("container exited", "exitCode", ex.ExitCode, "signal", ex.Signal, "reason", ex.Reason)
	return nil
}

// logCopy copies one stream into the log, reporting failures to the shim's
// own log.
func logCopy(log *slog.Logger, lw *logWriter, stream string, f *os.File) {
	if err := lw.copyStream(stream, f); err != nil {
		log.Warn("copy container output", "stream", stream, "err", err)
	}
	f.Close()
}

// RecvConsole receives the master side of the container's terminal, which
// its init sends over the console socket while it starts.
func RecvConsole(sock *os.File) <-chan *os.File {
	ch := make(chan *os.File, 1)
	go func() {
		f, err := utils.RecvFile(sock)
		if err != nil {
			ch <- nil
			return
		}
		ch <- nonblocking(f)
	}()
	return ch
}

// nonblocking re-creates f with its descriptor in non-blocking mode, so its
// reads go through Go's poller and Close interrupts them.
func nonblocking(f *os.File) *os.File {
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil
	}
	unix.CloseOnExec(fd)
	_ = unix.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), "pty-master")
}

// oomKilled reports whether the kernel OOM-killed a process of the
// container's cgroup.
func oomKilled(rec *Record, killed bool) bool {
	m, err := manager.New(rec.Config.Cgroups)
	if err != nil {
		return false
	}
	for i := 0; ; i++ {
		n, err := m.OOMKillCount()
		if err == nil && n > 0 {
			return true
		}
		// The OOM killer counts its kill right after sending SIGKILL; a
		// reaper this fast can read the counter before that.
		if !killed || i >= 5 {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// resolveUser resolves a user spec against the rootfs' /etc/passwd and
// /etc/group (numeric ids need no entry), adding extra supplementary gids.
func resolveUser(rootfs, spec string, extraGids []int) (*user.ExecUser, error) {
	passwd, err := securejoin.SecureJoin(rootfs, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := securejoin.SecureJoin(rootfs, "/etc/group")
	if err != nil {
		return nil, err
	}
	u, err := user.GetExecUserPath(spec, &user.ExecUser{Home: "/"}, passwd, group)
	if err != nil {
		return nil, fmt.Errorf("resolve user %q: %w", spec, err)
	}
	for _, g := range extraGids {
		if !slices.Contains(u.Sgids, g) {
			u.Sgids = append(u.Sgids, g)
		}
	}
	return u, nil
}

// mountOverlay mounts the container's rootfs. Layer paths go into one page
// of mount options; when they do not fit, they are named relative to their
// common parent (the image store's layers directory) from inside it, the
// way containerd does. The shim is single-purpose, so changing its working
// directory briefly is safe.
func mountOverlay(rs Rootfs) error {
	lower := slices.Clone(rs.Lower)
	slices.Reverse(lower) // overlayfs wants the topmost layer first
	opts := func(lowers []string) string {
		return "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + rs.Upper + ",workdir=" + rs.Work
	}
	data := opts(lower)
	if len(data) >= unix.Getpagesize()-len("index=off,")-1 {
		parent := filepath.Dir(lower[0])
		rel := make([]string, len(lower))
		for i, l := range lower {
			if filepath.Dir(l) != parent {
				return fmt.Errorf("too many layers (%d) for the overlay mount options", len(lower))
			}
			rel[i] = filepath.Base(l)
		}
		data = opts(rel)
		if len(data) >= unix.Getpagesize()-len("index=off,")-1 {
			return fmt.Errorf("too many layers (%d) for the overlay mount options", len(lower))
		}
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if err := os.Chdir(parent); err != nil {
			return err
		}
		defer os.Chdir(wd)
	}
	// index=off: the same lower layers are shared by many overlays, which
	// the inodes index feature does not allow.
	err := unix.Mount("overlay", rs.Target, "overlay", 0, "index=off,"+data)
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mount("overlay", rs.Target, "overlay", 0, data)
	}
	return err
}

// UnmountAll unmounts everything mounted at target (lazily if busy).
func UnmountAll(target string) error {
	for range 16 {
		mounted, err := mountinfo.Mounted(target)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !mounted) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := unix.Unmount(target, 0); err != nil {
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", target, err)
			}
		}
	}
	return fmt.Errorf("unmount %s: still mounted", target)
}
