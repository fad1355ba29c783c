package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/skiff-sh/skiff/proto"
)

func newSetCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set SUBCOMMAND",
		Short: "Change one field of objects (set image, env, resources)",
		Example: `  skiff set image deployment/web app=example/web:v2
  skiff set image daemonset/node-agent '*=example/agent:1.4'
  skiff set env deployment/web GREETING=hello
  skiff set resources deployment/web --limits=cpu=200m,memory=512Mi`,
	}
	cmd.AddCommand(newSetImageCommand(o), newSetEnvCommand(o), newSetResourcesCommand(o))
	return cmd
}

// parseImages reads CONTAINER=IMAGE arguments ("*" names every container).
func parseImages(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("give at least one CONTAINER=IMAGE")
	}
	out := map[string]string{}
	for _, a := range args {
		c, img, ok := strings.Cut(a, "=")
		if !ok || c == "" || img == "" {
			return nil, fmt.Errorf("%q: expected CONTAINER=IMAGE", a)
		}
		out[c] = img
	}
	return out, nil
}

// setImages changes the images of spec's containers (init containers
// included) and reports whether anything changed; a container name that
// matches none is an error.
func setImages(spec *pb.PodSpec, images map[string]string) (bool, error) {
	changed := false
	found := map[string]bool{}
	for _, list := range [][]*pb.Container{spec.GetInitContainers(), spec.GetContainers()} {
		for _, c := range list {
			img, ok := images[c.GetName()]
			if !ok {
				img, ok = images["*"]
			}
			if !ok {
				continue
			}
			found[c.GetName()] = true
			if c.GetImage() != img {
				c.Image = img
				changed = true
			}
		}
	}
	var missing []string
	for name := range images {
		if name != "*" && !found[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		var names []string
		for _, c := range append(append([]*pb.Container(nil), spec.GetInitContainers()...), spec.GetContainers()...) {
			names = append(names, c.GetName())
		}
		return false, fmt.Errorf("no container named %s (containers: %s)", strings.Join(missing, ", "), strings.Join(names, ", "))
	}
	return changed, nil
}

func newSetImageCommand(o *Options) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "image (KIND/NAME | KIND NAME) CONTAINER=IMAGE...",
		Short: "Change container images of a Deployment, DaemonSet, ReplicaSet or Pod",
		Long: `Image sets the image of the named containers ("*" for all of them) in a workload's pod
template, which starts a rollout of a Deployment or DaemonSet, or of a pod's containers.`,
		Example: `  skiff set image deployment/web app=example/web:v2
  skiff set image deployment web app=example/web:v2 sidecar=example/proxy:1.2
  skiff set image daemonset/node-agent '*=example/agent:1.4' && skiff rollout status daemonset/node-agent`,
		RunE: func(cmd *cobra.Command, args []string) error {
			split := 1
			if len(args) > 0 && !strings.Contains(args[0], "/") {
				split = 2
			}
			if len(args) <= split {
				return fmt.Errorf("name the object and at least one CONTAINER=IMAGE")
			}
			kind, name, err := parseWorkload(args[:split], "Deployment", "DaemonSet", "ReplicaSet", "Pod")
			if err != nil {
				return err
			}
			images, err := parseImages(args[split:])
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			obj, changed, err := mutateObject(ctx, c, kind.Kind, orDefault(namespace, "default"), name, func(obj *pb.Object) (bool, error) {
				spec := podSpecOf(obj)
				if spec == nil {
					return false, fmt.Errorf("%s has no containers", objectRef(obj))
				}
				return setImages(spec, images)
			})
			if err != nil {
				return apiError(err)
			}
			if !changed {
				fmt.Fprintf(o.Out, "%s image unchanged\n", objectRef(obj))
				return nil
			}
			fmt.Fprintf(o.Out, "%s image updated\n", objectRef(obj))
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}
