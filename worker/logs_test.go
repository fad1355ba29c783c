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

// at is the time of rec(n, ...).
func at(n int) time.Time { return time.Date(2026, 1, 2, 15, 4, n, 0, time.UTC) }

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
		// since drops older lines first, then tail counts among the rest;
		// a line split over records has its first record's time.
		{"since", logOptions{tail: -1, since: at(2)}, "two\nthree\n\nfour words here\n"},
		{"since mid-second", logOptions{tail: -1, since: at(2).Add(time.Nanosecond)}, "three\n\nfour words here\n"},
		{"since the second half of a split line", logOptions{tail: -1, since: at(4)}, "\nfour words here\n"},
		{"since and tail", logOptions{tail: 10, since: at(5)}, "\nfour words here\n"},
		{"tail among the lines since", logOptions{tail: 1, since: at(1)}, "four words here\n"},
		{"since after every line", logOptions{tail: -1, since: at(7)}, ""},
		{"since after every line, tail", logOptions{tail: 3, since: at(7), timestamps: true}, ""},
		{"limit cuts mid-line", logOptions{tail: -1, limitBytes: 6}, "one\ntw"},
		{"limit on a line's end", logOptions{tail: -1, limitBytes: 4}, "one\n"},
		{"limit more than there is", logOptions{tail: -1, limitBytes: 1000}, "one\ntwo\nthree\n\nfour words here\n"},
		{"limit after since and tail", logOptions{tail: 2, since: at(2), limitBytes: 3}, "\nfo"},
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

// TestStreamLogFollowSinceLimit follows a running container's log from a
// time on: older lines are left out, later ones shown, and the stream ends
// once limitBytes are sent though the container keeps running.
func TestStreamLogFollowSinceLimit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "container.log")
	writeLog(t, path, rec(1, "stdout", "F", "old"), rec(2, "stdout", "F", "new"))
	var mu sync.Mutex
	var got strings.Builder
	done := make(chan error, 1)
	go func() {
		opts := logOptions{follow: true, tail: -1, since: at(2), limitBytes: 12}
		done <- streamLog(context.Background(), path, opts, func() bool { return true }, func(p []byte) error {
			mu.Lock()
			got.Write(p)
			mu.Unlock()
			return nil
		})
	}()
	eventually(t, 10*time.Second, "follower sees the line since", func() error {
		mu.Lock()
		defer mu.Unlock()
		if got.String() != "new\n" {
			return fmt.Errorf("have %q", got.String())
		}
		return nil
	})
	writeLog(t, path, rec(3, "stdout", "F", "later"), rec(4, "stdout", "F", "beyond the limit"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end at its byte limit")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "new\nlater\nbe"; got.String() != want {
		t.Errorf("followed %q, want %q", got.String(), want)
	}
}
