// Package fsm is skiff's replicated cluster store: the Raft state machine.
//
// Every object lives in copy-on-write in-memory B-trees (tables.go),
// so a snapshot is O(1) to take. Apply is deterministic: it reads only the
// store and the command (time and UIDs are chosen by the leader before it
// proposes), so every master that applies the same log holds byte-identical
// state. resourceVersion is the Raft index of an object's last change.
// A bounded log of watch events, keyed by index, serves watches from any
// master; resuming from an index older than the window is ErrExpired.
package fsm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"

	pb "github.com/skiff-sh/skiff/proto"
)

// Errors returned in Result.Err and by reads. Match with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrConflict           = errors.New("conflict") // resourceVersion or UID precondition failed
	ErrInvalid            = errors.New("invalid")
	ErrFailedPrecondition = errors.New("failed precondition") // e.g. namespace missing or terminating
	ErrExpired            = errors.New("resource version expired")
)

// Actions reported in Result.Action.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
	ActionDeleted    = "deleted"
	ActionDeleting   = "deleting" // deletionTimestamp set; finalizers or a graceful pod deletion remain
	ActionBound      = "bound"
)

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
)

// Config configures an FSM.
type Config struct {
	Logger *slog.Logger
	// EventWindow is how many watch events are retained for resuming watches,
	// and EventWindowBytes how many bytes of object encodings they may hold
	// (0: no bound): an object's earlier versions stay in memory while
	// their events are retained, so a large object written often would
	// otherwise keep thousands of its versions.
	EventWindow      int
	EventWindowBytes int
	// DecodedEvents is how many of the newest events keep their objects
	// decoded, shared by every watcher that reads them while they are new.
	// Older events keep only the encodings: far less memory, and nothing
	// for the garbage collector to scan (BenchmarkPodHistoryHeap); a
	// watcher that reaches one, resuming or lagging, decodes its own copy.
	DecodedEvents int
	// DecodedEventBytes bounds the encodings of those events (0: no bound),
	// so a run of large objects does not keep thousands of them decoded:
	// what they hold decoded is about what their encodings hold.
	DecodedEventBytes int
}

// DefaultConfig returns the configuration used by skiff server.
func DefaultConfig() Config {
	return Config{Logger: slog.Default(), EventWindow: 50000, EventWindowBytes: 256 << 20, DecodedEvents: 4096, DecodedEventBytes: 32 << 20}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Logger == nil {
		return errors.New("fsm config: Logger is required")
	}
	if c.EventWindow < 1 {
		return errors.New("fsm config: EventWindow must be at least 1")
	}
	if c.DecodedEvents < 0 {
		return errors.New("fsm config: DecodedEvents must not be negative")
	}
	if c.EventWindowBytes < 0 {
		return errors.New("fsm config: EventWindowBytes must not be negative")
	}
	if c.DecodedEventBytes < 0 {
		return errors.New("fsm config: DecodedEventBytes must not be negative")
	}
	return nil
}

// Result is what Apply returns for a command (the raft.ApplyFuture's Response).
type Result struct {
	Index  uint64     // Raft index the command was applied at
	Object *pb.Object // the object after the change; for a deletion its last state
	Action string
	Err    error     // nil on success; wraps one of the package errors
	Batch  []*Result // one per nested command of a batch
}

// Event is one change seen by a watch.
type Event struct {
	Type   string     // Added, Modified, Deleted
	Object *pb.Object // state after the change (last state for Deleted)
	Old    *pb.Object // state before the change, nil for Added
	Index  uint64
	// Encoded is the deterministic encoding of Object (nil only in the
	// Deleted a watch makes of an object leaving its selector): what a
	// server can send without encoding Object again. Shared: do not modify.
	Encoded []byte

	// oldEncoded is the encoding of Old, which the log keeps once it drops
	// the decoded objects (Config.DecodedEvents).
	oldEncoded []byte

	// Set when the event enters the log, so watchers skipping events that
	// are not theirs read the ring, not the objects; namespace and name
	// for Added events only (Created).
	kind, node, oldNode string
	namespace, name     string
	hasOld              bool
}

// Query selects objects for List and Watch.
type Query struct {
	Kind          string // kind name as in proto.KindInfo.Kind, e.g. "Pod"; required
	Namespace     string // "" means all namespaces
	LabelSelector string // Kubernetes syntax: a=b,c!=d,e in (x,y),!f
	FieldSelector string // metadata.name, metadata.namespace, spec.nodeName (pods), status.phase (pods)
}

// FSM is the store. It implements raft.FSM and raft.BatchingFSM. Reads are
// safe concurrently with Apply. The store keeps objects encoded: Get, List
// and Dependents decode copies the caller owns. The objects of results and
// watch events are shared with every watcher and must not be modified:
// Clone them first.
type FSM struct {
	cfg   Config
	kinds map[string]*kindMeta

	// wmu serialises writers (Apply, Restore). Raft never calls them
	// concurrently, but ApplyCommand is public.
	wmu sync.Mutex

	// w is the writer's copy of the tables: every write transaction is a
	// clone of it (tables.go). Guarded by wmu.
	w *tables

	// mu makes a commit, its applied index and its watch events visible
	// together, so a List at index i followed by a Watch from i neither misses
	// nor repeats an event. It is held only briefly: a commit swaps tables,
	// it copies nothing.
	mu sync.RWMutex
	// cur is the published tables, which readers share; never changed.
	cur     *tables
	applied uint64
	events  eventLog
	// notify is closed and replaced whenever applied or events change: one
	// broadcast wakes every WaitForIndex, whatever their number.
	notify chan struct{}
	// wake is where watchers wait: by kind, or for the pods of one node,
	// so a write wakes only the watchers it may concern (see watch.go).
	wake wakeTable
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// New returns an empty store.
func New(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := newTables()
	return &FSM{
		cfg:    cfg,
		kinds:  newKindTable(),
		w:      t,
		cur:    t.clone(),
		events: newEventLog(cfg, 0, 0),
		notify: make(chan struct{}),
	}, nil
}

// Apply implements raft.FSM; it returns a *Result.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		// Only ApplyBatch sees these (configuration entries); they change
		// nothing but still advance the applied index.
		return f.apply(l.Index, nil, nil, nil)
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		return f.apply(l.Index, nil, nil, err)
	}
	return f.apply(l.Index, cmd, l.Data, nil)
}

// ApplyBatch implements raft.BatchingFSM; it returns one *Result per log.
// A group-committed batch is applied in one write transaction (each
// transaction copies the tree nodes it touches once, so a transaction per
// command would copy them per command) and published at once: readers and
// watchers see the whole batch or none of it. Each command still gets its
// own index and result, and a failing command writes nothing (every
// command checks before it writes), exactly as in a Batch command. A
// command that panics aborts the shared transaction; the batch is then
// applied again one command per transaction, so only that one is lost.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	if len(logs) == 1 {
		out[0] = f.Apply(logs[0])
		return out
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	txn := f.w.clone()
	var events []Event
	last := f.applied
	for i, l := range logs {
		res := &Result{Index: l.Index}
		out[i] = res
		if l.Index <= last {
			res.Err = fmt.Errorf("%w: index %d is not after the applied index %d", ErrInvalid, l.Index, last)
			continue
		}
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		cmd, err := DecodeCommand(l.Data)
		if err != nil {
			f.cfg.Logger.Warn("fsm: skipping undecodable log entry", "index", l.Index, "err", err)
			res.Err = err
			continue
		}
		a := &applier{kinds: f.kinds, txn: txn, index: l.Index, log: f.cfg.Logger}
		r, ok := a.safeCommand(cmd)
		if !ok {
			// txn is dropped: nothing of the batch is kept.
			for j, l := range logs {
				out[j] = f.applyLog(l)
			}
			return out
		}
		out[i] = r
		events = append(events, a.events...)
	}
	f.publish(txn, last, events)
	return out
}

// applyLog is Apply with wmu held.
func (f *FSM) applyLog(l *raft.Log) *Result {
	if l.Type != raft.LogCommand {
		return f.applyLocked(l.Index, nil, nil, nil)
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		return f.applyLocked(l.Index, nil, nil, err)
	}
	return f.applyLocked(l.Index, cmd, l.Data, nil)
}

// ApplyCommand applies one command at the given index: the deterministic core
// of Apply, usable directly in tests.
func (f *FSM) ApplyCommand(index uint64, cmd *pb.Command) *Result {
	if cmd == nil {
		return f.apply(index, nil, nil, fmt.Errorf("%w: nil command", ErrInvalid))
	}
	// As a log entry: the store keeps parts of the command, and a batch
	// whose command panicked is decoded again (applyLocked).
	raw, err := EncodeCommand(cmd)
	if err != nil {
		return f.apply(index, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	own, err := DecodeCommand(raw)
	return f.apply(index, own, raw, err)
}

// apply runs cmd (which the store now owns), decoded from raw, at index in
// one write transaction. A nil cmd with a nil err only advances the index.
func (f *FSM) apply(index uint64, cmd *pb.Command, raw []byte, err error) *Result {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.applyLocked(index, cmd, raw, err)
}

// applyLocked is apply with wmu held. When a command of a batch panics,
// the batch is applied again from raw without it (it gets the panic as its
// error), until none panics: only the commands that panicked are lost.
func (f *FSM) applyLocked(index uint64, cmd *pb.Command, raw []byte, err error) *Result {
	res := &Result{Index: index, Err: err}
	if index <= f.applied {
		// Raft never replays an index; refuse rather than corrupt the watch log.
		res.Err = fmt.Errorf("%w: index %d is not after the applied index %d", ErrInvalid, index, f.applied)
		return res
	}
	var txn *tables
	var events []Event
	if err != nil {
		f.cfg.Logger.Warn("fsm: skipping undecodable log entry", "index", index, "err", err)
	} else if cmd != nil {
		var skip map[int]error
		for {
			txn = f.w.clone()
			a := &applier{kinds: f.kinds, txn: txn, index: index, log: f.cfg.Logger, skip: skip}
			var ok bool
			if res, ok = a.safeCommand(cmd); ok {
				events = a.events
				break
			}
			txn = nil // dropped: nothing of a command that panicked is kept
			if !a.inBatch || raw == nil {
				break
			}
			if skip == nil {
				skip = map[int]error{}
			}
			skip[a.nested] = res.Err
			// The commands that ran may have been changed: start afresh.
			if cmd, err = DecodeCommand(raw); err != nil {
				res = &Result{Index: index, Err: err}
				break
			}
		}
	}
	f.publish(txn, index, events)
	return res
}

// publish commits txn (if any), advances the applied index and wakes every
// waiter and watcher, atomically for readers. The caller holds wmu.
func (f *FSM) publish(txn *tables, index uint64, events []Event) {
	var pub *tables
	if txn != nil {
		// Readers get their own clone, so that the writer's next clone of
		// txn changes nothing they read.
		f.w, pub = txn, txn.clone()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pub != nil {
		f.cur = pub
	}
	f.applied = index
	f.events.append(events)
	f.wake.publish(events, f.events.next, len(f.events.buf))
	close(f.notify)
	f.notify = make(chan struct{})
}

// AppliedIndex returns the index of the last applied log entry.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// EventWindow reports the watch events retained for resuming watches, the
// bytes of encodings they hold, and the index a watch may resume from at
// the earliest.
func (f *FSM) EventWindow() (events int, bytes, start uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := &f.events
	return int(l.next - l.oldest()), l.bytes, l.start
}

// WaitForIndex blocks until AppliedIndex() >= index or ctx ends.
func (f *FSM) WaitForIndex(ctx context.Context, index uint64) error {
	for {
		f.mu.RLock()
		applied, ch := f.applied, f.notify
		f.mu.RUnlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read returns the published tables and the index they reflect.
func (f *FSM) read() (*tables, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cur, f.applied
}

// kind resolves a kind name; besides "Pod" it accepts what kubectl does
// ("pods", "po").
func (f *FSM) kind(name string) (*kindMeta, error) {
	return resolveKind(f.kinds, name)
}

// Get returns one object; ErrNotFound if absent.
func (f *FSM) Get(kind, namespace, name string) (*pb.Object, error) {
	r, err := f.get(kind, namespace, name)
	if err != nil {
		return nil, err
	}
	return r.object()
}

// GetEncoded is Get returning the object as the store holds it, encoded.
// The bytes are shared: do not modify them.
func (f *FSM) GetEncoded(kind, namespace, name string) ([]byte, error) {
	r, err := f.get(kind, namespace, name)
	if err != nil {
		return nil, err
	}
	return r.raw, nil
}

func (f *FSM) get(kind, namespace, name string) (*record, error) {
	km, err := f.kind(kind)
	if err != nil {
		return nil, err
	}
	if !km.Namespaced {
		namespace = ""
	}
	t, _ := f.read()
	if r := t.get(objectKey(km.Kind, namespace, name)); r != nil {
		return r, nil
	}
	return nil, fmt.Errorf("%w: %s %q", ErrNotFound, km.Plural, displayKey(namespace, name))
}

// List returns matching objects sorted by namespace and name, and the applied
// index they reflect. A bad selector is ErrInvalid naming it. Selectors are
// matched against the records, so only the objects returned are decoded.
func (f *FSM) List(q Query) ([]*pb.Object, uint64, error) {
	var out []*pb.Object
	index, err := f.scan(q, func(r *record) error {
		obj, err := r.object()
		if err == nil {
			out = append(out, obj)
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return out, index, nil
}

// ListEncoded is List returning each object as the store holds it,
// deterministically marshalled, without decoding anything: what a server
// sends as a list's items. The slices are the store's: do not modify them.
func (f *FSM) ListEncoded(q Query) ([][]byte, uint64, error) {
	var out [][]byte
	index, err := f.scan(q, func(r *record) error {
		out = append(out, r.raw)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, index, nil
}

// EachEncoded calls fn with the stored encoding of every object q selects,
// in key order, as ListEncoded lists them but without collecting them;
// it stops at fn's first error and returns it. The slices are the store's:
// do not modify them.
func (f *FSM) EachEncoded(q Query, fn func(raw []byte) error) (uint64, error) {
	return f.scan(q, func(r *record) error { return fn(r.raw) })
}

// scan calls fn for every record q selects, in key order, and returns the
// applied index they reflect.
func (f *FSM) scan(q Query, fn func(*record) error) (uint64, error) {
	m, err := f.compile(q)
	if err != nil {
		return 0, err
	}
	t, index := f.read()
	visit := func(r *record) bool {
		if m.matchesRecord(r) {
			err = fn(r)
		}
		return err == nil
	}
	if name, ok := m.objectName(); ok {
		// One name in one namespace (or of a cluster-scoped kind): a
		// lookup, not a scan of the namespace (the controllers' live
		// reads of one object).
		if r := t.get(objectKey(m.kind.Kind, m.namespace, name)); r != nil {
			visit(r)
		}
	} else if node, ok := m.nodeName(); ok {
		// Pods on one node come from the node index, already in key order.
		t.ascendIndex(indexNode, node, visit)
	} else {
		prefix := m.kind.Kind + "\x00"
		if m.namespace != "" {
			prefix += m.namespace + "\x00"
		}
		t.ascendPrefix(prefix, visit)
	}
	if err != nil {
		return 0, err
	}
	return index, nil
}

// Count returns how many objects of a kind the store holds, without
// decoding them.
func (f *FSM) Count(kind string) (int, error) {
	km, err := f.kind(kind)
	if err != nil {
		return 0, err
	}
	t, _ := f.read()
	n := 0
	t.ascendPrefix(km.Kind+"\x00", func(*record) bool { n++; return true })
	return n, nil
}

// Dependents returns the objects whose ownerReferences name ownerUID, in key
// order: the garbage collector's lookup.
func (f *FSM) Dependents(ownerUID string) []*pb.Object {
	t, _ := f.read()
	var out []*pb.Object
	t.ascendIndex(indexOwner, ownerUID, func(r *record) bool {
		if obj, err := r.object(); err == nil {
			out = append(out, obj)
		}
		return true
	})
	return out
}

// StateHash returns a SHA-256 over every object in key order, encoded
// deterministically: equal on every master that applied the same log.
func (f *FSM) StateHash() string {
	t, _ := f.read()
	h := sha256.New()
	if err := writeObjects(h, t); err != nil {
		// Only a marshalling bug can get here; make it visible in the hash.
		return "error: " + err.Error()
	}
	return hex.EncodeToString(h.Sum(nil))
}

func displayKey(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
