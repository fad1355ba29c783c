package fsm

import (
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
			switch r.Field {
			case "metadata.name", "metadata.namespace":
			case "spec.nodeName", "status.phase":
				if km.Kind != "Pod" {
					return nil, errorf(ErrInvalid, "field selector: field %q is not supported for %s", r.Field, km.Plural)
				}
			default:
				return nil, errorf(ErrInvalid, "field selector: field %q is not supported (metadata.name, metadata.namespace; for pods also spec.nodeName, status.phase)", r.Field)
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
	return m.fields == nil || m.fields.Matches(recordFields{r})
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
	return false
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
	return ""
}

type recordFields struct{ r *record }

func (f recordFields) Has(field string) bool {
	switch field {
	case "metadata.name", "metadata.namespace":
		return true
	case "spec.nodeName", "status.phase":
		return f.r.kind == "Pod"
	}
	return false
}

func (f recordFields) Get(field string) string {
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
	}
	return ""
}
