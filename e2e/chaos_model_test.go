package e2e

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
)

// TestChaosModel checks the linearizability model and the record checks
// on small hand-written histories, legal and not: a checker that accepts
// everything would make every chaos run pass.
func TestChaosModel(t *testing.T) {
	const open = -1
	type op struct {
		client    int
		in        kvInput
		out       kvOutput
		call, ret int64 // ret -1: outcome unknown
	}
	get := func(v string, rv uint64) kvOutput { return kvOutput{Code: codes.OK, Value: v, RV: rv} }
	ok := func(rv uint64) kvOutput { return kvOutput{Code: codes.OK, RV: rv} }
	unknown := kvOutput{Unknown: true}
	notFound := kvOutput{Code: codes.NotFound}
	create := func(v string) kvInput { return kvInput{Op: opCreate, Key: "k", Value: v} }
	update := func(v string, rv uint64) kvInput { return kvInput{Op: opUpdate, Key: "k", Value: v, ExpRV: rv} }
	read := kvInput{Op: opGet, Key: "k"}

	tests := []struct {
		name  string
		ops   []op
		legal bool
	}{
		{"sequential create, update, reads", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, read, get("a", 5), 2, 3},
			{0, update("b", 5), ok(7), 4, 5},
			{1, read, get("b", 7), 6, 7},
		}, true},
		{"read after an acknowledged update returns the old value", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), ok(7), 2, 3},
			{1, read, get("a", 5), 4, 5},
		}, false},
		{"concurrent read may see either", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), ok(7), 2, 6},
			{1, read, get("a", 5), 3, 4},
		}, true},
		{"acknowledged create lost", []op{
			{0, create("a"), ok(5), 0, 1},
			{1, read, notFound, 2, 3},
		}, false},
		{"two compare-and-sets on one version both succeed", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), ok(7), 2, 3},
			{1, update("c", 5), ok(8), 2, 4},
		}, false},
		{"conflict although the version matched", []op{
			{0, create("a"), ok(5), 0, 1},
			{1, update("c", 5), kvOutput{Code: codes.Aborted}, 2, 3},
		}, false},
		{"unknown update later seen applied", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), unknown, 2, open},
			{1, read, get("a", 5), 3, 4},
			{1, read, get("b", 9), 5, 6},
			{1, update("c", 9), ok(11), 7, 8},
		}, true},
		{"unknown update never applied", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), unknown, 2, open},
			{1, update("c", 5), ok(6), 3, 4},
			{1, read, get("c", 6), 5, 6},
		}, true},
		{"unknown update seen although its precondition had failed", []op{
			{0, create("a"), ok(5), 0, 1},
			{1, update("c", 5), ok(6), 2, 3},
			{0, update("b", 5), unknown, 4, open},
			{1, read, get("b", 9), 5, 6},
		}, false},
		{"unknown create then read back", []op{
			{0, create("a"), unknown, 0, open},
			{1, read, notFound, 1, 2},
			{1, read, get("a", 4), 3, 4},
			{1, create("x"), kvOutput{Code: codes.AlreadyExists}, 5, 6},
		}, true},
		{"resourceVersion goes back", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), ok(4), 2, 3},
		}, false},
		{"unknown write's value seen at an older resourceVersion", []op{
			{0, create("a"), ok(5), 0, 1},
			{0, update("b", 5), unknown, 2, open},
			{1, read, get("b", 5), 3, 4},
		}, false},
	}
	model := kvModel.ToModel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ops []porcupine.Operation
			for _, o := range tt.ops {
				ret := o.ret
				if ret == open {
					ret = math.MaxInt64
				}
				ops = append(ops, porcupine.Operation{ClientId: o.client, Input: o.in, Output: o.out, Call: o.call, Return: ret})
			}
			res := porcupine.CheckOperationsTimeout(model, ops, 10*time.Second)
			if got := res == porcupine.Ok; got != tt.legal || res == porcupine.Unknown {
				t.Errorf("porcupine says %v, want linearizable=%v", res, tt.legal)
			}
		})
	}
}

// TestChaosRecordChecks covers the checks that need no porcupine.
func TestChaosRecordChecks(t *testing.T) {
	ms := time.Millisecond
	recs := []opRecord{
		{Client: 0, In: kvInput{Op: opCreate, Key: "k", Value: "a"}, Out: kvOutput{Code: codes.OK, RV: 5}, Call: 0, Return: 1 * ms},
		{Client: 0, In: kvInput{Op: opUpdate, Key: "k", Value: "b", ExpRV: 5}, Out: kvOutput{Code: codes.OK, RV: 7}, Call: 2 * ms, Return: 3 * ms},
		{Client: 1, In: kvInput{Op: opGet, Key: "k"}, Out: kvOutput{Code: codes.OK, RV: 5, Value: "a"}, Call: 4 * ms, Return: 5 * ms},
		{Client: 1, In: kvInput{Op: opGet, Key: "k"}, Out: kvOutput{Code: codes.OK, RV: 5, Value: "a"}, Call: 2 * ms, Return: 5 * ms},
		{Client: 2, In: kvInput{Op: opUpdate, Key: "k", Value: "c", ExpRV: 7}, Out: kvOutput{Unknown: true}, Call: 6 * ms, Return: 7 * ms},
	}
	if stale, ex := staleReads(recs); len(stale) != 1 || !stale[2] {
		t.Errorf("staleReads = %v (%v), want the read at index 2", stale, ex)
	}
	finals := map[string]map[string]finalObject{
		"m1": {"k": {RV: 7, Value: "b"}},
		"m2": {"k": {RV: 5, Value: "a"}},
	}
	if n, ex := lostWrites(recs, finals); n != 1 {
		t.Errorf("lostWrites = %d (%v), want 1 (the update, on m2)", n, ex)
	}
	wr := &watchRecorder{startRV: 1, initial: map[string]watchEvent{}}
	good := []watchEvent{{Type: "ADDED", Key: "k", RV: 5, ObjRV: 5, Value: "a"}, {Type: "MODIFIED", Key: "k", RV: 7, ObjRV: 7, Value: "b"}}
	if p := watchCheck(wr, good, recs, finals["m1"]); len(p) != 0 {
		t.Errorf("watchCheck of a good watch: %v", p)
	}
	for name, evs := range map[string][]watchEvent{
		"missing":   good[:1],
		"duplicate": {good[0], good[1], good[1]},
		"reordered": {good[1], good[0]},
		"phantom":   {good[0], good[1], {Type: "MODIFIED", Key: "k", RV: 9, ObjRV: 9, Value: "zz"}},
	} {
		if p := watchCheck(wr, evs, recs, finals["m1"]); len(p) == 0 {
			t.Errorf("watchCheck of a %s event: no problem found", name)
		}
	}
	var faults = []faultRecord{{at: 10 * ms}, {at: 100 * ms}}
	unavailability([]time.Duration{1 * ms, 9 * ms, 30 * ms, 31 * ms, 95 * ms, 99 * ms, 130 * ms, 131 * ms}, faults, 140*ms)
	if faults[0].Unavailable != (64*ms).Seconds() || faults[1].Unavailable != (31*ms).Seconds() {
		t.Errorf("unavailability: %v, %v; want 0.064, 0.031", faults[0].Unavailable, faults[1].Unavailable)
	}
}
