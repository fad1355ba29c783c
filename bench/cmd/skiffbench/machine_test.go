package main

import (
	"os"
	"strings"
	"testing"
)

// TestMachineSteal: the share of the machine's CPU time stolen between two
// readings of /proc/stat's cpu line, and nothing when it cannot be known.
func TestMachineSteal(t *testing.T) {
	a := parseMachineCPU("cpu  1000 10 500 8000 100 0 90 300 0 0")
	b := parseMachineCPU("cpu  1400 10 600 8300 100 0 90 400 50 0")
	if !a.ok || !b.ok {
		t.Fatalf("parse failed: %+v %+v", a, b)
	}
	if a.total != 10000 || a.steal != 300 {
		t.Errorf("a = %+v, want total 10000 (guest time not counted twice) and steal 300", a)
	}
	// 900 ticks passed, 100 of them stolen.
	if got := b.stealSince(a); got < 0.1111 || got > 0.1112 {
		t.Errorf("steal share = %v, want 100/900", got)
	}
	if got := stealNote(b.stealSince(a)); got != "host steal 11.1%" {
		t.Errorf("note = %q", got)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu  1 2 3 4 5 6 7 x"} {
		if m := parseMachineCPU(bad); m.ok {
			t.Errorf("parseMachineCPU(%q) = %+v, want not ok", bad, m)
		}
	}
	if got := a.stealSince(a); got != -1 {
		t.Errorf("no tick passed: %v, want -1", got)
	}
	if got := b.stealSince(machineCPU{}); got != -1 || stealNote(got) != "" {
		t.Errorf("unknown start: %v %q, want -1 and no note", got, stealNote(got))
	}
	if m := readMachineCPU(); !m.ok || m.total == 0 {
		t.Errorf("this machine's /proc/stat: %+v", m)
	}
	if got := joinNotes("a", "", "b"); got != "a; b" {
		t.Errorf("joinNotes = %q", got)
	}
}

// TestProbeSync measures real syncs in a temporary directory and leaves
// nothing behind.
func TestProbeSync(t *testing.T) {
	dir := t.TempDir()
	p, err := probeSync(dir, 20)
	if err != nil {
		t.Fatal(err)
	}
	if p.p50 <= 0 || p.p99 < p.p50 || p.cpu <= 0 {
		t.Errorf("probe = %+v, want positive times with p99 >= p50", p)
	}
	if s := p.String(); !strings.HasPrefix(s, "4 KB write + fdatasync p50 ") {
		t.Errorf("String() = %q", s)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("left in %s: %v (%v)", dir, ents, err)
	}
}

// TestEvenPairs: a comparison pair counts as even when the host took
// about as much of the machine during both its runs; a pair with unknown
// steal never does.
func TestEvenPairs(t *testing.T) {
	ratios := []float64{0.74, 0.93, 0.75, 0.9}
	skiff := []writeResult{{steal: 0.13}, {steal: 0.01}, {steal: 0.05}, {steal: -1}}
	etcd := []writeResult{{steal: 0.03}, {steal: 0.01}, {steal: 0.03}, {steal: 0.02}}
	got := evenPairs(ratios, skiff, etcd, 0.03)
	if len(got) != 2 || got[0] != 0.93 || got[1] != 0.75 {
		t.Errorf("evenPairs = %v, want [0.93 0.75]", got)
	}
	if s := roundSteals(skiff[:3], etcd[:3]); s != "host steal % per pair, skiff/etcd: 13/3 1/1 5/3" {
		t.Errorf("roundSteals = %q", s)
	}
	if s := roundSteals(skiff, etcd); s != "" {
		t.Errorf("roundSteals with an unknown steal = %q, want none", s)
	}
}
