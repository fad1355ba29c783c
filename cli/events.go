package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// eventTypes are the values --types takes, as an Event's type is written.
const eventTypes = "Normal, Warning"

// eventsClient is what skiff events lists with of *client.Client; tests
// fake it.
type eventsClient interface {
	List(ctx context.Context, kind string, opts client.ListOptions) ([]*pb.Object, uint64, error)
}

// eventsOptions are skiff events' flags.
type eventsOptions struct {
	namespace     string
	allNamespaces bool
	forObject     string
	types         []string
	watch         bool
	noHeaders     bool
	output        string
}

// eventsQuery is what the flags ask for, checked: where to list, and
// which of the events listed there to show.
type eventsQuery struct {
	namespace     string // "" with -A
	allNamespaces bool
	kind, name    string   // --for; kind "" for every object
	types         []string // --types as Event.type writes them; none for all
	format        string   // "", wide, json, yaml
	noHeaders     bool
}

func newEventsCommand(o *Options) *cobra.Command {
	var opts eventsOptions
	cmd := &cobra.Command{
		Use:   "events [-n NAMESPACE | -A] [--for KIND/NAME] [--types Normal,Warning] [-w]",
		Short: "List events, oldest first, optionally those of one object",
		Long: `Events lists the events of a namespace as kubectl events does: sorted by when each was last
seen, the newest at the bottom, with the object each is about as kind/name. --for shows
only the events of one object (kinds take their Kubernetes names, plurals or short
names); events of cluster-wide objects such as nodes are recorded in the default
namespace, so --for node/NAME looks there. With -w it goes on printing events as they
are recorded or repeated, until Ctrl-C.`,
		Example: `  # The events of the default namespace
  skiff events

  # Every namespace's, and then new ones as they come
  skiff events -A -w

  # Only warnings
  skiff events --types Warning

  # The events of one object
  skiff events --for deployment/web
  skiff events --for node/w1

  # As YAML, for scripts
  skiff events -n demo -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := opts.query()
			if err != nil {
				return err
			}
			c, ctx, done, err := o.connect()
			if err != nil {
				return err
			}
			defer done()
			p := q.printer(o.Out)
			rv, err := listEvents(ctx, c, q, p, o.ErrOut)
			if err != nil || !opts.watch {
				return err
			}
			eventKind, _ := pb.LookupKind("Event")
			return watchAndPrint(o, c, p, target{kind: eventKind}, &getOptions{namespace: q.namespace, allNamespaces: q.allNamespaces, fieldSelector: q.fieldSelector()}, rv)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.namespace, "namespace", "n", "default", "namespace of the events")
	f.BoolVarP(&opts.allNamespaces, "all-namespaces", "A", false, "events of every namespace")
	f.StringVar(&opts.forObject, "for", "", "only the events of this object, as KIND/NAME: pod/web-0, deploy/web, node/w1")
	f.StringSliceVar(&opts.types, "types", nil, "only events of these types, comma-separated: "+eventTypes)
	f.BoolVarP(&opts.watch, "watch", "w", false, "after listing, print events as they are recorded (Ctrl-C stops)")
	f.BoolVar(&opts.noHeaders, "no-headers", false, "print the table without its header line (for scripts)")
	f.StringVarP(&opts.output, "output", "o", "", "output format: wide, json or yaml (default: the table)")
	return cmd
}

// query checks the flags, before any master is asked.
func (opts eventsOptions) query() (eventsQuery, error) {
	q := eventsQuery{namespace: opts.namespace, allNamespaces: opts.allNamespaces, format: opts.output, noHeaders: opts.noHeaders}
	switch opts.output {
	case "", "wide", "json", "yaml":
	default:
		return q, fmt.Errorf("--output %q: use wide, json or yaml (or no -o for the table)", opts.output)
	}
	for _, t := range opts.types {
		valid := false
		for _, v := range strings.Split(eventTypes, ", ") {
			if strings.EqualFold(strings.TrimSpace(t), v) {
				q.types, valid = append(q.types, v), true
			}
		}
		if !valid {
			return q, fmt.Errorf("--types %q: valid types are %s (comma-separated)", t, eventTypes)
		}
	}
	if opts.forObject != "" {
		k, name, ok := strings.Cut(opts.forObject, "/")
		if !ok || k == "" || name == "" || strings.Contains(name, "/") {
			return q, fmt.Errorf("--for %q: give the object as KIND/NAME, e.g. --for pod/web-0 or --for deployment/web", opts.forObject)
		}
		info, err := lookupKind(k)
		if err != nil {
			return q, fmt.Errorf("--for %q: %w", opts.forObject, err)
		}
		q.kind, q.name = info.Kind, name
		if !info.Namespaced && !opts.allNamespaces {
			// Where events of cluster-wide objects are recorded (see
			// eventNamespace).
			q.namespace = pb.NamespaceDefault
		}
	}
	if opts.allNamespaces {
		q.namespace = ""
	}
	return q, nil
}

// fieldSelector asks the masters for only the events of --for and of a
// single --types value (the store selects events by involvedObject.* and
// type, as Kubernetes does); matches checks what comes back all the same.
func (q eventsQuery) fieldSelector() string {
	var s []string
	if q.kind != "" {
		s = append(s, "involvedObject.kind="+q.kind, "involvedObject.name="+q.name)
	}
	if len(q.types) == 1 {
		s = append(s, "type="+q.types[0])
	}
	return strings.Join(s, ",")
}

// matches tells whether an event is about the --for object and of one of
// the --types.
func (q eventsQuery) matches(e *pb.Event) bool {
	io := e.GetInvolvedObject()
	if q.kind != "" && (io.GetKind() != q.kind || io.GetName() != q.name) {
		return false
	}
	return len(q.types) == 0 || slices.Contains(q.types, e.GetType())
}

// printer prints events in the table of kubectl events, or as documents;
// during a watch it leaves out the events not asked for, and deletions
// (events expire: that is no news).
func (q eventsQuery) printer(out io.Writer) *printer {
	p := newPrinter(out, q.format, q.allNamespaces)
	p.noHeaders = q.noHeaders
	p.columns = eventsColumns
	p.keep = func(ev *pb.WatchEvent) bool {
		return ev.GetType() != "DELETED" && q.matches(ev.GetObject().GetEvent())
	}
	return p
}

// eventsColumns is kubectl events' table: get events' columns, with LAST
// SEEN folding in repeats ("5s (x3 over 2m)") and OBJECT naming the kind
// as the event does ("Pod/web-0"; kubectl get events writes "pod/web-0").
func eventsColumns(kind string) ([]column, rowFunc) {
	cols, row := columnsFor(kind)
	return cols, func(o *pb.Object, now time.Time) []string {
		r := row(o, now)
		e := o.GetEvent()
		r[0] = lastSeen(e, now)                                                        // LAST SEEN
		r[3] = e.GetInvolvedObject().GetKind() + "/" + e.GetInvolvedObject().GetName() // OBJECT
		return r
	}
}

// sortEvents orders events as kubectl events does: by when they were last
// seen, the oldest first (an event never seen first of all), then by name.
func sortEvents(evs []*pb.Object) {
	slices.SortStableFunc(evs, func(a, b *pb.Object) int {
		return cmp.Or(
			a.GetEvent().GetLastTimestamp().AsTime().Compare(b.GetEvent().GetLastTimestamp().AsTime()),
			cmp.Compare(a.Meta().GetName(), b.Meta().GetName()))
	})
}

// listEvents lists and prints the events q asks for and returns the
// resourceVersion to watch from.
func listEvents(ctx context.Context, c eventsClient, q eventsQuery, p *printer, errOut io.Writer) (uint64, error) {
	objs, rv, err := c.List(ctx, "Event", client.ListOptions{Namespace: q.namespace, FieldSelector: q.fieldSelector()})
	if err != nil {
		return 0, apiError(err)
	}
	var evs []*pb.Object
	for _, o := range objs {
		if q.matches(o.GetEvent()) {
			evs = append(evs, o)
		}
	}
	if len(evs) == 0 {
		if q.allNamespaces {
			fmt.Fprintln(errOut, "No events found.")
		} else {
			fmt.Fprintf(errOut, "No events found in %s namespace.\n", q.namespace)
		}
		return rv, nil
	}
	sortEvents(evs)
	return rv, p.printList(evs) // -o yaml and json: a List even of one event
}
