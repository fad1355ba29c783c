package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// Snapshot stream format, version 1:
//
//	"SKIFFSNP"            8 bytes of magic
//	version               uint32, big endian
//	applied index         uint64, big endian
//	objects               each a uvarint length then a deterministically
//	                      marshalled pb.Object, in key order
//	0                     a zero length ends the objects (no object is empty)
//
// Nothing may follow. The end marker tells a complete snapshot from a
// truncated one; the version lets a later release change the format and
// still read this one.
const (
	snapshotMagic   = "SKIFFSNP"
	snapshotVersion = 1
	// maxObjectSize bounds what a corrupt length can make Restore allocate.
	maxObjectSize = 64 << 20
)

// Snapshot implements raft.FSM; it is O(1).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	// The published tables never change: no copying here, and Apply goes
	// on while Persist writes them out.
	t, index := f.read()
	return &snapshot{t: t, index: index}, nil
}

type snapshot struct {
	t     *tables
	index uint64
}

// Persist implements raft.FSMSnapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.t, s.index); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot at index %d: %w", s.index, err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot; the snapshot holds only memory the
// garbage collector reclaims.
func (s *snapshot) Release() {}

func writeSnapshot(w io.Writer, t *tables, index uint64) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var hdr [len(snapshotMagic) + 4 + 8]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint32(hdr[len(snapshotMagic):], snapshotVersion)
	binary.BigEndian.PutUint64(hdr[len(snapshotMagic)+4:], index)
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	if err := writeObjects(bw, t); err != nil {
		return err
	}
	if err := bw.WriteByte(0); err != nil {
		return err
	}
	return bw.Flush()
}

// writeObjects writes every object, length-prefixed, in key order: the body
// of a snapshot and the input of StateHash.
func writeObjects(w io.Writer, t *tables) error {
	var n [binary.MaxVarintLen64]byte
	var err error
	t.ascend(func(r *record) bool {
		// The store's bytes are already the deterministic encoding.
		if _, err = w.Write(n[:binary.PutUvarint(n[:], uint64(len(r.raw)))]); err == nil {
			_, err = w.Write(r.raw)
		}
		return err == nil
	})
	return err
}

// Restore implements raft.FSM, replacing the whole state. On error the state
// is left as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	t, index, err := readSnapshot(rc, f.kinds)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.w = t
	pub := t.clone()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = pub
	f.applied = index
	// The history before the snapshot is unknown here: watches resume from
	// the snapshot's index at the earliest, and running ones expire.
	f.events = newEventLog(f.cfg, index, f.events.epoch+1)
	f.wake.all(f.events.next)
	close(f.notify)
	f.notify = make(chan struct{})
	return nil
}

// SnapshotIndex reads the header of a snapshot stream and returns the
// applied index it was taken at, leaving r after the header. A restore of a
// backup through raft.Raft.Restore must pass at least this index in
// SnapshotMeta.Index, so that raft's later entries come after it.
func SnapshotIndex(r io.Reader) (uint64, error) {
	var hdr [len(snapshotMagic) + 4 + 8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return 0, errors.New("not a skiff snapshot (bad magic)")
	}
	if v := binary.BigEndian.Uint32(hdr[len(snapshotMagic):]); v != snapshotVersion {
		return 0, fmt.Errorf("unsupported snapshot version %d", v)
	}
	return binary.BigEndian.Uint64(hdr[len(snapshotMagic)+4:]), nil
}

func readSnapshot(r io.Reader, kinds map[string]*kindMeta) (*tables, uint64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	index, err := SnapshotIndex(br)
	if err != nil {
		return nil, 0, err
	}

	t := newTables()
	check := &applier{kinds: kinds}
	for i := 0; ; i++ {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, 0, fmt.Errorf("object %d: %w", i, noEOF(err))
		}
		if n == 0 {
			break
		}
		if n > maxObjectSize {
			return nil, 0, fmt.Errorf("object %d: size %d exceeds %d", i, n, maxObjectSize)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, 0, fmt.Errorf("object %d: %w", i, noEOF(err))
		}
		obj := &pb.Object{}
		if err := gproto.Unmarshal(buf, obj); err != nil {
			return nil, 0, fmt.Errorf("object %d: %w", i, err)
		}
		if _, _, _, err := check.target(obj); err != nil {
			return nil, 0, fmt.Errorf("object %d: %w", i, err)
		}
		// Encoded again rather than kept as read, so that every master
		// holds and hashes this binary's encoding (StateHash).
		rec, err := newRecord(obj)
		if err != nil {
			return nil, 0, fmt.Errorf("object %d: %w", i, err)
		}
		if t.get(rec.key) != nil {
			return nil, 0, fmt.Errorf("object %d: duplicate %s", i, displayKey(rec.namespace, rec.name))
		}
		t.put(rec)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, 0, errors.New("data after the end of the snapshot")
	}
	return t, index, nil
}

// noEOF reports a snapshot that ends before its end marker as truncated.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
