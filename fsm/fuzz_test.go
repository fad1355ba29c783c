package fsm_test

import (
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// seedCommands are valid commands of every kind, for the fuzzers to mutate.
func seedCommands() []*pb.Command {
	cmds := []*pb.Command{
		createCmd(pod("default", "p", map[string]string{"a": "b"})),
		updateCmd(pod("default", "seed", nil)),
		statusCmd(pod("default", "seed", nil)),
		applyCmd(configMap("default", "c", map[string]string{"k": "v"})),
		deleteCmd(&pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "seed", PropagationPolicy: "Foreground"}),
		deleteCmd(&pb.DeleteOp{Kind: "Namespace", Name: "default"}),
		bindCmd("default", "seed", "n1"),
		batchCmd(createCmd(namespace("n")), bindCmd("default", "seed", "n2")),
		createCmd(service("default", "s", "NodePort", "10.96.0.10", port("http", 80, 30080))),
		applyCmd(service("default", "s", "ClusterIP", "", port("http", 80, 0))),
	}
	for i, c := range cmds {
		c.Time = timeAt(uint64(i + 1))
		c.Uid = "seed-uid"
	}
	return cmds
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range seedCommands() {
		b, _ := fsm.EncodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{2, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := fsm.DecodeCommand(data)
		if err != nil {
			return
		}
		b, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := fsm.DecodeCommand(b)
		if err != nil || !equal(cmd, again) {
			t.Fatalf("round trip changed the command: %v", err)
		}
	})
}

// FuzzApply feeds arbitrary log entries to a store holding a namespace and a
// pod: Apply must never panic (a recovered panic counts as a failure too),
// must always advance the index and leave a store that can be snapshotted.
func FuzzApply(f *testing.F) {
	for _, c := range seedCommands() {
		b, _ := fsm.EncodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte{1, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCluster(t, 4)
		c.must(createCmd(namespace("default")))
		c.must(createCmd(pod("default", "seed", nil)))
		for i := 0; i < 2; i++ { // twice: the second sees the first's effects
			c.index++
			res, ok := c.f.Apply(&raft.Log{Index: c.index, Type: raft.LogCommand, Data: data}).(*fsm.Result)
			if !ok || res.Index != c.index || c.f.AppliedIndex() != c.index {
				t.Fatalf("result %v, applied %d, want index %d", res, c.f.AppliedIndex(), c.index)
			}
			for _, r := range append([]*fsm.Result{res}, res.Batch...) {
				if r.Err != nil && strings.Contains(r.Err.Error(), "panicked") {
					t.Fatal(r.Err)
				}
			}
		}
		c.f.StateHash()
		snapshotBytes(t, c.f)
	})
}
