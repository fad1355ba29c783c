package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	pb "github.com/skiff-sh/skiff/proto"
)

// resourceEdit is what one set resources command gives every container it
// selects: quantities by resource name.
type resourceEdit struct {
	limits, requests map[string]resource.Quantity
}

// parseResourceList reads a --limits or --requests value,
// RESOURCE=QUANTITY[,RESOURCE=QUANTITY...], with the quantity parser the
// masters validate by. A resource is cpu, memory, ephemeral-storage,
// hugepages-<size> or a domain-qualified name (example.com/gpu), the names
// the masters take for containers; a quantity is not negative.
func parseResourceList(flag, s string) (map[string]resource.Quantity, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]resource.Quantity{}
	var errs []string
	for _, part := range strings.Split(s, ",") {
		name, value, ok := strings.Cut(part, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" || value == "" {
			errs = append(errs, fmt.Sprintf("--%s: %q: expected RESOURCE=QUANTITY, e.g. cpu=100m,memory=256Mi", flag, part))
			continue
		}
		if !strings.Contains(name, "/") && name != "cpu" && name != "memory" && name != "ephemeral-storage" && !strings.HasPrefix(name, "hugepages-") {
			errs = append(errs, fmt.Sprintf("--%s: unknown resource %q: containers take cpu, memory, ephemeral-storage, hugepages-<size> or a domain-qualified name such as example.com/gpu", flag, name))
			continue
		}
		q, err := resource.ParseQuantity(value)
		if err != nil {
			errs = append(errs, fmt.Sprintf("--%s: invalid quantity %q for %s: %v (e.g. 250m or 0.5 for cpu, 512Mi or 1G for memory)", flag, value, name, err))
			continue
		}
		if q.Sign() < 0 {
			errs = append(errs, fmt.Sprintf("--%s: invalid quantity %q for %s: must be greater than or equal to 0", flag, value, name))
			continue
		}
		out[name] = q
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return out, nil
}

// setQuantities writes want into have (created when nil) in canonical form
// (0.5 becomes 500m, as kubectl sends it) and reports whether any value
// changed; an equal quantity written otherwise (1000m for 1) is left as it
// is.
func setQuantities(have *map[string]string, want map[string]resource.Quantity) bool {
	changed := false
	for name, q := range want {
		if cur, ok := (*have)[name]; ok {
			if old, err := resource.ParseQuantity(cur); err == nil && old.Cmp(q) == 0 {
				continue
			}
		}
		if *have == nil {
			*have = map[string]string{}
		}
		(*have)[name] = q.String()
		changed = true
	}
	return changed
}

// applyResources gives e's quantities to the containers of spec that
// pattern selects and reports whether anything changed. A request above
// the container's limit for the same resource, afterwards, is an error
// naming the container: the masters would refuse the object.
func applyResources(spec *pb.PodSpec, pattern string, e resourceEdit) (bool, error) {
	cs, err := selectContainers(spec, pattern)
	if err != nil {
		return false, err
	}
	changed := false
	var errs []string
	for _, c := range cs {
		r := c.GetResources()
		if r == nil {
			r = &pb.ResourceRequirements{}
		}
		lim := setQuantities(&r.Limits, e.limits)
		if req := setQuantities(&r.Requests, e.requests); lim || req {
			c.Resources = r
			changed = true
		}
		for _, name := range sortedKeys(r.GetRequests()) {
			req, err1 := resource.ParseQuantity(r.GetRequests()[name])
			lim, err2 := resource.ParseQuantity(r.GetLimits()[name])
			if _, hasLimit := r.GetLimits()[name]; !hasLimit || err1 != nil || err2 != nil {
				continue
			}
			if req.Cmp(lim) > 0 {
				errs = append(errs, fmt.Sprintf("container %s: the %s request %s is more than its limit %s: a request must be less than or equal to the limit",
					c.GetName(), name, req.String(), lim.String()))
			}
		}
	}
	if len(errs) > 0 {
		return false, errors.New(strings.Join(errs, "; "))
	}
	return changed, nil
}

func newSetResourcesCommand(o *Options) *cobra.Command {
	var sel selection
	var containers, limits, requests string
	cmd := &cobra.Command{
		Use:   "resources (KIND NAME... | KIND/NAME... | KIND -l SELECTOR | KIND --all) [--limits=RESOURCE=QUANTITY,...] [--requests=RESOURCE=QUANTITY,...]",
		Short: "Set the resource requests and limits of the containers of workloads",
		Long: `Resources sets compute resource requests and limits (cpu, memory, ephemeral-storage, ...) of
the containers in the pod template of Deployments, DaemonSets and ReplicaSets. The scheduler
places a pod where its requests fit; limits bound what its containers may use. A change to a
Deployment's or DaemonSet's template rolls out.

  * --containers (-c) picks containers by name, '*' matching any run of characters; every
    container by default, init containers included, as kubectl does.
  * Quantities are Kubernetes': 100m or 0.1 cpu, 512Mi or 1G of memory. Resources not named keep
    their values; 0 sets a zero quantity, it does not remove one.
  * A request more than the container's limit of the same resource is refused, naming the
    container.
  * A pod's resources and a Job's pod template can not change once they exist, in Kubernetes as
    here: change the workload that makes the pods, or create the pod or Job again.

Every argument is checked before anything is written, and a concurrent change to an object is
retried, not lost. An object that already has the quantities asked for is not written
("resource requirements unchanged").`,
		Example: `  skiff set resources deployment/web --limits=cpu=200m,memory=512Mi --requests=cpu=100m
  skiff set resources deployment web -c app --requests=cpu=250m,memory=256Mi
  skiff set resources daemonset/node-agent --limits=memory=128Mi
  skiff set resources deployments -l tier=web --requests=cpu=100m`,
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			const verb, what = "set resources", "resource requirements"
			if limits == "" && requests == "" {
				return errors.New("you must specify an update to requests or limits: --limits=cpu=200m,memory=512Mi and/or --requests=cpu=100m")
			}
			var e resourceEdit
			var errs []string
			var err error
			if e.limits, err = parseResourceList("limits", limits); err != nil {
				errs = append(errs, err.Error())
			}
			if e.requests, err = parseResourceList("requests", requests); err != nil {
				errs = append(errs, err.Error())
			}
			if len(errs) > 0 {
				return errors.New(strings.Join(errs, "\n"))
			}
			if err := planPodSpecs(&sel, args, verb, what, true); err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			keys, err := sel.resolve(ctx, c, args, verb)
			if err != nil {
				return err
			}
			return changeEach(ctx, o, c, keys, "updated", func(obj *pb.Object) (string, bool, error) {
				if why := frozenContainers(obj.KindName(), what); why != "" {
					return "", false, errors.New(why)
				}
				spec := podSpecOf(obj)
				if spec == nil {
					return "", false, fmt.Errorf("%s has no containers", objectRef(obj))
				}
				changed, err := applyResources(spec, containers, e)
				if err != nil || !changed {
					return "resource requirements unchanged", false, err
				}
				return "resource requirements updated", true, nil
			})
		},
	}
	sel.addFlags(cmd, true)
	f := cmd.Flags()
	f.StringVarP(&containers, "containers", "c", "*", "the containers to change, by name; '*' matches any run of characters")
	f.StringVar(&limits, "limits", "", "limits to set, e.g. cpu=200m,memory=512Mi")
	f.StringVar(&requests, "requests", "", "requests to set, e.g. cpu=100m,memory=256Mi")
	return cmd
}
