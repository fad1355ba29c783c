package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/skiff-sh/skiff/proto"
)

func newScaleCommand(o *Options) *cobra.Command {
	var namespace string
	var count, current int32
	cmd := &cobra.Command{
		Use:   "scale deployment|replicaset NAME --replicas N",
		Short: "Set the number of replicas of a Deployment or ReplicaSet",
		Long: `Scale sets spec.replicas. A Deployment passes the new number on to its current
ReplicaSet (and, during a rollout, spreads it over the old ones); a ReplicaSet owned by a
Deployment is scaled back by it, so scale the Deployment instead. --current-replicas makes the
change conditional on the number it replaces.`,
		Example: `  skiff scale deployment web --replicas 10
  skiff scale deployment/web --replicas 0
  skiff scale replicaset web-7d9f8 --replicas 3 --current-replicas 2`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("replicas") {
				return errors.New("--replicas is required")
			}
			if count < 0 {
				return fmt.Errorf("--replicas %d: must not be negative", count)
			}
			kind, name, err := parseWorkload(args, "Deployment", "ReplicaSet")
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			obj, changed, err := mutateObject(ctx, c, kind.Kind, orDefault(namespace, "default"), name, func(obj *pb.Object) (bool, error) {
				var r **int32
				switch {
				case obj.GetDeployment() != nil:
					r = &obj.GetDeployment().GetSpec().Replicas
				case obj.GetReplicaSet() != nil:
					r = &obj.GetReplicaSet().GetSpec().Replicas
				}
				if r == nil {
					return false, fmt.Errorf("%s has no spec", objectRef(obj))
				}
				was := replicas(*r)
				if current >= 0 && was != current {
					return false, fmt.Errorf("%s has %d replicas, not %d (--current-replicas): not scaled", objectRef(obj), was, current)
				}
				if *r != nil && was == count {
					return false, nil
				}
				n := count
				*r = &n
				return true, nil
			})
			if err != nil {
				return apiError(err)
			}
			if !changed {
				fmt.Fprintf(o.Out, "%s already has %d replicas\n", objectRef(obj), count)
				return nil
			}
			fmt.Fprintf(o.Out, "%s scaled\n", objectRef(obj))
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().Int32Var(&count, "replicas", 0, "the new number of replicas (required)")
	cmd.Flags().Int32Var(&current, "current-replicas", -1, "scale only if the object has this many replicas now (-1: any)")
	return cmd
}
