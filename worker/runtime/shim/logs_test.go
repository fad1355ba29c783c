package shim

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fixedClock() func() time.Time {
	t := time.Date(2026, 1, 2, 15, 4, 5, 0, time.FixedZone("X", 3600))
	return func() time.Time { return t }
}

func TestLogFormatAndPartialLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := openLogWriter(path, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	w.now = fixedClock()
	long := strings.Repeat("x", 40<<10)
	pr, pw := io.Pipe()
	go func() {
		fmt.Fprint(pw, "one\n\ntwo\n"+long+"\nlast-no-newline")
		pw.Close()
	}()
	if err := w.copyStream(StreamStderr, pr); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	const ts = "2026-01-02T14:04:05.000000000Z stderr "
	want := []string{ts + "F one", ts + "F ", ts + "F two"}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
	// The long line comes in 16 KiB parts, the last one full.
	var joined strings.Builder
	rest := lines[3 : len(lines)-1]
	for i, l := range rest {
		tag := "P "
		if i == len(rest)-1 {
			tag = "F "
		}
		body, ok := strings.CutPrefix(l, ts+tag)
		if !ok {
			t.Fatalf("part %d = %.60q..., want tag %q", i, l, tag)
		}
		joined.WriteString(body)
	}
	if joined.String() != long || len(rest) != 3 {
		t.Errorf("long line: %d parts, %d bytes", len(rest), joined.Len())
	}
	if last := lines[len(lines)-1]; last != ts+"F last-no-newline" {
		t.Errorf("last = %q", last)
	}
}

func TestLogRotationFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	const maxSize = 4096
	w, err := openLogWriter(path, maxSize, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if err := w.writeRecord(StreamStdout, false, fmt.Appendf(nil, "record %04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		fi, _ := e.Info()
		if fi.Size() > maxSize {
			t.Errorf("%s: %d bytes > %d", e.Name(), fi.Size(), maxSize)
		}
	}
	if strings.Join(names, ",") != "c.log,c.log.1,c.log.2" {
		t.Errorf("files = %v", names)
	}
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(cur), "stdout F record 0499\n") {
		t.Errorf("current file ends %q", cur[len(cur)-30:])
	}
	prev, _ := os.ReadFile(path + ".1")
	first := strings.SplitN(string(cur), "\n", 2)[0]
	lastPrev := strings.Split(strings.TrimSuffix(string(prev), "\n"), "\n")
	var a, b int
	fmt.Sscanf(first[len(first)-4:], "%d", &a)
	fmt.Sscanf(lastPrev[len(lastPrev)-1][len(lastPrev[len(lastPrev)-1])-4:], "%d", &b)
	if a != b+1 {
		t.Errorf("rotation lost or duplicated records: .1 ends at %d, current starts at %d", b, a)
	}

	// A single file is truncated instead.
	one := filepath.Join(dir, "one.log")
	w, _ = openLogWriter(one, maxSize, 1)
	for i := range 500 {
		_ = w.writeRecord(StreamStdout, false, fmt.Appendf(nil, "record %04d", i))
	}
	w.Close()
	if fi, _ := os.Stat(one); fi.Size() > maxSize {
		t.Errorf("single file grew to %d", fi.Size())
	}
	if _, err := os.Stat(one + ".1"); err == nil {
		t.Errorf("rotated file with LogMaxFiles 1")
	}
}
