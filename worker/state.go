package worker

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/worker/internal/boltgroup"
)

// podRecord is what the worker keeps about a pod across its own restarts,
// besides what the runtime keeps about containers (their labels name the
// pod, container and attempt): when it started the pod, how long a stop may
// take if the pod is deleted while the worker is down, and each container's
// restart count and crash-loop backoff.
type podRecord struct {
	UID        string                      `json:"uid"`
	Namespace  string                      `json:"namespace"`
	Name       string                      `json:"name"`
	StartTime  time.Time                   `json:"startTime"`
	Grace      int64                       `json:"grace"`
	Containers map[string]*containerRecord `json:"containers,omitempty"`
}

type containerRecord struct {
	RestartCount int32         `json:"restartCount"`
	Backoff      time.Duration `json:"backoff,omitempty"`
}

// stateStore persists pod records. Implementations are safe for concurrent
// use.
type stateStore interface {
	load() (map[string]*podRecord, error)
	put(r *podRecord) error
	remove(uid string) error
	close() error
}

var (
	bucketPods = []byte("pods")
	// bucketMeta holds the worker's own settings that must survive a
	// restart, such as the gossip address it picked.
	bucketMeta = []byte("meta")
)

// boltState keeps pod records in a bbolt file. bbolt locks the file, so a
// second worker on the same data dir fails to start instead of fighting over
// the containers. Records of pods starting together are written in one
// transaction (one fsync), not one after another.
type boltState struct {
	db     *bolt.DB
	commit *boltgroup.Committer
}

func openBoltState(path string) (*boltState, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open worker state %s: %w (is another worker using this data dir?)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketPods); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketMeta)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open worker state %s: %w", path, err)
	}
	return &boltState{db: db, commit: boltgroup.New(db)}, nil
}

func (s *boltState) load() (map[string]*podRecord, error) {
	out := map[string]*podRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPods).ForEach(func(k, v []byte) error {
			var r podRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("pod record %s: %w", k, err)
			}
			out[string(k)] = &r
			return nil
		})
	})
	return out, err
}

func (s *boltState) put(r *podRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.commit.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPods).Put([]byte(r.UID), b) })
}

func (s *boltState) remove(uid string) error {
	return s.commit.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPods).Delete([]byte(uid)) })
}

func (s *boltState) close() error { return s.db.Close() }

func (s *boltState) getMeta(key string) string {
	var v string
	_ = s.db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get([]byte(key)))
		return nil
	})
	return v
}

func (s *boltState) putMeta(key, value string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte(key), []byte(value)) })
}

// memState keeps pod records in memory (hollow nodes).
type memState struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemState() *memState { return &memState{m: map[string][]byte{}} }

func (s *memState) load() (map[string]*podRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*podRecord{}
	for k, v := range s.m {
		var r podRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, err
		}
		out[k] = &r
	}
	return out, nil
}

func (s *memState) put(r *podRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.m[r.UID] = b
	s.mu.Unlock()
	return nil
}

func (s *memState) remove(uid string) error {
	s.mu.Lock()
	delete(s.m, uid)
	s.mu.Unlock()
	return nil
}

func (s *memState) close() error { return nil }
