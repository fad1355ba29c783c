package fsm_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// t0 is the leader's clock at index 0; command i runs at t0 + i seconds.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func timeAt(index uint64) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(index) * time.Second))
}

// cluster drives an FSM the way a leader and raft would.
type cluster struct {
	t     testing.TB
	f     *fsm.FSM
	index uint64
}

func newCluster(t testing.TB, window int) *cluster {
	t.Helper()
	cfg := fsm.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	if window > 0 {
		cfg.EventWindow = window
	}
	f, err := fsm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, f: f}
}

// run fills in what the leader chooses (time, uid), encodes the command and
// applies it through raft's entry point at the next index.
func (c *cluster) run(cmd *pb.Command) *fsm.Result {
	c.t.Helper()
	c.index++
	if cmd.Time == nil {
		cmd.Time = timeAt(c.index)
	}
	if cmd.Uid == "" {
		cmd.Uid = fmt.Sprintf("uid-%d", c.index)
	}
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		c.t.Fatal(err)
	}
	res, ok := c.f.Apply(&raft.Log{Index: c.index, Type: raft.LogCommand, Data: data}).(*fsm.Result)
	if !ok {
		c.t.Fatalf("Apply returned %T", res)
	}
	if res.Index != c.index {
		c.t.Fatalf("result index %d, want %d", res.Index, c.index)
	}
	return res
}

// must runs cmd and fails the test on an error.
func (c *cluster) must(cmd *pb.Command) *fsm.Result {
	c.t.Helper()
	res := c.run(cmd)
	if res.Err != nil {
		c.t.Fatalf("index %d: %v", res.Index, res.Err)
	}
	return res
}

func (c *cluster) get(kind, ns, name string) *pb.Object {
	c.t.Helper()
	o, err := c.f.Get(kind, ns, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return o
}

func createCmd(o *pb.Object) *pb.Command { return &pb.Command{Op: &pb.Command_Create{Create: o}} }
func updateCmd(o *pb.Object) *pb.Command { return &pb.Command{Op: &pb.Command_Update{Update: o}} }
func statusCmd(o *pb.Object) *pb.Command {
	return &pb.Command{Op: &pb.Command_UpdateStatus{UpdateStatus: o}}
}
func applyCmd(o *pb.Object) *pb.Command { return &pb.Command{Op: &pb.Command_Apply{Apply: o}} }
func deleteCmd(op *pb.DeleteOp) *pb.Command {
	return &pb.Command{Op: &pb.Command_Delete{Delete: op}}
}
func bindCmd(ns, name, node string) *pb.Command {
	return &pb.Command{Op: &pb.Command_Bind{Bind: &pb.BindOp{Namespace: ns, Name: name, NodeName: node}}}
}
func batchCmd(cmds ...*pb.Command) *pb.Command {
	return &pb.Command{Op: &pb.Command_Batch{Batch: &pb.CommandBatch{Commands: cmds}}}
}

func namespace(name string) *pb.Object {
	return pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: name}})
}

func node(name string) *pb.Object {
	return pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: name}})
}

func pod(ns, name string, labels map[string]string) *pb.Object {
	return pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "busybox"}}},
	})
}

func configMap(ns, name string, data map[string]string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Namespace: ns, Name: name}, Data: data})
}

// edit returns a clone of o changed by fn, for building updates from stored
// (shared, immutable) objects.
func edit(o *pb.Object, fn func(*pb.Object)) *pb.Object {
	o = o.Clone()
	fn(o)
	return o
}

func equal(a, b gproto.Message) bool { return gproto.Equal(a, b) }
