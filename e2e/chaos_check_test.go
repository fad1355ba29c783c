package e2e

// Checks over a chaos scenario's record: linearizability (porcupine, one
// partition per object), lost acknowledged writes, stale reads, and the
// resumed watch.

import (
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
)

// kvState is one object as the sequential specification sees it. After a
// write whose outcome is unknown took effect, the resourceVersion it got is
// not known, only that it is above RV (Known false); the next read that
// sees it pins it down.
type kvState struct {
	Exists bool
	Value  string
	RV     uint64
	Known  bool
}

// kvModel is the specification of one ConfigMap under Get, Create and
// Update with a resourceVersion precondition: the store's semantics, with
// resourceVersion strictly increasing. It is nondeterministic only for
// writes whose outcome is unknown: each may or may not have been applied,
// at any point after it was invoked (its response time is open-ended).
var kvModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{kvState{Known: true}} },
	Step: func(state, input, output any) []any {
		return kvStep(state.(kvState), input.(kvInput), output.(kvOutput))
	},
	Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
	Hash: func(state any) uint64 {
		s := state.(kvState)
		h := fnv.New64a()
		fmt.Fprintf(h, "%t|%s|%d|%t", s.Exists, s.Value, s.RV, s.Known)
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		return describeOp(in, out)
	},
	DescribeState: func(state any) string {
		s := state.(kvState)
		if !s.Exists {
			return "absent"
		}
		if !s.Known {
			return fmt.Sprintf("%s@>%d", s.Value, s.RV)
		}
		return fmt.Sprintf("%s@%d", s.Value, s.RV)
	},
}

func describeOp(in kvInput, out kvOutput) string {
	var res string
	switch {
	case out.Unknown:
		res = "unknown"
	case out.Code == codes.OK && in.Op == opGet:
		res = fmt.Sprintf("%s@%d", out.Value, out.RV)
	case out.Code == codes.OK:
		res = fmt.Sprintf("ok@%d", out.RV)
	default:
		res = out.Code.String()
	}
	switch in.Op {
	case opGet:
		return fmt.Sprintf("get(%s) -> %s", in.Key, res)
	case opCreate:
		return fmt.Sprintf("create(%s, %s) -> %s", in.Key, in.Value, res)
	default:
		return fmt.Sprintf("update(%s, %s, if rv=%d) -> %s", in.Key, in.Value, in.ExpRV, res)
	}
}

func kvStep(s kvState, in kvInput, out kvOutput) []any {
	// rvIs says whether the object's resourceVersion can be rv.
	rvIs := func(rv uint64) bool {
		if s.Known {
			return s.RV == rv
		}
		return rv > s.RV
	}
	switch in.Op {
	case opGet:
		switch {
		case out.Code == codes.OK && s.Exists && s.Value == out.Value && rvIs(out.RV):
			return []any{kvState{Exists: true, Value: s.Value, RV: out.RV, Known: true}}
		case out.Code == codes.NotFound && !s.Exists:
			return []any{s}
		}
	case opCreate:
		switch {
		case out.Unknown:
			next := []any{s}
			if !s.Exists {
				next = append(next, kvState{Exists: true, Value: in.Value, RV: s.RV, Known: false})
			}
			return next
		case out.Code == codes.OK && !s.Exists && out.RV > s.RV:
			return []any{kvState{Exists: true, Value: in.Value, RV: out.RV, Known: true}}
		case out.Code == codes.AlreadyExists && s.Exists:
			return []any{s}
		}
	case opUpdate:
		switch {
		case out.Unknown:
			next := []any{s}
			if s.Exists && rvIs(in.ExpRV) {
				next = append(next, kvState{Exists: true, Value: in.Value, RV: in.ExpRV, Known: false})
			}
			return next
		case out.Code == codes.OK && s.Exists && rvIs(in.ExpRV) && out.RV > in.ExpRV:
			return []any{kvState{Exists: true, Value: in.Value, RV: out.RV, Known: true}}
		case out.Code == codes.Aborted && s.Exists && !(s.Known && s.RV == in.ExpRV):
			return []any{s}
		case out.Code == codes.NotFound && !s.Exists:
			return []any{s}
		}
	}
	return nil
}

// toOperations turns records into porcupine's history: operations without
// effect or observation are left out, and writes whose outcome is unknown
// never return (they may take effect at any time after their call).
func toOperations(recs []opRecord) []porcupine.Operation {
	ops := make([]porcupine.Operation, 0, len(recs))
	for _, r := range recs {
		if r.Drop {
			continue
		}
		ret := int64(r.Return)
		if r.Out.Unknown {
			ret = math.MaxInt64
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Client, Input: r.In, Output: r.Out, Call: int64(r.Call), Return: ret})
	}
	return ops
}

// linResult is the outcome of the linearizability check.
type linResult struct {
	Verdict  string // yes, no, timeout
	Seconds  float64
	BadKeys  []string
	Visual   string // porcupine's visualization of a failure
	Excerpts []string
}

func checkLinearizable(name string, recs []opRecord, timeout time.Duration) linResult {
	model := kvModel.ToModel()
	ops := toOperations(recs)
	start := time.Now()
	res := porcupine.CheckOperationsTimeout(model, ops, timeout)
	out := linResult{Seconds: time.Since(start).Seconds()}
	switch res {
	case porcupine.Ok:
		out.Verdict = "yes"
		return out
	case porcupine.Unknown:
		out.Verdict = "timeout"
		return out
	}
	out.Verdict = "no"
	// Find the objects whose histories are not linearizable, show one, and
	// keep porcupine's visualization of it.
	for _, part := range model.Partition(ops) {
		single := model
		single.Partition = nil
		if porcupine.CheckOperationsTimeout(single, part, timeout) != porcupine.Illegal {
			continue
		}
		key := part[0].Input.(kvInput).Key
		out.BadKeys = append(out.BadKeys, key)
		if len(out.BadKeys) > 1 {
			continue
		}
		sorted := append([]porcupine.Operation(nil), part...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
		for _, op := range sorted {
			ret := "open"
			if op.Return != math.MaxInt64 {
				ret = time.Duration(op.Return).String()
			}
			out.Excerpts = append(out.Excerpts, fmt.Sprintf("[%s .. %s] client %d: %s", time.Duration(op.Call), ret, op.ClientId,
				describeOp(op.Input.(kvInput), op.Output.(kvOutput))))
		}
		_, info := porcupine.CheckOperationsVerbose(single, part, timeout)
		path := filepath.Join(os.TempDir(), fmt.Sprintf("skiff-chaos-%s-%s-%d.html", sanitize(name), sanitize(key), time.Now().Unix()))
		if err := porcupine.VisualizePath(single, info, path); err == nil {
			out.Visual = path
		}
	}
	return out
}

// finalObject is one ConfigMap of the workload as a master holds it.
type finalObject struct {
	RV    uint64
	Value string
}

// lostWrites lists every acknowledged write that a master's final state
// does not reflect: the object is missing, or older than the write. (There
// are no deletes, and resourceVersions only grow, so an object at or past
// the write's resourceVersion includes it.)
func lostWrites(recs []opRecord, finals map[string]map[string]finalObject) (lost int, examples []string) {
	masters := make([]string, 0, len(finals))
	for m := range finals {
		masters = append(masters, m)
	}
	sort.Strings(masters)
	for _, r := range recs {
		if !r.acked() {
			continue
		}
		var on []string
		for _, m := range masters {
			f, ok := finals[m][r.In.Key]
			if !ok || f.RV < r.Out.RV {
				on = append(on, m)
			}
		}
		if len(on) > 0 {
			lost++
			if len(examples) < 10 {
				examples = append(examples, fmt.Sprintf("%s of %s = %q acknowledged at resourceVersion %d (t=%s) is missing on %s",
					r.In.Op, r.In.Key, r.In.Value, r.Out.RV, r.Return, strings.Join(on, ", ")))
			}
		}
	}
	return lost, examples
}

// staleReads lists successful reads that returned an object older than
// a write acknowledged before the read began: the simplest symptom of a
// read served from a stale term (porcupine finds these too, and more).
func staleReads(recs []opRecord) (stale map[int]bool, examples []string) {
	stale = map[int]bool{}
	type ack struct {
		ret time.Duration
		rv  uint64
	}
	acks := map[string][]ack{}
	for _, r := range recs {
		if r.acked() {
			acks[r.In.Key] = append(acks[r.In.Key], ack{r.Return, r.Out.RV})
		}
	}
	for k := range acks {
		a := acks[k]
		sort.Slice(a, func(i, j int) bool { return a[i].ret < a[j].ret })
		for i := 1; i < len(a); i++ {
			a[i].rv = max(a[i].rv, a[i-1].rv)
		}
	}
	for ri, r := range recs {
		if r.In.Op != opGet || r.Drop || (r.Out.Code != codes.OK && r.Out.Code != codes.NotFound) {
			continue
		}
		a := acks[r.In.Key]
		i := sort.Search(len(a), func(i int) bool { return a[i].ret >= r.Call })
		if i == 0 {
			continue
		}
		want := a[i-1].rv
		got := r.Out.RV
		if r.Out.Code == codes.NotFound || got < want {
			stale[ri] = true
			if len(examples) < 10 {
				examples = append(examples, fmt.Sprintf("client %d (%s) read %s at t=%s: got %s, but resourceVersion %d was acknowledged before",
					r.Client, orAll(r.Pinned), r.In.Key, r.Call, describeOp(r.In, r.Out), want))
			}
		}
	}
	return stale, examples
}

// watchCheck compares the resumed watch with the record and the final
// state: every change once, in order; every acknowledged write among them;
// nothing that no client wrote or that was reported as failed; and the
// initial list plus the events gives the final state.
func watchCheck(wr *watchRecorder, events []watchEvent, recs []opRecord, final map[string]finalObject) (problems []string) {
	add := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	type evKey struct {
		key string
		rv  uint64
	}
	seen := map[evKey]watchEvent{}
	var last uint64
	for i, ev := range events {
		if ev.RV < last {
			add("event %d (%s %s at %d) comes after one at %d: out of order", i, ev.Type, ev.Key, ev.RV, last)
		}
		last = max(last, ev.RV)
		if ev.RV <= wr.startRV {
			add("event %d (%s %s at %d) is not after the watch's start %d", i, ev.Type, ev.Key, ev.RV, wr.startRV)
		}
		k := evKey{ev.Key, ev.RV}
		if _, dup := seen[k]; dup {
			add("%s of %s at %d delivered twice", ev.Type, ev.Key, ev.RV)
		}
		seen[k] = ev
		if ev.Type != "DELETED" && ev.ObjRV != ev.RV {
			add("%s of %s at %d carries resourceVersion %d", ev.Type, ev.Key, ev.RV, ev.ObjRV)
		}
	}
	byValue := map[string]opRecord{}
	for _, r := range recs {
		if r.In.Op == opGet {
			continue
		}
		byValue[r.In.Value] = r
		if r.acked() {
			ev, ok := seen[evKey{r.In.Key, r.Out.RV}]
			switch {
			case !ok:
				add("acknowledged %s of %s at %d (%q) never seen by the watch", r.In.Op, r.In.Key, r.Out.RV, r.In.Value)
			case ev.Value != r.In.Value:
				add("watch saw %s at %d with %q, but %q was acknowledged there", r.In.Key, r.Out.RV, ev.Value, r.In.Value)
			}
		}
	}
	for _, ev := range events {
		r, ok := byValue[ev.Value]
		switch {
		case !ok:
			add("watch saw %s at %d with %q, which no client wrote", ev.Key, ev.RV, ev.Value)
		case r.In.Key != ev.Key:
			add("watch saw %q on %s, but it was written to %s", ev.Value, ev.Key, r.In.Key)
		case r.Drop || (!r.Out.Unknown && r.Out.Code != codes.OK):
			add("watch saw %s at %d with %q, from a %s the client was told failed (%s)", ev.Key, ev.RV, ev.Value, r.In.Op, r.Err)
		}
	}
	state := map[string]finalObject{}
	for k, o := range wr.initial {
		state[k] = finalObject{RV: o.ObjRV, Value: o.Value}
	}
	for _, ev := range events {
		if ev.Type == "DELETED" {
			delete(state, ev.Key)
		} else {
			state[ev.Key] = finalObject{RV: ev.RV, Value: ev.Value}
		}
	}
	for k, f := range final {
		if s, ok := state[k]; !ok || s != f {
			add("replaying the watch gives %s = %+v, but the masters hold %+v", k, state[k], f)
		}
	}
	for k := range state {
		if _, ok := final[k]; !ok {
			add("replaying the watch gives %s, which the masters do not hold", k)
		}
	}
	return problems
}

// unknownApplied counts the writes with unknown outcome that the watch shows
// took effect.
func unknownApplied(events []watchEvent, recs []opRecord) (unknown, applied int) {
	values := map[string]bool{}
	for _, ev := range events {
		values[ev.Value] = true
	}
	for _, r := range recs {
		if r.In.Op != opGet && r.Out.Unknown {
			unknown++
			if values[r.In.Value] {
				applied++
			}
		}
	}
	return unknown, applied
}
