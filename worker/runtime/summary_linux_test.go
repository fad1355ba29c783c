package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
	if err := writeJSON(filepath.Join(dir, "summary.json"), rec.summary()); err != nil {
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
