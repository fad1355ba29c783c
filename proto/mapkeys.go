package proto

import (
	"iter"
	"slices"
)

// descendingKeys yields m's keys from the largest to the smallest. The
// generated MarshalVT code ranges over it instead of over the map itself
// (make proto rewrites the loops, see proto/internal/vtsortmaps): it
// writes a message back to front, so map entries reach the wire in
// ascending key order, as gproto's deterministic marshalling writes them.
// MarshalVT's bytes are then the same for the same message on every
// master, and the store and the raft log can use it instead of the
// standard library's slower deterministic marshaller.
//
// Maps of one entry, most of them, cost no allocation; larger ones sort
// their keys on the stack up to 16.
func descendingKeys[V any](m map[string]V) iter.Seq[string] {
	return func(yield func(string) bool) {
		if len(m) <= 1 {
			for k := range m {
				yield(k)
			}
			return
		}
		var buf [16]string
		keys := buf[:0]
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i := len(keys) - 1; i >= 0; i-- {
			if !yield(keys[i]) {
				return
			}
		}
	}
}
