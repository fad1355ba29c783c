package fsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/skiff-sh/skiff/proto"
)

// The single memdb table and its indexes.
//
// The primary key is kind NUL namespace NUL name. NUL sorts before every
// character a name may hold, so iterating the primary index yields objects
// sorted by kind, then namespace, then name, and listing a kind or a kind in
// one namespace is a prefix scan of that index: no separate kind index needed.
const (
	tableObjects = "objects"
	indexID      = "id"
	indexNS      = "namespace" // namespaced objects by namespace: "is this namespace empty?"
	indexNode    = "node"      // pods by spec.nodeName ("" for unbound pods)
	indexOwner   = "owner"     // objects by ownerReferences[].uid, for garbage collection
)

// record is what the table stores. Its fields are derived from obj once, on
// write, so indexing needs neither reflection nor allocation. A record and
// its object are never modified after insertion: writers build new ones.
type record struct {
	key       string
	kind      string
	namespace string
	name      string
	node      string   // spec.nodeName, pods only
	owners    []string // distinct ownerReferences[].uid
	clusterIP string   // Services: canonical spec.clusterIP, "" if none (services.go)
	nodePorts []string // Services: distinct spec.ports[].nodePort
	obj       *pb.Object
}

func objectKey(kind, namespace, name string) string {
	return kind + "\x00" + namespace + "\x00" + name
}

func newRecord(obj *pb.Object) *record {
	m := obj.Meta()
	r := &record{
		kind:      obj.KindName(),
		namespace: m.GetNamespace(),
		name:      m.GetName(),
		obj:       obj,
	}
	r.key = objectKey(r.kind, r.namespace, r.name)
	if p := obj.GetPod(); p != nil {
		r.node = p.GetSpec().GetNodeName()
	}
	r.clusterIP, r.nodePorts = serviceAllocations(obj)
	for _, ref := range m.GetOwnerReferences() {
		if u := ref.GetUid(); u != "" && !contains(r.owners, u) {
			r.owners = append(r.owners, u)
		}
	}
	return r
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// strIndex indexes a record by one string; ok=false leaves the record out of
// the index. Values are NUL-terminated so that one value is never a prefix of
// another inside memdb's radix tree.
type strIndex func(*record) (value string, ok bool)

func (f strIndex) FromObject(raw interface{}) (bool, []byte, error) {
	r, ok := raw.(*record)
	if !ok {
		return false, nil, fmt.Errorf("fsm: cannot index %T", raw)
	}
	v, ok := f(r)
	if !ok {
		return false, nil, nil
	}
	return true, []byte(v + "\x00"), nil
}

func (strIndex) FromArgs(args ...interface{}) ([]byte, error) {
	s, err := oneString(args)
	return []byte(s + "\x00"), err
}

func (strIndex) PrefixFromArgs(args ...interface{}) ([]byte, error) {
	s, err := oneString(args)
	return []byte(s), err
}

// strsIndex indexes a record under several strings.
type strsIndex func(*record) []string

func (f strsIndex) FromObject(raw interface{}) (bool, [][]byte, error) {
	r, ok := raw.(*record)
	if !ok {
		return false, nil, fmt.Errorf("fsm: cannot index %T", raw)
	}
	vals := f(r)
	if len(vals) == 0 {
		return false, nil, nil
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v + "\x00")
	}
	return true, out, nil
}

func (strsIndex) FromArgs(args ...interface{}) ([]byte, error) {
	s, err := oneString(args)
	return []byte(s + "\x00"), err
}

func oneString(args []interface{}) (string, error) {
	if len(args) != 1 {
		return "", errors.New("fsm: index takes exactly one argument")
	}
	s, ok := args[0].(string)
	if !ok {
		return "", fmt.Errorf("fsm: index argument must be a string, not %T", args[0])
	}
	return s, nil
}

func newDB() (*memdb.MemDB, error) {
	return memdb.NewMemDB(&memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableObjects: {
			Name: tableObjects,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: {Name: indexID, Unique: true,
					Indexer: strIndex(func(r *record) (string, bool) { return r.key, true })},
				indexNS: {Name: indexNS, AllowMissing: true,
					Indexer: strIndex(func(r *record) (string, bool) { return r.namespace, r.namespace != "" })},
				indexNode: {Name: indexNode, AllowMissing: true,
					Indexer: strIndex(func(r *record) (string, bool) { return r.node, r.kind == "Pod" })},
				indexOwner: {Name: indexOwner, AllowMissing: true,
					Indexer: strsIndex(func(r *record) []string { return r.owners })},
				indexClusterIP: {Name: indexClusterIP, AllowMissing: true,
					Indexer: strIndex(func(r *record) (string, bool) { return r.clusterIP, r.clusterIP != "" })},
				indexNodePort: {Name: indexNodePort, AllowMissing: true,
					Indexer: strsIndex(func(r *record) []string { return r.nodePorts })},
			},
		},
	}})
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
