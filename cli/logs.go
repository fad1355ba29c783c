package cli

import (
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/skiff-sh/skiff/proto"
)

func newLogsCommand(o *Options) *cobra.Command {
	var namespace, container string
	var follow, previous, timestamps bool
	var tail int64
	cmd := &cobra.Command{
		Use:   "logs POD [-c CONTAINER]",
		Short: "Print the logs of a container in a pod",
		Long: `Logs prints what a container wrote to stdout and stderr. The masters relay it from the
worker that runs the pod, so only the masters' API needs to be reachable.`,
		Example: `  skiff logs web
  skiff logs web -c sidecar --tail 20
  skiff logs web -f
  skiff logs web --previous      # the instance before the last restart`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			pod := strings.TrimPrefix(strings.TrimPrefix(args[0], "pod/"), "pods/")
			req := &pb.LogsRequest{Namespace: namespace, Pod: pod, Container: container, Follow: follow, Previous: previous, Timestamps: timestamps}
			if tail >= 0 {
				req.TailLines = &tail
			}
			ctx, cancel := o.context()
			if follow {
				ctx, cancel = interruptible()
			}
			defer cancel()
			return apiError(c.Logs(ctx, req, o.Out))
		},
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", "default", "namespace of the pod")
	f.StringVarP(&container, "container", "c", "", "container name (required when the pod has more than one)")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing as the container writes, until it exits (Ctrl-C stops)")
	f.BoolVarP(&previous, "previous", "p", false, "print the logs of the previous instance of a restarted container")
	f.BoolVar(&timestamps, "timestamps", false, "prefix each line with its time")
	f.Int64Var(&tail, "tail", -1, "print only the last N lines (-1: all)")
	return cmd
}
