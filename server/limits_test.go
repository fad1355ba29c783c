package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/skiff-sh/skiff/proto"
)

// A List may return far more than one object's size limit: three objects
// near the limit come back in one response.
func TestListLargerThanObjectLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, singleConfig(t))
	waitLeader(t, []*testServer{ts})
	big := strings.Repeat("x", pb.MaxObjectBytes-4096)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := ts.cluster().Create(ctxT(t, 10*time.Second), &pb.WriteRequest{Object: configMap(name, map[string]string{"data": big})}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	resp, err := ts.cluster().List(ctxT(t, 10*time.Second), &pb.ListRequest{Kind: "ConfigMap", Namespace: "default"},
		grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil {
		t.Fatalf("list of 3 large objects: %v", err)
	}
	if n := len(resp.GetItems()); n != 3 {
		t.Errorf("listed %d objects, want 3", n)
	}
}
