package server

import (
	"errors"
	"fmt"
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

// logCacheEntries and logCacheBytes bound the recent log entries kept in
// memory (logCache): more than a few full AppendEntries (maxAppendEntries)
// in flight, what replication and the followers' apply read. An entry may
// hold many writes (the write gate joins them), so the cache is kept small:
// with 4,096 entries the leader held every pod of a 10,000-pod scale run,
// 30 MB more RSS than with 128 (264 against 234 MB; 256: 247 MB). The byte
// bound caps it after large writes (256 entries of single 1 MiB writes: 256 MiB). A
// follower further behind reads from bolt.
const (
	logCacheEntries = 256
	logCacheBytes   = 16 << 20
)

// maxAppendEntries bounds a group-committed batch and the entries of one
// AppendEntries. raft allocates a slice of this many pointers for every
// AppendEntries it sends (heartbeats included) and for every batch it
// applies: 1,024 made those two slices the largest allocations per write
// on the leader, while batches under load stay far below 128.
const maxAppendEntries = 128

// raftStores is everything raft persists, opened before raft itself so that
// New can tell whether this master already has state.
type raftStores struct {
	bolt *raftboltdb.BoltStore
	// logs is what raft uses: recent entries cached in memory over own
	// (logStore) over bolt.
	logs   *logCache
	own    *logStore
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
	st.own = newLogStore(st.bolt, cfg.LogStoreStallTimeout, cfg.Logger, metrics)
	// The leader reads every entry back to replicate and to apply it: keep
	// the recent ones in memory. Writes that fail (a stall) are not cached.
	st.logs = newLogCache(st.own, logCacheEntries, logCacheBytes)
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
		}), st.own)
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
	st.trans = newSerialTransport(nt, st.own)
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
		if st.own != nil {
			st.own.close() // the leader's write in flight lands first
		}
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
	// them with one fsync, and followers receive up to maxAppendEntries per
	// RPC. This is worth about 6x pipelined throughput on this hardware.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = maxAppendEntries
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
//
// It also keeps the leader's log writes, which run in parallel with their
// replication, from being counted before they are synced (see logStore):
// the commit index it sends is at most what this master has synced, and it
// hands raft an AppendEntries only after this master's write in flight.
type serialTransport struct {
	*raft.NetworkTransport
	logs    syncedLog
	raft    atomic.Value                   // termState, once raft exists
	handler atomic.Pointer[func(raft.RPC)] // raft's heartbeat handler
	consume chan raft.RPC
	stop    chan struct{}
	once    sync.Once
	// gate, once set (a writeGate), is the leader's write gate (see
	// syncedPipeline.push).
	gate atomic.Value
	// pushes counts the AppendEntries sent only to carry a commit index.
	pushes atomic.Uint64
}

// syncedLog is the part of logStore the transport asks.
type syncedLog interface {
	waitPending()
	syncedCommit(commit uint64) uint64
	// news is closed once the log or the commit index may have moved.
	news() <-chan struct{}
}

// termState is the part of *raft.Raft the transport asks.
type termState interface {
	State() raft.RaftState
	CurrentTerm() uint64
}

func newSerialTransport(nt *raft.NetworkTransport, logs syncedLog) *serialTransport {
	t := &serialTransport{NetworkTransport: nt, logs: logs, consume: make(chan raft.RPC), stop: make(chan struct{})}
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
			if _, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				// Its answer may count entries this master has not
				// synced yet: a leader that just stepped down.
				t.logs.waitPending()
			}
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

// AppendEntries implements raft.Transport.
func (t *serialTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	args.LeaderCommitIndex = t.logs.syncedCommit(args.LeaderCommitIndex)
	return t.NetworkTransport.AppendEntries(id, target, args, resp)
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
