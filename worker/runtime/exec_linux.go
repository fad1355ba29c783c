package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// Exec runs cmd in running container id, with the container's env, working
// directory and user, and returns its exit code (128+N when killed by
// signal N). With tty the process gets a real terminal whose output goes
// to stdio.Stdout. Cancelling ctx kills the process.
//
// The exec'd process is a child of the calling process, not of the shim:
// it ends when the worker does.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, stdio ExecIO, tty bool) (int, error) {
	if len(cmd) == 0 {
		return -1, fmt.Errorf("exec in %s: %w: empty command", id, ErrInvalidSpec)
	}
	rec, err := r.readRecord(id)
	if err != nil {
		return -1, err
	}
	st, err := r.Status(id)
	if err != nil {
		return -1, err
	}
	if st.State != StateRunning {
		return -1, fmt.Errorf("exec in %s: %w", id, ErrNotRunning)
	}
	ss, err := shim.ReadJSON[shim.State](filepath.Join(r.stateDir(id), "shim.json"))
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	c, err := libcontainer.Load(rec.LibcontainerRoot, id)
	if err != nil {
		if errors.Is(err, libcontainer.ErrNotExist) {
			return -1, fmt.Errorf("exec in %s: %w", id, ErrNotRunning)
		}
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	env := ss.Env
	if env == nil {
		env = rec.Process.Env
	}
	p := &libcontainer.Process{
		Args:             cmd,
		Env:              env,
		Cwd:              rec.Process.Cwd,
		UID:              ss.UID,
		GID:              ss.GID,
		AdditionalGroups: ss.Groups,
		Init:             false,
	}
	// The exec gets the container's filter as its init did: libcontainer
	// gives it the container's, which is only the second part of a split
	// filter; the first comes from the thread that starts it.
	start, err := shim.StartUnder(rec)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	if tty {
		return r.execTTY(ctx, id, c, p, stdio, start)
	}

	// Own pipes for stdin, so Wait does not wait for a caller's reader
	// that never ends.
	if stdio.Stdin != nil {
		inR, inW, err := os.Pipe()
		if err != nil {
			return -1, err
		}
		defer inR.Close()
		p.Stdin = inR
		go func() {
			_, _ = io.Copy(inW, stdio.Stdin)
			inW.Close()
		}()
	}
	p.Stdout = orDiscard(stdio.Stdout)
	p.Stderr = orDiscard(stdio.Stderr)
	if err := start(func() error { return c.Run(p) }); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = p.Signal(unix.SIGKILL) })
	defer stop()
	ps, err := p.Wait()
	return exitCodeOf(ctx, ps, err, id)
}

func (r *Runtime) execTTY(ctx context.Context, id string, c *libcontainer.Container, p *libcontainer.Process, stdio ExecIO, start func(func() error) error) (int, error) {
	parent, child, err := utils.NewSockPair("console")
	if err != nil {
		return -1, err
	}
	defer parent.Close()
	p.ConsoleSocket = child
	p.ConsoleWidth, p.ConsoleHeight = 80, 24
	if stdio.Size.Width > 0 && stdio.Size.Height > 0 {
		p.ConsoleWidth, p.ConsoleHeight = stdio.Size.Width, stdio.Size.Height
	}
	consoleC := shim.RecvConsole(parent)
	err = start(func() error { return c.Run(p) })
	child.Close()
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = p.Signal(unix.SIGKILL) })
	defer stop()
	master := <-consoleC
	if master == nil {
		_ = p.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		return -1, fmt.Errorf("exec in %s: no console received", id)
	}
	defer master.Close()
	con, err := console.ConsoleFromFile(master)
	if err != nil {
		_ = p.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	if stdio.Resize != nil {
		// The resizer must be gone before the deferred master.Close above
		// runs: it uses the terminal's file descriptor.
		exited := make(chan struct{})
		var resizer sync.WaitGroup
		defer func() { close(exited); resizer.Wait() }()
		resizer.Go(func() {
			for {
				select {
				case <-exited:
					return
				case sz, ok := <-stdio.Resize:
					if !ok {
						return
					}
					if sz.Width > 0 && sz.Height > 0 {
						_ = con.Resize(console.WinSize{Width: sz.Width, Height: sz.Height})
					}
				}
			}
		})
	}
	var out sync.WaitGroup
	out.Go(func() { _, _ = io.Copy(orDiscard(stdio.Stdout), master) })
	if stdio.Stdin != nil {
		go func() { _, _ = io.Copy(master, stdio.Stdin) }()
	}
	ps, werr := p.Wait()
	// The output ends (EIO) when the last holder of the terminal's other
	// side is gone; a background process may keep it, so bound the wait.
	done := make(chan struct{})
	go func() { out.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return exitCodeOf(ctx, ps, werr, id)
}

func exitCodeOf(ctx context.Context, ps *os.ProcessState, err error, id string) (int, error) {
	if ps == nil {
		if err == nil {
			err = errors.New("no process state")
		}
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, ctx.Err())
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
