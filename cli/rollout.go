package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// Annotations and labels the deployment controller writes, as Kubernetes
// names them.
const (
	revisionAnnotation    = "deployment.kubernetes.io/revision"
	changeCauseAnnotation = "kubernetes.io/change-cause"
	podTemplateHashLabel  = "pod-template-hash"
	restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
)

func newRolloutCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout SUBCOMMAND",
		Short: "Follow, restart, pause, resume, undo and list the rollouts of a Deployment or DaemonSet",
		Long: `Rollout manages how a Deployment or DaemonSet moves from one pod template to the next: follow a
rollout until it completes, list the revisions a Deployment has had, go back to one, pause and
resume, restart every pod.

status and restart take a deployment or a daemonset; history, undo, pause and resume take a
deployment. A DaemonSet with the OnDelete update strategy has no rollout to follow: its pods take
the new template only as they are deleted.`,
		Example: `  skiff rollout status deployment/web
  skiff rollout status daemonset/node-agent
  skiff rollout history deployment/web
  skiff rollout undo deployment/web --to-revision 2
  skiff rollout pause deployment/web
  skiff rollout resume deployment/web
  skiff rollout restart deployment/web
  skiff rollout restart daemonset/node-agent`,
	}
	cmd.AddCommand(
		newRolloutStatusCommand(o),
		newRolloutHistoryCommand(o),
		newRolloutUndoCommand(o),
		newRolloutPauseCommand(o, true),
		newRolloutPauseCommand(o, false),
		newRolloutRestartCommand(o),
	)
	return cmd
}

// parseWorkload accepts "KIND/NAME" or "KIND NAME" naming one object of one
// of the allowed kinds.
func parseWorkload(args []string, allowed ...string) (pb.KindInfo, string, error) {
	var kind, name string
	switch {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		kind, name, _ = strings.Cut(args[0], "/")
	case len(args) == 2:
		kind, name = args[0], args[1]
	default:
		return pb.KindInfo{}, "", fmt.Errorf("name one object: KIND/NAME or KIND NAME (%s)", strings.Join(lower(allowed), ", "))
	}
	info, err := lookupKind(kind)
	if err != nil {
		return pb.KindInfo{}, "", err
	}
	for _, a := range allowed {
		if info.Kind == a {
			if name == "" {
				return pb.KindInfo{}, "", fmt.Errorf("%q: the name is missing", args[0])
			}
			return info, name, nil
		}
	}
	return pb.KindInfo{}, "", fmt.Errorf("%s are not supported here: use %s", info.Plural, strings.Join(lower(allowed), ", "))
}

func lower(kinds []string) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = strings.ToLower(k)
	}
	return out
}

// mutateObject reads an object, lets fn change it, and writes it back with
// the resourceVersion it read as a precondition; when someone else changed
// the object in between, it reads again and retries. fn reports whether it
// changed anything (nothing is written otherwise).
func mutateObject(ctx context.Context, c *client.Client, kind, ns, name string, fn func(o *pb.Object) (bool, error)) (*pb.Object, bool, error) {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		obj, err := c.Get(ctx, kind, ns, name, client.ReadOptions{})
		if err != nil {
			return nil, false, err
		}
		changed, err := fn(obj)
		if err != nil || !changed {
			return obj, false, err
		}
		resp, err := c.Update(ctx, obj)
		if status.Code(err) == codes.Aborted && attempt < 10 {
			select {
			case <-ctx.Done():
				return nil, false, ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
			continue
		}
		if err != nil {
			return nil, false, err
		}
		return resp.GetObject(), true, nil
	}
}

// ---- status ----

// rolloutStatus says where a rollout stands, worded as kubectl's: a
// message, whether it is complete, and an error when it failed (its
// progress deadline passed) or cannot be followed.
func rolloutStatus(obj *pb.Object) (msg string, done bool, err error) {
	switch {
	case obj.GetDeployment() != nil:
		return deploymentRolloutStatus(obj.GetDeployment())
	case obj.GetDaemonSet() != nil:
		return daemonSetRolloutStatus(obj.GetDaemonSet())
	}
	return "", false, fmt.Errorf("rollout status is not supported for %s", obj.KindName())
}

func deploymentRolloutStatus(d *pb.Deployment) (string, bool, error) {
	name := d.GetMetadata().GetName()
	st := d.GetStatus()
	if d.GetMetadata().GetGeneration() > st.GetObservedGeneration() {
		return "Waiting for deployment spec update to be observed...", false, nil
	}
	for _, c := range st.GetConditions() {
		if c.GetType() == "Progressing" && c.GetReason() == "ProgressDeadlineExceeded" {
			return "", false, fmt.Errorf("deployment %q exceeded its progress deadline", name)
		}
	}
	want := replicas(d.GetSpec().Replicas)
	switch {
	case st.GetUpdatedReplicas() < want:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...", name, st.GetUpdatedReplicas(), want), false, nil
	case st.GetReplicas() > st.GetUpdatedReplicas():
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...", name, st.GetReplicas()-st.GetUpdatedReplicas()), false, nil
	case st.GetAvailableReplicas() < st.GetUpdatedReplicas():
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...", name, st.GetAvailableReplicas(), st.GetUpdatedReplicas()), false, nil
	}
	return fmt.Sprintf("deployment %q successfully rolled out", name), true, nil
}

func daemonSetRolloutStatus(ds *pb.DaemonSet) (string, bool, error) {
	name := ds.GetMetadata().GetName()
	if t := ds.GetSpec().GetUpdateStrategy().GetType(); t != "" && t != "RollingUpdate" {
		return "", false, errors.New("rollout status is only available for RollingUpdate strategy type")
	}
	st := ds.GetStatus()
	if ds.GetMetadata().GetGeneration() > st.GetObservedGeneration() {
		return "Waiting for daemon set spec update to be observed...", false, nil
	}
	switch {
	case st.GetUpdatedNumberScheduled() < st.GetDesiredNumberScheduled():
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...", name, st.GetUpdatedNumberScheduled(), st.GetDesiredNumberScheduled()), false, nil
	case st.GetNumberAvailable() < st.GetDesiredNumberScheduled():
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...", name, st.GetNumberAvailable(), st.GetDesiredNumberScheduled()), false, nil
	}
	return fmt.Sprintf("daemon set %q successfully rolled out", name), true, nil
}

func newRolloutStatusCommand(o *Options) *cobra.Command {
	var namespace string
	var watch bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status deployment/NAME | daemonset/NAME",
		Short: "Follow a rollout until it completes",
		Long: `Status prints the progress of the latest rollout and, with --watch (the default), follows it
until every replica runs the new template and is available. It exits non-zero if the
Deployment's progress deadline passes, or --timeout does.`,
		Example: `  skiff rollout status deployment/web
  skiff rollout status deployment web --timeout 2m
  skiff rollout status daemonset/node-agent --watch=false`,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := parseWorkload(args, "Deployment", "DaemonSet")
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stop := interruptible()
			defer stop()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			err = followRollout(ctx, o.Out, c, kind.Kind, orDefault(namespace, "default"), name, watch)
			return rolloutTimedOut(ctx, err, timeout, kind.Kind, name)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().BoolVarP(&watch, "watch", "w", true, "follow the rollout until it is done")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: wait as long as it takes)")
	return cmd
}

// rolloutTimedOut words err as a timeout once --timeout has passed. The
// request that failed then may have failed either way: the client saw its
// context end, or a master found the deadline the request carried had
// passed and answered DeadlineExceeded.
func rolloutTimedOut(ctx context.Context, err error, timeout time.Duration, kind, name string) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s waiting for the rollout of %s/%s", timeout, strings.ToLower(kind), name)
	}
	return err
}

// followRollout prints the rollout's status each time it changes until it
// is complete (or at once, without watch).
func followRollout(ctx context.Context, out io.Writer, c *client.Client, kind, ns, name string, watch bool) error {
	obj, err := c.Get(ctx, kind, ns, name, client.ReadOptions{})
	if err != nil {
		return apiError(err)
	}
	last := ""
	report := func(obj *pb.Object) (bool, error) {
		msg, done, err := rolloutStatus(obj)
		if err != nil {
			return false, err
		}
		if msg != last {
			fmt.Fprintln(out, msg)
			last = msg
		}
		return done, nil
	}
	if done, err := report(obj); err != nil || done || !watch {
		return err
	}
	var rerr error
	err = followObject(ctx, c, kind, ns, name, obj.Meta().GetResourceVersion(), func(obj *pb.Object) (bool, error) {
		if obj == nil {
			rerr = fmt.Errorf("%s/%s was deleted", strings.ToLower(kind), name)
			return false, rerr
		}
		var done bool
		done, rerr = report(obj)
		return done, rerr
	})
	switch {
	case rerr != nil:
		return rerr
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	}
	return apiError(err)
}

// ---- history ----

// revisionsOf returns the Deployment's ReplicaSets, by revision (oldest
// first).
func revisionsOf(d *pb.Object, replicaSets []*pb.Object) []*pb.Object {
	var out []*pb.Object
	for _, rs := range replicaSets {
		for _, r := range rs.Meta().GetOwnerReferences() {
			if r.GetController() && r.GetUid() == d.Meta().GetUid() {
				out = append(out, rs)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return revisionOf(out[i]) < revisionOf(out[j]) })
	return out
}

func revisionOf(rs *pb.Object) int64 {
	n, _ := strconv.ParseInt(rs.Meta().GetAnnotations()[revisionAnnotation], 10, 64)
	return n
}

// withoutHash returns a copy of a ReplicaSet's template without the
// pod-template-hash label the deployment controller added.
func withoutHash(t *pb.PodTemplateSpec) *pb.PodTemplateSpec {
	if t == nil {
		return &pb.PodTemplateSpec{}
	}
	c := proto.Clone(t).(*pb.PodTemplateSpec)
	if c.Metadata != nil {
		delete(c.Metadata.Labels, podTemplateHashLabel)
		if len(c.Metadata.Labels) == 0 {
			c.Metadata.Labels = nil
		}
		if proto.Size(c.Metadata) == 0 {
			c.Metadata = nil
		}
	}
	return c
}

func printHistory(w io.Writer, d *pb.Object, revs []*pb.Object) {
	fmt.Fprintf(w, "%s\n", objectRef(d))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "REVISION\tCHANGE-CAUSE")
	for _, rs := range revs {
		cause := rs.Meta().GetAnnotations()[changeCauseAnnotation]
		fmt.Fprintf(tw, "%d\t%s\n", revisionOf(rs), orDefault(cause, "<none>"))
	}
	tw.Flush()
}

func printRevision(w io.Writer, d *pb.Object, rs *pb.Object) {
	fmt.Fprintf(w, "%s with revision #%d\n", objectRef(d), revisionOf(rs))
	t := rs.GetReplicaSet().GetSpec().GetTemplate()
	fmt.Fprintln(w, "Pod Template:")
	fmt.Fprintf(w, "  Labels:\t%s\n", mapString(t.GetMetadata().GetLabels()))
	if a := t.GetMetadata().GetAnnotations(); len(a) > 0 {
		fmt.Fprintf(w, "  Annotations:\t%s\n", mapString(a))
	}
	fmt.Fprintln(w, "  Containers:")
	for _, c := range t.GetSpec().GetContainers() {
		fmt.Fprintf(w, "   %s:\n    Image:\t%s\n", c.GetName(), c.GetImage())
		if ports := c.GetPorts(); len(ports) > 0 {
			var ps []string
			for _, p := range ports {
				ps = append(ps, fmt.Sprintf("%d/%s", p.GetContainerPort(), orDefault(p.GetProtocol(), "TCP")))
			}
			fmt.Fprintf(w, "    Port:\t%s\n", strings.Join(ps, ", "))
		}
		for _, e := range c.GetEnv() {
			fmt.Fprintf(w, "    Env:\t%s=%s\n", e.GetName(), e.GetValue())
		}
	}
}

func newRolloutHistoryCommand(o *Options) *cobra.Command {
	var namespace string
	var revision int64
	cmd := &cobra.Command{
		Use:   "history deployment/NAME",
		Short: "List the revisions of a Deployment",
		Long: `History lists a Deployment's revisions, one per ReplicaSet it has kept
(spec.revisionHistoryLimit bounds how many), with the change cause when the
kubernetes.io/change-cause annotation records one. --revision shows one revision's pod template.`,
		Example: `  skiff rollout history deployment/web
  skiff rollout history deployment/web --revision 3`,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, name, err := parseWorkload(args, "Deployment")
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			ns := orDefault(namespace, "default")
			d, revs, err := deploymentHistory(ctx, c, ns, name)
			if err != nil {
				return err
			}
			if revision == 0 {
				if len(revs) == 0 {
					fmt.Fprintf(o.ErrOut, "No rollout history found for %s.\n", objectRef(d))
					return nil
				}
				printHistory(o.Out, d, revs)
				return nil
			}
			for _, rs := range revs {
				if revisionOf(rs) == revision {
					printRevision(o.Out, d, rs)
					return nil
				}
			}
			return fmt.Errorf("unable to find the specified revision %d in the history of %s", revision, objectRef(d))
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().Int64Var(&revision, "revision", 0, "show the pod template of this revision")
	return cmd
}

func deploymentHistory(ctx context.Context, c *client.Client, ns, name string) (*pb.Object, []*pb.Object, error) {
	d, err := c.Get(ctx, "Deployment", ns, name, client.ReadOptions{})
	if err != nil {
		return nil, nil, apiError(err)
	}
	rss, _, err := c.List(ctx, "ReplicaSet", client.ListOptions{Namespace: ns})
	if err != nil {
		return nil, nil, apiError(err)
	}
	return d, revisionsOf(d, rss), nil
}

// ---- undo ----

// undoTarget picks the ReplicaSet to roll back to: revision to, or (0) the
// revision before the latest.
func undoTarget(revs []*pb.Object, to int64) (*pb.Object, error) {
	if to == 0 {
		if len(revs) < 2 {
			return nil, errors.New("no previous revision to roll back to")
		}
		return revs[len(revs)-2], nil
	}
	for _, rs := range revs {
		if revisionOf(rs) == to {
			return rs, nil
		}
	}
	return nil, fmt.Errorf("unable to find the specified revision %d in history", to)
}

func newRolloutUndoCommand(o *Options) *cobra.Command {
	var namespace string
	var to int64
	cmd := &cobra.Command{
		Use:   "undo deployment/NAME [--to-revision N]",
		Short: "Roll a Deployment back to an earlier revision",
		Long: `Undo copies the pod template of an earlier revision (the one before the latest, or
--to-revision) back into the Deployment, which then rolls out as any other change and
becomes the newest revision.`,
		Example: `  skiff rollout undo deployment/web
  skiff rollout undo deployment/web --to-revision 2
  skiff rollout undo deployment/web && skiff rollout status deployment/web`,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, name, err := parseWorkload(args, "Deployment")
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			ns := orDefault(namespace, "default")
			skipped := int64(-1)
			d, changed, err := mutateObject(ctx, c, "Deployment", ns, name, func(obj *pb.Object) (bool, error) {
				dep := obj.GetDeployment()
				if dep.GetSpec().GetPaused() {
					return false, fmt.Errorf("%s is paused; resume it first with `skiff rollout resume %s` and try again", objectRef(obj), objectRef(obj))
				}
				rss, _, err := c.List(ctx, "ReplicaSet", client.ListOptions{Namespace: ns})
				if err != nil {
					return false, err
				}
				target, err := undoTarget(revisionsOf(obj, rss), to)
				if err != nil {
					return false, err
				}
				tmpl := withoutHash(target.GetReplicaSet().GetSpec().GetTemplate())
				if proto.Equal(tmpl, withoutHash(dep.GetSpec().GetTemplate())) {
					skipped = revisionOf(target)
					return false, nil
				}
				dep.Spec.Template = tmpl
				return true, nil
			})
			if err != nil {
				return apiError(err)
			}
			if !changed {
				fmt.Fprintf(o.Out, "%s skipped rollback (current template already matches revision %d)\n", objectRef(d), skipped)
				return nil
			}
			fmt.Fprintf(o.Out, "%s rolled back\n", objectRef(d))
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().Int64Var(&to, "to-revision", 0, "the revision to roll back to (0: the one before the latest)")
	return cmd
}

// ---- pause, resume, restart ----

func newRolloutPauseCommand(o *Options, pause bool) *cobra.Command {
	var namespace string
	verb, past := "pause", "paused"
	short := "Pause a Deployment's rollouts: template changes wait until it is resumed"
	example := `  skiff rollout pause deployment/web
  skiff set image deployment/web app=web:v2     # recorded, not rolled out
  skiff rollout resume deployment/web           # rolls out now`
	if !pause {
		verb, past = "resume", "resumed"
		short = "Resume a paused Deployment: changes made meanwhile roll out"
		example = `  skiff rollout resume deployment/web`
	}
	cmd := &cobra.Command{
		Use:     verb + " deployment/NAME",
		Short:   short,
		Example: example,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, name, err := parseWorkload(args, "Deployment")
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			d, changed, err := mutateObject(ctx, c, "Deployment", orDefault(namespace, "default"), name, func(obj *pb.Object) (bool, error) {
				spec := obj.GetDeployment().GetSpec()
				if spec.GetPaused() == pause {
					return false, nil
				}
				spec.Paused = pause
				return true, nil
			})
			if err != nil {
				return apiError(err)
			}
			if !changed {
				return fmt.Errorf("%s is already %s", objectRef(d), past)
			}
			fmt.Fprintf(o.Out, "%s %s\n", objectRef(d), past)
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}

func newRolloutRestartCommand(o *Options) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "restart deployment/NAME | daemonset/NAME",
		Short: "Replace every pod of a workload, as a rollout",
		Long: `Restart stamps the pod template with the time (the kubectl.kubernetes.io/restartedAt
annotation), which rolls every pod over within the workload's update bounds.`,
		Example: `  skiff rollout restart deployment/web
  skiff rollout restart daemonset/node-agent`,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := parseWorkload(args, "Deployment", "DaemonSet")
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			now := time.Now().UTC().Format(time.RFC3339)
			obj, _, err := mutateObject(ctx, c, kind.Kind, orDefault(namespace, "default"), name, func(obj *pb.Object) (bool, error) {
				var t *pb.PodTemplateSpec
				switch {
				case obj.GetDeployment() != nil:
					t = obj.GetDeployment().GetSpec().GetTemplate()
				case obj.GetDaemonSet() != nil:
					t = obj.GetDaemonSet().GetSpec().GetTemplate()
				}
				if t == nil {
					return false, fmt.Errorf("%s has no pod template", objectRef(obj))
				}
				if t.Metadata == nil {
					t.Metadata = &pb.ObjectMeta{}
				}
				if t.Metadata.Annotations == nil {
					t.Metadata.Annotations = map[string]string{}
				}
				t.Metadata.Annotations[restartedAtAnnotation] = now
				return true, nil
			})
			if err != nil {
				return apiError(err)
			}
			fmt.Fprintf(o.Out, "%s restarted\n", objectRef(obj))
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}
