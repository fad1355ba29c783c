package fsm

import (
	"strings"

	"github.com/google/btree"
)

// tables holds the store's records and their secondary indexes in two
// copy-on-write B-trees (google/btree, as etcd's key index). A clone costs
// a few small allocations and copies no node: each tree then copies a node
// the first time it changes it. So a write transaction (a clone) copies
// each node it touches once, however many records of a group-committed
// batch land there, and a reader keeps a consistent view for as long as it
// likes while writes go on.
//
// go-memdb, which this replaces, kept an immutable radix tree that copied
// the whole path of every insert again (plus a watch channel per node and
// an LRU of the nodes it had copied): half the bytes a create allocated.
//
// Rules: a tables value is either the writer's (FSM.w, only ever cloned)
// or a transaction's (a clone of it, changed by one goroutine, then either
// committed or dropped), or published for readers (FSM.cur, never changed
// and never cloned). Readers therefore share nothing a writer writes.
type tables struct {
	objects *btree.BTreeG[item]       // by key: kind, namespace, name
	index   *btree.BTreeG[indexEntry] // every secondary index, by (index, value, key)
}

// item is a record with its key beside it: a lookup compares keys held in
// the tree's nodes instead of following a pointer to each record it passes
// (a lookup took 5 us in a tree of 100,000 records that way), and looking
// up a key allocates nothing.
type item struct {
	key string
	r   *record
}

// indexName is a secondary index.
type indexName uint8

const (
	indexNode      indexName = iota + 1 // Pods by spec.nodeName ("" for unbound pods)
	indexOwner                          // objects by ownerReferences[].uid, for garbage collection
	indexClusterIP                      // Services by canonical spec.clusterIP ("" and "None" hold none)
	indexNodePort                       // Services by each spec.ports[].nodePort, protocol-agnostic as in Kubernetes
)

// indexEntry says that record r has value in index. Entries of one value
// sort by the record's key, so an index lookup yields records in key order.
type indexEntry struct {
	index indexName
	value string
	r     *record
}

// btreeDegree: nodes of 15 to 31 items. Smaller nodes copy less per
// changed node; larger ones make shallower trees.
const btreeDegree = 16

func newTables() *tables {
	return &tables{
		objects: btree.NewG(btreeDegree, func(a, b item) bool { return a.key < b.key }),
		index: btree.NewG(btreeDegree, func(a, b indexEntry) bool {
			if a.index != b.index {
				return a.index < b.index
			}
			if a.value != b.value {
				return a.value < b.value
			}
			return a.r.key < b.r.key
		}),
	}
}

// clone returns a copy that can be changed without changing t.
func (t *tables) clone() *tables {
	return &tables{objects: t.objects.Clone(), index: t.index.Clone()}
}

// first is a key no record has, sorting before all of them.
var first = &record{}

// get returns the record of key, or nil.
func (t *tables) get(key string) *record {
	it, _ := t.objects.Get(item{key: key})
	return it.r
}

// put stores r, replacing the record of the same key and its index entries.
func (t *tables) put(r *record) {
	if old, ok := t.objects.ReplaceOrInsert(item{r.key, r}); ok {
		old.r.eachIndexed(func(i indexName, v string) { t.index.Delete(indexEntry{i, v, old.r}) })
	}
	r.eachIndexed(func(i indexName, v string) { t.index.ReplaceOrInsert(indexEntry{i, v, r}) })
}

// putNew stores r unless a record of its key exists, and reports whether
// it did: one descent of the tree when the key is free (a lookup and then
// an insert would take two); a taken key is put back as it was.
func (t *tables) putNew(r *record) bool {
	if old, ok := t.objects.ReplaceOrInsert(item{r.key, r}); ok {
		t.objects.ReplaceOrInsert(old)
		return false
	}
	r.eachIndexed(func(i indexName, v string) { t.index.ReplaceOrInsert(indexEntry{i, v, r}) })
	return true
}

// remove deletes the record of r's key and its index entries.
func (t *tables) remove(r *record) {
	if old, ok := t.objects.Delete(item{key: r.key}); ok {
		old.r.eachIndexed(func(i indexName, v string) { t.index.Delete(indexEntry{i, v, old.r}) })
	}
}

// ascendPrefix calls fn for every record whose key starts with prefix, in
// key order, until fn returns false.
func (t *tables) ascendPrefix(prefix string, fn func(*record) bool) {
	t.objects.AscendGreaterOrEqual(item{key: prefix}, func(it item) bool {
		return strings.HasPrefix(it.key, prefix) && fn(it.r)
	})
}

// firstWithPrefix returns the first record whose key starts with prefix, or
// nil.
func (t *tables) firstWithPrefix(prefix string) *record {
	var found *record
	t.ascendPrefix(prefix, func(r *record) bool { found = r; return false })
	return found
}

// ascendIndex calls fn for every record that index holds under value, in
// key order, until fn returns false.
func (t *tables) ascendIndex(index indexName, value string, fn func(*record) bool) {
	t.index.AscendGreaterOrEqual(indexEntry{index, value, first}, func(e indexEntry) bool {
		return e.index == index && e.value == value && fn(e.r)
	})
}

// ascend calls fn for every record in key order.
func (t *tables) ascend(fn func(*record) bool) {
	t.objects.Ascend(func(it item) bool { return fn(it.r) })
}

// eachIndexed calls fn for every secondary index entry of r.
func (r *record) eachIndexed(fn func(indexName, string)) {
	if r.kind == "Pod" {
		fn(indexNode, r.node)
	}
	for _, uid := range r.owners {
		fn(indexOwner, uid)
	}
	if r.clusterIP != "" {
		fn(indexClusterIP, r.clusterIP)
	}
	for _, p := range r.nodePorts {
		fn(indexNodePort, p)
	}
}
