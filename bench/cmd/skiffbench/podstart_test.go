package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStartedContainers reads the worker's JSON log as the pod start
// benchmark does: a pod's first pod worker line gives its runtime, queue
// and setup times; the runtime's own line (no took) and later containers
// of the pod do not count.
func TestStartedContainers(t *testing.T) {
	log := `{"time":"2026-12-02T02:59:22.26Z","level":"INFO","msg":"started container","component":"runtime","pod":"uid-1","name":"hello","duration":80554709}
{"time":"2026-12-02T02:59:22.263Z","level":"INFO","msg":"started container","pod":"podstart/burst-08","container":"hello","took":141000000,"queued":5000000,"setup":52000000}
{"time":"2026-12-02T02:59:22.300Z","level":"INFO","msg":"started container","pod":"podstart/burst-08","container":"sidecar","took":9000000,"queued":0,"setup":52000000}
{"time":"2026-12-02T02:59:22.400Z","level":"INFO","msg":"started container","pod":"podstart/old-worker","container":"hello","took":70000000}
{"time":"2026-12-02T02:59:22.500Z","level":"INFO","msg":"pod finished","pod":"podstart/other"}
`
	path := filepath.Join(t.TempDir(), "w1.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := startedContainers(path)
	if err != nil {
		t.Fatal(err)
	}
	b := got["podstart/burst-08"]
	if b.took != 141*time.Millisecond || b.queued != 5*time.Millisecond || b.setup != 52*time.Millisecond {
		t.Errorf("burst-08: took %s queued %s setup %s, want 141ms 5ms 52ms (its first container)", b.took, b.queued, b.setup)
	}
	if want := time.Date(2026, 12, 2, 2, 59, 22, 263e6, time.UTC); !b.at.Equal(want) {
		t.Errorf("burst-08 started at %s, want %s", b.at, want)
	}
	if o := got["podstart/old-worker"]; o.took != 70*time.Millisecond || o.setup != 0 {
		t.Errorf("a worker without setup in its log: took %s setup %s, want 70ms 0", o.took, o.setup)
	}
	if len(got) != 3 {
		t.Errorf("%d pods read, want 3 (the runtime's line is keyed by UID): %v", len(got), got)
	}
}
