package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// Status reads the small summary; a container of an older runtime (no
// summary) is read from its full record, with the same result, and a
// summary without its record is a container being removed: not found.
func TestStatusSummary(t *testing.T) {
	e := newEnv(t)
	sb := e.sandbox(t, "pod-summary", SandboxOptions{})
	id := e.start(t, sb, app("sum", "exit", "0"))
	e.waitExited(t, id)
	withSummary, err := e.rt.Status(id)
	if err != nil {
		t.Fatal(err)
	}
	if withSummary.Name != "sum" || withSummary.PodUID != "pod-summary" || withSummary.ImageID != fix.img.ID || withSummary.LogPath == "" {
		t.Fatalf("status = %+v", withSummary)
	}
	dir := e.rt.stateDir(id)
	if err := os.Remove(filepath.Join(dir, "summary.json")); err != nil {
		t.Fatal(err)
	}
	fromRecord, err := e.rt.Status(id)
	if err != nil {
		t.Fatal(err)
	}
	if fromRecord.Name != withSummary.Name || fromRecord.PodUID != withSummary.PodUID || fromRecord.ImageID != withSummary.ImageID ||
		fromRecord.State != withSummary.State || fromRecord.ExitCode != withSummary.ExitCode || !fromRecord.CreatedAt.Equal(withSummary.CreatedAt) {
		t.Fatalf("without a summary: %+v, with one: %+v", fromRecord, withSummary)
	}
	rec, err := e.rt.readRecord(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := shim.WriteJSON(filepath.Join(dir, "summary.json"), summaryOf(rec)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "container.json"), filepath.Join(dir, "container.json.moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Status(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("status without the record: %v, want ErrNotFound", err)
	}
	if err := os.Rename(filepath.Join(dir, "container.json.moved"), filepath.Join(dir, "container.json")); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkListPod lists one pod's container on a node with n pods of one
// container each (records only, no processes). A pod worker lists its
// pod's containers when it starts and two or three times when it stops.
func BenchmarkListPod(b *testing.B) {
	for _, n := range []int{110, 1000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			r := &Runtime{cfg: Config{StateDir: b.TempDir()}}
			for i := range n {
				id := newID()
				rec := &shim.Record{ID: id, PodUID: fmt.Sprintf("pod-%d", i), Name: "app", Image: "example:1", CreatedAt: time.Now()}
				if err := os.MkdirAll(r.stateDir(id), 0o755); err != nil {
					b.Fatal(err)
				}
				if err := shim.WriteJSON(filepath.Join(r.stateDir(id), "container.json"), rec); err != nil {
					b.Fatal(err)
				}
				if err := shim.WriteJSON(filepath.Join(r.stateDir(id), "summary.json"), summaryOf(rec)); err != nil {
					b.Fatal(err)
				}
				if err := r.addToPodIndex(rec.PodUID, id); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				cs, err := r.ListPod(fmt.Sprintf("pod-%d", i%n))
				if err != nil || len(cs) != 1 {
					b.Fatalf("ListPod = %v, %v", cs, err)
				}
			}
		})
	}
}
