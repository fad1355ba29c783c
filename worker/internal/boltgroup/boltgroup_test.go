package boltgroup

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

// Concurrent updates all land, and a failing one (which rolls back the
// group it shares a transaction with) fails alone.
func TestConcurrentUpdates(t *testing.T) {
	db := openDB(t)
	c := New(db)
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	boom := errors.New("boom")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Update(func(tx *bolt.Tx) error {
				if i == 7 {
					return boom
				}
				return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%02d", i), []byte("v"))
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i == 7 && !errors.Is(err, boom):
			t.Errorf("update %d: %v, want boom", i, err)
		case i != 7 && err != nil:
			t.Errorf("update %d: %v", i, err)
		}
	}
	var keys int
	_ = db.View(func(tx *bolt.Tx) error {
		keys = tx.Bucket([]byte("b")).Stats().KeyN
		return nil
	})
	if keys != n-1 {
		t.Errorf("%d keys, want %d", keys, n-1)
	}
}

func TestUpdateAfterClose(t *testing.T) {
	db := openDB(t)
	c := New(db)
	db.Close()
	if err := c.Update(func(tx *bolt.Tx) error { return nil }); !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		t.Fatalf("update on a closed database: %v", err)
	}
}
