package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// TestMaxObjectBytesConfigurable checks that Config.MaxObjectBytes, not the
// proto default, decides which writes are stored: a small limit refuses
// objects the default accepts (by create, apply and dry run, with an error
// naming the limit), and a larger one stores objects the default refuses.
func TestMaxObjectBytesConfigurable(t *testing.T) {
	t.Parallel()
	t.Run("smaller", func(t *testing.T) {
		t.Parallel()
		cfg := singleConfig(t)
		cfg.MaxObjectBytes = 16 << 10
		cfg.MaxRecvMsgSize = MaxRecvMsgSizeFor(cfg.MaxObjectBytes)
		ts := startServer(t, cfg)
		waitLeader(t, []*testServer{ts})
		c := ts.cluster()
		ctx := ctxT(t, 20*time.Second)

		if _, err := c.Create(ctx, &pb.WriteRequest{Object: configMap("fits", map[string]string{"k": strings.Repeat("x", 12<<10)})}); err != nil {
			t.Fatalf("12 KiB object under a 16 KiB limit: %v", err)
		}
		big := configMap("big", map[string]string{"k": strings.Repeat("x", 20<<10)})
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"create", func() error { _, err := c.Create(ctx, &pb.WriteRequest{Object: big}); return err }},
			{"apply", func() error { _, err := c.Apply(ctx, &pb.WriteRequest{Object: big}); return err }},
			{"dry run", func() error { _, err := c.Apply(ctx, &pb.WriteRequest{Object: big, DryRun: true}); return err }},
		} {
			err := tc.call()
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "limit of 16384 bytes") ||
				!strings.Contains(err.Error(), "--max-object-bytes") {
				t.Errorf("%s of a 20 KiB object under a 16 KiB limit: %v", tc.name, err)
			}
		}
		if _, err := ts.srv.FSM().Get("ConfigMap", "default", "big"); err == nil {
			t.Error("the oversized object was stored")
		}

		// A status that would take the stored object over the limit is
		// refused, though the request alone is under it.
		pod := pb.Wrap(&pb.Pod{
			Metadata: &pb.ObjectMeta{Name: "p", Namespace: "default", Annotations: map[string]string{"note": strings.Repeat("a", 10<<10)}},
			Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "c", Image: "busybox"}}},
		})
		if _, err := c.Create(ctx, &pb.WriteRequest{Object: pod}); err != nil {
			t.Fatalf("10 KiB pod: %v", err)
		}
		st := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "p", Namespace: "default"}, Status: &pb.PodStatus{Phase: "Running", Message: strings.Repeat("m", 8<<10)}})
		_, err := c.UpdateStatus(ctx, &pb.WriteRequest{Object: st})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "more than MaxObjectBytes (16384)") {
			t.Errorf("status taking a 10 KiB pod over a 16 KiB limit: %v", err)
		}
		if got, err := ts.srv.FSM().Get("Pod", "default", "p"); err != nil || got.GetPod().GetStatus().GetPhase() == "Running" {
			t.Errorf("the oversized status was stored: %v", err)
		}
		st.GetPod().Status.Message = "small"
		if _, err := c.UpdateStatus(ctx, &pb.WriteRequest{Object: st}); err != nil {
			t.Errorf("a small status: %v", err)
		}
	})
	t.Run("larger", func(t *testing.T) {
		t.Parallel()
		cfg := singleConfig(t)
		cfg.MaxObjectBytes = 2 << 20
		cfg.MaxRecvMsgSize = MaxRecvMsgSizeFor(cfg.MaxObjectBytes)
		ts := startServer(t, cfg)
		waitLeader(t, []*testServer{ts})
		ctx := ctxT(t, 20*time.Second)
		// Over proto.MaxObjectBytes, under the configured limit: both the
		// request check and validation must use the configured one.
		obj := configMap("large", map[string]string{"k": strings.Repeat("x", pb.MaxObjectBytes+(100<<10))})
		if _, err := ts.cluster().Create(ctx, &pb.WriteRequest{Object: obj}); err != nil {
			t.Fatalf("1.1 MiB object under a 2 MiB limit: %v", err)
		}
		got, err := ts.srv.FSM().Get("ConfigMap", "default", "large")
		if err != nil || len(got.GetConfigMap().GetData()["k"]) != pb.MaxObjectBytes+(100<<10) {
			t.Fatalf("stored object: %v", err)
		}
	})
}

func TestMaxObjectBytesValidate(t *testing.T) {
	base := DefaultConfig()
	base.Name, base.DataDir = "m1", "/tmp/x"
	base.RaftAddr, base.APIAddr, base.GossipAddr = "127.0.0.1:1", ":2", "127.0.0.1:3"
	base.BootstrapExpect = 1
	base.Insecure = true
	if base.MaxObjectBytes != pb.MaxObjectBytes || base.MaxRecvMsgSize <= base.MaxObjectBytes {
		t.Fatalf("defaults: MaxObjectBytes %d, MaxRecvMsgSize %d", base.MaxObjectBytes, base.MaxRecvMsgSize)
	}
	for _, tc := range []struct {
		name         string
		object, recv int
		field        string // "" for valid
	}{
		{"default", pb.MaxObjectBytes, MaxRecvMsgSizeFor(pb.MaxObjectBytes), ""},
		{"raised", 4 << 20, MaxRecvMsgSizeFor(4 << 20), ""},
		{"zero", 0, MaxRecvMsgSizeFor(0), "MaxObjectBytes"},
		{"too small", 1024, MaxRecvMsgSizeFor(1024), "MaxObjectBytes"},
		{"too large", 64 << 20, MaxRecvMsgSizeFor(64 << 20), "MaxObjectBytes"},
		{"raised without MaxRecvMsgSize", 4 << 20, MaxRecvMsgSizeFor(pb.MaxObjectBytes), "MaxRecvMsgSize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.MaxObjectBytes, c.MaxRecvMsgSize = tc.object, tc.recv
			err := c.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("valid config: %v", err)
			case tc.field != "" && (err == nil || !strings.HasPrefix(err.Error(), "server config: "+tc.field+":")):
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
