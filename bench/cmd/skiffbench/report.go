package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/moby/sys/mountinfo"
)

// Status of a row against its target.
const (
	statusMet    = "met"
	statusNotMet = "NOT MET"
	statusInfo   = "info"
	// statusFailed: the operation itself failed (an error from skiff), so
	// there is no figure.
	statusFailed = "FAILED"
)

// Row is one figure of the result table and of results.json.
type Row struct {
	Bench  string  `json:"bench"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	// Target is the goal in words ("< 30 ms"); empty for information rows.
	Target string `json:"target,omitempty"`
	Status string `json:"status"`
	// Spread is the range or spread over repetitions, in words.
	Spread string `json:"spread,omitempty"`
	Note   string `json:"note,omitempty"`
}

// goal is a target for a row.
type goal struct {
	text string
	met  func(v float64) bool
}

func atMost(limit float64, unit string) *goal {
	return &goal{text: fmt.Sprintf("< %s %s", fmtNum(limit), unit), met: func(v float64) bool { return v < limit }}
}

func atLeast(limit float64, unit string) *goal {
	return &goal{text: fmt.Sprintf(">= %s%s", fmtNum(limit), unit), met: func(v float64) bool { return v >= limit }}
}

func exactly(want float64) *goal {
	return &goal{text: fmt.Sprintf("= %s", fmtNum(want)), met: func(v float64) bool { return v == want }}
}

// Report collects rows from every benchmark.
type Report struct {
	mu      sync.Mutex
	Started time.Time         `json:"started"`
	Machine map[string]string `json:"machine"`
	Config  map[string]string `json:"config"`
	Rows    []Row             `json:"rows"`
	Errors  []string          `json:"errors,omitempty"`
	// Broken is set when a benchmark found something wrong (a lost write),
	// not merely slow: the program then exits non-zero.
	Broken []string `json:"broken,omitempty"`
	// cpu0 is the machine's CPU time when the report started, for the
	// host's steal over the whole run.
	cpu0 machineCPU
}

func newReport() *Report {
	return &Report{Started: time.Now().UTC(), Machine: machineInfo(), Config: map[string]string{}, cpu0: readMachineCPU()}
}

func (r *Report) add(bench, metric string, v float64, unit string, g *goal, spread, note string) {
	row := Row{Bench: bench, Metric: metric, Value: v, Unit: unit, Status: statusInfo, Spread: spread, Note: note}
	if g != nil {
		row.Target = g.text
		row.Status = statusNotMet
		if g.met(v) {
			row.Status = statusMet
		}
	}
	r.mu.Lock()
	r.Rows = append(r.Rows, row)
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "  %-22s %-40s %12s %-6s %s\n", bench, metric, fmtNum(v), unit, row.Status)
}

// value returns the figure of an earlier row of this run.
func (r *Report) value(bench, metric string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, row := range r.Rows {
		if row.Bench == bench && row.Metric == metric && row.Status != statusFailed {
			return row.Value, true
		}
	}
	return 0, false
}

// failed records a figure that could not be measured because the operation
// failed; the error is shown in the table. Unlike fail, it does not make the
// run exit non-zero: the benchmark ran, skiff could not do the operation.
func (r *Report) failed(bench, metric string, g *goal, err error) {
	msg := err.Error()
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	row := Row{Bench: bench, Metric: metric, Status: statusFailed, Note: msg}
	if g != nil {
		row.Target = g.text
	}
	r.mu.Lock()
	r.Rows = append(r.Rows, row)
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "  %-22s %-40s FAILED: %s\n", bench, metric, msg)
}

func (r *Report) fail(bench string, err error) {
	r.mu.Lock()
	r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", bench, err))
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "  %s: ERROR: %v\n", bench, err)
}

func (r *Report) broken(bench, what string) {
	r.mu.Lock()
	r.Broken = append(r.Broken, fmt.Sprintf("%s: %s", bench, what))
	r.mu.Unlock()
	fmt.Fprintf(os.Stderr, "  %s: BROKEN: %s\n", bench, what)
}

// print writes the table: one line per figure, target and result side by
// side.
func (r *Report) print(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fs := ""
	if r.Machine["data_fs"] != "" {
		fs = ", data on " + r.Machine["data_fs"]
	}
	if s := stealNote(readMachineCPU().stealSince(r.cpu0)); s != "" {
		r.Machine["host_steal"] = strings.TrimPrefix(s, "host steal ")
	}
	fmt.Fprintf(w, "\nskiff benchmarks, %s, %s (%s CPUs%s, %s)\n", r.Started.Format(time.RFC3339), r.Machine["cpu"], r.Machine["nproc"], fs, r.Machine["note"])
	if d := r.Machine["data_sync"]; d != "" {
		fmt.Fprintf(w, "data disk: %s\n", d)
	}
	if s := r.Machine["host_steal"]; s != "" {
		fmt.Fprintf(w, "host steal over the whole run: %s of the machine's CPU time (the hypervisor running other guests)\n", s)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCH\tMETRIC\tTARGET\tRESULT\tSPREAD\tSTATUS")
	for _, row := range r.Rows {
		target := row.Target
		if target == "" {
			target = "-"
		}
		spread := row.Spread
		if spread == "" {
			spread = "-"
		}
		result := fmtNum(row.Value) + " " + row.Unit
		if row.Status == statusFailed {
			result = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.Bench, row.Metric, target, result, spread, row.Status)
	}
	tw.Flush()
	met, notMet, failed := 0, 0, 0
	for _, row := range r.Rows {
		switch row.Status {
		case statusMet:
			met++
		case statusNotMet:
			notMet++
		case statusFailed:
			failed++
			fmt.Fprintf(w, "FAILED %s / %s: %s\n", row.Bench, row.Metric, row.Note)
		}
	}
	// What was going on when a target was missed (on a shared machine,
	// often the host's steal).
	for _, row := range r.Rows {
		if row.Status == statusNotMet && row.Note != "" {
			fmt.Fprintf(w, "not met: %s / %s: %s\n", row.Bench, row.Metric, row.Note)
		}
	}
	fmt.Fprintf(w, "\ntargets: %d met, %d not met; %d figures failed\n", met, notMet, failed)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	for _, b := range r.Broken {
		fmt.Fprintf(w, "BROKEN: %s\n", b)
	}
}

func (r *Report) write(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func machineInfo() map[string]string {
	m := map[string]string{
		"nproc":  fmt.Sprint(runtime.NumCPU()),
		"go":     runtime.Version(),
		"goarch": runtime.GOARCH,
		"note":   "shared VM, other jobs running: figures are noisy",
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		m["memory"] = strings.Join(strings.Fields(line)[1:], " ")
	}
	if h, err := os.Hostname(); err == nil {
		m["host"] = h
	}
	if fs := dataFS(os.TempDir()); fs != "" {
		m["data_fs"] = fs
	}
	if p, err := probeSync(os.TempDir(), 300); err == nil {
		m["data_sync"] = p.String()
	} else {
		logf("probe the data disk: %v", err)
	}
	return m
}

// dataFS describes the file system dir is on (the runs' data dirs are
// under the temporary directory): its type, and for ext4 whether it has a
// journal. Without one, ext4 checks every recently freed inode it passes
// when it allocates a new one, which makes creating files after many
// deletions (container starts, raft data dirs) far costlier
// (docs/performance.md).
func dataFS(dir string) string {
	ms, err := mountinfo.GetMounts(mountinfo.ParentsFilter(dir))
	if err != nil || len(ms) == 0 {
		return ""
	}
	m := ms[0]
	for _, c := range ms[1:] {
		if len(c.Mountpoint) > len(m.Mountpoint) {
			m = c
		}
	}
	desc := m.FSType + " on " + m.Source
	if m.FSType == "ext4" {
		task, err := os.ReadFile(filepath.Join("/sys/fs/ext4", filepath.Base(m.Source), "journal_task"))
		switch {
		case err != nil:
		case strings.TrimSpace(string(task)) == "<none>": // the kernel's word for no journal
			desc += ", without a journal"
		default:
			desc += ", journaled"
		}
	}
	return desc
}

// fmtNum prints a number with a precision that suits its size.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case v == math.Trunc(v) && a < 1e15:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Latency statistics.

// percentile returns the p-th percentile (0..100) of sorted durations by
// the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread describes repetitions as "min-max (n=N)".
func spread(v []float64, unit string) string {
	if len(v) < 2 {
		return ""
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%s-%s%s n=%d", fmtNum(lo), fmtNum(hi), unit, len(v))
}
