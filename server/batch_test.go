package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// The leader's controllers create many pods with one Raft entry: every pod
// gets its own uid and defaults, a bad or taken one fails alone, and batch
// deletes work the same way.
func TestLocalClusterBatchWrites(t *testing.T) {
	t.Parallel()
	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 20*time.Second)
	lc := localCluster{ts.srv}

	mk := func(name string) *pb.Object {
		return pb.Wrap(&pb.Pod{
			Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"},
			Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "c", Image: "busybox"}}},
		})
	}
	if _, err := lc.Create(ctx, mk("taken")); err != nil {
		t.Fatal(err)
	}
	var objs []*pb.Object
	for i := range 20 {
		objs = append(objs, mk(fmt.Sprintf("p%02d", i)))
	}
	bad := mk("Not_Valid")
	objs = append(objs, bad, mk("taken"))

	stored, errs := controllers.CreateMany(ctx, lc, objs)
	uids := map[string]bool{}
	var rv uint64
	for i := range 20 {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		m := stored[i].Meta()
		if uids[m.GetUid()] || m.GetUid() == "" {
			t.Errorf("pod %s: uid %q missing or not unique", m.GetName(), m.GetUid())
		}
		uids[m.GetUid()] = true
		// One Raft entry: one resourceVersion for the whole batch.
		if rv == 0 {
			rv = m.GetResourceVersion()
		} else if m.GetResourceVersion() != rv {
			t.Errorf("pod %s at resourceVersion %d, others at %d: not one entry", m.GetName(), m.GetResourceVersion(), rv)
		}
		// Defaults as a single create sets them.
		if stored[i].GetPod().GetSpec().GetRestartPolicy() == "" {
			t.Errorf("pod %s not defaulted: %v", m.GetName(), stored[i].GetPod().GetSpec())
		}
	}
	if codesOf(errs[20]) != codes.InvalidArgument {
		t.Errorf("invalid name: %v, want InvalidArgument", errs[20])
	}
	if codesOf(errs[21]) != codes.AlreadyExists {
		t.Errorf("taken name: %v, want AlreadyExists", errs[21])
	}

	ops := []*pb.DeleteOp{
		{Kind: "Pod", Namespace: "default", Name: "p00"},
		{Kind: "Pod", Namespace: "default", Name: "p01", Uid: "wrong"},
		{Kind: "Pod", Namespace: "default", Name: "missing"},
		{Kind: "Nope", Name: "x"},
	}
	derrs := controllers.DeleteMany(ctx, lc, ops)
	want := []codes.Code{codes.OK, codes.Aborted, codes.NotFound, codes.InvalidArgument}
	for i, err := range derrs {
		if codesOf(err) != want[i] {
			t.Errorf("delete %s: %v, want %v", ops[i].GetName(), err, want[i])
		}
	}
	if _, err := ts.srv.fsm.Get("Pod", "default", "p00"); err == nil {
		t.Error("p00 not deleted")
	}
}

func codesOf(err error) codes.Code { return status.Code(err) }

// A batch larger than maxBatchEntryBytes goes as several entries, each
// within it: raft sends up to maxAppendEntries entries per AppendEntries
// and caches them, so an entry's size bounds those too.
func TestLocalClusterBatchSplitsBySize(t *testing.T) {
	t.Parallel()
	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	ctx := ctxT(t, 20*time.Second)
	lc := localCluster{ts.srv}

	const each = maxBatchEntryBytes / 5 // five fit in an entry, not six
	var objs []*pb.Object
	for i := range 12 {
		objs = append(objs, pb.Wrap(&pb.ConfigMap{
			Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("cm%02d", i), Namespace: "default"},
			Data:     map[string]string{"k": strings.Repeat("x", each-200)},
		}))
	}
	stored, errs := controllers.CreateMany(ctx, lc, objs)
	perEntry := map[uint64]int{}
	for i := range objs {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		perEntry[stored[i].Meta().GetResourceVersion()]++
	}
	if len(perEntry) != 3 {
		t.Fatalf("12 objects of %d bytes went as %d entries (%v), want 3 of at most 5", each, len(perEntry), perEntry)
	}
	for rv, n := range perEntry {
		if n > 5 {
			t.Errorf("entry %d holds %d objects of %d bytes: over %d bytes", rv, n, each, maxBatchEntryBytes)
		}
	}
}
