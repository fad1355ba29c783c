package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

type getOptions struct {
	namespace     string
	allNamespaces bool
	selector      string
	fieldSelector string
	output        string
	watch         bool
	stale         bool
	noHeaders     bool
	showLabels    bool
	labelColumns  []string
	sortBy        string
}

func newGetCommand(o *Options) *cobra.Command {
	g := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get KIND[,KIND...] [NAME...] | KIND/NAME...",
		Short: "List objects, or show some by name",
		Long: `Get prints objects of one kind as a table, or as YAML, JSON or names with -o.
Kinds take their Kubernetes names, plurals or short names: pods, po, deployments, deploy, svc, ns, ...`,
		Example: `  skiff get pods
  skiff get pods -A -o wide
  skiff get deploy web -o yaml
  skiff get svc,endpoints -n demo
  skiff get pods -l app=web,tier!=db -w
  skiff get pods --field-selector spec.nodeName=w1
  skiff get pods -n demo --no-headers -o wide | awk '{print $6}'   # the pods' IPs
  skiff get pods -o jsonpath='{.items[*].status.podIP}'
  skiff get pods -o custom-columns=NAME:.metadata.name,NODE:.spec.nodeName --sort-by=.spec.nodeName
  skiff get nodes -L topology.kubernetes.io/zone --show-labels
  skiff get events --sort-by=.lastTimestamp`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(o, g, args)
		},
		ValidArgsFunction: completeKinds,
	}
	f := cmd.Flags()
	f.StringVarP(&g.namespace, "namespace", "n", "default", "namespace to read")
	f.BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "read every namespace")
	f.StringVarP(&g.selector, "selector", "l", "", "label selector: a=b, a!=b, a in (x,y), !a")
	f.StringVar(&g.fieldSelector, "field-selector", "", "field selector: metadata.name=x, spec.nodeName=w1, status.phase=Running; for events involvedObject.kind, .name, .uid, type, reason, source")
	f.StringVarP(&g.output, "output", "o", "", "output format: "+outputFormats)
	f.BoolVarP(&g.watch, "watch", "w", false, "after listing, print changes as they happen (Ctrl-C stops)")
	f.BoolVar(&g.stale, "stale", false, "read from whichever master answers without confirming it is current")
	f.BoolVar(&g.noHeaders, "no-headers", false, "print tables without their header line (for scripts)")
	f.BoolVar(&g.showLabels, "show-labels", false, "tables: a last column with every label")
	f.StringSliceVarP(&g.labelColumns, "label-columns", "L", nil, "tables: a column with the value of each of these label keys (comma-separated, repeatable)")
	f.StringVar(&g.sortBy, "sort-by", "", "order by the field at this JSONPath, e.g. .metadata.creationTimestamp or {.status.podIP}")
	return cmd
}

func completeKinds(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, k := range pb.Kinds() {
		if strings.HasPrefix(k.Plural, toComplete) {
			out = append(out, k.Plural)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// target is one KIND with the names asked for (none means all).
type target struct {
	kind  pb.KindInfo
	names []string
}

// parseTargets accepts "KIND[,KIND...] [NAME...]" and "KIND/NAME ...".
func parseTargets(args []string) ([]target, error) {
	if strings.Contains(args[0], "/") {
		var out []target
		for _, a := range args {
			k, name, ok := strings.Cut(a, "/")
			if !ok || name == "" {
				return nil, fmt.Errorf("%q: expected KIND/NAME when the first argument has that form", a)
			}
			info, err := lookupKind(k)
			if err != nil {
				return nil, err
			}
			out = append(out, target{kind: info, names: []string{name}})
		}
		return out, nil
	}
	var out []target
	for _, k := range strings.Split(args[0], ",") {
		info, err := lookupKind(k)
		if err != nil {
			return nil, err
		}
		out = append(out, target{kind: info, names: args[1:]})
	}
	return out, nil
}

func lookupKind(name string) (pb.KindInfo, error) {
	info, ok := pb.LookupKind(name)
	if !ok {
		var known []string
		for _, k := range pb.Kinds() {
			known = append(known, k.Plural)
		}
		return pb.KindInfo{}, fmt.Errorf("unknown kind %q; known kinds: %s", name, strings.Join(known, ", "))
	}
	return info, nil
}

func runGet(o *Options, g *getOptions, args []string) error {
	format, err := parseOutput(g.output)
	if err != nil {
		return err
	}
	if g.sortBy != "" {
		if _, err := parseJSONPath("--sort-by", g.sortBy, true); err != nil {
			return err
		}
	}
	targets, err := parseTargets(args)
	if err != nil {
		return err
	}
	if g.watch && (len(targets) != 1 || len(targets[0].names) > 1) {
		return errors.New("--watch takes one kind and at most one name")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := o.context()
	defer cancel()

	p := newPrinter(o.Out, format.name, g.allNamespaces)
	p.noHeaders, p.showLabels, p.labelColumns, p.template = g.noHeaders, g.showLabels, g.labelColumns, format
	p.single = len(targets) == 1 && len(targets[0].names) == 1
	var objs []*pb.Object
	var rv uint64
	var missing []string
	for _, t := range targets {
		ns := g.namespace
		if !t.kind.Namespaced {
			ns = ""
		}
		if len(t.names) == 0 {
			if g.allNamespaces {
				ns = ""
			}
			items, listRV, err := c.List(ctx, t.kind.Kind, client.ListOptions{
				Namespace: ns, LabelSelector: g.selector, FieldSelector: g.fieldSelector, Stale: g.stale,
			})
			if err != nil {
				return apiError(err)
			}
			objs = append(objs, items...)
			rv = listRV
			continue
		}
		for _, name := range t.names {
			obj, err := c.Get(ctx, t.kind.Kind, ns, name, client.ReadOptions{Stale: g.stale})
			if status.Code(err) == codes.NotFound {
				missing = append(missing, fmt.Sprintf("%s %q not found", strings.ToLower(t.kind.Kind), name))
				continue
			}
			if err != nil {
				return apiError(err)
			}
			objs = append(objs, obj)
			if r := obj.Meta().GetResourceVersion(); r > rv {
				rv = r
			}
		}
	}
	if len(objs) == 0 && len(missing) == 0 && g.output == "" {
		where := "in namespace " + g.namespace
		if g.allNamespaces || !targets[0].kind.Namespaced {
			where = "in the cluster"
		}
		fmt.Fprintf(o.ErrOut, "No %s found %s.\n", targets[0].kind.Plural, where)
	}
	if g.sortBy != "" {
		if err := sortObjects(objs, g.sortBy); err != nil {
			return err
		}
	}
	if err := p.printList(objs); err != nil {
		return err
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	if !g.watch {
		return nil
	}
	cancel()
	return watchAndPrint(o, c, p, targets[0], g, rv)
}

func watchAndPrint(o *Options, c *client.Client, p *printer, t target, g *getOptions, rv uint64) error {
	ctx, stop := interruptible()
	defer stop()
	ns := g.namespace
	if g.allNamespaces || !t.kind.Namespaced {
		ns = ""
	}
	fields := g.fieldSelector
	if len(t.names) == 1 {
		fields = joinSelectors(fields, "metadata.name="+t.names[0])
	}
	for {
		w, err := c.Watch(ctx, t.kind.Kind, client.WatchOptions{
			Namespace: ns, LabelSelector: g.selector, FieldSelector: fields, ResourceVersion: rv, BookmarkSeconds: 10,
		})
		if err == nil {
			for {
				var ev *pb.WatchEvent
				ev, err = w.Next(ctx)
				if err != nil {
					break
				}
				if err := p.printEvent(ev); err != nil {
					w.Close()
					return err
				}
			}
			rv = w.ResourceVersion()
			w.Close()
		}
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, client.ErrExpired) {
			return apiError(err)
		}
		// History is gone: list again, print the current state, go on.
		lctx, cancel := o.context()
		items, listRV, lerr := c.List(lctx, t.kind.Kind, client.ListOptions{Namespace: ns, LabelSelector: g.selector, FieldSelector: fields})
		cancel()
		if lerr != nil {
			return apiError(lerr)
		}
		for _, it := range items {
			if err := p.printEvent(&pb.WatchEvent{Type: "MODIFIED", Object: it}); err != nil {
				return err
			}
		}
		rv = listRV
	}
}

func joinSelectors(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}
