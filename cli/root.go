// Package cli is skiff's operator command line: one file per command group,
// built on cobra, talking to the masters through package client.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/client"
)

// Options are the CLI's global settings.
type Options struct {
	Server    string
	TokenFile string
	Token     string
	CAFile    string
	Insecure  bool
	Timeout   time.Duration
	Version   string
	Out       io.Writer
	ErrOut    io.Writer
	In        io.Reader
}

// NewRootCommand returns the `skiff` command with every operator
// subcommand. cmd/skiff adds the server, worker and dev roles.
func NewRootCommand(version string) *cobra.Command {
	o := &Options{Version: version, Out: os.Stdout, ErrOut: os.Stderr, In: os.Stdin}
	root := &cobra.Command{
		Use:   "skiff",
		Short: "skiff runs containers on a cluster of machines",
		Long: `skiff is a small container orchestrator: masters keep the desired state in a Raft-replicated
store, workers run pods, and this command line sets and reads that state.

Point it at the masters with --server, $SKIFF_SERVER, or the file that ` + "`skiff dev`" + ` writes.`,
		Example: `  skiff dev                        # a local three-master cluster
  skiff apply -f examples/web.yaml
  skiff get pods -A -o wide
  skiff cluster status`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&o.Server, "server", "", "comma-separated API addresses of masters (default $SKIFF_SERVER, then "+client.ConfigPath()+")")
	root.PersistentFlags().StringVar(&o.TokenFile, "token-file", "", "the cluster token file: the CLI derives the CA from it and signs itself an admin certificate (default $"+client.EnvTokenFile+", then tokenFile in the config)")
	root.PersistentFlags().StringVar(&o.Token, "token", "", "a bearer token from skiff token create (default $"+client.EnvToken+", then token in the config); needs --ca-file or ca in the config")
	root.PersistentFlags().StringVar(&o.CAFile, "ca-file", "", "the cluster CA certificate (PEM) to verify the masters with when using --token")
	root.PersistentFlags().BoolVar(&o.Insecure, "insecure", false, "plaintext, no authentication: only for masters run with --insecure")
	root.PersistentFlags().DurationVar(&o.Timeout, "request-timeout", 30*time.Second, "how long a command waits for the cluster")
	root.SetOut(o.Out)
	root.SetErr(o.ErrOut)
	root.AddCommand(
		newApplyCommand(o),
		newReplaceCommand(o),
		newEditCommand(o),
		newGetCommand(o),
		newDescribeCommand(o),
		newDeleteCommand(o),
		newClusterCommand(o),
		newScaleCommand(o),
		newRolloutCommand(o),
		newWaitCommand(o),
		newSetCommand(o),
		newLabelCommand(o),
		newAnnotateCommand(o),
		newTaintCommand(o),
		newCordonCommand(o, true),
		newCordonCommand(o, false),
		newDrainCommand(o),
		newLogsCommand(o),
		newExecCommand(o),
		newPortForwardCommand(o),
		newTopCommand(o),
		newEventsCommand(o),
		newAPIResourcesCommand(o),
		newVersionCommand(o),
	)
	return root
}

// Execute runs the root command and prints an error the way users expect.
func Execute(root *cobra.Command) int {
	if err := root.Execute(); err != nil {
		var exit *ExitError
		if errors.As(err, &exit) {
			return exit.Code
		}
		if hint := transportHint(err); hint != "" {
			// Commands that return the client's error unchanged.
			err = errors.New(hint)
		}
		fmt.Fprintln(root.ErrOrStderr(), "error:", err)
		return 1
	}
	return 0
}

// client connects to the masters this invocation should use.
func (o *Options) client() (*client.Client, error) {
	cfg, err := o.connection().ClientConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg)
}

// connect returns a client of the masters and a context bounded by
// --request-timeout and cancelled by Ctrl-C; done releases both.
func (o *Options) connect() (*client.Client, context.Context, func(), error) {
	c, err := o.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := o.context()
	return c, ctx, func() { cancel(); c.Close() }, nil
}

// connection is how this invocation reaches the masters.
func (o *Options) connection() client.Connection {
	return client.Connection{Servers: o.Server, TokenFile: o.TokenFile, Token: o.Token, CAFile: o.CAFile, Insecure: o.Insecure}
}

// context returns a context bounded by --request-timeout and cancelled by
// Ctrl-C.
func (o *Options) context() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	return ctx, func() { cancel(); stop() }
}

// interruptible returns a context cancelled only by Ctrl-C, for commands
// that run until the user stops them (watches).
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
