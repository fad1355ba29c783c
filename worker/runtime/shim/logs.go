package shim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"
)

// Container logs use the CRI format, one record per line:
//
//	2026-01-02T15:04:05.000000000Z stdout F a full line
//	2026-01-02T15:04:05.000000000Z stderr P the first 16 KiB of a longer line
//
// F ends a line, P is a part of a line continued by the next record of the
// same stream. Files rotate by size: PATH is current, PATH.1 the newest
// rotated one, up to PATH.(maxFiles-1).

const (
	// StreamStdout and StreamStderr name the streams in log records.
	StreamStdout = "stdout"
	StreamStderr = "stderr"

	logTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"
	maxLogLine    = 16 << 10
)

// logWriter writes CRI log records to a size-rotated file. It is safe for
// concurrent use by the copiers of several streams.
type logWriter struct {
	path     string
	maxSize  int64
	maxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte
}

func openLogWriter(path string, maxSize int64, maxFiles int) (*logWriter, error) {
	w := &logWriter{path: path, maxSize: maxSize, maxFiles: maxFiles, now: time.Now}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *logWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// writeRecord writes one record; line excludes the newline.
func (w *logWriter) writeRecord(stream string, partial bool, line []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return errors.New("log writer closed")
	}
	tag := "F"
	if partial {
		tag = "P"
	}
	b := w.buf[:0]
	b = w.now().UTC().AppendFormat(b, logTimeFormat)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ')
	b = append(b, tag...)
	b = append(b, ' ')
	b = append(b, line...)
	b = append(b, '\n')
	w.buf = b
	if w.size > 0 && w.size+int64(len(b)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	return err
}

func (w *logWriter) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	w.f = nil
	if w.maxFiles <= 1 {
		if err := os.Truncate(w.path, 0); err != nil {
			return err
		}
		return w.open()
	}
	name := func(i int) string { return fmt.Sprintf("%s.%d", w.path, i) }
	if err := os.Remove(name(w.maxFiles - 1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for i := w.maxFiles - 2; i >= 1; i-- {
		if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(w.path, name(1)); err != nil {
		return err
	}
	return w.open()
}

// copyStream writes r to the log as stream until EOF or a read error.
func (w *logWriter) copyStream(stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if werr := w.writeRecord(stream, false, line[:len(line)-1]); werr != nil {
				return werr
			}
		case errors.Is(err, bufio.ErrBufferFull):
			if werr := w.writeRecord(stream, true, line); werr != nil {
				return werr
			}
		default:
			if len(line) > 0 {
				if werr := w.writeRecord(stream, false, line); werr != nil {
					return werr
				}
			}
			// A terminal's master side reads EIO once the container
			// side is closed: that is its end of file.
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EIO) {
				return nil
			}
			return err
		}
	}
}

func (w *logWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
