package controllertest

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// Create implements controllers.Cluster. A name is generated from
// generateName when the name is empty.
func (f *Fake) Create(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if obj.Resource() == nil {
		return nil, status.Error(codes.InvalidArgument, "empty object")
	}
	o := obj.Clone()
	normalize(o)
	m := o.Meta()
	kind := o.KindName()
	if handled, err := f.record(Action{Verb: "create", Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName(), Object: obj.Clone()}); handled {
		return nil, err
	}
	if m.Name == "" && m.GenerateName != "" {
		f.uid++
		n := f.uid
		suffix := make([]byte, 5)
		for i := range suffix {
			suffix[i] = suffixAlphabet[n%len(suffixAlphabet)]
			n /= len(suffixAlphabet)
		}
		m.Name = m.GenerateName + string(suffix)
	}
	if m.Name == "" {
		return nil, status.Errorf(codes.InvalidArgument, "%s: metadata.name is required", kind)
	}
	if f.objects[kind][controllers.KeyOf(o)] != nil {
		return nil, status.Errorf(codes.AlreadyExists, "%s %q already exists", kind, controllers.KeyOf(o))
	}
	f.uid++
	m.Uid = fmt.Sprintf("uid-%d", f.uid)
	m.CreationTimestamp = timestamppb.New(f.clock.Now())
	m.DeletionTimestamp = nil
	m.Generation = 0
	if hasSpec(o) {
		m.Generation = 1
	}
	if p := o.GetPod(); p != nil && p.Status.Phase == "" {
		p.Status.Phase = "Pending"
	}
	f.rv++
	f.put(controllers.EventAdded, o, f.rv)
	return o.Clone(), nil
}

// Update implements controllers.Cluster: it replaces labels, annotations,
// ownerReferences, finalizers and the spec part, bumping generation when the
// spec changes.
func (f *Fake) Update(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := obj.Meta()
	kind := obj.KindName()
	if handled, err := f.record(Action{Verb: "update", Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName(), Object: obj.Clone()}); handled {
		return nil, err
	}
	cur := f.objects[kind][controllers.KeyOf(obj)]
	if cur == nil {
		return nil, notFound(kind, m.GetNamespace(), m.GetName())
	}
	if err := preconditions(cur.Meta(), m.GetUid(), m.GetResourceVersion()); err != nil {
		return nil, err
	}
	if p := obj.GetPod(); p != nil {
		if bound := cur.GetPod().GetSpec().GetNodeName(); bound != "" && p.GetSpec().GetNodeName() != bound {
			return nil, status.Errorf(codes.InvalidArgument, "pod %s: spec.nodeName is immutable once bound", cur.Meta().Key())
		}
	}
	next := cur.Clone()
	nm := next.Meta()
	nm.Labels, nm.Annotations = m.GetLabels(), m.GetAnnotations()
	nm.OwnerReferences, nm.Finalizers = m.GetOwnerReferences(), m.GetFinalizers()
	copyParts(obj, next, false)
	if !gproto.Equal(specOf(cur), specOf(next)) {
		nm.Generation++
	}
	return f.finish(cur, next)
}

// UpdateStatus implements controllers.Cluster.
func (f *Fake) UpdateStatus(ctx context.Context, obj *pb.Object) (*pb.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := obj.Meta()
	kind := obj.KindName()
	if handled, err := f.record(Action{Verb: "updateStatus", Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName(), Object: obj.Clone()}); handled {
		return nil, err
	}
	cur := f.objects[kind][controllers.KeyOf(obj)]
	if cur == nil {
		return nil, notFound(kind, m.GetNamespace(), m.GetName())
	}
	if err := preconditions(cur.Meta(), m.GetUid(), m.GetResourceVersion()); err != nil {
		return nil, err
	}
	next := cur.Clone()
	copyParts(obj, next, true)
	return f.finish(cur, next)
}

// finish stores next unless nothing changed; a deleting object without
// finalizers goes away. The caller holds mu.
func (f *Fake) finish(cur, next *pb.Object) (*pb.Object, error) {
	if gproto.Equal(cur, next) {
		return cur.Clone(), nil
	}
	f.rv++
	if next.Meta().GetDeletionTimestamp() != nil && len(next.Meta().GetFinalizers()) == 0 && !f.graceful(next) {
		f.put(controllers.EventDeleted, next, f.rv)
		return next.Clone(), nil
	}
	f.put(controllers.EventModified, next, f.rv)
	return next.Clone(), nil
}

func (f *Fake) graceful(o *pb.Object) bool {
	return f.GracefulPodDeletion && o.GetPod().GetSpec().GetNodeName() != ""
}

// Delete implements controllers.Cluster. An object with finalizers, or a
// bound pod when GracefulPodDeletion is set, gets a deletionTimestamp;
// anything else is removed. Dependents are not collected.
func (f *Fake) Delete(ctx context.Context, op *pb.DeleteOp) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	kind := canonical(op.GetKind())
	if handled, err := f.record(Action{Verb: "delete", Kind: kind, Namespace: op.GetNamespace(), Name: op.GetName(), Delete: gproto.Clone(op).(*pb.DeleteOp)}); handled {
		return err
	}
	cur := f.objects[kind][controllers.Key(op.GetNamespace(), op.GetName())]
	if cur == nil {
		return notFound(kind, op.GetNamespace(), op.GetName())
	}
	if err := preconditions(cur.Meta(), op.GetUid(), op.GetResourceVersion()); err != nil {
		return err
	}
	immediate := op.GracePeriodSeconds != nil && op.GetGracePeriodSeconds() == 0
	if len(cur.Meta().GetFinalizers()) > 0 || (f.graceful(cur) && !immediate) {
		if cur.Meta().GetDeletionTimestamp() != nil {
			return nil
		}
		next := cur.Clone()
		next.Meta().DeletionTimestamp = timestamppb.New(f.clock.Now())
		f.rv++
		f.put(controllers.EventModified, next, f.rv)
		return nil
	}
	f.rv++
	f.put(controllers.EventDeleted, cur.Clone(), f.rv)
	return nil
}

// Bind implements controllers.Cluster. Every successful bind of one call
// shares one resourceVersion, as one Raft entry does.
func (f *Fake) Bind(ctx context.Context, binds []*pb.BindOp) ([]*pb.BatchResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := Action{Verb: "bind", Kind: "Pod"}
	for _, b := range binds {
		a.Binds = append(a.Binds, gproto.Clone(b).(*pb.BindOp))
	}
	if handled, err := f.record(a); handled {
		return nil, err
	}
	f.rv++
	rv := f.rv
	out := make([]*pb.BatchResult, 0, len(binds))
	for _, b := range binds {
		cur := f.objects["Pod"][controllers.Key(b.GetNamespace(), b.GetName())]
		var err error
		switch {
		case cur == nil:
			err = notFound("Pod", b.GetNamespace(), b.GetName())
		case b.GetNodeName() == "":
			err = status.Error(codes.InvalidArgument, "bind: node_name is required")
		default:
			err = preconditions(cur.Meta(), b.GetUid(), b.GetResourceVersion())
		}
		if err == nil && cur.GetPod().GetSpec().GetNodeName() != "" {
			err = status.Errorf(codes.Aborted, "pod %s is already assigned to node %q", cur.Meta().Key(), cur.GetPod().GetSpec().GetNodeName())
		}
		if err == nil && cur.Meta().GetDeletionTimestamp() != nil {
			err = status.Errorf(codes.Aborted, "pod %s is being deleted", cur.Meta().Key())
		}
		if err != nil {
			st := status.Convert(err)
			out = append(out, &pb.BatchResult{Code: int32(st.Code()), Message: st.Message()})
			continue
		}
		next := cur.Clone()
		p := next.GetPod()
		p.Spec.NodeName = b.GetNodeName()
		cond := &pb.PodCondition{Type: "PodScheduled", Status: "True", LastTransitionTime: timestamppb.New(f.clock.Now())}
		replaced := false
		for i, c := range p.Status.Conditions {
			if c.GetType() == cond.Type {
				p.Status.Conditions[i], replaced = cond, true
			}
		}
		if !replaced {
			p.Status.Conditions = append(p.Status.Conditions, cond)
		}
		f.put(controllers.EventModified, next, rv)
		out = append(out, &pb.BatchResult{Object: next.Clone()})
	}
	return out, nil
}

// copyParts copies from's spec part (or, with statusOnly, its status) into
// to. Kinds without spec carry their data at the top level: everything but
// apiVersion, kind and metadata is the spec part.
func copyParts(from, to *pb.Object, statusOnly bool) {
	src, dst := from.Resource().ProtoReflect(), to.Resource().ProtoReflect()
	fs := src.Descriptor().Fields()
	hasSpec := fs.ByName("spec") != nil
	for i := 0; i < fs.Len(); i++ {
		fd := fs.Get(i)
		name := fd.Name()
		if name == "api_version" || name == "kind" || name == "metadata" {
			continue
		}
		var want bool
		switch {
		case statusOnly:
			want = name == "status"
		case hasSpec:
			want = name == "spec"
		default:
			want = name != "status"
		}
		if !want {
			continue
		}
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
	}
}

// specOf returns a message holding obj's spec part, for comparison.
func specOf(obj *pb.Object) gproto.Message {
	c := obj.Clone()
	m := c.Resource().ProtoReflect()
	fs := m.Descriptor().Fields()
	for _, n := range []string{"api_version", "kind", "metadata", "status"} {
		if fd := fs.ByName(protoreflect.Name(n)); fd != nil {
			m.Clear(fd)
		}
	}
	return c
}

func canonical(kind string) string {
	if k, ok := pb.LookupKind(kind); ok {
		return k.Kind
	}
	return kind
}

func selectors(label, field string) (labels.Selector, fields.Selector, error) {
	sel := labels.Everything()
	if label != "" {
		s, err := labels.Parse(label)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "label selector %q: %v", label, err)
		}
		sel = s
	}
	var fsel fields.Selector
	if field != "" {
		s, err := fields.ParseSelector(field)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "field selector %q: %v", field, err)
		}
		fsel = s
	}
	return sel, fsel, nil
}

func matches(o *pb.Object, ns string, sel labels.Selector, fsel fields.Selector) bool {
	m := o.Meta()
	if ns != "" && m.GetNamespace() != ns {
		return false
	}
	if !sel.Matches(labels.Set(m.GetLabels())) {
		return false
	}
	if fsel == nil {
		return true
	}
	set := fields.Set{"metadata.name": m.GetName(), "metadata.namespace": m.GetNamespace()}
	if p := o.GetPod(); p != nil {
		set["spec.nodeName"] = p.GetSpec().GetNodeName()
		set["status.phase"] = p.GetStatus().GetPhase()
	}
	return fsel.Matches(set)
}
