package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/skiff-sh/skiff/proto"
)

// Records are kept by their key, kind NUL namespace NUL name (tables.go).
// NUL sorts before every character a name may hold, so records in key
// order are sorted by kind, then namespace, then name, and listing a kind
// or a kind in one namespace is a range of keys: no kind index needed.

// record is what the store holds per object. The object itself is kept encoded,
// marshalled deterministically: a []byte holds no pointers, so the garbage
// collector never scans it, where a decoded object is a tree of small heap
// objects. A 256-byte ConfigMap costs the store 604 bytes in 3 heap objects
// (TestStoreHeapPerObject); decoded, with a namespace index, it cost 2,077
// bytes in 23. The other fields are what indexes, selectors and the write
// path need without decoding, derived once on write. A record is never
// modified after insertion: writers build new ones, and every reader
// decodes its own copy of the object.
type record struct {
	key       string
	kind      string
	namespace string   // a substring of key
	name      string   // a substring of key
	node      string   // spec.nodeName, pods only
	phase     string   // status.phase, pods and namespaces only
	deleting  bool     // metadata.deletionTimestamp is set
	labels    labelSet // metadata.labels
	owners    []string // distinct ownerReferences[].uid
	clusterIP string   // Services: canonical spec.clusterIP, "" if none (services.go)
	nodePorts []string // Services: distinct spec.ports[].nodePort
	raw       []byte   // the object, deterministically marshalled
}

func objectKey(kind, namespace, name string) string {
	return kind + "\x00" + namespace + "\x00" + name
}

// newRecord encodes obj for the store. obj is not kept: the caller may go
// on using it (as the object of a result or an event), but not change it.
func newRecord(obj *pb.Object) (*record, error) {
	// Deterministic (pb.Marshal writes map entries in key order): equal
	// objects are equal bytes on every master, which the no-op check,
	// snapshots and StateHash rely on.
	raw, err := pb.Marshal(obj)
	if err != nil {
		return nil, errorf(ErrInvalid, "%s: cannot encode the object: %v", obj.KindName(), err)
	}
	return newRecordRaw(obj, raw), nil
}

// newRecordRaw is newRecord for an object already encoded as raw.
func newRecordRaw(obj *pb.Object, raw []byte) *record {
	m := obj.Meta()
	r := &record{kind: obj.KindName(), raw: raw}
	r.key = objectKey(r.kind, m.GetNamespace(), m.GetName())
	ns := len(r.kind) + 1
	r.namespace = r.key[ns : ns+len(m.GetNamespace())]
	r.name = r.key[ns+len(m.GetNamespace())+1:]
	if p := obj.GetPod(); p != nil {
		r.node = p.GetSpec().GetNodeName()
		r.phase = p.GetStatus().GetPhase()
	}
	if n := obj.GetNamespace(); n != nil {
		r.phase = n.GetStatus().GetPhase()
	}
	r.deleting = m.GetDeletionTimestamp() != nil
	r.labels = newLabelSet(m.GetLabels())
	r.clusterIP, r.nodePorts = serviceAllocations(obj)
	for _, ref := range m.GetOwnerReferences() {
		if u := ref.GetUid(); u != "" && !contains(r.owners, u) {
			r.owners = append(r.owners, u)
		}
	}
	return r
}

// object decodes the stored object: a copy the caller owns. The bytes are
// the store's own deterministic encoding, so the generated decoder alone
// reads them (pb.Unmarshal's checks are for bytes from outside).
func (r *record) object() (*pb.Object, error) {
	obj := &pb.Object{}
	if err := obj.UnmarshalVT(r.raw); err != nil {
		return nil, fmt.Errorf("fsm: decode stored %s: %w", displayKey(r.namespace, r.name), err)
	}
	return obj, nil
}

// mustObject is object for the write path, where a store that cannot read
// its own bytes is a bug: the panic fails the one command (safeCommand).
func (r *record) mustObject() *pb.Object {
	obj, err := r.object()
	if err != nil {
		panic(err.Error())
	}
	return obj
}

// labelSet holds labels as key, value pairs sorted by key: one slice where a
// map is several heap objects, and what a labels.Selector matches against.
type labelSet []string

func newLabelSet(m map[string]string) labelSet {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := make(labelSet, 0, 2*len(keys))
	for _, k := range keys {
		s = append(s, k, m[k])
	}
	return s
}

func (s labelSet) Lookup(key string) (string, bool) {
	for i := 0; i < len(s); i += 2 {
		if s[i] == key {
			return s[i+1], true
		}
	}
	return "", false
}

func (s labelSet) Has(key string) bool {
	_, ok := s.Lookup(key)
	return ok
}

func (s labelSet) Get(key string) string {
	v, _ := s.Lookup(key)
	return v
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// kindMeta is a kind plus the field descriptors the generic update code
// needs, computed once from the generated messages.
type kindMeta struct {
	pb.KindInfo
	apiVersion, kind protoreflect.FieldDescriptor
	spec             protoreflect.FieldDescriptor   // the "spec" message, nil for ConfigMap, Secret, ...
	status           protoreflect.FieldDescriptor   // nil for kinds without status
	specPart         []protoreflect.FieldDescriptor // every field Update replaces besides metadata
}

func newKindTable() map[string]*kindMeta {
	kinds := make(map[string]*kindMeta)
	for _, ki := range pb.Kinds() {
		fields := ki.New().ProtoReflect().Descriptor().Fields()
		km := &kindMeta{KindInfo: ki}
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			switch fd.Name() {
			case "api_version":
				km.apiVersion = fd
			case "kind":
				km.kind = fd
			case "metadata":
			case "status":
				km.status = fd
			default:
				if fd.Name() == "spec" {
					km.spec = fd
				}
				km.specPart = append(km.specPart, fd)
			}
		}
		kinds[ki.Kind] = km
	}
	return kinds
}

// validName rejects what would corrupt the primary key. Full validation of
// names is the API's job (proto package); the store only protects itself.
func validName(s string) bool {
	return !strings.ContainsAny(s, "/\x00")
}
