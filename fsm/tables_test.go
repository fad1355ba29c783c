package fsm

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
)

// modelState is the model of a tables value: the record of each key.
type modelState map[string]*record

func (m modelState) copy() modelState {
	out := make(modelState, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// check compares t with the model: every record, key order, each prefix
// range and every index lookup (brute force over the model).
func (m modelState) check(t *testing.T, what string, tb *tables) {
	t.Helper()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var got []string
	tb.ascend(func(r *record) bool {
		if m[r.key] != r {
			t.Fatalf("%s: record %q is not the model's", what, r.key)
		}
		got = append(got, r.key)
		return true
	})
	if !slices.Equal(got, keys) {
		t.Fatalf("%s: keys %q, want %q", what, got, keys)
	}
	for _, k := range keys {
		if tb.get(k) != m[k] {
			t.Fatalf("%s: get(%q) is not the model's record", what, k)
		}
	}
	if r := tb.get("Pod\x00ns\x00absent"); r != nil {
		t.Fatalf("%s: get of an absent key found %q", what, r.key)
	}
	for _, kind := range []string{"Pod", "Service"} {
		for _, ns := range []string{"a", "b"} {
			prefix := kind + "\x00" + ns + "\x00"
			var want, have []string
			for _, k := range keys {
				if len(k) > len(prefix) && k[:len(prefix)] == prefix {
					want = append(want, k)
				}
			}
			tb.ascendPrefix(prefix, func(r *record) bool { have = append(have, r.key); return true })
			if !slices.Equal(have, want) {
				t.Fatalf("%s: prefix %q: %q, want %q", what, prefix, have, want)
			}
		}
	}
	for _, idx := range []indexName{indexNode, indexOwner, indexClusterIP, indexNodePort} {
		for _, v := range []string{"", "n1", "n2", "u1", "u2", "10.0.0.1", "10.0.0.2", "30001", "30002"} {
			var want, have []string
			for _, k := range keys {
				m[k].eachIndexed(func(i indexName, val string) {
					if i == idx && val == v {
						want = append(want, k)
					}
				})
			}
			tb.ascendIndex(idx, v, func(r *record) bool { have = append(have, r.key); return true })
			if !slices.Equal(have, want) {
				t.Fatalf("%s: index %d value %q: %q, want %q", what, idx, v, have, want)
			}
		}
	}
}

// TestTablesAgainstModel runs random puts and removes through chains of
// transactions, as the FSM does (clone, change, commit or drop), and checks
// the tables and every index against a plain map. Every published view is
// checked again at the end: later transactions must not have changed it.
func TestTablesAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pick := func(vals ...string) string { return vals[rng.Intn(len(vals))] }
	some := func(vals ...string) []string {
		var out []string
		for _, v := range vals {
			if rng.Intn(2) == 0 {
				out = append(out, v)
			}
		}
		return out
	}
	newRec := func() *record {
		kind := pick("Pod", "Service")
		r := &record{kind: kind, key: kind + "\x00" + pick("a", "b") + "\x00" + fmt.Sprint("o", rng.Intn(60))}
		if kind == "Pod" {
			r.node = pick("", "n1", "n2")
		} else {
			r.clusterIP = pick("", "10.0.0.1", "10.0.0.2")
			r.nodePorts = some("30001", "30002")
		}
		r.owners = some("u1", "u2")
		return r
	}
	type view struct {
		t *tables
		m modelState
	}
	w, model := newTables(), modelState{}
	var views []view
	for txn := 0; txn < 400; txn++ {
		next, m := w.clone(), model.copy()
		for op := rng.Intn(20); op >= 0; op-- {
			r := newRec()
			if rng.Intn(3) == 0 {
				next.remove(r)
				delete(m, r.key)
			} else {
				next.put(r)
				m[r.key] = r
			}
		}
		if rng.Intn(5) == 0 {
			// Dropped (a panicking command, a dry run): w must be as it was.
			model.check(t, fmt.Sprintf("after dropping transaction %d", txn), w)
			continue
		}
		w, model = next, m
		pub := w.clone()
		model.check(t, fmt.Sprintf("transaction %d", txn), pub)
		if txn%10 == 0 {
			views = append(views, view{pub, model})
		}
	}
	for i, v := range views {
		v.m.check(t, fmt.Sprintf("view %d at the end", i), v.t)
	}
}
