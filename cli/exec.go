package cli

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// ExitError is returned by a command whose outcome is an exit code, such as
// exec passing on the remote command's: Execute exits with Code and prints
// nothing more.
type ExitError struct{ Code int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}

func newExecCommand(o *Options) *cobra.Command {
	var namespace, container string
	var stdin, tty bool
	cmd := &cobra.Command{
		Use:   "exec POD [-c CONTAINER] [-i] [-t] -- COMMAND [ARG...]",
		Short: "Run a command in a container of a pod",
		Long: `Exec runs a command in a running container, through the masters, and exits with the command's
exit code. -i passes stdin; -t gives the command a terminal (with -i, your terminal is put in raw
mode so keys reach the command as typed).`,
		Example: `  skiff exec web -- ls /
  skiff exec -it web -- sh
  echo hello | skiff exec -i web -c app -- cat`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("give the pod, then -- and the command: skiff exec POD -- COMMAND [ARG...]")
			}
			pod := strings.TrimPrefix(strings.TrimPrefix(args[0], "pod/"), "pods/")
			return runExec(o, namespace, pod, container, args[1:], stdin, tty)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", "default", "namespace of the pod")
	f.StringVarP(&container, "container", "c", "", "container name (required when the pod has more than one)")
	f.BoolVarP(&stdin, "stdin", "i", false, "pass stdin to the command")
	f.BoolVarP(&tty, "tty", "t", false, "run the command on a terminal")
	return cmd
}

func runExec(o *Options, namespace, pod, container string, command []string, stdin, tty bool) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := &pb.ExecStart{Namespace: namespace, Pod: pod, Container: container, Command: command, Stdin: stdin, Tty: tty}
	stdio := client.ExecIO{Stdout: o.Out, Stderr: o.ErrOut}
	if stdin {
		stdio.Stdin = o.In
	}
	in, isFile := o.In.(*os.File)
	inTerm := isFile && term.IsTerminal(int(in.Fd()))
	if tty && stdin && !inTerm {
		fmt.Fprintln(o.ErrOut, "Unable to use a TTY - input is not a terminal or the right kind of file")
		start.Tty, tty = false, false
	}
	if tty && inTerm {
		fd := int(in.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			start.Size = &pb.TerminalSize{Width: uint32(w), Height: uint32(h)}
		}
		if stdin {
			old, err := term.MakeRaw(fd)
			if err != nil {
				return fmt.Errorf("put the terminal in raw mode: %w", err)
			}
			// Keys go to the remote terminal as typed (Ctrl-C included);
			// its line discipline produces the output's \r\n.
			defer term.Restore(fd, old)
		}
		resize := make(chan *pb.TerminalSize, 1)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case resize <- &pb.TerminalSize{Width: uint32(w), Height: uint32(h)}:
					default:
					}
				}
			}
		}()
		stdio.Resize = resize
	}
	ctx, cancel := interruptible()
	defer cancel()
	code, err := c.Exec(ctx, start, stdio)
	if err != nil {
		return apiError(err)
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
