package worker

import (
	"testing"
	"time"
)

func TestNanoCores(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name     string
		from, to cpuRead
		want     uint64
		ok       bool
	}{
		{"half a core", cpuRead{t0, 1e9}, cpuRead{t0.Add(2 * time.Second), 2e9}, 5e8, true},
		{"two cores", cpuRead{t0, 0}, cpuRead{t0.Add(time.Second / 2), 1e9}, 2e9, true},
		{"idle", cpuRead{t0, 7}, cpuRead{t0.Add(time.Second), 7}, 0, true},
		{"hours of CPU do not overflow", cpuRead{t0, 0}, cpuRead{t0.Add(10 * time.Hour), uint64(80 * time.Hour)}, 8e9, true},
		{"same time", cpuRead{t0, 0}, cpuRead{t0, 5}, 0, false},
		{"backwards in time", cpuRead{t0, 0}, cpuRead{t0.Add(-time.Second), 5}, 0, false},
		{"counter went back", cpuRead{t0, 9}, cpuRead{t0.Add(time.Second), 5}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := nanoCores(tc.from, tc.to)
			if got != tc.want || ok != tc.ok {
				t.Errorf("nanoCores = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestCPUHistory follows one cgroup through the reads of a sampler and of
// requests: each rate is measured from the newest kept read at least a
// second old, else the one before it, else the cgroup's start.
func TestCPUHistory(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration, nanos uint64) cpuRead { return cpuRead{t: t0.Add(d), nanos: nanos} }
	h := newCPUHistory(time.Second)
	for i, step := range []struct {
		read       cpuRead
		born       time.Time
		wantRate   uint64
		wantWindow time.Duration
		wantOK     bool
	}{
		// The node: no start known, so the first read has no rate.
		{read: at(0, 0), wantOK: false},
		// Two seconds later at half a core: from the first read.
		{read: at(2*time.Second, 1e9), wantRate: 5e8, wantWindow: 2 * time.Second, wantOK: true},
		// Half a second after that: the newest read is too recent, so
		// from the one before it (2.5 s, at 0.6 cores).
		{read: at(2500*time.Millisecond, 1.5e9), wantRate: 6e8, wantWindow: 2500 * time.Millisecond, wantOK: true},
		// 1.5 s after the newest kept read (the one at 2 s: the read
		// at 2.5 s was not kept).
		{read: at(3500*time.Millisecond, 2e9), wantRate: 666666666, wantWindow: 1500 * time.Millisecond, wantOK: true},
		// Kept reads are now 2 s and 3.5 s; the second is too recent.
		{read: at(4*time.Second, 2e9), wantRate: 5e8, wantWindow: 2 * time.Second, wantOK: true},
		// Idle since.
		{read: at(5*time.Second, 2e9), wantRate: 0, wantWindow: 1500 * time.Millisecond, wantOK: true},
	} {
		rate, window, ok := h.observe(nodeKey, step.read, step.born)
		if rate != step.wantRate || window != step.wantWindow || ok != step.wantOK {
			t.Errorf("read %d (%v): rate %d over %v (%v), want %d over %v (%v)", i, step.read.t.Sub(t0), rate, window, ok, step.wantRate, step.wantWindow, step.wantOK)
		}
	}

	// A container first read 4 s after it started: from its start, when
	// its counter was zero.
	if rate, window, ok := h.observe("c1", at(4*time.Second, 1e9), t0); !ok || rate != 2.5e8 || window != 4*time.Second {
		t.Errorf("first read of a container: %d over %v (%v), want 0.25 cores over 4s", rate, window, ok)
	}
	// Read again at once: the read a moment ago is too recent, the
	// start is better.
	if rate, window, ok := h.observe("c1", at(4100*time.Millisecond, 1.05e9), t0); !ok || rate != 256097560 || window != 4100*time.Millisecond {
		t.Errorf("second read of a container: %d over %v (%v), want from its start", rate, window, ok)
	}
	// A container started a moment ago: from its start, although that is
	// less than a second ago.
	if rate, window, ok := h.observe("c2", at(300*time.Millisecond, 3e7), t0.Add(200*time.Millisecond)); !ok || rate != 3e8 || window != 100*time.Millisecond {
		t.Errorf("young container: %d over %v (%v), want 0.3 cores over 100ms", rate, window, ok)
	}

	// Containers no longer running are forgotten; the node is kept.
	h.retain(map[string]bool{"c2": true})
	if _, ok := h.reads["c1"]; ok {
		t.Error("c1 is still kept")
	}
	if _, ok := h.reads["c2"]; !ok {
		t.Error("c2 was forgotten")
	}
	if _, ok := h.reads[nodeKey]; !ok {
		t.Error("the node was forgotten")
	}
}
