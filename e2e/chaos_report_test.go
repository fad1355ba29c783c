package e2e

// What a chaos scenario reports: a table in the test log and the same as
// JSON in one file for the whole run (-chaos.report).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// faultRecord is one injected fault.
type faultRecord struct {
	Kind   string  `json:"kind"` // kill, pause, partition, kill-all, terminate
	Target string  `json:"target"`
	At     float64 `json:"at_seconds"`     // on the scenario clock
	Lifted float64 `json:"lifted_seconds"` // restart, SIGCONT or heal; 0 if not lifted separately
	// NewLeader and ElectedAfter: the leader the others elected and how
	// long after the fault it was first seen (0 when not measured).
	NewLeader    string  `json:"new_leader,omitempty"`
	ElectedAfter float64 `json:"elected_after_seconds,omitempty"`
	// Unavailable is the longest gap between two acknowledged writes that
	// overlaps the time from this fault to the next.
	Unavailable float64 `json:"unavailable_seconds"`
	Note        string  `json:"note,omitempty"`
	// WatchOn is the master that served the scenario's watch just before.
	WatchOn string `json:"watch_on,omitempty"`

	at, lifted time.Duration
}

// scenarioReport is one scenario's results.
type scenarioReport struct {
	Scenario       string            `json:"scenario"`
	Started        time.Time         `json:"started"`
	Seconds        float64           `json:"seconds"`
	Params         map[string]string `json:"params"`
	Faults         []faultRecord     `json:"faults"`
	Ops            int               `json:"operations"`
	Reads          int               `json:"reads"`
	Writes         int               `json:"writes"`
	Acked          int               `json:"acknowledged"`
	Rejected       int               `json:"rejected"`        // definite failures: Conflict, AlreadyExists, NotFound
	NotApplied     int               `json:"not_applied"`     // refused before reaching the log
	Unknown        int               `json:"unknown"`         // outcome unknown
	UnknownApplied int               `json:"unknown_applied"` // of those, seen by the watch
	Lost           int               `json:"lost"`
	Linearizable   string            `json:"linearizable"` // yes, no, timeout, or "-" when not reached
	CheckSeconds   float64           `json:"check_seconds"`
	StaleReads     int               `json:"stale_reads"`
	Backwards      int               `json:"backward_reads"`
	Unexpected     int               `json:"unexpected_errors"`
	WatchEvents    int               `json:"watch_events"`
	WatchProblems  []string          `json:"watch_problems,omitempty"`
	Converged      bool              `json:"converged"`
	StateHash      string            `json:"state_hash,omitempty"`
	StateIndex     uint64            `json:"state_index,omitempty"`
	UnavailMedian  float64           `json:"unavailable_median_seconds"`
	UnavailMax     float64           `json:"unavailable_max_seconds"`
	Extra          map[string]any    `json:"extra,omitempty"`
	Problems       []string          `json:"problems,omitempty"`
	Passed         bool              `json:"passed"`
}

var reports struct {
	sync.Mutex
	path string
	all  []scenarioReport
}

// reportPath is where the run's JSON report goes: the file -chaos.report
// names, else with -chaos.full a new file in the temp dir, else none (""):
// the short version inside `go test ./...` would otherwise leave a file
// behind at every `make test`.
func reportPath(named string, full bool, now time.Time, pid int) string {
	switch {
	case named != "":
		return named
	case full:
		return filepath.Join(os.TempDir(), fmt.Sprintf("skiff-chaos-%s-%d.json", now.Format("20060102-150405"), pid))
	}
	return ""
}

// saveReport adds r to the run's report file, if it has one, rewriting it
// whole.
func saveReport(t *testing.T, r scenarioReport) {
	reports.Lock()
	defer reports.Unlock()
	if reports.path == "" {
		reports.path = reportPath(*chaosReport, *chaosFull, time.Now(), os.Getpid())
		if reports.path == "" {
			return
		}
	}
	reports.all = append(reports.all, r)
	b, err := json.MarshalIndent(reports.all, "", "  ")
	if err == nil {
		err = os.WriteFile(reports.path, append(b, '\n'), 0o644)
	}
	if err != nil {
		t.Errorf("write chaos report %s: %v", reports.path, err)
		return
	}
	t.Logf("chaos report (JSON): %s", reports.path)
}

func secs(d float64) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fs", d)
}

// table renders reports as the summary table.
func table(rs []scenarioReport) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tfaults\tops\tacked\tunknown\tlost\tlinearizable\tstale\tconverged\tunavail median\tunavail max\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d (%d applied)\t%d\t%s\t%d\t%v\t%s\t%s\t\n", r.Scenario, len(r.Faults), r.Ops, r.Acked,
			r.Unknown, r.UnknownApplied, r.Lost, r.Linearizable, r.StaleReads+r.Backwards, r.Converged, secs(r.UnavailMedian), secs(r.UnavailMax))
	}
	tw.Flush()
	return b.String()
}

func faultTable(fs []faultRecord) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\ttarget\tat\tlifted\tnew leader\telected after\tunavailable\twatch on\tnote")
	for _, f := range fs {
		fmt.Fprintf(tw, "%s\t%s\t%.2fs\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Kind, f.Target, f.At, secs(f.Lifted), f.NewLeader, secs(f.ElectedAfter), secs(f.Unavailable), f.WatchOn, f.Note)
	}
	tw.Flush()
	return b.String()
}

// summary prints every scenario of the run (from TestMain).
func chaosSummary() string {
	reports.Lock()
	defer reports.Unlock()
	if len(reports.all) == 0 {
		return ""
	}
	return "chaos summary:\n" + table(reports.all) + "report: " + reports.path + "\n"
}

// unavailability fills each fault's Unavailable: the longest gap between
// consecutive acknowledged writes (or the scenario's end) that overlaps
// the time from the fault to the next one.
func unavailability(acks []time.Duration, faults []faultRecord, end time.Duration) {
	sort.Slice(acks, func(i, j int) bool { return acks[i] < acks[j] })
	for i := range faults {
		from, to := faults[i].at, end
		if i+1 < len(faults) {
			to = faults[i+1].at
		}
		var prev time.Duration
		worst := time.Duration(0)
		for _, a := range append(acks, end) {
			if a > prev && prev < to && a > from {
				worst = max(worst, a-prev)
			}
			prev = a
			if a >= to {
				break
			}
		}
		faults[i].Unavailable = worst.Seconds()
	}
}

func medianMax(fs []faultRecord) (median, maximum float64) {
	if len(fs) == 0 {
		return 0, 0
	}
	v := make([]float64, 0, len(fs))
	for _, f := range fs {
		v = append(v, f.Unavailable)
	}
	sort.Float64s(v)
	median = v[len(v)/2]
	if len(v)%2 == 0 {
		median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return median, v[len(v)-1]
}

// TestChaosReportPath: the short chaos suite writes a JSON report only to a
// file it is given; the full one to a new temp file by default.
func TestChaosReportPath(t *testing.T) {
	now := time.Date(2026, 12, 1, 16, 40, 5, 0, time.UTC)
	if got := reportPath("", false, now, 42); got != "" {
		t.Errorf("short suite, no -chaos.report: %q, want no report", got)
	}
	if got := reportPath("out.json", false, now, 42); got != "out.json" {
		t.Errorf("short suite with -chaos.report out.json: %q", got)
	}
	if got := reportPath("out.json", true, now, 42); got != "out.json" {
		t.Errorf("full suite with -chaos.report out.json: %q", got)
	}
	want := filepath.Join(os.TempDir(), "skiff-chaos-20261201-164005-42.json")
	if got := reportPath("", true, now, 42); got != want {
		t.Errorf("full suite: %q, want %q", got, want)
	}
}
