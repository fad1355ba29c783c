package server

import (
	"sync"

	"github.com/hashicorp/raft"
)

// logCache keeps the newest raft log entries in memory, over the log store:
// the leader reads every entry back to replicate and to apply it, and a
// follower to apply it. It holds at most maxEntries entries and maxBytes of
// their data, whichever is reached first.
//
// hashicorp/raft's LogCache bounds only the number of entries. Since the
// write gate joins writes into one entry of up to maxBatchEntryBytes, and a
// single object may be several MiB, a count alone would let the cache pin
// hundreds of MiB after a run of large writes; the byte bound keeps it to a
// fixed share of a master's memory. Only the newest contiguous run of
// entries is kept, so a bound evicts the oldest.
type logCache struct {
	raft.LogStore
	maxBytes int

	mu sync.RWMutex
	// ring holds the entries lo..hi at index % len(ring), at most
	// len(ring) of them; the cache is empty when n == 0.
	ring   []*raft.Log
	lo, hi uint64
	n      int
	bytes  int
}

// logEntryOverhead is what an entry costs in the cache beyond its data: the
// raft.Log and the slice headers.
const logEntryOverhead = 96

func newLogCache(store raft.LogStore, maxEntries, maxBytes int) *logCache {
	return &logCache{LogStore: store, maxBytes: maxBytes, ring: make([]*raft.Log, maxEntries)}
}

func cachedSize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + logEntryOverhead }

// GetLog answers from memory when it can.
func (c *logCache) GetLog(index uint64, out *raft.Log) error {
	c.mu.RLock()
	if c.n > 0 && index >= c.lo && index <= c.hi {
		*out = *c.ring[index%uint64(len(c.ring))]
		c.mu.RUnlock()
		return nil
	}
	c.mu.RUnlock()
	return c.LogStore.GetLog(index, out)
}

func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores the entries and then caches them: an entry whose write
// failed is never served from memory.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		if c.n > 0 && l.Index != c.hi+1 {
			c.clear() // not the next entry: keep only a contiguous run
		}
		if c.n == len(c.ring) {
			c.evictOldest() // before its slot is taken
		}
		if c.n == 0 {
			c.lo = l.Index
		}
		c.ring[l.Index%uint64(len(c.ring))] = l
		c.hi = l.Index
		c.n++
		c.bytes += cachedSize(l)
		for c.n > 0 && c.bytes > c.maxBytes {
			c.evictOldest()
		}
	}
	return nil
}

// DeleteRange forgets the cached entries in [lo, hi] before they are
// deleted below: compaction removes the oldest entries, a follower's
// conflict the newest.
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	switch {
	case c.n == 0 || hi < c.lo || lo > c.hi:
	case lo <= c.lo:
		for c.n > 0 && c.lo <= hi {
			c.evictOldest()
		}
	case hi >= c.hi:
		for c.n > 0 && c.hi >= lo {
			c.evictNewest()
		}
	default: // a hole in the middle: raft never asks for one
		c.clear()
	}
	c.mu.Unlock()
	return c.LogStore.DeleteRange(lo, hi)
}

// cached reports how many entries and bytes the cache holds.
func (c *logCache) cached() (entries, bytes int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n, c.bytes
}

func (c *logCache) evictOldest() {
	i := c.lo % uint64(len(c.ring))
	c.bytes -= cachedSize(c.ring[i])
	c.ring[i] = nil
	c.lo++
	c.n--
}

func (c *logCache) evictNewest() {
	i := c.hi % uint64(len(c.ring))
	c.bytes -= cachedSize(c.ring[i])
	c.ring[i] = nil
	c.hi--
	c.n--
}

func (c *logCache) clear() {
	for c.n > 0 {
		c.evictOldest()
	}
}
