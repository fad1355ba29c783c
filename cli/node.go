package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

func newCordonCommand(o *Options, cordon bool) *cobra.Command {
	use, short, example := "cordon NODE", "Mark a node unschedulable: no new pods go there", `  skiff cordon w2
  skiff get nodes          # w2 shows SchedulingDisabled`
	if !cordon {
		use, short, example = "uncordon NODE", "Mark a node schedulable again", `  skiff uncordon w2`
	}
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    short + ". Pods already running there keep running; `skiff drain` also moves them away.",
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			return setUnschedulable(ctx, o.Out, c, args[0], cordon)
		},
	}
}

func setUnschedulable(ctx context.Context, out io.Writer, c *client.Client, node string, on bool) error {
	obj, changed, err := mutateObject(ctx, c, "Node", "", node, func(obj *pb.Object) (bool, error) {
		n := obj.GetNode()
		if n.Spec == nil {
			n.Spec = &pb.NodeSpec{}
		}
		if n.Spec.Unschedulable == on {
			return false, nil
		}
		n.Spec.Unschedulable = on
		return true, nil
	})
	if err != nil {
		return apiError(err)
	}
	word := "cordoned"
	if !on {
		word = "uncordoned"
	}
	if !changed {
		word = "already " + word
	}
	fmt.Fprintf(out, "%s %s\n", objectRef(obj), word)
	return nil
}

// drainOptions are drain's flags.
type drainOptions struct {
	gracePeriod        int64
	timeout            time.Duration
	ignoreDaemonSets   bool
	force              bool
	deleteEmptyDirData bool
}

// drainPlan sorts the pods of a node into those to evict and those to leave,
// as kubectl drain does; problems are the pods that stop the drain unless
// a flag allows them.
type drainPlan struct {
	evict    []*pb.Pod
	waitFor  []*pb.Pod // being deleted already
	warnings []string
	problems []string
}

func planDrain(pods []*pb.Pod, opts drainOptions) drainPlan {
	var p drainPlan
	var daemons, unmanaged, local, problemsDS, problemsBare, problemsLocal []string
	for _, pod := range pods {
		m := pod.GetMetadata()
		key := m.Key()
		if m.GetDeletionTimestamp() != nil {
			p.waitFor = append(p.waitFor, pod)
			continue
		}
		finished := pod.GetStatus().GetPhase() == "Succeeded" || pod.GetStatus().GetPhase() == "Failed"
		var owner *pb.OwnerReference
		for _, r := range m.GetOwnerReferences() {
			if r.GetController() {
				owner = r
			}
		}
		switch {
		case owner != nil && owner.GetKind() == "DaemonSet" && !finished:
			// Its DaemonSet would put it right back.
			if opts.ignoreDaemonSets {
				daemons = append(daemons, key)
			} else {
				problemsDS = append(problemsDS, key)
			}
			continue
		case owner == nil && !finished:
			if !opts.force {
				problemsBare = append(problemsBare, key)
				continue
			}
			unmanaged = append(unmanaged, key)
		}
		if hasEmptyDir(pod) && !finished {
			if !opts.deleteEmptyDirData {
				problemsLocal = append(problemsLocal, key)
				continue
			}
			local = append(local, key)
		}
		p.evict = append(p.evict, pod)
	}
	if len(problemsDS) > 0 {
		p.problems = append(p.problems, "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "+strings.Join(problemsDS, ", "))
	}
	if len(problemsBare) > 0 {
		p.problems = append(p.problems, "cannot delete Pods that declare no controller (use --force to override): "+strings.Join(problemsBare, ", "))
	}
	if len(problemsLocal) > 0 {
		p.problems = append(p.problems, "cannot delete Pods with local storage (use --delete-emptydir-data to override): "+strings.Join(problemsLocal, ", "))
	}
	if len(daemons) > 0 {
		p.warnings = append(p.warnings, "ignoring DaemonSet-managed Pods: "+strings.Join(daemons, ", "))
	}
	if len(unmanaged) > 0 {
		p.warnings = append(p.warnings, "deleting Pods that declare no controller: "+strings.Join(unmanaged, ", "))
	}
	if len(local) > 0 {
		p.warnings = append(p.warnings, "deleting Pods with local storage: "+strings.Join(local, ", "))
	}
	return p
}

func hasEmptyDir(p *pb.Pod) bool {
	for _, v := range p.GetSpec().GetVolumes() {
		if v.GetEmptyDir() != nil {
			return true
		}
	}
	return false
}

func newDrainCommand(o *Options) *cobra.Command {
	opts := drainOptions{}
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Cordon a node and move its pods elsewhere",
		Long: `Drain cordons the node, then evicts its pods gracefully (each gets its termination grace
period, or --grace-period) so their controllers start replacements elsewhere, and waits
until they are gone. Pods of DaemonSets stay unless --ignore-daemonsets is given (they are
then left alone); pods without a controller, which nothing would replace, are deleted only
with --force; pods with emptyDir data only with --delete-emptydir-data.`,
		Example: `  skiff drain w2 --ignore-daemonsets
  skiff drain w2 --ignore-daemonsets --force --grace-period 10 --timeout 2m
  skiff uncordon w2        # when it is back`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			return runDrain(o, c, args[0], opts)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&opts.gracePeriod, "grace-period", -1, "seconds each pod gets to stop (-1: the pod's own terminationGracePeriodSeconds)")
	f.DurationVar(&opts.timeout, "timeout", 0, "give up after this long (0: wait as long as it takes)")
	f.BoolVar(&opts.ignoreDaemonSets, "ignore-daemonsets", false, "leave DaemonSet-managed pods in place instead of refusing to drain")
	f.BoolVar(&opts.force, "force", false, "also delete pods that no controller will replace")
	f.BoolVar(&opts.deleteEmptyDirData, "delete-emptydir-data", false, "also delete pods with emptyDir volumes (their data is lost)")
	return cmd
}

func runDrain(o *Options, c *client.Client, node string, opts drainOptions) error {
	ctx, stop := interruptible()
	defer stop()
	if opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}
	if err := setUnschedulable(ctx, o.Out, c, node, true); err != nil {
		return err
	}
	list, rv, err := c.List(ctx, "Pod", client.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return apiError(err)
	}
	pods := make([]*pb.Pod, 0, len(list))
	for _, obj := range list {
		pods = append(pods, obj.GetPod())
	}
	plan := planDrain(pods, opts)
	if len(plan.problems) > 0 {
		return fmt.Errorf("unable to drain node %q (it stays cordoned):\n  %s", node, strings.Join(plan.problems, "\n  "))
	}
	for _, w := range plan.warnings {
		fmt.Fprintf(o.ErrOut, "Warning: %s\n", w)
	}
	pending := map[string]string{} // pod key -> uid
	for _, p := range plan.waitFor {
		pending[p.GetMetadata().Key()] = p.GetMetadata().GetUid()
	}
	for _, p := range plan.evict {
		m := p.GetMetadata()
		fmt.Fprintf(o.Out, "evicting pod %s\n", m.Key())
		op := &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()}
		if opts.gracePeriod >= 0 {
			g := opts.gracePeriod
			op.GracePeriodSeconds = &g
		}
		_, err := c.Delete(ctx, op)
		switch {
		case status.Code(err) == codes.NotFound || status.Code(err) == codes.Aborted:
			// Gone already, or replaced by another pod of the same name.
			fmt.Fprintf(o.Out, "pod/%s evicted\n", m.GetName())
			continue
		case err != nil:
			return fmt.Errorf("evict pod %s: %s", m.Key(), errMessage(err))
		}
		pending[m.Key()] = m.GetUid()
	}
	if err := waitPodsGone(ctx, o.Out, c, node, rv, pending); err != nil {
		// Past --timeout the last request failed either way: this
		// process's context ended, or a master answered DeadlineExceeded
		// for the deadline the request carried.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("drain of node %q did not finish within %s: %d pods left: %s", node, opts.timeout, len(pending), strings.Join(sortedKeys(pending), ", "))
		}
		return err
	}
	fmt.Fprintf(o.Out, "node/%s drained\n", node)
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitPodsGone follows the node's pods until none of pending (key -> uid)
// exists any more, printing each as it goes. A watch carries the news; a
// list every few seconds covers a watch that cannot resume.
func waitPodsGone(ctx context.Context, out io.Writer, c *client.Client, node string, rv uint64, pending map[string]string) error {
	gone := func(key string) {
		if _, ok := pending[key]; ok {
			delete(pending, key)
			_, name := splitKey(key)
			fmt.Fprintf(out, "pod/%s evicted\n", name)
		}
	}
	relist := func() error {
		list, listRV, err := c.List(ctx, "Pod", client.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return err
		}
		present := map[string]string{}
		for _, o := range list {
			present[o.Meta().Key()] = o.Meta().GetUid()
		}
		for _, key := range sortedKeys(pending) {
			if uid, ok := present[key]; !ok || uid != pending[key] {
				gone(key)
			}
		}
		rv = listRV
		return nil
	}
	if err := relist(); err != nil {
		return apiError(err)
	}
	for len(pending) > 0 {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		w, err := c.Watch(wctx, "Pod", client.WatchOptions{FieldSelector: "spec.nodeName=" + node, ResourceVersion: rv, BookmarkSeconds: 5})
		if err == nil {
			for len(pending) > 0 {
				ev, err := w.Next(wctx)
				if err != nil {
					break
				}
				if ev.GetType() == "DELETED" && pending[ev.GetObject().Meta().Key()] == ev.GetObject().Meta().GetUid() {
					gone(ev.GetObject().Meta().Key())
				}
			}
			rv = w.ResourceVersion()
			w.Close()
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(pending) > 0 {
			if err := relist(); err != nil && ctx.Err() == nil {
				return apiError(err)
			}
		}
	}
	return nil
}

func splitKey(key string) (ns, name string) {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}
