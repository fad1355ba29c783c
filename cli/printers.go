package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	pb "github.com/skiff-sh/skiff/proto"
)

// printer renders objects in one of the -o formats. Tables look like
// kubectl's, so that people who know Kubernetes read them at a glance.
type printer struct {
	out           io.Writer
	format        string // "", wide, yaml, json, name
	allNamespaces bool
	headerDone    bool
	noHeaders     bool // tables without their header line
	kindPrefix    bool // several kinds in one listing: NAME is kind/name
	now           func() time.Time

	template     outputFormat // -o jsonpath= and custom-columns=
	single       bool         // one object asked for by name: -o yaml, json and jsonpath see it, not a List
	showLabels   bool         // tables: a LABELS column
	labelColumns []string     // tables: a column per label key (-L)
	// keep, if set, says which watch events to print (skiff events: those
	// of its --for and --types).
	keep func(*pb.WatchEvent) bool
	// columns, if set, replaces columnsFor (skiff events: kubectl events'
	// table rather than kubectl get events').
	columns func(kind string) ([]column, rowFunc)
}

func newPrinter(out io.Writer, format string, allNamespaces bool) *printer {
	return &printer{out: out, format: format, allNamespaces: allNamespaces, now: time.Now}
}

func (p *printer) printList(objs []*pb.Object) error {
	switch p.format {
	case "yaml", "json":
		// One object asked for by name prints as itself; a listing is a
		// List however many it holds, as kubectl prints them (scripts read
		// .items of `get pods -o json` whether one pod matched or ten).
		if p.single && len(objs) == 1 {
			return p.printObject(objs[0])
		}
		return p.printAsList(objs)
	case "name":
		for _, o := range objs {
			fmt.Fprintln(p.out, objectRef(o))
		}
		return nil
	case "jsonpath":
		return printJSONPath(p.out, p.template.template, objs, p.single)
	case "custom-columns":
		header := !p.headerDone && !p.noHeaders
		p.headerDone = true
		return printCustomColumns(p.out, p.template.columns, objs, header)
	}
	return p.printRows(objs)
}

// printEvent prints one watch event: a row, or a document.
func (p *printer) printEvent(ev *pb.WatchEvent) error {
	if p.keep != nil && !p.keep(ev) {
		return nil
	}
	switch p.format {
	case "yaml":
		fmt.Fprintln(p.out, "---")
		return p.printObject(ev.GetObject())
	case "json":
		return p.printObject(ev.GetObject())
	case "name":
		fmt.Fprintf(p.out, "%s %s\n", objectRef(ev.GetObject()), strings.ToLower(ev.GetType()))
		return nil
	case "jsonpath":
		if err := printJSONPath(p.out, p.template.template, []*pb.Object{ev.GetObject()}, true); err != nil {
			return err
		}
		_, err := fmt.Fprintln(p.out)
		return err
	}
	return p.printList([]*pb.Object{ev.GetObject()})
}

func (p *printer) printObject(o *pb.Object) error {
	var data []byte
	var err error
	if p.format == "json" {
		data, err = indentJSON(pb.EncodeJSON(o))
	} else {
		data, err = pb.EncodeYAML(o)
	}
	if err != nil {
		return err
	}
	_, err = p.out.Write(data)
	return err
}

// indentJSON indents data as kubectl's -o json does (four spaces), with a
// final newline.
func indentJSON(data []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, data, "", "    "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// printAsList prints several objects as a Kubernetes List.
func (p *printer) printAsList(objs []*pb.Object) error {
	var items []string
	for _, o := range objs {
		data, err := pb.EncodeJSON(o)
		if err != nil {
			return err
		}
		items = append(items, string(data))
	}
	doc := `{"apiVersion":"v1","kind":"List","items":[` + strings.Join(items, ",") + `]}`
	if p.format == "json" {
		data, err := indentJSON([]byte(doc), nil)
		if err != nil {
			return err
		}
		_, err = p.out.Write(data)
		return err
	}
	y, err := yaml.JSONToYAML([]byte(doc))
	if err != nil {
		return err
	}
	_, err = p.out.Write(y)
	return err
}

func (p *printer) printRows(objs []*pb.Object) error {
	if len(objs) == 0 {
		return nil
	}
	if groups := byKind(objs); len(groups) > 1 {
		// Several kinds (get svc,endpoints): a table each, names as
		// kind/name, as kubectl prints them.
		p.kindPrefix = true
		for i, g := range groups {
			if i > 0 && !p.noHeaders {
				fmt.Fprintln(p.out)
			}
			p.headerDone = false
			if err := p.printRows(g); err != nil {
				return err
			}
		}
		return nil
	}
	kind := objs[0].KindName()
	cols, row := columnsFor(kind)
	if p.columns != nil {
		cols, row = p.columns(kind)
	}
	wide := p.format == "wide"
	tw := tabwriter.NewWriter(p.out, 3, 0, 3, ' ', 0)
	if !p.headerDone && !p.noHeaders {
		var h []string
		if p.allNamespaces {
			h = append(h, "NAMESPACE")
		}
		for _, c := range cols {
			if !c.wide || wide {
				h = append(h, c.name)
			}
		}
		for _, k := range p.labelColumns {
			h = append(h, labelColumn(k))
		}
		if p.showLabels {
			h = append(h, "LABELS")
		}
		fmt.Fprintln(tw, strings.Join(h, "\t"))
		p.headerDone = true
	}
	for _, o := range objs {
		vals := row(o, p.now())
		var r []string
		if p.allNamespaces {
			r = append(r, o.Meta().GetNamespace())
		}
		if p.kindPrefix && len(vals) > 0 {
			vals[0] = strings.ToLower(kind) + "/" + vals[0]
		}
		for i, c := range cols {
			if !c.wide || wide {
				r = append(r, vals[i])
			}
		}
		labels := o.Meta().GetLabels()
		for _, k := range p.labelColumns {
			r = append(r, labels[k])
		}
		if p.showLabels {
			r = append(r, mapString(labels))
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// byKind splits objs into runs of one kind, in order.
func byKind(objs []*pb.Object) [][]*pb.Object {
	var out [][]*pb.Object
	for i, o := range objs {
		if i == 0 || o.KindName() != objs[i-1].KindName() {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], o)
	}
	return out
}

type column struct {
	name string
	wide bool
}

type rowFunc func(o *pb.Object, now time.Time) []string

func cols(names ...string) []column {
	var out []column
	for _, n := range names {
		wide := strings.HasPrefix(n, "+")
		out = append(out, column{name: strings.TrimPrefix(n, "+"), wide: wide})
	}
	return out
}

// columnsFor returns the table columns of a kind; names starting with "+"
// appear only with -o wide.
func columnsFor(kind string) ([]column, rowFunc) {
	switch kind {
	case "Pod":
		return cols("NAME", "READY", "STATUS", "RESTARTS", "AGE", "+IP", "+NODE"), func(o *pb.Object, now time.Time) []string {
			pod := o.GetPod()
			ready, total, restarts := 0, len(pod.GetSpec().GetContainers()), int32(0)
			for _, cs := range pod.GetStatus().GetContainerStatuses() {
				if cs.GetReady() {
					ready++
				}
				restarts += cs.GetRestartCount()
			}
			return []string{name(o), fmt.Sprintf("%d/%d", ready, total), podStatus(pod), strconv.Itoa(int(restarts)),
				age(o, now), dash(pod.GetStatus().GetPodIp()), dash(pod.GetSpec().GetNodeName())}
		}
	case "Node":
		return cols("NAME", "STATUS", "ROLES", "AGE", "VERSION", "+INTERNAL-IP", "+OS-IMAGE", "+KERNEL-VERSION", "+PODCIDR"), func(o *pb.Object, now time.Time) []string {
			n := o.GetNode()
			// As kubectl: Ready only when the condition is True; a node
			// whose heartbeats stopped (Unknown) is NotReady too.
			st := "Unknown"
			for _, c := range n.GetStatus().GetConditions() {
				if c.GetType() == "Ready" {
					st = "NotReady"
					if c.GetStatus() == "True" {
						st = "Ready"
					}
				}
			}
			if n.GetSpec().GetUnschedulable() {
				st += ",SchedulingDisabled"
			}
			ip := ""
			for _, a := range n.GetStatus().GetAddresses() {
				if a.GetType() == "InternalIP" {
					ip = a.GetAddress()
				}
			}
			info := n.GetStatus().GetNodeInfo()
			return []string{name(o), st, "<none>", age(o, now), dash(info.GetKubeletVersion()), dash(ip),
				dash(info.GetOsImage()), dash(info.GetKernelVersion()), dash(n.GetSpec().GetPodCidr())}
		}
	case "Namespace":
		return cols("NAME", "STATUS", "AGE"), func(o *pb.Object, now time.Time) []string {
			phase := o.GetNamespace().GetStatus().GetPhase()
			if phase == "" {
				phase = "Active"
			}
			return []string{name(o), phase, age(o, now)}
		}
	case "Deployment":
		return cols("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "+CONTAINERS", "+IMAGES", "+SELECTOR"), func(o *pb.Object, now time.Time) []string {
			d := o.GetDeployment()
			st := d.GetStatus()
			c, i := containersImages(d.GetSpec().GetTemplate().GetSpec())
			return []string{name(o), fmt.Sprintf("%d/%d", st.GetReadyReplicas(), replicas(d.GetSpec().Replicas)),
				itoa(st.GetUpdatedReplicas()), itoa(st.GetAvailableReplicas()), age(o, now), c, i, selectorString(d.GetSpec().GetSelector())}
		}
	case "ReplicaSet":
		return cols("NAME", "DESIRED", "CURRENT", "READY", "AGE", "+CONTAINERS", "+IMAGES", "+SELECTOR"), func(o *pb.Object, now time.Time) []string {
			rs := o.GetReplicaSet()
			c, i := containersImages(rs.GetSpec().GetTemplate().GetSpec())
			return []string{name(o), itoa(replicas(rs.GetSpec().Replicas)), itoa(rs.GetStatus().GetReplicas()),
				itoa(rs.GetStatus().GetReadyReplicas()), age(o, now), c, i, selectorString(rs.GetSpec().GetSelector())}
		}
	case "DaemonSet":
		return cols("NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE", "+CONTAINERS", "+IMAGES", "+SELECTOR"), func(o *pb.Object, now time.Time) []string {
			ds := o.GetDaemonSet()
			st := ds.GetStatus()
			tmpl := ds.GetSpec().GetTemplate().GetSpec()
			c, i := containersImages(tmpl)
			return []string{name(o), itoa(st.GetDesiredNumberScheduled()), itoa(st.GetCurrentNumberScheduled()),
				itoa(st.GetNumberReady()), itoa(st.GetUpdatedNumberScheduled()), itoa(st.GetNumberAvailable()),
				mapString(tmpl.GetNodeSelector()), age(o, now), c, i, selectorString(ds.GetSpec().GetSelector())}
		}
	case "Job":
		return cols("NAME", "STATUS", "COMPLETIONS", "AGE"), func(o *pb.Object, now time.Time) []string {
			j := o.GetJob()
			completions := int32(1)
			if j.GetSpec().Completions != nil {
				completions = j.GetSpec().GetCompletions()
			}
			st := "Running"
			for _, c := range j.GetStatus().GetConditions() {
				if c.GetStatus() == "True" && (c.GetType() == "Complete" || c.GetType() == "Failed") {
					st = c.GetType()
				}
			}
			return []string{name(o), st, fmt.Sprintf("%d/%d", j.GetStatus().GetSucceeded(), completions), age(o, now)}
		}
	case "Lease":
		return cols("NAME", "HOLDER", "AGE", "+RENEWED"), func(o *pb.Object, now time.Time) []string {
			s := o.GetLease().GetSpec()
			renewed := "<none>"
			if t := s.GetRenewTime(); t != nil {
				renewed = duration.HumanDuration(now.Sub(t.AsTime())) + " ago"
			}
			return []string{name(o), s.GetHolderIdentity(), age(o, now), renewed}
		}
	case "Service":
		return cols("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "+SELECTOR"), func(o *pb.Object, now time.Time) []string {
			s := o.GetService().GetSpec()
			var ports []string
			for _, p := range s.GetPorts() {
				v := strconv.Itoa(int(p.GetPort()))
				if p.GetNodePort() != 0 {
					v += ":" + strconv.Itoa(int(p.GetNodePort()))
				}
				ports = append(ports, v+"/"+orDefault(p.GetProtocol(), "TCP"))
			}
			return []string{name(o), orDefault(s.GetType(), "ClusterIP"), dash(s.GetClusterIp()), "<none>",
				dash(strings.Join(ports, ",")), age(o, now), mapString(s.GetSelector())}
		}
	case "Endpoints":
		return cols("NAME", "ENDPOINTS", "AGE"), func(o *pb.Object, now time.Time) []string {
			var eps []string
			for _, ss := range o.GetEndpoints().GetSubsets() {
				for _, a := range ss.GetAddresses() {
					for _, p := range ss.GetPorts() {
						eps = append(eps, fmt.Sprintf("%s:%d", a.GetIp(), p.GetPort()))
					}
				}
			}
			s := strings.Join(eps, ",")
			if len(eps) > 3 {
				s = strings.Join(eps[:3], ",") + fmt.Sprintf(" + %d more...", len(eps)-3)
			}
			return []string{name(o), dash(s), age(o, now)}
		}
	case "ConfigMap":
		return cols("NAME", "DATA", "AGE"), func(o *pb.Object, now time.Time) []string {
			cm := o.GetConfigMap()
			return []string{name(o), strconv.Itoa(len(cm.GetData()) + len(cm.GetBinaryData())), age(o, now)}
		}
	case "Secret":
		return cols("NAME", "TYPE", "DATA", "AGE"), func(o *pb.Object, now time.Time) []string {
			s := o.GetSecret()
			return []string{name(o), orDefault(s.GetType(), "Opaque"), strconv.Itoa(len(s.GetData())), age(o, now)}
		}
	case "Event":
		// kubectl get events' columns, -o wide's too.
		return cols("LAST SEEN", "TYPE", "REASON", "OBJECT", "+SUBOBJECT", "+SOURCE", "MESSAGE", "+FIRST SEEN", "+COUNT", "+NAME"), func(o *pb.Object, now time.Time) []string {
			e := o.GetEvent()
			io := e.GetInvolvedObject()
			return []string{since(e.GetLastTimestamp(), now), e.GetType(), e.GetReason(),
				strings.ToLower(io.GetKind()) + "/" + io.GetName(), io.GetFieldPath(), eventSource(e), e.GetMessage(),
				since(e.GetFirstTimestamp(), now), itoa(e.GetCount()), name(o)}
		}
	}
	return cols("NAME", "AGE"), func(o *pb.Object, now time.Time) []string { return []string{name(o), age(o, now)} }
}

// eventSource is kubectl's SOURCE of an event: component, host.
func eventSource(e *pb.Event) string {
	comp := orDefault(e.GetSource().GetComponent(), e.GetReportingComponent())
	host := orDefault(e.GetSource().GetHost(), e.GetReportingInstance())
	if host == "" {
		return comp
	}
	return comp + ", " + host
}

// podStatus is the STATUS column of `get pods`, computed as kubectl does: a
// container's waiting or terminated reason wins over the phase.
func podStatus(pod *pb.Pod) string {
	if pod.GetMetadata().GetDeletionTimestamp() != nil {
		return "Terminating"
	}
	reason := pod.GetStatus().GetPhase()
	if r := pod.GetStatus().GetReason(); r != "" {
		reason = r
	}
	for _, cs := range pod.GetStatus().GetContainerStatuses() {
		if w := cs.GetState().GetWaiting(); w != nil && w.GetReason() != "" {
			reason = w.GetReason()
		} else if t := cs.GetState().GetTerminated(); t != nil && t.GetReason() != "" && reason != "Running" {
			reason = t.GetReason()
		}
	}
	if reason == "" {
		return "Pending"
	}
	return reason
}

func name(o *pb.Object) string { return o.Meta().GetName() }

func age(o *pb.Object, now time.Time) string { return since(o.Meta().GetCreationTimestamp(), now) }

// lastSeen is when an event was last seen, with its repeats folded in as
// kubectl events and kubectl describe show them: "5s (x3 over 2m)".
func lastSeen(e *pb.Event, now time.Time) string {
	a := since(e.GetLastTimestamp(), now)
	if e.GetCount() > 1 {
		a = fmt.Sprintf("%s (x%d over %s)", a, e.GetCount(), since(e.GetFirstTimestamp(), now))
	}
	return a
}

func since(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "<unknown>"
	}
	return humanDuration(now.Sub(ts.AsTime()))
}

// humanDuration is kubectl's AGE format (45s, 3m20s, 5h, 12d).
func humanDuration(d time.Duration) string { return duration.HumanDuration(d) }

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func dash(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func mapString(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func selectorString(s *pb.LabelSelector) string {
	if s == nil {
		return "<none>"
	}
	parts := []string{}
	if len(s.GetMatchLabels()) > 0 {
		parts = append(parts, mapString(s.GetMatchLabels()))
	}
	for _, e := range s.GetMatchExpressions() {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", e.GetKey(), strings.ToLower(e.GetOperator()), strings.Join(e.GetValues(), ",")))
	}
	return dash(strings.Join(parts, ","))
}

func containersImages(spec *pb.PodSpec) (string, string) {
	var c, i []string
	for _, ct := range spec.GetContainers() {
		c = append(c, ct.GetName())
		i = append(i, ct.GetImage())
	}
	return dash(strings.Join(c, ",")), dash(strings.Join(i, ","))
}
