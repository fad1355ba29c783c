package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func writeLog(t *testing.T, path string, records ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range records {
		if _, err := f.WriteString(r + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func rec(n int, stream, tag, msg string) string {
	return fmt.Sprintf("2026-01-02T15:04:%02d.000000000Z %s %s %s", n, stream, tag, msg)
}

func readAll(t *testing.T, path string, opts logOptions) string {
	t.Helper()
	var b strings.Builder
	err := streamLog(context.Background(), path, opts, func() bool { return false }, func(p []byte) error {
		b.Write(p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestStreamLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "container.log")
	writeLog(t, path+".2", rec(1, "stdout", "F", "one"))
	writeLog(t, path+".1", rec(2, "stderr", "F", "two"), rec(3, "stdout", "P", "thr"))
	writeLog(t, path, rec(4, "stdout", "F", "ee"), rec(5, "stdout", "F", ""), rec(6, "stdout", "F", "four words here"))

	for _, tt := range []struct {
		name string
		opts logOptions
		want string
	}{
		{"all", logOptions{tail: -1}, "one\ntwo\nthree\n\nfour words here\n"},
		{"tail 2", logOptions{tail: 2}, "\nfour words here\n"},
		{"tail 0", logOptions{tail: 0}, ""},
		{"tail more than there is", logOptions{tail: 100}, "one\ntwo\nthree\n\nfour words here\n"},
		{"timestamps", logOptions{tail: 2, timestamps: true}, "2026-01-02T15:04:05.000000000Z \n2026-01-02T15:04:06.000000000Z four words here\n"},
	} {
		if got := readAll(t, path, tt.opts); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestStreamLogFollow writes while a follower reads, rotates the file
// under it, and ends the container: the follower sees every line once.
func TestStreamLogFollow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "container.log")
	writeLog(t, path, rec(1, "stdout", "F", "before"))
	var alive atomic.Bool
	alive.Store(true)
	var mu sync.Mutex
	var got strings.Builder
	done := make(chan error, 1)
	go func() {
		done <- streamLog(context.Background(), path, logOptions{follow: true, tail: -1}, alive.Load, func(p []byte) error {
			mu.Lock()
			got.Write(p)
			mu.Unlock()
			return nil
		})
	}()
	wait := func(want string) {
		eventually(t, 10*time.Second, "follower sees "+want, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !strings.HasSuffix(got.String(), want) {
				return fmt.Errorf("have %q", got.String())
			}
			return nil
		})
	}
	wait("before\n")
	writeLog(t, path, rec(2, "stdout", "F", "during"))
	wait("during\n")
	// A half-written record is not shown until its line is complete.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	f.WriteString(rec(3, "stdout", "F", "spl"))
	f.Close()
	writeLog(t, path, "it")
	wait("split\n")
	// Rotation: the file the follower holds becomes .1; a new one starts.
	writeLog(t, path, rec(4, "stdout", "F", "last of old file"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeLog(t, path, rec(5, "stdout", "F", "first of new file"))
	wait("last of old file\nfirst of new file\n")
	alive.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after the container exited")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "before\nduring\nsplit\nlast of old file\nfirst of new file\n"; got.String() != want {
		t.Errorf("followed %q, want %q", got.String(), want)
	}
}
