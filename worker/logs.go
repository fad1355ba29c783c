package worker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// Container logs are files in the CRI format (see package runtime): one
// record per line, "TIME STREAM F|P MESSAGE", P marking part of a longer
// line. PATH is current; rotation renames it to PATH.1 (older ones to .2,
// ...). The reader below turns them back into the container's output, as
// `kubectl logs` shows it.

type logOptions struct {
	follow     bool
	tail       int64 // < 0: all lines
	timestamps bool
	since      time.Time // zero: every line; else only those written at or after it
	limitBytes int64     // <= 0: no limit; else the stream ends after this many bytes
}

// errLogLimit ends a stream that has sent its limit of bytes.
var errLogLimit = errors.New("log byte limit reached")

// logDecoder turns CRI records into output lines.
type logDecoder struct {
	timestamps bool
	since      time.Time
	partial    bool // the last record was a P: the next continues its line
	skip       bool // the line being read is older than since
	line       []byte
}

// record decodes one record (without its newline) and returns a complete
// output line, or nil while the line continues.
func (d *logDecoder) record(rec []byte) []byte {
	ts, rest, ok1 := bytes.Cut(rec, []byte(" "))
	_, rest, ok2 := bytes.Cut(rest, []byte(" ")) // stream
	tag, msg, ok3 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || !ok3 {
		if ok1 && ok2 && len(rest) == 1 { // "TIME STREAM F" with an empty message
			tag, msg = rest, nil
		} else {
			return nil // not a record: skip
		}
	}
	if !d.partial {
		d.line = d.line[:0]
		if d.timestamps {
			d.line = append(append(d.line, ts...), ' ')
		}
		// A line's time is its first record's, the one --timestamps shows.
		d.skip = false
		if !d.since.IsZero() {
			t, err := time.Parse(time.RFC3339Nano, string(ts))
			d.skip = err == nil && t.Before(d.since)
		}
	}
	d.line = append(d.line, msg...)
	if string(tag) == "P" {
		d.partial = true
		return nil
	}
	d.partial = false
	if d.skip {
		return nil
	}
	return append(append([]byte(nil), d.line...), '\n')
}

// logFiles lists path's files, oldest first.
func logFiles(path string) []string {
	var rotated []string
	for i := 1; ; i++ {
		p := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		rotated = append(rotated, p)
	}
	out := make([]string, 0, len(rotated)+1)
	for i := len(rotated) - 1; i >= 0; i-- {
		out = append(out, rotated[i])
	}
	return append(out, path)
}

// logSender batches output for the stream, up to left bytes when left >= 0.
type logSender struct {
	send func([]byte) error
	buf  []byte
	left int64
}

// write returns errLogLimit, after sending what fits, once the limit is
// reached.
func (s *logSender) write(b []byte) error {
	if s.left >= 0 {
		if int64(len(b)) >= s.left {
			s.buf = append(s.buf, b[:s.left]...)
			s.left = 0
			if err := s.flush(); err != nil {
				return err
			}
			return errLogLimit
		}
		s.left -= int64(len(b))
	}
	s.buf = append(s.buf, b...)
	if len(s.buf) >= 32<<10 {
		return s.flush()
	}
	return nil
}

func (s *logSender) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	err := s.send(s.buf)
	s.buf = nil
	return err
}

// streamLog writes the log at path to send. With follow it keeps reading
// as the container writes (across rotations) until running reports the
// container gone and everything is read, ctx ends, or opts.limitBytes are
// sent. Lines older than opts.since are dropped before opts.tail counts.
func streamLog(ctx context.Context, path string, opts logOptions, running func() bool, send func([]byte) error) error {
	err := streamLogLimited(ctx, path, opts, running, send)
	if errors.Is(err, errLogLimit) {
		return nil
	}
	return err
}

func streamLogLimited(ctx context.Context, path string, opts logOptions, running func() bool, send func([]byte) error) error {
	out := &logSender{send: send, left: -1}
	if opts.limitBytes > 0 {
		out.left = opts.limitBytes
	}
	dec := &logDecoder{timestamps: opts.timestamps, since: opts.since}
	files := logFiles(path)

	// Everything before the current file, in order (or only the last lines).
	var ring [][]byte
	emit := func(line []byte) error {
		if opts.tail < 0 {
			return out.write(line)
		}
		if opts.tail == 0 {
			return nil
		}
		ring = append(ring, line)
		if int64(len(ring)) > opts.tail {
			ring = ring[1:]
		}
		return nil
	}
	for _, p := range files[:len(files)-1] {
		if err := readRecords(p, dec, emit); err != nil {
			return err
		}
	}
	// The current file: read what is complete, remember where we are.
	f, err := os.Open(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var pending []byte
	readCurrent := func() error {
		if f == nil {
			return nil
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				if line := dec.record(pending[:i]); line != nil {
					if err := emit(line); err != nil {
						return err
					}
				}
				pending = pending[i+1:]
			}
			if err == io.EOF || n == 0 {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	if err := readCurrent(); err != nil {
		return err
	}
	for _, line := range ring {
		if err := out.write(line); err != nil {
			return err
		}
	}
	opts.tail = -1 // from here on, everything
	if err := out.flush(); err != nil {
		return err
	}
	if !opts.follow {
		return nil
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := running()
		if err := readCurrent(); err != nil {
			return err
		}
		// Rotated? Then what we hold is PATH.1 now: finish it, move on.
		if rotated(f, path) {
			if f != nil {
				f.Close()
			}
			pending = nil
			f, err = os.Open(path)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if err := readCurrent(); err != nil {
				return err
			}
		}
		if err := out.flush(); err != nil {
			return err
		}
		if !alive {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// rotated reports whether path no longer names the file f holds.
func rotated(f *os.File, path string) bool {
	cur, err := os.Stat(path)
	if err != nil {
		return false
	}
	if f == nil {
		return true
	}
	held, err := f.Stat()
	if err != nil {
		return true
	}
	a, ok1 := cur.Sys().(*syscall.Stat_t)
	b, ok2 := held.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && (a.Ino != b.Ino || a.Dev != b.Dev)
}

func readRecords(path string, dec *logDecoder, emit func([]byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		rec, err := r.ReadBytes('\n')
		if len(rec) > 0 && rec[len(rec)-1] == '\n' {
			if line := dec.record(rec[:len(rec)-1]); line != nil {
				if err := emit(line); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
