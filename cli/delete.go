package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

func newDeleteCommand(o *Options) *cobra.Command {
	var files []string
	var namespace, cascade string
	var grace int64
	var ignoreNotFound, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "delete KIND NAME... | KIND/NAME... | -f FILE",
		Short: "Delete objects by name or by manifest",
		Long: `Delete removes objects. Pods bound to a node are stopped gracefully first and disappear once
the worker confirms; objects with finalizers are marked for deletion and disappear once their
finalizers are done. --cascade chooses what happens to objects the deleted one owns.

As kubectl delete, it waits until the objects are gone (--wait=false returns once the deletion
has started), so that a delete followed by an apply of the same manifest creates the objects
anew rather than finding them terminating. --timeout bounds the wait (0: a week).`,
		Example: `  skiff delete pod web-7d9f-abcde
  skiff delete deployment/web service/web
  skiff delete -f web.yaml
  skiff delete pod web --grace-period 0
  skiff delete replicaset web --cascade orphan
  skiff delete pod web --wait=false      # return once its graceful stop has started`,
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch cascade {
			case "background", "orphan", "foreground":
			default:
				return fmt.Errorf("--cascade %q: use background, orphan or foreground", cascade)
			}
			var objs []*pb.Object
			switch {
			case len(files) > 0 && len(args) > 0:
				return errors.New("give either -f or KIND NAME, not both")
			case len(files) > 0:
				var err error
				if objs, err = readManifests(files, false, o.In); err != nil {
					return err
				}
				setNamespaces(objs, namespace)
			case len(args) > 0:
				targets, err := parseTargets(args)
				if err != nil {
					return err
				}
				for _, t := range targets {
					if len(t.names) == 0 {
						return fmt.Errorf("name the %s to delete: skiff delete %s NAME", t.kind.Plural, strings.ToLower(t.kind.Kind))
					}
					for _, n := range t.names {
						obj := pb.Wrap(t.kind.New())
						obj.Meta().Name = n
						if t.kind.Namespaced {
							obj.Meta().Namespace = orDefault(namespace, "default")
						}
						objs = append(objs, obj)
					}
				}
			default:
				return errors.New("nothing to delete: give KIND NAME or -f FILE")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := o.context()
			defer cancel()
			failed := 0
			var started []*pb.Object // deletions the masters have begun, not finished
			for _, obj := range objs {
				op := &pb.DeleteOp{
					Kind: obj.KindName(), Namespace: obj.Meta().GetNamespace(), Name: obj.Meta().GetName(),
					PropagationPolicy: strings.ToUpper(cascade[:1]) + cascade[1:],
				}
				if cmd.Flags().Changed("grace-period") {
					op.GracePeriodSeconds = &grace
				}
				resp, err := c.Delete(ctx, op)
				if status.Code(err) == codes.NotFound && ignoreNotFound {
					continue
				}
				if err != nil {
					failed++
					fmt.Fprintf(o.ErrOut, "error: %s: %s\n", objectRef(obj), errMessage(err))
					continue
				}
				action := resp.GetAction()
				if action == "deleting" {
					action = "deletion started"
					started = append(started, obj)
				}
				fmt.Fprintf(o.Out, "%s %s\n", objectRef(obj), action)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d objects were not deleted", failed, len(objs))
			}
			if !wait || len(started) == 0 {
				return nil
			}
			cancel()
			return waitGone(o, c, started, timeout)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "delete the objects named in this manifest file or directory")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of the objects (default \"default\")")
	cmd.Flags().StringVar(&cascade, "cascade", "background", "dependents: background (deleted after), foreground (deleted first) or orphan (kept)")
	cmd.Flags().Int64Var(&grace, "grace-period", 0, "seconds a pod gets to stop; 0 deletes at once (default: the pod's own)")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until the objects are gone (a pod stopped by its worker, finalizers done)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (0: a week)")
	return cmd
}

// waitGone waits, watching, until every object in objs is gone, as
// kubectl delete does.
func waitGone(o *Options, c *client.Client, objs []*pb.Object, timeout time.Duration) error {
	ctx, stop := interruptible()
	defer stop()
	if timeout == 0 {
		timeout = forever
	}
	ctx, cancel := withWaitTimeout(ctx, timeout)
	defer cancel()
	w := &waiter{c: c, cond: waitCondition{deleted: true}, out: io.Discard}
	for _, obj := range objs {
		info, _ := pb.LookupKind(obj.KindName())
		if err := w.wait(ctx, info, obj.Meta().GetNamespace(), obj.Meta().GetName(), nil, 0); err != nil {
			return err
		}
	}
	return nil
}
