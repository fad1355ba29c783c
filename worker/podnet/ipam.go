package podnet

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/worker/internal/boltgroup"
)

// Allocator hands out the host addresses of a pod CIDR to pods, one each,
// skipping the network address, the gateway (the first host) and the
// broadcast address. A persistent allocator writes every allocation and
// release to its bbolt file before it returns, so an address is never
// used before it is recorded and a reopened file knows every address in
// use. A cursor moves on from the last address handed out, so an address
// just released is not reused at once (a peer that still talks to the old
// pod does not reach a new one). Safe for concurrent use: the lock is not
// held while a record is written, and the records of pods attached at the
// same time share one transaction (one fsync).
type Allocator struct {
	cidr *net.IPNet
	base uint32 // network address
	size uint32 // addresses in the CIDR

	mu     sync.Mutex
	db     *bolt.DB // nil: in memory
	commit *boltgroup.Committer
	closed bool
	// saving holds the pods whose allocation or release is being
	// written; other calls for the same pod wait for it (the channel
	// is closed when the write is done).
	saving map[string]chan struct{}
	byOff  map[uint32]string
	byPod  map[string]uint32
	cursor uint32 // offset of the last allocation
}

var (
	bucketAllocs = []byte("allocations") // IP -> pod UID
	bucketMeta   = []byte("meta")
	keyCIDR      = []byte("cidr")
	keyCursor    = []byte("cursor")
)

// NewAllocator returns an in-memory allocator over cidr (hollow nodes).
func NewAllocator(cidr string) (*Allocator, error) {
	n, err := parseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR: %w", err)
	}
	ones, bits := n.Mask.Size()
	if bits-ones < 2 {
		return nil, fmt.Errorf("pod CIDR %s is too small: at least a /30 is needed", cidr)
	}
	return &Allocator{
		cidr: n, base: ipToU32(n.IP), size: uint32(1) << (bits - ones),
		byOff: map[uint32]string{}, byPod: map[string]uint32{}, cursor: 1,
		saving: map[string]chan struct{}{},
	}, nil
}

// OpenAllocator opens (creating it if needed) the persistent allocator in
// the bbolt file path. A file that holds allocations of another CIDR is
// refused: those pods' addresses would be outside the node's network.
func OpenAllocator(cidr, path string) (_ *Allocator, retErr error) {
	a, err := NewAllocator(cidr)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open pod IP allocations %s: the file is locked by another process (is another worker running on the same data dir?)", path)
		}
		return nil, fmt.Errorf("open pod IP allocations %s: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			db.Close()
		}
	}()
	err = db.Update(func(tx *bolt.Tx) error {
		allocs, err := tx.CreateBucketIfNotExists(bucketAllocs)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if prev := string(meta.Get(keyCIDR)); prev != "" && prev != a.cidr.String() && allocs.Stats().KeyN > 0 {
			return fmt.Errorf("it holds %d allocations from pod CIDR %s, but the node's pod CIDR is %s: delete the pods of this node (or the file, once no pod runs) and start again",
				allocs.Stats().KeyN, prev, a.cidr)
		}
		if err := meta.Put(keyCIDR, []byte(a.cidr.String())); err != nil {
			return err
		}
		if c, err := strconv.ParseUint(string(meta.Get(keyCursor)), 10, 32); err == nil && uint32(c) < a.size {
			a.cursor = uint32(c)
		}
		return allocs.ForEach(func(k, v []byte) error {
			ip := net.ParseIP(string(k))
			if ip == nil || !a.cidr.Contains(ip) {
				return fmt.Errorf("bad allocation %q -> %q", k, v)
			}
			off := ipToU32(ip) - a.base
			a.byOff[off], a.byPod[string(v)] = string(v), off
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pod IP allocations %s: %w", path, err)
	}
	a.db, a.commit = db, boltgroup.New(db)
	return a, nil
}

// CIDR is the allocator's pod CIDR.
func (a *Allocator) CIDR() *net.IPNet {
	return &net.IPNet{IP: append(net.IP(nil), a.cidr.IP...), Mask: append(net.IPMask(nil), a.cidr.Mask...)}
}

// Allocate returns podUID's address, allocating (and recording) one if the
// pod has none.
func (a *Allocator) Allocate(podUID string) (net.IP, error) {
	if podUID == "" {
		return nil, errors.New("allocate a pod IP: empty pod UID")
	}
	a.mu.Lock()
	a.settled(podUID)
	if off, ok := a.byPod[podUID]; ok {
		a.mu.Unlock()
		return u32ToIP(a.base + off), nil
	}
	// Offsets 0 (network), 1 (gateway) and size-1 (broadcast) are never
	// handed out.
	usable := a.size - 3
	found := false
	var off uint32
	for i := uint32(1); i <= usable; i++ {
		off = 2 + (a.cursor-2+i+usable)%usable
		if _, used := a.byOff[off]; !used {
			found = true
			break
		}
	}
	if !found {
		n := len(a.byPod)
		a.mu.Unlock()
		return nil, fmt.Errorf("allocate an IP for pod %s: %w (%s, %d pods)", podUID, ErrExhausted, a.cidr, n)
	}
	// Reserved in memory, so no other pod gets it, but not handed out
	// before it is recorded: calls for this pod wait in settled.
	a.byOff[off], a.byPod[podUID], a.cursor = podUID, off, off
	done := a.beginSave(podUID)
	a.mu.Unlock()
	ip := u32ToIP(a.base + off)
	err := a.save(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketAllocs).Put([]byte(ip.String()), []byte(podUID)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyCursor, []byte(strconv.FormatUint(uint64(off), 10)))
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.endSave(podUID, done)
	if err != nil {
		if cur, ok := a.byPod[podUID]; ok && cur == off {
			delete(a.byPod, podUID)
			delete(a.byOff, off)
		}
		return nil, fmt.Errorf("record the IP of pod %s: %w", podUID, err)
	}
	return ip, nil
}

// settled waits, with a.mu held (and released while waiting), until no
// write for podUID is in progress.
func (a *Allocator) settled(podUID string) {
	for {
		ch, ok := a.saving[podUID]
		if !ok {
			return
		}
		a.mu.Unlock()
		<-ch
		a.mu.Lock()
	}
}

func (a *Allocator) beginSave(podUID string) chan struct{} {
	ch := make(chan struct{})
	a.saving[podUID] = ch
	return ch
}

func (a *Allocator) endSave(podUID string, ch chan struct{}) {
	if a.saving[podUID] == ch {
		delete(a.saving, podUID)
	}
	close(ch)
}

// Get returns podUID's address, if it has one.
func (a *Allocator) Get(podUID string) (net.IP, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settled(podUID)
	off, ok := a.byPod[podUID]
	if !ok {
		return nil, false
	}
	return u32ToIP(a.base + off), true
}

// Release frees podUID's address; releasing a pod without one is a no-op.
func (a *Allocator) Release(podUID string) error {
	a.mu.Lock()
	a.settled(podUID)
	off, ok := a.byPod[podUID]
	if !ok {
		a.mu.Unlock()
		return nil
	}
	done := a.beginSave(podUID)
	a.mu.Unlock()
	err := a.save(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAllocs).Delete([]byte(u32ToIP(a.base + off).String()))
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.endSave(podUID, done)
	if err != nil {
		return fmt.Errorf("release the IP of pod %s: %w", podUID, err)
	}
	// Freed only once the record is gone: until then a reopened file
	// would still give the address to this pod.
	if a.byPod[podUID] == off {
		delete(a.byOff, off)
		delete(a.byPod, podUID)
	}
	return nil
}

// ReleaseAll frees every address.
func (a *Allocator) ReleaseAll() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("release every pod IP: the allocator is closed")
	}
	// Writes in progress land first, so none of them records an address
	// after the bucket is emptied.
	for len(a.saving) > 0 {
		for uid := range a.saving {
			a.settled(uid)
			break
		}
	}
	if err := a.saveLocked(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketAllocs); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		_, err := tx.CreateBucket(bucketAllocs)
		return err
	}); err != nil {
		return fmt.Errorf("release every pod IP: %w", err)
	}
	a.byOff, a.byPod = map[uint32]string{}, map[string]uint32{}
	return nil
}

// Allocations returns every pod's address, by pod UID.
func (a *Allocator) Allocations() map[string]net.IP {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]net.IP, len(a.byPod))
	for uid, off := range a.byPod {
		out[uid] = u32ToIP(a.base + off)
	}
	return out
}

// Pods returns the UIDs that hold an address, sorted.
func (a *Allocator) Pods() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.byPod))
	for uid := range a.byPod {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out
}

// Close closes the file of a persistent allocator.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	if a.db == nil {
		return nil
	}
	return a.db.Close()
}

// save writes a change to the file of a persistent allocator. It is called
// without a.mu: the write may share its transaction with other pods'.
func (a *Allocator) save(f func(*bolt.Tx) error) error {
	a.mu.Lock()
	closed := a.closed
	a.mu.Unlock()
	if closed {
		return errors.New("the allocator is closed")
	}
	if a.db == nil {
		return nil
	}
	return a.commit.Update(f)
}

// saveLocked is save for a caller that holds a.mu.
func (a *Allocator) saveLocked(f func(*bolt.Tx) error) error {
	if a.db == nil {
		return nil
	}
	return a.commit.Update(f)
}
