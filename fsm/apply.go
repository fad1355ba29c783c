package fsm

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

// Finalizers the store adds for Kubernetes' propagation policies; the garbage
// collector removes them once it has dealt with the dependents.
const (
	finalizerForeground = "foregroundDeletion"
	finalizerOrphan     = "orphan"
)

// defaultPodGrace is Kubernetes' default terminationGracePeriodSeconds.
const defaultPodGrace = 30

// applier applies the commands of one log entry inside one write
// transaction. It reads only the transaction and the command: no clock, no
// randomness, and no map iteration whose order could reach the state.
type applier struct {
	kinds  map[string]*kindMeta
	txn    *tables
	index  uint64
	log    *slog.Logger
	events []Event
	// inBatch is set while a batch's command runs, nested is its position
	// (still set after it panicked); skip holds the batch's commands not to
	// run, with their results' errors (they panicked in an earlier try).
	inBatch bool
	nested  int
	skip    map[int]error
}

// safeCommand runs cmd, turning a panic into an error. A command that crashed
// Apply would crash every master, and again on every restart as the log is
// replayed; refusing it (deterministically: same code, same input) keeps the
// cluster alive. The caller aborts the transaction when ok is false.
func (a *applier) safeCommand(cmd *pb.Command) (res *Result, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if a.log != nil {
				a.log.Error("fsm: command panicked", "index", a.index, "panic", p, "stack", string(debug.Stack()))
			}
			res, ok = &Result{Index: a.index, Err: fmt.Errorf("%w: command panicked: %v", ErrInvalid, p)}, false
		}
	}()
	return a.command(cmd, false), true
}

func (a *applier) command(cmd *pb.Command, nested bool) *Result {
	res := &Result{Index: a.index}
	if b := cmd.GetBatch(); b != nil {
		if nested {
			res.Err = errorf(ErrInvalid, "a batch cannot contain a batch")
			return res
		}
		for i, c := range b.GetCommands() {
			if err, ok := a.skip[i]; ok {
				res.Batch = append(res.Batch, &Result{Index: a.index, Err: err})
				continue
			}
			a.inBatch, a.nested = true, i
			if c == nil {
				c = &pb.Command{}
			}
			if c.Time == nil {
				c.Time = cmd.GetTime()
			}
			if c.Uid == "" {
				c.Uid = cmd.GetUid()
			}
			res.Batch = append(res.Batch, a.command(c, true))
		}
		a.inBatch = false
		return res
	}
	if cmd.GetTime() == nil {
		res.Err = errorf(ErrInvalid, "command time is required")
		return res
	}
	if err := cmd.GetTime().CheckValid(); err != nil {
		res.Err = errorf(ErrInvalid, "command time: %v", err)
		return res
	}
	var err error
	switch op := cmd.GetOp().(type) {
	case *pb.Command_Create:
		res.Object, res.Action, err = a.create(cmd, op.Create)
	case *pb.Command_Update:
		res.Object, res.Action, err = a.update(cmd, op.Update, false)
	case *pb.Command_UpdateStatus:
		res.Object, res.Action, err = a.updateStatus(op.UpdateStatus)
	case *pb.Command_Apply:
		res.Object, res.Action, err = a.update(cmd, op.Apply, true)
	case *pb.Command_Delete:
		res.Object, res.Action, err = a.delete(cmd, op.Delete)
	case *pb.Command_Bind:
		res.Object, res.Action, err = a.bind(cmd, op.Bind)
	default:
		err = errorf(ErrInvalid, "command has no operation")
	}
	if err != nil {
		return &Result{Index: a.index, Err: err}
	}
	return res
}

// target checks what every write of a whole object needs: a known kind, a
// name, and a namespace exactly when the kind is namespaced.
func (a *applier) target(obj *pb.Object) (*kindMeta, pb.Resource, *pb.ObjectMeta, error) {
	r := obj.Resource()
	if r == nil || !r.ProtoReflect().IsValid() {
		return nil, nil, nil, errorf(ErrInvalid, "object has no kind")
	}
	km := a.kinds[pb.KindOf(r)]
	m := pb.MetaOf(r)
	switch {
	case m.Name == "":
		return nil, nil, nil, errorf(ErrInvalid, "%s: metadata.name is required", km.Plural)
	case !validName(m.Name) || !validName(m.Namespace):
		return nil, nil, nil, errorf(ErrInvalid, "%s %q: metadata.name and metadata.namespace may not contain '/'", km.Plural, m.Name)
	case km.Namespaced && m.Namespace == "":
		return nil, nil, nil, errorf(ErrInvalid, "%s %q: metadata.namespace is required", km.Plural, m.Name)
	case !km.Namespaced && m.Namespace != "":
		return nil, nil, nil, errorf(ErrInvalid, "%s %q: metadata.namespace must be empty: %s are cluster-scoped", km.Plural, m.Name, km.Plural)
	}
	return km, r, m, nil
}

func (a *applier) create(cmd *pb.Command, obj *pb.Object) (*pb.Object, string, error) {
	km, r, m, err := a.target(obj)
	if err != nil {
		return nil, "", err
	}
	if cmd.GetUid() == "" {
		return nil, "", errorf(ErrInvalid, "%s: command uid is required to create", describe(km, m.Namespace, m.Name))
	}
	// Whether the name is taken is learnt when the record goes in (one
	// descent of the tree, not a lookup and then an insert); the checks
	// before it are Kubernetes' admission, which also runs before storage
	// refuses a name that exists.
	if km.Namespaced {
		if err := a.namespaceActive(m.Namespace); err != nil {
			return nil, "", err
		}
	}
	km.normalize(r)
	if svc, ok := r.(*pb.Service); ok {
		if err := a.checkService(km, svc, nil, objectKey(km.Kind, m.Namespace, m.Name)); err != nil {
			return nil, "", err
		}
	}
	m.Uid = cmd.GetUid()
	m.CreationTimestamp = stamp(cmd.GetTime(), 0)
	m.ResourceVersion = a.index
	m.Generation = 0
	if km.HasSpec {
		m.Generation = 1
	}
	m.DeletionTimestamp = nil
	m.DeletionGracePeriodSeconds = nil
	switch v := r.(type) {
	case *pb.Namespace:
		v.Status.Phase = "Active"
	case *pb.Pod:
		if v.Status.Phase == "" {
			v.Status.Phase = "Pending"
		}
	}
	rec, err := newRecord(obj)
	if err != nil {
		return nil, "", err
	}
	if !a.txn.putNew(rec) {
		return nil, "", errorf(ErrAlreadyExists, "%s", describe(km, m.Namespace, m.Name))
	}
	a.emit(Added, obj, nil, rec.raw, nil)
	return obj, ActionCreated, nil
}

func (a *applier) namespaceActive(ns string) error {
	r := a.txn.get(objectKey("Namespace", "", ns))
	if r == nil {
		return errorf(ErrFailedPrecondition, "namespace %q not found", ns)
	}
	if r.deleting || r.phase == "Terminating" {
		return errorf(ErrFailedPrecondition, "namespace %q is terminating", ns)
	}
	return nil
}

func terminating(ns *pb.Object) bool {
	return ns.Meta().GetDeletionTimestamp() != nil || ns.GetNamespace().GetStatus().GetPhase() == "Terminating"
}

// update implements Update and, with apply set, Apply (create-or-update,
// merging annotations, no preconditions).
func (a *applier) update(cmd *pb.Command, obj *pb.Object, apply bool) (*pb.Object, string, error) {
	km, r, m, err := a.target(obj)
	if err != nil {
		return nil, "", err
	}
	cur := a.txn.get(objectKey(km.Kind, m.Namespace, m.Name))
	if cur == nil {
		if apply {
			return a.create(cmd, obj)
		}
		return nil, "", errorf(ErrNotFound, "%s", describe(km, m.Namespace, m.Name))
	}
	old := cur.mustObject()
	if !apply {
		if err := preconditions(km, old.Meta(), m.Uid, m.ResourceVersion); err != nil {
			return nil, "", err
		}
	}
	km.normalize(r)
	next := old.Clone()
	nm := next.Meta()
	nm.Labels = m.Labels
	if apply {
		if len(m.Annotations) > 0 {
			if nm.Annotations == nil {
				nm.Annotations = make(map[string]string, len(m.Annotations))
			}
			for k, v := range m.Annotations {
				nm.Annotations[k] = v
			}
		}
		if len(m.OwnerReferences) > 0 {
			nm.OwnerReferences = m.OwnerReferences
		}
		if len(m.Finalizers) > 0 {
			nm.Finalizers = m.Finalizers
		}
	} else {
		nm.Annotations = m.Annotations
		nm.OwnerReferences = m.OwnerReferences
		nm.Finalizers = m.Finalizers
	}
	if pod, ok := r.(*pb.Pod); ok {
		// A manifest never carries the binding: keep it, so re-applying a
		// pod's manifest does not unbind a running pod. Moving a bound pod
		// is not an update.
		bound, want := old.GetPod().GetSpec().GetNodeName(), pod.GetSpec().GetNodeName()
		switch {
		case bound != "" && want == "":
			pod.GetSpec().NodeName = bound
		case bound != "" && want != bound:
			return nil, "", errorf(ErrInvalid, "%s: spec.nodeName is immutable once bound (bound to %q)", describe(km, m.Namespace, m.Name), bound)
		}
	}
	if svc, ok := r.(*pb.Service); ok {
		// Omitted allocations are kept, changed ones refused, and another
		// Service's values too (services.go).
		if err := a.checkService(km, svc, old.GetService(), cur.key); err != nil {
			return nil, "", err
		}
	}
	km.copySpec(r, next.Resource())
	if km.spec != nil && !gproto.Equal(km.specOf(old), km.specOf(next)) {
		nm.Generation++ // as Kubernetes: generation counts spec changes only
	}
	if nm.DeletionTimestamp != nil {
		had := old.Meta().GetFinalizers()
		for _, f := range nm.Finalizers {
			if !contains(had, f) {
				return nil, "", errorf(ErrInvalid, "%s: cannot add finalizer %q: the object is being deleted", describe(km, m.Namespace, m.Name), f)
			}
		}
	}
	return a.write(cur, old, next, true)
}

func (a *applier) updateStatus(obj *pb.Object) (*pb.Object, string, error) {
	km, r, m, err := a.target(obj)
	if err != nil {
		return nil, "", err
	}
	if km.status == nil {
		return nil, "", errorf(ErrInvalid, "%s have no status", km.Plural)
	}
	cur := a.txn.get(objectKey(km.Kind, m.Namespace, m.Name))
	if cur == nil {
		return nil, "", errorf(ErrNotFound, "%s", describe(km, m.Namespace, m.Name))
	}
	old := cur.mustObject()
	if err := preconditions(km, old.Meta(), m.Uid, m.ResourceVersion); err != nil {
		return nil, "", err
	}
	km.normalize(r)
	next := old.Clone()
	next.Resource().ProtoReflect().Set(km.status, r.ProtoReflect().Get(km.status))
	if ns := next.GetNamespace(); ns != nil && terminating(old) {
		ns.Status.Phase = "Terminating" // only the store ends termination
	}
	return a.write(cur, old, next, false)
}

func (a *applier) delete(cmd *pb.Command, op *pb.DeleteOp) (*pb.Object, string, error) {
	km, err := resolveKind(a.kinds, op.GetKind())
	if err != nil {
		return nil, "", err
	}
	ns, name := op.GetNamespace(), op.GetName()
	if !km.Namespaced {
		ns = ""
	}
	switch {
	case name == "":
		return nil, "", errorf(ErrInvalid, "%s: name is required", km.Plural)
	case km.Namespaced && ns == "":
		return nil, "", errorf(ErrInvalid, "%s %q: namespace is required", km.Plural, name)
	}
	if km.Kind == "Namespace" && slices.Contains(pb.SystemNamespaces, name) {
		return nil, "", errorf(ErrInvalid, "namespace %q cannot be deleted: the masters keep it", name)
	}
	cur := a.txn.get(objectKey(km.Kind, ns, name))
	if cur == nil {
		return nil, "", errorf(ErrNotFound, "%s", describe(km, ns, name))
	}
	old := cur.mustObject()
	if err := preconditions(km, old.Meta(), op.GetUid(), op.GetResourceVersion()); err != nil {
		return nil, "", err
	}
	next := old.Clone()
	nm := next.Meta()
	switch op.GetPropagationPolicy() {
	case "", "Background":
	case "Foreground":
		nm.Finalizers = swapFinalizer(nm.Finalizers, finalizerOrphan, finalizerForeground)
	case "Orphan":
		nm.Finalizers = swapFinalizer(nm.Finalizers, finalizerForeground, finalizerOrphan)
	default:
		return nil, "", errorf(ErrInvalid, "unknown propagationPolicy %q (want Orphan, Background or Foreground)", op.GetPropagationPolicy())
	}

	if pod := next.GetPod(); pod != nil {
		grace := int64(defaultPodGrace)
		if s := pod.GetSpec(); s != nil && s.TerminationGracePeriodSeconds != nil {
			grace = *s.TerminationGracePeriodSeconds
		}
		if op.GracePeriodSeconds != nil {
			grace = op.GetGracePeriodSeconds()
		}
		if grace < 0 {
			grace = 1 // as Kubernetes: a negative period means "as soon as possible", not "never"
		}
		// Nothing runs an unbound or finished pod: nobody to wait for.
		if phase := pod.GetStatus().GetPhase(); pod.GetSpec().GetNodeName() == "" || phase == "Succeeded" || phase == "Failed" {
			grace = 0
		}
		if grace > 0 {
			// The worker stops the containers and deletes again with grace 0.
			// A later, shorter grace period shortens the deletion.
			if nm.DeletionGracePeriodSeconds == nil || grace < nm.GetDeletionGracePeriodSeconds() {
				at := stamp(cmd.GetTime(), grace)
				if at.CheckValid() != nil {
					return nil, "", errorf(ErrInvalid, "grace period %d is too large", grace)
				}
				nm.DeletionTimestamp = at
				nm.DeletionGracePeriodSeconds = &grace
			}
			obj, _, err := a.write(cur, old, next, false)
			return obj, ActionDeleting, err
		}
		if nm.DeletionGracePeriodSeconds != nil {
			nm.DeletionGracePeriodSeconds = new(int64)
		}
	}

	isNS := km.Kind == "Namespace"
	if len(nm.Finalizers) > 0 || (isNS && a.hasContents(name)) {
		if nm.DeletionTimestamp == nil {
			nm.DeletionTimestamp = stamp(cmd.GetTime(), 0)
			if !isNS {
				nm.DeletionGracePeriodSeconds = new(int64) // as Kubernetes: finalizers, not a grace period, hold it
			}
		}
		if isNS {
			if next.GetNamespace().Status == nil {
				next.GetNamespace().Status = &pb.NamespaceStatus{}
			}
			next.GetNamespace().Status.Phase = "Terminating"
		}
		obj, _, err := a.write(cur, old, next, false)
		return obj, ActionDeleting, err
	}
	last := old.Clone()
	if err := a.remove(cur, old, last); err != nil {
		return nil, "", err
	}
	return last, ActionDeleted, nil
}

func (a *applier) bind(cmd *pb.Command, op *pb.BindOp) (*pb.Object, string, error) {
	km := a.kinds["Pod"]
	ns, name := op.GetNamespace(), op.GetName()
	switch {
	case name == "" || ns == "":
		return nil, "", errorf(ErrInvalid, "bind: pod namespace and name are required")
	case op.GetNodeName() == "":
		return nil, "", errorf(ErrInvalid, "bind %s: node_name is required", describe(km, ns, name))
	}
	cur := a.txn.get(objectKey(km.Kind, ns, name))
	if cur == nil {
		return nil, "", errorf(ErrNotFound, "%s", describe(km, ns, name))
	}
	old := cur.mustObject()
	if err := preconditions(km, old.Meta(), op.GetUid(), op.GetResourceVersion()); err != nil {
		return nil, "", err
	}
	if n := old.GetPod().GetSpec().GetNodeName(); n != "" {
		return nil, "", errorf(ErrConflict, "%s is already assigned to node %q", describe(km, ns, name), n)
	}
	if old.Meta().GetDeletionTimestamp() != nil {
		return nil, "", errorf(ErrConflict, "%s is being deleted, cannot be assigned to a node", describe(km, ns, name))
	}
	next := old.Clone()
	pod := next.GetPod()
	if pod.Spec == nil {
		pod.Spec = &pb.PodSpec{}
	}
	if pod.Status == nil {
		pod.Status = &pb.PodStatus{}
	}
	pod.Spec.NodeName = op.GetNodeName()
	cond := &pb.PodCondition{Type: "PodScheduled", Status: "True", LastTransitionTime: stamp(cmd.GetTime(), 0)}
	replaced := false
	for i, c := range pod.Status.Conditions {
		if c.GetType() == cond.Type {
			pod.Status.Conditions[i], replaced = cond, true
		}
	}
	if !replaced {
		pod.Status.Conditions = append(pod.Status.Conditions, cond)
	}
	obj, _, err := a.write(cur, old, next, false)
	return obj, ActionBound, err
}

// write stores next, a modified clone of old, cur's object. An unchanged
// object keeps its resourceVersion and makes no event. With mayRemove, a
// deleting object that nothing holds any more (no finalizers, no grace
// period, not a namespace with contents) is removed instead.
func (a *applier) write(cur *record, old, next *pb.Object, mayRemove bool) (*pb.Object, string, error) {
	nm := next.Meta()
	nm.ResourceVersion = a.index
	raw, err := pb.Marshal(next)
	if err != nil {
		return nil, "", errorf(ErrInvalid, "%s: cannot encode the object: %v", next.KindName(), err)
	}
	if a.unchanged(old, raw) {
		return old, ActionUnchanged, nil
	}
	if mayRemove && nm.DeletionTimestamp != nil && a.removable(next) {
		if err := a.remove(cur, old, next); err != nil {
			return nil, "", err
		}
		return next, ActionDeleted, nil
	}
	rec := newRecordRaw(next, raw)
	a.insert(rec)
	a.emit(Modified, next, old, rec.raw, cur.raw)
	return next, ActionConfigured, nil
}

// unchanged reports whether old, given this write's resourceVersion, is
// encoded as raw. pb.Marshal is deterministic, so equal encodings are equal
// objects as gproto.Equal sees them (unknown fields and the presence of
// empty messages included; the API has no floating-point fields, where
// the two differ), and each master decides with its own encoder. For a
// pod, gproto.Equal's reflection took 40-50 us; a size, and an encoding
// only when the sizes agree, take a fraction of that.
func (a *applier) unchanged(old *pb.Object, raw []byte) bool {
	om := old.Meta()
	was := om.ResourceVersion
	om.ResourceVersion = a.index
	defer func() { om.ResourceVersion = was }()
	if old.SizeVT() != len(raw) {
		return false
	}
	enc, err := pb.Marshal(old)
	return err == nil && bytes.Equal(enc, raw)
}

func (a *applier) removable(obj *pb.Object) bool {
	m := obj.Meta()
	if len(m.GetFinalizers()) > 0 || m.GetDeletionGracePeriodSeconds() > 0 {
		return false
	}
	return obj.GetNamespace() == nil || !a.hasContents(m.GetName())
}

// hasContents reports whether any object lives in namespace ns: one prefix
// lookup per namespaced kind, which spares the store an index over every
// object by namespace.
func (a *applier) hasContents(ns string) bool {
	for _, km := range a.kinds {
		if !km.Namespaced {
			continue
		}
		if a.txn.firstWithPrefix(km.Kind+"\x00"+ns+"\x00") != nil {
			return true
		}
	}
	return false
}

// remove deletes cur, whose object is old; last is the state reported in
// the Deleted event.
func (a *applier) remove(cur *record, old, last *pb.Object) error {
	last.Meta().ResourceVersion = a.index
	encoded, err := pb.Marshal(last)
	if err != nil {
		return fmt.Errorf("fsm: encode %s: %w", displayKey(cur.namespace, cur.name), err)
	}
	a.txn.remove(cur)
	a.emit(Deleted, last, old, encoded, cur.raw)
	return nil
}

func (a *applier) insert(rec *record) { a.txn.put(rec) }

// emit records an event; encoded and oldEncoded are the encodings of obj
// and old (for old, the record it was decoded from).
func (a *applier) emit(typ string, obj, old *pb.Object, encoded, oldEncoded []byte) {
	a.events = append(a.events, Event{Type: typ, Object: obj, Old: old, Encoded: encoded, oldEncoded: oldEncoded, Index: a.index})
}

func preconditions(km *kindMeta, m *pb.ObjectMeta, uid string, rv uint64) error {
	if uid != "" && uid != m.GetUid() {
		return errorf(ErrConflict, "%s: precondition failed: uid is %q, not %q", describe(km, m.GetNamespace(), m.GetName()), m.GetUid(), uid)
	}
	if rv != 0 && rv != m.GetResourceVersion() {
		return errorf(ErrConflict, "%s: the object has been modified (resourceVersion %d, not %d); apply your changes to the latest version and try again",
			describe(km, m.GetNamespace(), m.GetName()), m.GetResourceVersion(), rv)
	}
	return nil
}

// swapFinalizer removes drop and adds add (once): the Orphan and Foreground
// policies exclude each other, the last delete wins.
func swapFinalizer(list []string, drop, add string) []string {
	out := make([]string, 0, len(list)+1)
	for _, f := range list {
		if f != drop {
			out = append(out, f)
		}
	}
	if !contains(out, add) {
		out = append(out, add)
	}
	return out
}

// stamp returns a copy of t plus seconds: stored objects never share
// messages with the command or with each other.
func stamp(t *timestamppb.Timestamp, plusSeconds int64) *timestamppb.Timestamp {
	return &timestamppb.Timestamp{Seconds: t.GetSeconds() + plusSeconds, Nanos: t.GetNanos()}
}

func resolveKind(kinds map[string]*kindMeta, name string) (*kindMeta, error) {
	if km, ok := kinds[name]; ok {
		return km, nil
	}
	if ki, ok := pb.LookupKind(name); ok {
		return kinds[ki.Kind], nil
	}
	return nil, errorf(ErrInvalid, "unknown kind %q", name)
}

// describe names an object the way Kubernetes' messages do: pods "ns/name".
func describe(km *kindMeta, namespace, name string) string {
	return fmt.Sprintf("%s %q", km.Plural, displayKey(namespace, name))
}

// errorf wraps one of the package's sentinel errors with a message.
func errorf(sentinel error, format string, args ...interface{}) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// normalize gives every stored object the same shape, so that equal states
// are equal messages (an absent spec and an empty one would differ in
// proto.Equal and in the hash): apiVersion and kind from the kind table,
// metadata, spec and status always present, Secret stringData merged into
// data.
func (km *kindMeta) normalize(r pb.Resource) {
	m := r.ProtoReflect()
	m.Set(km.apiVersion, protoreflect.ValueOfString(km.APIVersion))
	m.Set(km.kind, protoreflect.ValueOfString(km.Kind))
	pb.MetaOf(r)
	if km.spec != nil {
		m.Mutable(km.spec)
	}
	if km.status != nil {
		m.Mutable(km.status)
	}
	if s, ok := r.(*pb.Secret); ok && len(s.StringData) > 0 {
		if s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	}
}

// copySpec makes to's spec part (spec, or the top-level data fields of
// ConfigMap, Secret, Endpoints and Event) that of from. from is owned by the
// store and dropped afterwards, so sharing its values is safe.
func (km *kindMeta) copySpec(from, to pb.Resource) {
	src, dst := from.ProtoReflect(), to.ProtoReflect()
	for _, fd := range km.specPart {
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
	}
}

func (km *kindMeta) specOf(o *pb.Object) gproto.Message {
	return o.Resource().ProtoReflect().Get(km.spec).Message().Interface()
}
