package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/bench/internal/objects"
	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// rawRaft is three in-process raft members on loopback TCP with
// raft-boltdb/v2 (fsync on), configured as server/raft.go configures a
// master, to show what the consensus layer alone can do.
type rawRaft struct {
	variant raftVariant
	dir     string
	nodes   []*raft.Raft
	stores  []*raftboltdb.BoltStore
	trans   []*raft.NetworkTransport
	useFSM  bool
	fsms    []raft.FSM
	payload []byte
}

// nopFSM counts applied entries and snapshots nothing.
type nopFSM struct{ n atomic.Uint64 }

func (f *nopFSM) Apply(*raft.Log) any                 { f.n.Add(1); return nil }
func (f *nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

// raftVariant selects what the in-process raft runs: the no-op FSM or
// skiff's store, and experiments that server/raft.go does not do (yet).
type raftVariant struct {
	name          string
	fsm           bool          // apply into skiff's store
	logCache      int           // wrap the log store in raft.NewLogCache of this size
	commitTimeout time.Duration // instead of the server's 10ms
}

func parseRaftVariant(s string) (raftVariant, error) {
	v := raftVariant{name: s}
	parts := strings.Split(s, "+")
	if parts[0] != "raft" {
		return v, fmt.Errorf("raft variant %q: must start with raft", s)
	}
	for _, p := range parts[1:] {
		switch {
		case p == "fsm":
			v.fsm = true
		case p == "logcache":
			v.logCache = 1024
		case strings.HasPrefix(p, "ct"):
			d, err := time.ParseDuration(strings.TrimPrefix(p, "ct"))
			if err != nil {
				return v, fmt.Errorf("raft variant %q: %v", s, err)
			}
			v.commitTimeout = d
		default:
			return v, fmt.Errorf("raft variant %q: unknown part %q (fsm, logcache, ct<duration>)", s, p)
		}
	}
	return v, nil
}

// raftConfigLikeServer mirrors server.raftConfig for RaftMultiplier 1.
func raftConfigLikeServer(id string) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.HeartbeatTimeout = 300 * time.Millisecond
	rc.ElectionTimeout = 300 * time.Millisecond
	rc.LeaderLeaseTimeout = 300 * time.Millisecond
	rc.CommitTimeout = 10 * time.Millisecond
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 1024
	rc.SnapshotThreshold = 8192
	rc.SnapshotInterval = 2 * time.Minute
	rc.TrailingLogs = 10240
	rc.Logger = hclog.NewNullLogger()
	rc.NoLegacyTelemetry = true
	return rc
}

// startRawRaft starts n members; with useFSM each applies into a real skiff
// store (fsm.FSM) and the payload is an encoded ConfigMap create.
func startRawRaft(ctx context.Context, e *env, n int, v raftVariant) (_ *rawRaft, retErr error) {
	dir, err := os.MkdirTemp(e.root, "raft-")
	if err != nil {
		return nil, err
	}
	useFSM := v.fsm
	r := &rawRaft{variant: v, dir: dir, useFSM: useFSM, payload: objects.Value(objects.PayloadBytes)}
	defer func() {
		if retErr != nil {
			r.close()
		}
	}()
	var servers []raft.Server
	for i := 0; i < n; i++ {
		addr, err := e.addr()
		if err != nil {
			return nil, err
		}
		tcp, _ := net.ResolveTCPAddr("tcp", addr)
		tr, err := raft.NewTCPTransport(addr, tcp, 3, 10*time.Second, io.Discard)
		if err != nil {
			return nil, err
		}
		r.trans = append(r.trans, tr)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint("r", i)), Address: tr.LocalAddr()})
	}
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprint("r", i))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		st, err := raftboltdb.New(raftboltdb.Options{
			Path:        filepath.Join(d, "raft.db"),
			BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
		})
		if err != nil {
			return nil, err
		}
		r.stores = append(r.stores, st)
		snaps, err := raft.NewFileSnapshotStore(d, 2, io.Discard)
		if err != nil {
			return nil, err
		}
		var f raft.FSM = &nopFSM{}
		if useFSM {
			sf, err := fsm.New(fsm.Config{Logger: slog.New(slog.DiscardHandler), EventWindow: 50000, DecodedEvents: fsm.DefaultConfig().DecodedEvents})
			if err != nil {
				return nil, err
			}
			f = sf
		}
		r.fsms = append(r.fsms, f)
		var logs raft.LogStore = st
		if v.logCache > 0 {
			if logs, err = raft.NewLogCache(v.logCache, logs); err != nil {
				return nil, err
			}
		}
		rc := raftConfigLikeServer(string(servers[i].ID))
		if v.commitTimeout > 0 {
			rc.CommitTimeout = v.commitTimeout
		}
		node, err := raft.NewRaft(rc, f, logs, st, snaps, r.trans[i])
		if err != nil {
			return nil, err
		}
		r.nodes = append(r.nodes, node)
	}
	if err := r.nodes[0].BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return nil, err
	}
	if _, err := r.leader(ctx); err != nil {
		return nil, err
	}
	if useFSM {
		// The namespace the ConfigMaps go into.
		data, err := fsm.EncodeCommand(&pb.Command{Time: timestamppb.Now(), Uid: "ns-default",
			Op: &pb.Command_Create{Create: pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}})}})
		if err != nil {
			return nil, err
		}
		l, _ := r.leader(ctx)
		if err := l.Apply(data, 10*time.Second).Error(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *rawRaft) leader(ctx context.Context) (*raft.Raft, error) {
	var out *raft.Raft
	err := poll(ctx, 30*time.Second, 20*time.Millisecond, func() error {
		for _, n := range r.nodes {
			if n.State() == raft.Leader {
				out = n
				return nil
			}
		}
		return fmt.Errorf("no raft leader")
	})
	return out, err
}

func (r *rawRaft) close() {
	for _, n := range r.nodes {
		n.Shutdown().Error()
	}
	for _, t := range r.trans {
		t.Close()
	}
	for _, s := range r.stores {
		s.Close()
	}
	os.RemoveAll(r.dir)
}

func (r *rawRaft) name() string { return r.variant.name }

// followerLag applies n entries one at a time, paced, and measures for each
// the time from the leader's acknowledgement until every follower's store
// has applied it: how late a watcher or a linearizable read on a follower
// sees a write. Only with the store.
func (r *rawRaft) followerLag(ctx context.Context, n int) ([]time.Duration, error) {
	l, err := r.leader(ctx)
	if err != nil {
		return nil, err
	}
	w := &raftWriter{r: l, useFSM: true}
	var out []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		data, err := w.encode(fmt.Sprintf("lag-%d", i))
		if err != nil {
			return nil, err
		}
		fut := l.Apply(data, 10*time.Second)
		if err := fut.Error(); err != nil {
			return nil, err
		}
		idx := fut.Index()
		acked := time.Now()
		for {
			all := true
			for _, fs := range r.fsms {
				if sf, ok := fs.(*fsm.FSM); ok && sf.AppliedIndex() < idx {
					all = false
				}
			}
			if all {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		out = append(out, time.Since(acked))
		time.Sleep(20 * time.Millisecond)
	}
	return out, nil
}

func (r *rawRaft) newWriter(ctx context.Context, i int) (writer, error) {
	l, err := r.leader(ctx)
	if err != nil {
		return nil, err
	}
	return &raftWriter{r: l, useFSM: r.useFSM, payload: r.payload}, nil
}

type raftWriter struct {
	r       *raft.Raft
	useFSM  bool
	payload []byte
}

// put applies one entry: the 256-byte payload, or with the store an encoded
// create of a 256-byte ConfigMap (what a master proposes for the API write).
func (w *raftWriter) put(ctx context.Context, key string) error {
	data := w.payload
	if w.useFSM {
		var err error
		if data, err = w.encode(key); err != nil {
			return err
		}
	}
	f := w.r.Apply(data, 10*time.Second)
	if err := f.Error(); err != nil {
		return err
	}
	if res, ok := f.Response().(*fsm.Result); ok && res.Err != nil {
		return res.Err
	}
	return nil
}

func (w *raftWriter) encode(key string) ([]byte, error) {
	return fsm.EncodeCommand(&pb.Command{Time: timestamppb.New(time.Now().Truncate(time.Second)), Uid: key,
		Op: &pb.Command_Create{Create: objects.ConfigMap("default", key, objects.PayloadBytes)}})
}

func (w *raftWriter) close() {}
