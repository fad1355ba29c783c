// Package boltgroup commits bbolt updates of concurrent callers together:
// one transaction, so one round of fsyncs, for every update that arrived
// while the previous transaction was being written.
//
// bbolt has one writer at a time and every Update syncs the file, so N pod
// workers recording their pods at once queue for N fsyncs in a row. bbolt's
// own Batch coalesces too, but makes a lone caller wait MaxBatchDelay
// first; here a caller that finds the file idle is written at once, and
// only callers that arrive during a write wait for the next one (group
// commit, as databases do for their logs).
package boltgroup

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Committer runs update functions against one bbolt database, several per
// transaction. It is safe for concurrent use.
type Committer struct {
	db *bolt.DB

	mu      sync.Mutex
	pending []*call
	running bool
}

type call struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// New returns a Committer over db.
func New(db *bolt.DB) *Committer { return &Committer{db: db} }

// Update runs fn in a read-write transaction and returns once that
// transaction is committed (or failed). fn may share its transaction with
// other callers' functions and may be called more than once (when another
// function of the group fails, each is run again alone), so it must be
// idempotent and must not keep tx. An error from fn fails only fn's own
// update.
func (c *Committer) Update(fn func(*bolt.Tx) error) error {
	cl := &call{fn: fn, done: make(chan error, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, cl)
	if !c.running {
		c.running = true
		go c.loop()
	}
	c.mu.Unlock()
	return <-cl.done
}

// loop writes groups until none is waiting.
func (c *Committer) loop() {
	for {
		c.mu.Lock()
		group := c.pending
		c.pending = nil
		if len(group) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.commit(group)
	}
}

func (c *Committer) commit(group []*call) {
	if len(group) == 1 {
		group[0].done <- c.db.Update(group[0].fn)
		return
	}
	failed := -1
	err := c.db.Update(func(tx *bolt.Tx) error {
		for i, cl := range group {
			if err := cl.fn(tx); err != nil {
				failed = i
				return err
			}
		}
		return nil
	})
	switch {
	case err == nil:
		for _, cl := range group {
			cl.done <- nil
		}
	case failed >= 0:
		// One function failed and rolled the group back: the others
		// are not to blame, so each runs again in its own transaction.
		for _, cl := range group {
			cl.done <- c.db.Update(cl.fn)
		}
	default:
		// The commit itself failed (disk full, database closed): that
		// is every caller's error.
		for _, cl := range group {
			cl.done <- err
		}
	}
}
