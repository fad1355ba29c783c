package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// ErrLogStoreStalled is returned by the log store when a write takes longer
// than Config.LogStoreStallTimeout.
var ErrLogStoreStalled = errors.New("raft log store stalled")

// logCacheEntries is how many recent log entries are kept in memory: more
// than one full group-committed batch (MaxAppendEntries) in flight.
const logCacheEntries = 4096

// raftStores is everything raft persists, opened before raft itself so that
// New can tell whether this master already has state.
type raftStores struct {
	bolt *raftboltdb.BoltStore
	// logs is what raft uses: recent entries cached in memory over the
	// stall guard over bolt.
	logs   raft.LogStore
	guard  *stallGuardLogStore
	snaps  *raft.FileSnapshotStore
	trans  *serialTransport
	closed atomic.Bool
}

// openRaftStores opens DataDir/raft/raft.db (log and stable store, fsync on
// every write: an acknowledged write must survive power loss), the snapshot
// store and the TCP transport. On failure it closes what it opened.
func openRaftStores(cfg Config, metrics *metrics, sec *serverTLS) (_ *raftStores, retErr error) {
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	st := &raftStores{}
	defer func() {
		if retErr != nil {
			st.close()
		}
	}()
	var err error
	st.bolt, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(dir, "raft.db"),
		// A second master on the same data dir must fail, not hang on the
		// file lock.
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
		NoSync:      false,
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s (is another master using this data dir?): %w", filepath.Join(dir, "raft.db"), err)
	}
	st.guard = &stallGuardLogStore{LogStore: st.bolt, timeout: cfg.LogStoreStallTimeout, log: cfg.Logger, metrics: metrics}
	// The leader reads every entry back to replicate and to apply it: keep
	// the recent ones in memory. Writes that fail (a stall) are not cached.
	if st.logs, err = raft.NewLogCache(logCacheEntries, st.guard); err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	st.snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, 2, newHCLog(cfg.Logger, "raft-snapshot"))
	if err != nil {
		return nil, fmt.Errorf("open raft snapshot store in %s: %w", dir, err)
	}
	if sec != nil {
		layer, err := newTLSStreamLayer(cfg.RaftAddr, sec)
		if err != nil {
			return nil, fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
		}
		st.trans = newSerialTransport(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: newHCLog(cfg.Logger, "raft-net"),
		}))
		return st, nil
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("resolve RaftAddr %s: %w", cfg.RaftAddr, err)
	}
	nt, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, addr, 3, 10*time.Second, newHCLog(cfg.Logger, "raft-net"))
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	st.trans = newSerialTransport(nt)
	return st, nil
}

func (st *raftStores) hasState() (bool, error) {
	ok, err := raft.HasExistingState(st.logs, st.bolt, st.snaps)
	if err != nil {
		return false, fmt.Errorf("check for existing raft state: %w", err)
	}
	return ok, nil
}

// close releases the stores. raft.Shutdown closes the transport itself; a
// second Close is harmless.
func (st *raftStores) close() error {
	if !st.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if st.trans != nil {
		errs = append(errs, st.trans.Close())
	}
	if st.bolt != nil {
		errs = append(errs, st.bolt.Close())
	}
	return errors.Join(errs...)
}

// raftConfig derives raft's configuration from ours. See the constants in
// config.go for why these timeouts.
func raftConfig(cfg Config) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Name)
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = cfg.raftTimeouts()
	rc.CommitTimeout = baseCommitTimeout
	// Group commit: the leader takes every queued apply at once and writes
	// them with one fsync, and followers receive up to 1024 per RPC. This is
	// worth about 6x pipelined throughput on this hardware.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 1024
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = newHCLog(cfg.Logger, "raft")
	rc.NoLegacyTelemetry = true
	return rc
}

// serialTransport is raft's network transport with a heartbeat fast path
// that cannot change raft's term or state under a running leader loop.
//
// hashicorp/raft (up to v1.8.0 at least; issue #695, fix proposed in PR #701)
// handles heartbeats on the transport's goroutine, and a heartbeat from a
// newer term sets currentTerm and the follower state there, concurrently with
// the leader loop. A leader paused or slowed past an election that resumes
// with client writes queued can then dispatch them stamped with the new
// leader's term: at indexes the new leader filled with other entries of that
// same term, so the log-matching check sees no conflict and the old leader
// later applies its own entries where the others applied the new leader's.
// skiff's leader-pause chaos scenario produced exactly that (two masters at the
// same applied index with different state).
//
// So only a heartbeat of the term this master is already following takes the
// fast path (it cannot raise the term, and a master that leads or runs an
// election has a later term than any heartbeat it could take there); every
// other one goes through raft's main loop, like any RPC. The fast path
// matters: a follower answers heartbeats while its main loop waits on a disk
// write, so a leader with one peer down does not lose its lease to a slow
// fsync on the other.
type serialTransport struct {
	*raft.NetworkTransport
	raft    atomic.Value                   // termState, once raft exists
	handler atomic.Pointer[func(raft.RPC)] // raft's heartbeat handler
	consume chan raft.RPC
	stop    chan struct{}
	once    sync.Once
}

// termState is the part of *raft.Raft the transport asks.
type termState interface {
	State() raft.RaftState
	CurrentTerm() uint64
}

func newSerialTransport(nt *raft.NetworkTransport) *serialTransport {
	t := &serialTransport{NetworkTransport: nt, consume: make(chan raft.RPC), stop: make(chan struct{})}
	go t.pump()
	return t
}

// pump hands raft every RPC of the inner transport, so that heartbeats
// can be added to the same stream.
func (t *serialTransport) pump() {
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			select {
			case t.consume <- rpc:
			case <-t.stop:
				return
			}
		case <-t.stop:
			return
		}
	}
}

// Consumer implements raft.Transport.
func (t *serialTransport) Consumer() <-chan raft.RPC { return t.consume }

// SetHeartbeatHandler implements raft.Transport: fn is only called for
// heartbeats that cannot change the term (see the type's comment).
func (t *serialTransport) SetHeartbeatHandler(fn func(raft.RPC)) {
	if fn == nil {
		t.handler.Store(nil)
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	t.handler.Store(&fn)
	t.NetworkTransport.SetHeartbeatHandler(t.heartbeat)
}

func (t *serialTransport) heartbeat(rpc raft.RPC) {
	req, _ := rpc.Command.(*raft.AppendEntriesRequest)
	if r, ok := t.raft.Load().(termState); ok && req != nil && r.State() == raft.Follower && req.Term == r.CurrentTerm() {
		if fn := t.handler.Load(); fn != nil {
			(*fn)(rpc)
			return
		}
	}
	select {
	case t.consume <- rpc: // raft's main loop answers it
	case <-t.stop:
		rpc.Respond(nil, raft.ErrTransportShutdown)
	}
}

// Close implements raft.WithClose.
func (t *serialTransport) Close() error {
	t.once.Do(func() { close(t.stop) })
	return t.NetworkTransport.Close()
}

// stallGuardLogStore bounds how long the leader's own log writes may take.
//
// hashicorp/raft writes the leader's own entries from its leader loop
// (issue #503): if the disk hangs, that loop hangs with it, so the leader can
// no longer commit or even process a LeadershipTransfer, yet its replication
// goroutines keep heartbeating and the followers never elect anyone else.
// Returning an error from StoreLogs is the one signal the leader loop acts on
// at once: it fails the pending applies and steps down to follower, its
// heartbeats stop, and a healthy master takes over.
//
// The abandoned write keeps running. Two rules keep the log what raft
// believes it is: every mutation (StoreLogs, DeleteRange) waits for the one
// before it, so a late write can never land over a newer one; and when an
// abandoned write does land, its entries are deleted again before anything
// else is written, since raft (which was told it failed) counts them nowhere.
// Only the leader's writes time out: a follower's failed append after a
// truncation would leave raft's idea of its last index wrong (raft.go's
// appendEntries TODO), and a slow follower holds up no one.
type stallGuardLogStore struct {
	raft.LogStore
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics
	// raft (a raftState) is set once raft exists; until then, and while
	// this master does not lead, writes do not time out.
	raft atomic.Value
	// busy holds a token while a mutation of the inner store runs
	// (including an abandoned one, until its entries are removed).
	busyOnce sync.Once
	busy     chan struct{}
}

// raftState is the part of *raft.Raft the stall guard asks.
type raftState interface{ State() raft.RaftState }

func (s *stallGuardLogStore) sem() chan struct{} {
	s.busyOnce.Do(func() { s.busy = make(chan struct{}, 1) })
	return s.busy
}

func (s *stallGuardLogStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

func (s *stallGuardLogStore) DeleteRange(lo, hi uint64) error {
	sem := s.sem()
	sem <- struct{}{}
	defer func() { <-sem }()
	return s.LogStore.DeleteRange(lo, hi)
}

func (s *stallGuardLogStore) StoreLogs(logs []*raft.Log) error {
	sem := s.sem()
	if r, _ := s.raft.Load().(raftState); r == nil || len(logs) == 0 || r.State() != raft.Leader {
		sem <- struct{}{}
		defer func() { <-sem }()
		return s.LogStore.StoreLogs(logs)
	}
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case sem <- struct{}{}:
	case <-t.C:
		// Nothing was started: an earlier abandoned write still holds the disk.
		return s.stalled(logs, "an earlier write is still running")
	}
	const (
		running = iota
		finished
		abandoned
	)
	var state atomic.Int32
	done := make(chan error, 1)
	go func() {
		err := s.LogStore.StoreLogs(logs)
		if state.CompareAndSwap(running, finished) {
			<-sem
			done <- err
			return
		}
		// Abandoned: raft was told this write failed.
		if err == nil {
			first, last := logs[0].Index, logs[len(logs)-1].Index
			if derr := s.LogStore.DeleteRange(first, last); derr != nil {
				s.log.Error("raft log store: cannot remove the entries of an abandoned write", "first", first, "last", last, "err", derr)
			} else {
				s.log.Warn("raft log store: an abandoned write completed; its entries are removed", "first", first, "last", last)
			}
		}
		<-sem
	}()
	select {
	case err := <-done:
		return err
	case <-t.C:
		if !state.CompareAndSwap(running, abandoned) {
			return <-done // it finished just now
		}
		return s.stalled(logs, "")
	}
}

func (s *stallGuardLogStore) stalled(logs []*raft.Log, why string) error {
	if s.metrics != nil {
		s.metrics.logStoreStalls.Inc()
	}
	s.log.Error("raft log store stalled: stepping down", "timeout", s.timeout, "entries", len(logs), "reason", why)
	return fmt.Errorf("%w: a write of %d entries took longer than %s", ErrLogStoreStalled, len(logs), s.timeout)
}
