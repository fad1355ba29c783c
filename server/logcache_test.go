package server

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore counts the reads that reach the store below the cache.
type countingStore struct {
	*raft.InmemStore
	reads atomic.Int64
	fail  error
}

func (s *countingStore) GetLog(i uint64, out *raft.Log) error {
	s.reads.Add(1)
	return s.InmemStore.GetLog(i, out)
}

func (s *countingStore) StoreLogs(logs []*raft.Log) error {
	if s.fail != nil {
		return s.fail
	}
	return s.InmemStore.StoreLogs(logs)
}

func entry(i uint64, size int) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, size)}
}

func storeRange(t *testing.T, c *logCache, from, to uint64, size int) {
	t.Helper()
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, entry(i, size))
	}
	if err := c.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

// checkCached asserts that exactly the entries lo..hi (none if lo > hi) of
// first..last are answered from memory, and every one correctly.
func checkCached(t *testing.T, c *logCache, s *countingStore, first, last, lo, hi uint64) {
	t.Helper()
	for i := first; i <= last; i++ {
		before := s.reads.Load()
		var l raft.Log
		if err := c.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if l.Index != i || len(l.Data) == 0 || l.Data[0] != byte(i) {
			t.Fatalf("GetLog(%d) = index %d, data %.4x", i, l.Index, l.Data)
		}
		fromStore := s.reads.Load() != before
		if want := i < lo || i > hi; fromStore != want {
			t.Fatalf("GetLog(%d): read from the store %v, want %v (cached %d..%d)", i, fromStore, want, lo, hi)
		}
	}
}

func TestLogCacheBounds(t *testing.T) {
	t.Run("entries", func(t *testing.T) {
		s := &countingStore{InmemStore: raft.NewInmemStore()}
		c := newLogCache(s, 4, 1<<20)
		storeRange(t, c, 1, 10, 100)
		checkCached(t, c, s, 1, 10, 7, 10)
		if n, b := c.cached(); n != 4 || b != 4*(100+logEntryOverhead) {
			t.Fatalf("cached %d entries, %d bytes; want 4, %d", n, b, 4*(100+logEntryOverhead))
		}
	})
	t.Run("bytes", func(t *testing.T) {
		s := &countingStore{InmemStore: raft.NewInmemStore()}
		c := newLogCache(s, 256, 3*(1000+logEntryOverhead))
		storeRange(t, c, 1, 10, 1000)
		checkCached(t, c, s, 1, 10, 8, 10)
		// An entry larger than the whole bound is stored, and served
		// from the store, and it empties the cache.
		storeRange(t, c, 11, 11, 4000)
		checkCached(t, c, s, 1, 11, 1, 0)
		if n, b := c.cached(); n != 0 || b != 0 {
			t.Fatalf("cached %d entries, %d bytes after an oversized entry; want none", n, b)
		}
		storeRange(t, c, 12, 13, 1000)
		checkCached(t, c, s, 1, 13, 12, 13)
	})
}

func TestLogCacheDeleteRange(t *testing.T) {
	s := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(s, 8, 1<<20)
	storeRange(t, c, 1, 8, 10)

	// Compaction drops the oldest.
	if err := c.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, s, 4, 8, 4, 8)
	// A follower's conflict drops the newest; the new entries continue
	// the run.
	if err := c.DeleteRange(6, 8); err != nil {
		t.Fatal(err)
	}
	checkCached(t, c, s, 4, 5, 4, 5)
	storeRange(t, c, 6, 7, 10)
	checkCached(t, c, s, 4, 7, 4, 7)
	// An entry that does not follow the newest starts a new run (raft
	// stores a snapshot's successor after a gap).
	storeRange(t, c, 20, 21, 10)
	checkCached(t, c, s, 20, 21, 20, 21)
	checkCached(t, c, s, 4, 7, 8, 7)
	if n, b := c.cached(); n != 2 || b != 2*(10+logEntryOverhead) {
		t.Fatalf("cached %d entries, %d bytes; want 2, %d", n, b, 2*(10+logEntryOverhead))
	}
	// A range around everything empties it.
	if err := c.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	if n, b := c.cached(); n != 0 || b != 0 {
		t.Fatalf("cached %d entries, %d bytes after deleting all; want none", n, b)
	}
}

// A write that failed is not served from memory.
func TestLogCacheFailedWrite(t *testing.T) {
	s := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(s, 8, 1<<20)
	storeRange(t, c, 1, 2, 10)
	s.fail = errors.New("disk gone")
	if err := c.StoreLogs([]*raft.Log{entry(3, 10)}); !errors.Is(err, s.fail) {
		t.Fatalf("StoreLogs = %v, want the store's error", err)
	}
	var l raft.Log
	if err := c.GetLog(3, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(3) after a failed write = %v (index %d), want ErrLogNotFound", err, l.Index)
	}
	checkCached(t, c, s, 1, 2, 1, 2)
}

func TestLogCacheConcurrent(t *testing.T) {
	s := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(s, 16, 16*(64+logEntryOverhead))
	const last = 2000
	var stored, compacted atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for stored.Load() < last {
				i := stored.Load()
				if i == 0 {
					continue
				}
				var l raft.Log
				err := c.GetLog(i, &l)
				if errors.Is(err, raft.ErrLogNotFound) && i <= compacted.Load() {
					continue // this reader was slower than the compaction
				}
				if err != nil {
					errs <- fmt.Errorf("GetLog(%d): %w", i, err)
					return
				}
				if l.Index != i || l.Data[0] != byte(i) {
					errs <- fmt.Errorf("GetLog(%d) = index %d", i, l.Index)
					return
				}
			}
		}()
	}
	for i := uint64(1); i <= last; i++ {
		if err := c.StoreLogs([]*raft.Log{entry(i, 64)}); err != nil {
			t.Fatal(err)
		}
		stored.Store(i)
		if i%500 == 0 {
			compacted.Store(i - 400)
			if err := c.DeleteRange(i-499, i-400); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, b := c.cached(); n != 16 || b != 16*(64+logEntryOverhead) {
		t.Fatalf("cached %d entries, %d bytes; want 16, %d", n, b, 16*(64+logEntryOverhead))
	}
}
