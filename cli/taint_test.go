package cli

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func taintList(ts []*pb.Taint) string {
	var out []string
	for _, t := range ts {
		out = append(out, taintString(t))
	}
	return strings.Join(out, " ")
}

func TestParseTaintEdit(t *testing.T) {
	tests := []struct {
		args        []string
		add, remove string
		wantErr     string
	}{
		{args: []string{"dedicated=db:NoSchedule", "gpu:PreferNoSchedule", "example.com/x=1:NoExecute"},
			add: "dedicated=db:NoSchedule gpu:PreferNoSchedule example.com/x=1:NoExecute"},
		{args: []string{"dedicated:NoSchedule-", "gpu-", "zone=a:NoExecute-"}, remove: "dedicated:NoSchedule gpu zone:NoExecute"},
		{args: []string{"a=1:NoSchedule", "b-"}, add: "a=1:NoSchedule", remove: "b"},
		{args: []string{"dedicated=db"}, wantErr: `taint "dedicated=db" has no effect`},
		{args: []string{"dedicated=db:Never"}, wantErr: `invalid taint effect "Never" in "dedicated=db:Never": use NoSchedule, PreferNoSchedule, NoExecute`},
		{args: []string{"bad key=x:NoSchedule"}, wantErr: `invalid taint key "bad key"`},
		{args: []string{"k=bad value:NoSchedule"}, wantErr: `invalid taint value "bad value"`},
		{args: []string{"k=a=b:NoSchedule"}, wantErr: `invalid taint spec "k=a=b:NoSchedule"`},
		{args: []string{"k:NoSchedule:x"}, wantErr: `invalid taint spec`},
		{args: []string{"a=1:NoSchedule", "a=2:NoSchedule"}, wantErr: "taint a:NoSchedule is given twice"},
		{args: []string{"a=1:NoSchedule", "a-"}, wantErr: "can not both modify and remove the following taint(s) in the same command: a"},
		{args: []string{"a=1:NoSchedule", "a:NoSchedule-"}, wantErr: "can not both modify and remove"},
		{args: nil, wantErr: "give at least one taint"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e, err := parseTaintEdit(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := taintList(e.add); got != tc.add {
				t.Errorf("add = %q, want %q", got, tc.add)
			}
			if got := taintList(e.remove); got != tc.remove {
				t.Errorf("remove = %q, want %q", got, tc.remove)
			}
		})
	}
	// Node names are not taint changes; every taint form is.
	for _, a := range []string{"w1", "node/w1", "nodes"} {
		if isTaintChange(a) {
			t.Errorf("isTaintChange(%q) = true", a)
		}
	}
	for _, a := range []string{"k:NoSchedule", "k=v:NoSchedule", "k-", "k:NoSchedule-"} {
		if !isTaintChange(a) {
			t.Errorf("isTaintChange(%q) = false", a)
		}
	}
}

func TestApplyTaints(t *testing.T) {
	added := timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	notReady := func() *pb.Taint {
		return &pb.Taint{Key: "node.kubernetes.io/not-ready", Effect: "NoExecute", TimeAdded: added}
	}
	tests := []struct {
		name      string
		have      []*pb.Taint
		args      []string
		overwrite bool
		word      string
		changed   bool
		want      string // the taints afterwards (unchanged on an error)
		wantErr   string
	}{
		{name: "add to none", args: []string{"dedicated=db:NoSchedule"}, word: "tainted", changed: true, want: "dedicated=db:NoSchedule"},
		{name: "add after the controller's", have: []*pb.Taint{notReady()}, args: []string{"dedicated=db:NoSchedule"}, word: "tainted", changed: true,
			want: "node.kubernetes.io/not-ready:NoExecute dedicated=db:NoSchedule"},
		{name: "same key, other effect is another taint", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}},
			args: []string{"dedicated=db:NoExecute"}, word: "tainted", changed: true, want: "dedicated=db:NoSchedule dedicated=db:NoExecute"},
		{name: "existing key and effect need overwrite", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}},
			args: []string{"dedicated=web:NoSchedule"}, wantErr: "node w1 already has dedicated taint(s) with same effect(s) and --overwrite is false",
			want: "dedicated=db:NoSchedule"},
		{name: "overwrite replaces in place", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}, notReady()},
			args: []string{"dedicated=web:NoSchedule"}, overwrite: true, word: "modified", changed: true,
			want: "dedicated=web:NoSchedule node.kubernetes.io/not-ready:NoExecute"},
		{name: "overwrite with the same value", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}},
			args: []string{"dedicated=db:NoSchedule"}, overwrite: true, word: "unchanged", want: "dedicated=db:NoSchedule"},
		{name: "remove by key and effect", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}, {Key: "dedicated", Effect: "NoExecute"}},
			args: []string{"dedicated:NoSchedule-"}, word: "untainted", changed: true, want: "dedicated:NoExecute"},
		{name: "remove by key", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}, notReady(), {Key: "dedicated", Effect: "NoExecute"}},
			args: []string{"dedicated-"}, word: "untainted", changed: true, want: "node.kubernetes.io/not-ready:NoExecute"},
		{name: "remove the last", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}}, args: []string{"dedicated:NoSchedule-"},
			word: "untainted", changed: true, want: ""},
		{name: "remove absent effect", have: []*pb.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}},
			args: []string{"dedicated:NoExecute-"}, wantErr: `taint "dedicated:NoExecute" not found: node w1 has taints dedicated=db:NoSchedule`,
			want: "dedicated=db:NoSchedule"},
		{name: "remove from none", args: []string{"dedicated-"}, wantErr: `taint "dedicated" not found: node w1 has no taints`},
		{name: "add and remove", have: []*pb.Taint{{Key: "old", Effect: "NoSchedule"}}, args: []string{"new=1:NoSchedule", "old-"},
			word: "modified", changed: true, want: "new=1:NoSchedule"},
		{name: "one bad removal writes nothing", have: []*pb.Taint{{Key: "old", Effect: "NoSchedule"}}, args: []string{"new=1:NoSchedule", "gone-"},
			wantErr: `taint "gone" not found`, want: "old:NoSchedule"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseTaintEdit(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			node := &pb.Node{Metadata: &pb.ObjectMeta{Name: "w1"}}
			if tc.have != nil {
				node.Spec = &pb.NodeSpec{Taints: tc.have}
			}
			word, changed, err := applyTaints(node, e, tc.overwrite)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || word != tc.word || changed != tc.changed {
				t.Errorf("= %q, %v, %v; want %q, %v", word, changed, err, tc.word, tc.changed)
			}
			if got := taintList(node.GetSpec().GetTaints()); got != tc.want {
				t.Errorf("taints afterwards = %q, want %q", got, tc.want)
			}
			for _, ta := range node.GetSpec().GetTaints() {
				if ta.GetKey() == "node.kubernetes.io/not-ready" && !ta.GetTimeAdded().AsTime().Equal(added.AsTime()) {
					t.Errorf("the kept taint lost its timeAdded: %v", ta.GetTimeAdded())
				}
			}
		})
	}
}

func TestTaintRefusesBadArgumentsBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `invalid taint effect "Sometimes"`, "taint", "nodes", "w1", "dedicated=db:Sometimes")
	refusedBeforeConnecting(t, "taints are only on nodes, not pods", "taint", "pods", "web", "dedicated=db:NoSchedule")
	refusedBeforeConnecting(t, "no nodes named", "taint", "nodes", "dedicated=db:NoSchedule")
	refusedBeforeConnecting(t, "give at least one taint", "taint", "nodes", "w1")
}
