package server

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/skiff-sh/skiff/proto"
)

// TestWritesNameTheLeader: a write's answer names the leader's API address
// (pb.LeaderHeader), whether the leader answered it or a follower
// forwarded it, so clients can send their next writes to the leader.
func TestWritesNameTheLeader(t *testing.T) {
	servers := startCluster(t, testConfigs(t, 3, 3))
	leader := waitLeader(t, servers)
	ctx := ctxT(t, 30*time.Second)
	for i, ts := range servers {
		var md metadata.MD
		_, err := ts.cluster().Create(ctx, &pb.WriteRequest{Object: configMap("c"+ts.cfg.Name, nil)}, grpc.Header(&md))
		if err != nil {
			t.Fatalf("create on %s: %v", ts.cfg.Name, err)
		}
		if got := md.Get(pb.LeaderHeader); len(got) != 1 || got[0] != leader.srv.APIAddr() {
			t.Fatalf("write %d on %s: %s = %q, want the leader's %q", i, ts.cfg.Name, pb.LeaderHeader, got, leader.srv.APIAddr())
		}
	}
}
