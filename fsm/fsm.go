// Package fsm is skiff's replicated cluster store: the Raft state machine.
//
// Every object lives in a copy-on-write in-memory table (hashicorp/go-memdb),
// so a snapshot is O(1) to take. Apply is deterministic: it reads only the
// store and the command (time and UIDs are chosen by the leader before it
// proposes), so every master that applies the same log holds byte-identical
// state. resourceVersion is the Raft index of an object's last change.
// A bounded log of watch events, keyed by index, serves watches from any
// master; resuming from an index older than the window is ErrExpired.
package fsm

import (
	"context"
	"errors"
	"io"
	"log/slog"

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
	// EventWindow is how many watch events are retained for resuming watches.
	EventWindow int
}

// DefaultConfig returns the configuration used by skiff server.
func DefaultConfig() Config {
	return Config{Logger: slog.Default(), EventWindow: 50000}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Logger == nil {
		return errors.New("fsm config: Logger is required")
	}
	if c.EventWindow < 1 {
		return errors.New("fsm config: EventWindow must be at least 1")
	}
	return nil
}

// Result is what Apply returns for a command (the raft.ApplyFuture's Response).
type Result struct {
	Index  uint64     // Raft index the command was applied at
	Object *pb.Object // the object after the change; for a deletion its last state
	Action string
	Err    error      // nil on success; wraps one of the package errors
	Batch  []*Result  // one per nested command of a batch
}

// Event is one change seen by a watch.
type Event struct {
	Type   string     // Added, Modified, Deleted
	Object *pb.Object // state after the change (last state for Deleted)
	Old    *pb.Object // state before the change, nil for Added
	Index  uint64
}

// Query selects objects for List and Watch.
type Query struct {
	Kind          string // kind name as in proto.KindInfo.Kind, e.g. "Pod"; required
	Namespace     string // "" means all namespaces
	LabelSelector string // Kubernetes syntax: a=b,c!=d,e in (x,y),!f
	FieldSelector string // metadata.name, metadata.namespace, spec.nodeName (pods), status.phase (pods)
}

// FSM is the store. It implements raft.FSM and raft.BatchingFSM. Reads are
// safe concurrently with Apply. Objects it returns are shared and must not be
// modified: Clone them first.
type FSM struct {
	cfg Config
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// New returns an empty store.
func New(cfg Config) (*FSM, error) { panic("TODO") }

// EncodeCommand serialises a command for raft.Apply.
func EncodeCommand(cmd *pb.Command) ([]byte, error) { panic("TODO") }

// DecodeCommand parses a command from a Raft log entry.
func DecodeCommand(b []byte) (*pb.Command, error) { panic("TODO") }

// Apply implements raft.FSM; it returns a *Result.
func (f *FSM) Apply(l *raft.Log) interface{} { panic("TODO") }

// ApplyBatch implements raft.BatchingFSM; it returns one *Result per log.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} { panic("TODO") }

// ApplyCommand applies one command at the given index: the deterministic core
// of Apply, usable directly in tests.
func (f *FSM) ApplyCommand(index uint64, cmd *pb.Command) *Result { panic("TODO") }

// Snapshot implements raft.FSM; it is O(1).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) { panic("TODO") }

// Restore implements raft.FSM, replacing the whole state.
func (f *FSM) Restore(r io.ReadCloser) error { panic("TODO") }

// AppliedIndex returns the index of the last applied log entry.
func (f *FSM) AppliedIndex() uint64 { panic("TODO") }

// WaitForIndex blocks until AppliedIndex() >= index or ctx ends.
func (f *FSM) WaitForIndex(ctx context.Context, index uint64) error { panic("TODO") }

// Get returns one object; ErrNotFound if absent.
func (f *FSM) Get(kind, namespace, name string) (*pb.Object, error) { panic("TODO") }

// List returns matching objects sorted by namespace and name, and the applied
// index they reflect. A bad selector is ErrInvalid naming it.
func (f *FSM) List(q Query) ([]*pb.Object, uint64, error) { panic("TODO") }

// Watch streams events after fromIndex (0: from now) that match q. An object
// that stops matching the label selector is sent as Deleted, one that starts
// matching as Added. fromIndex older than the retained window is ErrExpired.
// The watch ends when ctx ends; a watcher too slow to keep up gets ErrExpired.
func (f *FSM) Watch(ctx context.Context, q Query, fromIndex uint64) (*Watcher, error) { panic("TODO") }

// Watcher delivers events in index order.
type Watcher struct{}

// Next blocks for the next event. It returns ctx's error when ctx ends and
// ErrExpired if the watcher fell out of the retained window.
func (w *Watcher) Next(ctx context.Context) (Event, error) { panic("TODO") }

// StateHash returns a SHA-256 over every object in key order, encoded
// deterministically: equal on every master that applied the same log.
func (f *FSM) StateHash() string { panic("TODO") }
