package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// fakeEvents lists its events of a namespace ("" for all), and records
// the namespaces asked for.
type fakeEvents struct {
	events []*pb.Object
	asked  []string
}

func (f *fakeEvents) List(_ context.Context, kind string, opts client.ListOptions) ([]*pb.Object, uint64, error) {
	f.asked = append(f.asked, opts.Namespace)
	var out []*pb.Object
	for _, e := range f.events {
		if kind == "Event" && (opts.Namespace == "" || e.Meta().GetNamespace() == opts.Namespace) {
			out = append(out, e)
		}
	}
	return out, 42, nil
}

func TestEventsRefusesBadFlagsBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `--types "Error": valid types are Normal, Warning (comma-separated)`, "events", "--types", "Normal,Error")
	refusedBeforeConnecting(t, `--types "": valid types are Normal, Warning`, "events", "--types", "Warning,")
	for _, f := range []string{"web", "pod/", "/web", "pod/web/x"} {
		refusedBeforeConnecting(t, `--for "`+f+`": give the object as KIND/NAME, e.g. --for pod/web-0`, "events", "--for", f)
	}
	refusedBeforeConnecting(t, `--for "gizmo/web": unknown kind "gizmo"; known kinds: `, "events", "--for", "gizmo/web")
	refusedBeforeConnecting(t, `--output "name": use wide, json or yaml`, "events", "-o", "name")
	refusedBeforeConnecting(t, `unknown command "pods" for "skiff events"`, "events", "pods")
}

func TestEventsQuery(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      eventsOptions
		ns        string
		kind, obj string
		types     []string
	}{
		{name: "namespace", opts: eventsOptions{namespace: "demo"}, ns: "demo"},
		{name: "all namespaces", opts: eventsOptions{namespace: "demo", allNamespaces: true}, ns: ""},
		// Kinds in any case, plurals and short names, as get takes them.
		{name: "short name", opts: eventsOptions{namespace: "demo", forObject: "deploy/web"}, ns: "demo", kind: "Deployment", obj: "web"},
		{name: "any case", opts: eventsOptions{namespace: "default", forObject: "ReplicaSets/Web-1"}, ns: "default", kind: "ReplicaSet", obj: "Web-1"},
		// A node's events are recorded in default, whatever -n says.
		{name: "cluster-wide kind", opts: eventsOptions{namespace: "demo", forObject: "no/w1"}, ns: "default", kind: "Node", obj: "w1"},
		{name: "cluster-wide kind, -A", opts: eventsOptions{namespace: "demo", allNamespaces: true, forObject: "node/w1"}, ns: "", kind: "Node", obj: "w1"},
		{name: "types in any case", opts: eventsOptions{namespace: "default", types: []string{"warning", " NORMAL"}}, ns: "default", types: []string{"Warning", "Normal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := tc.opts.query()
			if err != nil {
				t.Fatal(err)
			}
			if q.namespace != tc.ns || q.kind != tc.kind || q.name != tc.obj || strings.Join(q.types, ",") != strings.Join(tc.types, ",") {
				t.Errorf("query %+v, want namespace %q, for %s/%s, types %v", q, tc.ns, tc.kind, tc.obj, tc.types)
			}
		})
	}
}

// eventsFixture: events of a Deployment's rollout and of a node, recorded
// out of order, two at the same instant, one never seen.
func eventsFixture(t0 time.Time) []*pb.Object {
	warn := describeEvent("web-abc.2", "default", "Pod", "web-abc-x1", "u3", "FailedScheduling", t0.Add(-5*time.Second))
	warn.GetEvent().Type = "Warning"
	warn.GetEvent().Message = "0/1 nodes are available"
	unseen := describeEvent("web.0", "default", "Deployment", "web", "u1", "Unseen", t0)
	unseen.GetEvent().LastTimestamp = nil
	node := describeEvent("w1.1", "default", "Node", "w1", "", "NodeNotReady", t0.Add(-time.Hour))
	other := describeEvent("api.1", "demo", "Deployment", "api", "u9", "ScalingReplicaSet", t0.Add(-2*time.Minute))
	return []*pb.Object{
		warn,
		describeEvent("web.1", "default", "Deployment", "web", "u1", "ScalingReplicaSet", t0.Add(-3*time.Minute)),
		unseen,
		other,
		// The same instant: by name.
		describeEvent("web-abc.1", "default", "ReplicaSet", "web-abc", "u2", "SuccessfulCreate", t0.Add(-3*time.Minute)),
		node,
	}
}

func runEventsList(t *testing.T, f *fakeEvents, now time.Time, opts eventsOptions) (string, string) {
	t.Helper()
	q, err := opts.query()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	p := q.printer(&out)
	p.now = func() time.Time { return now }
	rv, err := listEvents(context.Background(), f, q, p, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if rv != 42 {
		t.Errorf("resourceVersion to watch from: %d, want the list's, 42", rv)
	}
	return out.String(), errOut.String()
}

func TestEventsList(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f := &fakeEvents{events: eventsFixture(t0)}
	for _, tc := range []struct {
		name string
		opts eventsOptions
		want string
	}{
		{name: "oldest first, never seen before all", opts: eventsOptions{namespace: "default"}, want: `LAST SEEN   TYPE      REASON              OBJECT               MESSAGE
<unknown>   Normal    Unseen              Deployment/web       Unseen happened
60m         Normal    NodeNotReady        Node/w1              NodeNotReady happened
3m          Normal    SuccessfulCreate    ReplicaSet/web-abc   SuccessfulCreate happened
3m          Normal    ScalingReplicaSet   Deployment/web       ScalingReplicaSet happened
5s          Warning   FailedScheduling    Pod/web-abc-x1       0/1 nodes are available
`},
		{name: "all namespaces", opts: eventsOptions{allNamespaces: true, types: []string{"Normal"}}, want: `NAMESPACE   LAST SEEN   TYPE     REASON              OBJECT               MESSAGE
default     <unknown>   Normal   Unseen              Deployment/web       Unseen happened
default     60m         Normal   NodeNotReady        Node/w1              NodeNotReady happened
default     3m          Normal   SuccessfulCreate    ReplicaSet/web-abc   SuccessfulCreate happened
default     3m          Normal   ScalingReplicaSet   Deployment/web       ScalingReplicaSet happened
demo        2m          Normal   ScalingReplicaSet   Deployment/api       ScalingReplicaSet happened
`},
		{name: "for one object", opts: eventsOptions{namespace: "default", forObject: "deployments/web", noHeaders: true}, want: `<unknown>   Normal   Unseen              Deployment/web   Unseen happened
3m          Normal   ScalingReplicaSet   Deployment/web   ScalingReplicaSet happened
`},
		{name: "for a node, from another namespace", opts: eventsOptions{namespace: "demo", forObject: "node/w1"}, want: `LAST SEEN   TYPE     REASON         OBJECT    MESSAGE
60m         Normal   NodeNotReady   Node/w1   NodeNotReady happened
`},
		{name: "warnings", opts: eventsOptions{namespace: "default", types: []string{"Warning"}}, want: `LAST SEEN   TYPE      REASON             OBJECT           MESSAGE
5s          Warning   FailedScheduling   Pod/web-abc-x1   0/1 nodes are available
`},
		{name: "wide", opts: eventsOptions{namespace: "default", forObject: "rs/web-abc", output: "wide"}, want: `LAST SEEN   TYPE     REASON             OBJECT               SUBOBJECT   SOURCE            MESSAGE                     FIRST SEEN   COUNT   NAME
3m          Normal   SuccessfulCreate   ReplicaSet/web-abc               test-controller   SuccessfulCreate happened   4m           1       web-abc.1
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut := runEventsList(t, f, t0, tc.opts)
			if out != tc.want || errOut != "" {
				t.Errorf("got\n%s\nwant\n%s\nstderr %q", out, tc.want, errOut)
			}
		})
	}

	// Listing asks the namespace the events are in.
	f.asked = nil
	runEventsList(t, f, t0, eventsOptions{namespace: "demo", forObject: "node/w1"})
	runEventsList(t, f, t0, eventsOptions{namespace: "demo", allNamespaces: true})
	if strings.Join(f.asked, ",") != "default," {
		t.Errorf("namespaces listed: %q, want default then every one", f.asked)
	}

	// A List, even of one event.
	out, _ := runEventsList(t, f, t0, eventsOptions{namespace: "demo", output: "yaml"})
	if !strings.HasPrefix(out, "apiVersion: v1\nitems:\n- apiVersion: v1\n  count: 1\n") || !strings.Contains(out, "\nkind: List\n") || !strings.Contains(out, "name: api.1") {
		t.Errorf("-o yaml:\n%s", out)
	}

	// Nothing to show: kubectl's words, on stderr.
	for _, tc := range []struct {
		opts eventsOptions
		want string
	}{
		{eventsOptions{namespace: "empty"}, "No events found in empty namespace.\n"},
		{eventsOptions{namespace: "demo", types: []string{"Warning"}}, "No events found in demo namespace.\n"},
		{eventsOptions{namespace: "default", forObject: "pod/nosuch"}, "No events found in default namespace.\n"},
		{eventsOptions{allNamespaces: true, forObject: "secret/x"}, "No events found.\n"},
	} {
		if out, errOut := runEventsList(t, f, t0, tc.opts); out != "" || errOut != tc.want {
			t.Errorf("%+v: stdout %q, stderr %q, want %q", tc.opts, out, errOut, tc.want)
		}
	}
}

// A watch prints the new and repeated events asked for, one row each,
// under the listing's header; not deletions, nor other objects' events.
func TestEventsWatchPrinter(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	q, err := eventsOptions{namespace: "default", forObject: "deploy/web", types: []string{"Normal"}}.query()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p := q.printer(&out)
	p.now = func() time.Time { return t0 }
	scaled := describeEvent("web.1", "default", "Deployment", "web", "u1", "ScalingReplicaSet", t0.Add(-3*time.Minute))
	if err := p.printList([]*pb.Object{scaled}); err != nil {
		t.Fatal(err)
	}
	warn := describeEvent("web.2", "default", "Deployment", "web", "u1", "InvalidSpec", t0)
	warn.GetEvent().Type = "Warning"
	again := describeEvent("web.1", "default", "Deployment", "web", "u1", "ScalingReplicaSet", t0.Add(-2*time.Second))
	again.GetEvent().Count = 2
	for _, ev := range []*pb.WatchEvent{
		{Type: "ADDED", Object: describeEvent("web-abc.1", "default", "ReplicaSet", "web-abc", "u2", "SuccessfulCreate", t0)},
		{Type: "ADDED", Object: warn},
		{Type: "DELETED", Object: scaled},
		{Type: "MODIFIED", Object: again},
		{Type: "ADDED", Object: describeEvent("web.3", "default", "Deployment", "web", "u1", "ScalingReplicaSet", t0)},
	} {
		if err := p.printEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	want := `LAST SEEN   TYPE     REASON              OBJECT           MESSAGE
3m          Normal   ScalingReplicaSet   Deployment/web   ScalingReplicaSet happened
2s (x2 over 62s)   Normal   ScalingReplicaSet   Deployment/web   ScalingReplicaSet happened
0s   Normal   ScalingReplicaSet   Deployment/web   ScalingReplicaSet happened
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// LAST SEEN is kubectl's age of lastTimestamp.
func TestEventsLastSeen(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{5 * time.Second, "5s"},
		{3 * time.Minute, "3m"},
		{3*time.Minute + 20*time.Second, "3m20s"},
		{26 * time.Hour, "26h"},
		{50 * 24 * time.Hour, "50d"},
	} {
		e := describeEvent("e", "default", "Pod", "p", "", "Started", t0.Add(-tc.ago))
		cols, row := columnsFor("Event")
		if cols[0].name != "LAST SEEN" {
			t.Fatalf("first column %q", cols[0].name)
		}
		if got := row(e, t0)[0]; got != tc.want {
			t.Errorf("last seen %s ago: %q, want %q", tc.ago, got, tc.want)
		}
	}
}

// --for and a single --types go to the masters as a field selector, so that
// only those events are sent.
func TestEventsFieldSelector(t *testing.T) {
	for _, tc := range []struct {
		opts eventsOptions
		want string
	}{
		{eventsOptions{namespace: "default"}, ""},
		{eventsOptions{namespace: "default", forObject: "deploy/web"}, "involvedObject.kind=Deployment,involvedObject.name=web"},
		{eventsOptions{namespace: "default", types: []string{"warning"}}, "type=Warning"},
		{eventsOptions{namespace: "default", forObject: "pod/web-0", types: []string{"Warning"}}, "involvedObject.kind=Pod,involvedObject.name=web-0,type=Warning"},
		{eventsOptions{namespace: "default", types: []string{"Normal", "Warning"}}, ""},
	} {
		q, err := tc.opts.query()
		if err != nil {
			t.Fatal(err)
		}
		if got := q.fieldSelector(); got != tc.want {
			t.Errorf("%+v: field selector %q, want %q", tc.opts, got, tc.want)
		}
	}
}
