package fsm

import (
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	pb "github.com/skiff-sh/skiff/proto"
)

// matcher is a compiled Query.
type matcher struct {
	kind      *kindMeta
	namespace string          // "" matches every namespace
	labels    labels.Selector // nil matches everything
	fields    fields.Selector // nil matches everything
}

func (f *FSM) compile(q Query) (*matcher, error) {
	if q.Kind == "" {
		return nil, errorf(ErrInvalid, "query: kind is required")
	}
	km, err := resolveKind(f.kinds, q.Kind)
	if err != nil {
		return nil, err
	}
	m := &matcher{kind: km}
	if km.Namespaced {
		// As kubectl: a namespace means nothing to cluster-scoped kinds.
		m.namespace = q.Namespace
	}
	if q.LabelSelector != "" {
		sel, err := labels.Parse(q.LabelSelector)
		if err != nil {
			return nil, errorf(ErrInvalid, "label selector %q: %v", q.LabelSelector, err)
		}
		if !sel.Empty() {
			m.labels = sel
		}
	}
	if q.FieldSelector != "" {
		sel, err := fields.ParseSelector(q.FieldSelector)
		if err != nil {
			return nil, errorf(ErrInvalid, "field selector %q: %v", q.FieldSelector, err)
		}
		for _, r := range sel.Requirements() {
			switch _, isEventField := eventField(nil, r.Field); {
			case r.Field == "metadata.name", r.Field == "metadata.namespace":
			case r.Field == "spec.nodeName", r.Field == "status.phase":
				if km.Kind != "Pod" {
					return nil, errorf(ErrInvalid, "field selector: field %q is not supported for %s", r.Field, km.Plural)
				}
			case isEventField:
				if km.Kind != "Event" {
					return nil, errorf(ErrInvalid, "field selector: field %q is not supported for %s", r.Field, km.Plural)
				}
			default:
				return nil, errorf(ErrInvalid, "field selector: field %q is not supported (metadata.name, metadata.namespace; for pods also spec.nodeName, status.phase; for events also %s)", r.Field, strings.Join(eventFields, ", "))
			}
		}
		if !sel.Empty() {
			m.fields = sel
		}
	}
	return m, nil
}

// nodeName reports whether the query asks for the pods of exactly one node
// ("" for unbound pods), which the node index answers without a scan.
func (m *matcher) nodeName() (string, bool) {
	if m.fields == nil || m.kind.Kind != "Pod" {
		return "", false
	}
	return m.fields.RequiresExactMatch("spec.nodeName")
}

// objectName reports whether the query names exactly one object: an
// exact metadata.name, and a namespace for a namespaced kind.
func (m *matcher) objectName() (string, bool) {
	if m.fields == nil || (m.kind.Namespaced && m.namespace == "") {
		return "", false
	}
	return m.fields.RequiresExactMatch("metadata.name")
}

// matches decides for a decoded object (a watch event's), matchesRecord
// for a stored one (a list); both must decide alike, as a watch continues
// a list.
func (m *matcher) matches(obj *pb.Object) bool {
	r := obj.Resource()
	if r == nil || pb.KindOf(r) != m.kind.Kind {
		return false
	}
	meta := r.GetMetadata()
	if m.namespace != "" && meta.GetNamespace() != m.namespace {
		return false
	}
	if m.labels != nil && !m.labels.Matches(labels.Set(meta.GetLabels())) {
		return false
	}
	return m.fields == nil || m.fields.Matches(objectFields{obj})
}

func (m *matcher) matchesRecord(r *record) bool {
	if r.kind != m.kind.Kind || (m.namespace != "" && r.namespace != m.namespace) {
		return false
	}
	if m.labels != nil && !m.labels.Matches(&r.labels) { // a pointer: no allocation per record
		return false
	}
	return m.fields == nil || m.fields.Matches(&recordFields{r: r})
}

// filter turns a store event into what this watch sees. As in Kubernetes, an
// object that stops matching is delivered as Deleted (its previous state, at
// the event's index) and one that starts matching as Added.
func (m *matcher) filter(ev Event) (Event, bool) {
	switch ev.Type {
	case Added:
		return ev, m.matches(ev.Object)
	case Deleted:
		prev := ev.Old
		if prev == nil {
			prev = ev.Object
		}
		return ev, m.matches(prev)
	}
	now, was := m.matches(ev.Object), ev.Old != nil && m.matches(ev.Old)
	switch {
	case now && was:
		return ev, true
	case now:
		return Event{Type: Added, Object: ev.Object, Encoded: ev.Encoded, Index: ev.Index}, true
	case was:
		last := ev.Old.Clone()
		last.Meta().ResourceVersion = ev.Index
		return Event{Type: Deleted, Object: last, Old: ev.Old, Index: ev.Index}, true
	}
	return Event{}, false
}

// eventFields are the fields of an Event a field selector may name besides
// metadata.name and metadata.namespace, as in Kubernetes (the event
// registry's ToSelectableFields): kubectl get events --field-selector
// involvedObject.name=web-0,type=Warning.
var eventFields = []string{"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
	"involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
	"involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"}

// eventField returns field of e (nil: reports only whether field is one of
// eventFields).
func eventField(e *pb.Event, field string) (string, bool) {
	io := e.GetInvolvedObject()
	switch field {
	case "involvedObject.kind":
		return io.GetKind(), true
	case "involvedObject.namespace":
		return io.GetNamespace(), true
	case "involvedObject.name":
		return io.GetName(), true
	case "involvedObject.uid":
		return io.GetUid(), true
	case "involvedObject.apiVersion":
		return io.GetApiVersion(), true
	case "involvedObject.resourceVersion":
		if v := io.GetResourceVersion(); v != 0 {
			return strconv.FormatUint(v, 10), true
		}
		return "", true
	case "involvedObject.fieldPath":
		return io.GetFieldPath(), true
	case "reason":
		return e.GetReason(), true
	case "reportingComponent":
		return e.GetReportingComponent(), true
	case "source":
		return e.GetSource().GetComponent(), true
	case "type":
		return e.GetType(), true
	}
	return "", false
}

// objectFields and recordFields expose the selectable fields without
// building a map per object.
type objectFields struct{ obj *pb.Object }

func (o objectFields) Has(field string) bool {
	switch field {
	case "metadata.name", "metadata.namespace":
		return true
	case "spec.nodeName", "status.phase":
		return o.obj.GetPod() != nil
	}
	_, ok := eventField(nil, field)
	return ok && o.obj.GetEvent() != nil
}

func (o objectFields) Get(field string) string {
	switch field {
	case "metadata.name":
		return o.obj.Meta().GetName()
	case "metadata.namespace":
		return o.obj.Meta().GetNamespace()
	case "spec.nodeName":
		return o.obj.GetPod().GetSpec().GetNodeName()
	case "status.phase":
		return o.obj.GetPod().GetStatus().GetPhase()
	}
	v, _ := eventField(o.obj.GetEvent(), field)
	return v
}

// recordFields reads a stored record's fields; an event's own fields come
// from decoding it, once per record, and only for a selector that names
// them.
type recordFields struct {
	r     *record
	event *pb.Event
}

func (f *recordFields) Has(field string) bool {
	switch field {
	case "metadata.name", "metadata.namespace":
		return true
	case "spec.nodeName", "status.phase":
		return f.r.kind == "Pod"
	}
	_, ok := eventField(nil, field)
	return ok && f.r.kind == "Event"
}

func (f *recordFields) Get(field string) string {
	switch field {
	case "metadata.name":
		return f.r.name
	case "metadata.namespace":
		return f.r.namespace
	case "spec.nodeName":
		return f.r.node
	case "status.phase":
		if f.r.kind == "Pod" {
			return f.r.phase
		}
		return ""
	}
	if f.r.kind != "Event" {
		return ""
	}
	if f.event == nil {
		obj, err := f.r.object()
		if err != nil {
			return "" // the store's own bytes: cannot happen
		}
		f.event = obj.GetEvent()
	}
	v, _ := eventField(f.event, field)
	return v
}
