package main

import (
	"strings"
	"testing"
	"time"
)

// TestReportPrint: the table gives the data disk's probe and the whole
// run's steal in its header, and under it the note of every target that was
// not met (what the machine was doing then), not of those met.
func TestReportPrint(t *testing.T) {
	r := &Report{Machine: map[string]string{"cpu": "test CPU", "nproc": "2", "data_sync": "4 KB write + fdatasync p50 200 us, p99 400 us, 90 us CPU"}}
	r.cpu0 = machineCPU{total: 1, ok: true}
	r.add("writes", "API p99, 64 clients", 41.6, "ms", atMost(30, "ms"), "max 60ms", "host steal 12.0%")
	r.add("writes", "API p99, 16 clients", 20, "ms", atMost(30, "ms"), "", "host steal 0.5%")
	r.add("writes", "API writes/s, 64 clients", 4000, "/s", nil, "", "40000 writes in 10.0s")
	var out strings.Builder
	r.print(&out)
	got := out.String()
	for _, want := range []string{
		"data disk: 4 KB write + fdatasync p50 200 us, p99 400 us, 90 us CPU\n",
		"host steal over the whole run: ",
		"not met: writes / API p99, 64 clients: host steal 12.0%\n",
		"targets: 1 met, 1 not met; 0 figures failed",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"host steal 0.5%", "40000 writes"} {
		if strings.Contains(got, not) {
			t.Errorf("output has the note %q of a row that is not a missed target:\n%s", not, got)
		}
	}
	if r.Machine["host_steal"] == "" {
		t.Errorf("the whole run's steal is not recorded for the results file: %v", r.Machine)
	}
}

// TestWritesP99NotesRawRaft: the API's p99 row with a target gives, in its
// note, raw raft's p99 at the same client count from earlier in the run.
func TestWritesP99NotesRawRaft(t *testing.T) {
	r := &Report{}
	r.add("raft", "raft p99, 64 clients", 25.16, "ms", nil, "", "")
	r.add("raft", "raft p99, 16 clients", 11, "ms", nil, "", "")
	res := writeResult{clients: 64, ops: 1000, elapsed: time.Second, p99: 43 * time.Millisecond, max: 70 * time.Millisecond}
	reportWrites(r, "writes", "API", res, atMost(30, "ms"))
	reportWrites(r, "writes", "API via leader only", res, nil)
	for _, row := range r.Rows {
		switch row.Metric {
		case "API p99, 64 clients":
			if !strings.Contains(row.Note, "raw raft in-process p99 25.2ms in this run") {
				t.Errorf("the API's p99 note %q lacks raw raft's p99 at 64 clients", row.Note)
			}
		case "API via leader only p99, 64 clients":
			if strings.Contains(row.Note, "raw raft") {
				t.Errorf("a row without a target has the note %q", row.Note)
			}
		}
	}
}

func TestParseHeapAlloc(t *testing.T) {
	profile := "heap profile: 1: 2 [3: 4] @ heap/1048576\n1: 2 [3: 4] @ 0x1\n\n# runtime.MemStats\n# Alloc = 123\n# TotalAlloc = 456\n# HeapAlloc = 209715200\n# HeapSys = 300000000\n"
	got, err := parseHeapAlloc(strings.NewReader(profile))
	if err != nil || got != 209715200 {
		t.Fatalf("parseHeapAlloc = %d, %v; want 209715200", got, err)
	}
	if _, err := parseHeapAlloc(strings.NewReader("heap profile: 1: 2\n")); err == nil {
		t.Fatal("parseHeapAlloc of a profile without MemStats: no error")
	}
}
