package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

func newDescribeCommand(o *Options) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "describe KIND NAME | KIND/NAME",
		Short: "Show one object in detail, with its recent events",
		Example: `  skiff describe pod web-7d9f-abcde
  skiff describe deployment/web
  skiff describe node w1`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := parseTargets(args)
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			for i, t := range targets {
				if len(t.names) == 0 {
					return fmt.Errorf("describe needs a name: skiff describe %s NAME", strings.ToLower(t.kind.Kind))
				}
				ns := namespace
				if !t.kind.Namespaced {
					ns = ""
				}
				for _, n := range t.names {
					obj, err := c.Get(ctx, t.kind.Kind, ns, n, client.ReadOptions{})
					if err != nil {
						return apiError(err)
					}
					var events []*pb.Object
					if t.kind.Kind != "Event" {
						evs, _, err := c.List(ctx, "Event", client.ListOptions{Namespace: eventNamespace(obj)})
						if err != nil {
							return apiError(err)
						}
						events = eventsFor(obj, evs)
					}
					var lease *pb.Lease
					if t.kind.Kind == "Node" {
						// A node's heartbeat, as kubectl describe node
						// shows it; a node without one shows <none>.
						l, err := c.Get(ctx, "Lease", pb.NamespaceNodeLease, n, client.ReadOptions{})
						if err != nil && status.Code(err) != codes.NotFound {
							return apiError(err)
						}
						lease = l.GetLease()
					}
					if i > 0 {
						fmt.Fprintln(o.Out)
					}
					if err := describe(o.Out, obj, lease, events, time.Now()); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of the object")
	return cmd
}

// Events of cluster-scoped objects (nodes) are recorded in "default", as
// Kubernetes does.
func eventNamespace(obj *pb.Object) string {
	if ns := obj.Meta().GetNamespace(); ns != "" {
		return ns
	}
	return "default"
}

func eventsFor(obj *pb.Object, events []*pb.Object) []*pb.Object {
	m := obj.Meta()
	var out []*pb.Object
	for _, e := range events {
		io := e.GetEvent().GetInvolvedObject()
		if io.GetKind() == obj.KindName() && io.GetName() == m.GetName() && (io.GetUid() == "" || io.GetUid() == m.GetUid()) {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].GetEvent().GetLastTimestamp().AsTime().Before(out[j].GetEvent().GetLastTimestamp().AsTime())
	})
	return out
}

// describe prints the metadata a person looks for first (for a Node, its
// Lease too), then the rest of the object as YAML, then its events.
func describe(w io.Writer, obj *pb.Object, lease *pb.Lease, events []*pb.Object, now time.Time) error {
	m := obj.Meta()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Kind:\t%s\n", obj.KindName())
	fmt.Fprintf(tw, "Name:\t%s\n", m.GetName())
	if m.GetNamespace() != "" {
		fmt.Fprintf(tw, "Namespace:\t%s\n", m.GetNamespace())
	}
	fmt.Fprintf(tw, "Labels:\t%s\n", mapString(m.GetLabels()))
	fmt.Fprintf(tw, "Annotations:\t%s\n", mapString(m.GetAnnotations()))
	if ts := m.GetCreationTimestamp(); ts != nil {
		fmt.Fprintf(tw, "Created:\t%s (%s ago)\n", ts.AsTime().UTC().Format(time.RFC1123), humanDuration(now.Sub(ts.AsTime())))
	}
	fmt.Fprintf(tw, "UID:\t%s\n", m.GetUid())
	fmt.Fprintf(tw, "Resource Version:\t%d\n", m.GetResourceVersion())
	if m.GetGeneration() != 0 {
		fmt.Fprintf(tw, "Generation:\t%d\n", m.GetGeneration())
	}
	for _, ref := range m.GetOwnerReferences() {
		label := "Owned By:"
		if ref.GetController() {
			label = "Controlled By:"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\n", label, ref.GetKind(), ref.GetName())
	}
	if len(m.GetFinalizers()) > 0 {
		fmt.Fprintf(tw, "Finalizers:\t%s\n", strings.Join(m.GetFinalizers(), ", "))
	}
	if ts := m.GetDeletionTimestamp(); ts != nil {
		fmt.Fprintf(tw, "Deleting Since:\t%s\n", ts.AsTime().UTC().Format(time.RFC1123))
	}
	if node := obj.GetNode(); node != nil {
		// Taints and unschedulable, as kubectl describe node shows them:
		// what keeps pods off the node.
		taints := node.GetSpec().GetTaints()
		if len(taints) == 0 {
			fmt.Fprintf(tw, "Taints:\t<none>\n")
		}
		for i, t := range taints {
			label := ""
			if i == 0 {
				label = "Taints:"
			}
			fmt.Fprintf(tw, "%s\t%s\n", label, taintString(t))
		}
		fmt.Fprintf(tw, "Unschedulable:\t%t\n", node.GetSpec().GetUnschedulable())
		if lease == nil {
			fmt.Fprintf(tw, "Lease:\t<none>\n")
		} else {
			s := lease.GetSpec()
			fmt.Fprintf(tw, "Lease:\t\n  HolderIdentity:\t%s\n", s.GetHolderIdentity())
			for _, f := range []struct {
				name string
				ts   *timestamppb.Timestamp
			}{{"AcquireTime", s.GetAcquireTime()}, {"RenewTime", s.GetRenewTime()}} {
				v := "<unset>"
				if f.ts != nil {
					v = fmt.Sprintf("%s (%s ago)", f.ts.AsTime().UTC().Format(time.RFC1123), humanDuration(now.Sub(f.ts.AsTime())))
				}
				fmt.Fprintf(tw, "  %s:\t%s\n", f.name, v)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := describeBody(w, obj); err != nil {
		return err
	}
	fmt.Fprintln(w, "Events:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tFrom\tMessage")
	for _, e := range events {
		ev := e.GetEvent()
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", ev.GetType(), ev.GetReason(), lastSeen(ev, now), ev.GetSource().GetComponent(), ev.GetMessage())
	}
	return tw.Flush()
}

// describeBody prints everything but metadata (spec, status, data) as YAML
// with capitalised section names.
func describeBody(w io.Writer, obj *pb.Object) error {
	data, err := pb.EncodeJSON(obj)
	if err != nil {
		return err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		switch k {
		case "apiVersion", "kind", "metadata":
			continue
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return sectionOrder(keys[i]) < sectionOrder(keys[j]) })
	for _, k := range keys {
		y, err := yaml.JSONToYAML(doc[k])
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s:\n", strings.ToUpper(k[:1])+k[1:])
		for _, line := range strings.Split(strings.TrimRight(string(y), "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
	return nil
}

func sectionOrder(k string) string {
	switch k {
	case "spec":
		return "0"
	case "status":
		return "1"
	}
	return "2" + k
}
