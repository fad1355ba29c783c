package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// writeVia sends one object write (Create, Update or Apply) to c.
func writeVia(ctx context.Context, c pb.ClusterClient, op writeOp, obj *pb.Object, dryRun bool) (*pb.WriteResponse, error) {
	req := &pb.WriteRequest{Object: obj, DryRun: dryRun}
	switch op {
	case opCreate:
		return c.Create(ctx, req)
	case opUpdate:
		return c.Update(ctx, req)
	case opUpdateStatus:
		return c.UpdateStatus(ctx, req)
	default:
		return c.Apply(ctx, req)
	}
}

// TestDryRunRefusesAsTheWrite: a dry run, on the leader or a follower, is
// refused exactly when the real write is, with its code and message, for
// what only the store decides (a missing namespace, a clusterIP another
// Service holds, a uid precondition), and a dry run that passes stores
// nothing and moves no resourceVersion.
func TestDryRunRefusesAsTheWrite(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, testConfigs(t, 3, 3))
	leader := waitLeader(t, servers)
	for _, ts := range servers {
		waitDefaultNamespace(t, ts.cluster())
	}
	follower := followers(servers, leader)[0]
	lc := leader.cluster()
	ctx := ctxT(t, 2*time.Minute)

	if _, err := lc.Create(ctx, &pb.WriteRequest{Object: svcObj("holder", "ClusterIP", "10.96.0.50")}); err != nil {
		t.Fatal(err)
	}
	settings, err := lc.Create(ctx, &pb.WriteRequest{Object: configMap("settings", map[string]string{"a": "1"})})
	if err != nil {
		t.Fatal(err)
	}
	stored := settings.GetObject()
	eventually(t, 20*time.Second, "the follower has the setup", func() error {
		if _, err := follower.srv.FSM().Get("Service", "default", "holder"); err != nil {
			return err
		}
		_, err := follower.srv.FSM().Get("ConfigMap", "default", "settings")
		return err
	})

	elsewhere := configMap("lost", nil)
	elsewhere.Meta().Namespace = "nowhere"
	wrongUID := stored.Clone()
	wrongUID.Meta().Uid = "not-the-uid"
	wrongUID.GetConfigMap().Data = map[string]string{"a": "2"}

	for _, tc := range []struct {
		name string
		ops  []writeOp
		obj  *pb.Object
		code codes.Code
		msg  string
		kind string // of the object that must not be stored ("" for none)
	}{
		{"missing namespace", []writeOp{opCreate, opApply}, elsewhere,
			codes.FailedPrecondition, `namespace "nowhere" not found`, "ConfigMap"},
		{"clusterIP held by another Service", []writeOp{opCreate, opApply}, svcObj("thief", "ClusterIP", "10.96.0.50"),
			codes.InvalidArgument, `spec.clusterIP: Invalid value: "10.96.0.50": provided IP is already allocated`, "Service"},
		{"uid precondition", []writeOp{opUpdate}, wrongUID,
			codes.Aborted, `precondition failed: uid is`, ""},
	} {
		for _, op := range tc.ops {
			t.Run(fmt.Sprintf("%s/%s", tc.name, op), func(t *testing.T) {
				var dry []*status.Status
				for _, ts := range []*testServer{leader, follower} {
					_, err := writeVia(ctx, ts.cluster(), op, tc.obj, true)
					wantStatus(t, err, tc.code, tc.msg)
					dry = append(dry, status.Convert(err))
				}
				_, err := writeVia(ctx, lc, op, tc.obj, false)
				real := status.Convert(err)
				for i, d := range dry {
					if real.Code() != d.Code() || real.Message() != d.Message() {
						t.Fatalf("dry run on master %d refused with %s %q, the write with %s %q", i, d.Code(), d.Message(), real.Code(), real.Message())
					}
				}
				if tc.kind != "" {
					m := tc.obj.Meta()
					if _, err := leader.srv.FSM().Get(tc.kind, m.GetNamespace(), m.GetName()); err == nil {
						t.Fatalf("%s %s was stored", tc.kind, m.Key())
					}
				}
			})
		}
	}

	t.Run("a dry run that passes stores nothing", func(t *testing.T) {
		changed := configMap("settings", map[string]string{"a": "2"})
		for _, ts := range []*testServer{leader, follower} {
			resp, err := ts.cluster().Apply(ctx, &pb.WriteRequest{Object: changed, DryRun: true})
			if err != nil || resp.GetAction() != "configured" || resp.GetObject().GetConfigMap().GetData()["a"] != "2" {
				t.Fatalf("%s: dry apply: %v %v", ts.cfg.Name, resp, err)
			}
			if rv := resp.GetObject().Meta().GetResourceVersion(); rv != stored.Meta().GetResourceVersion() {
				t.Errorf("%s: dry apply answered resourceVersion %d, the object has %d", ts.cfg.Name, rv, stored.Meta().GetResourceVersion())
			}
			resp, err = ts.cluster().Create(ctx, &pb.WriteRequest{Object: configMap("fresh", nil), DryRun: true})
			if err != nil || resp.GetAction() != "created" || resp.GetObject().Meta().GetUid() == "" || resp.GetObject().Meta().GetResourceVersion() != 0 {
				t.Fatalf("%s: dry create: %v %v", ts.cfg.Name, resp, err)
			}
			resp, err = ts.cluster().Create(ctx, &pb.WriteRequest{Object: svcObj("picked", "ClusterIP", ""), DryRun: true})
			if err != nil || resp.GetAction() != "created" || resp.GetObject().GetService().GetSpec().GetClusterIp() == "" {
				t.Fatalf("%s: dry create of a Service: %v %v", ts.cfg.Name, resp, err)
			}
		}
		for _, ts := range []*testServer{leader, follower} {
			got, err := ts.srv.FSM().Get("ConfigMap", "default", "settings")
			if err != nil || got.GetConfigMap().GetData()["a"] != "1" || got.Meta().GetResourceVersion() != stored.Meta().GetResourceVersion() {
				t.Errorf("%s: settings after dry runs: %v %v, want data a=1 at resourceVersion %d", ts.cfg.Name, got, err, stored.Meta().GetResourceVersion())
			}
			for _, k := range [][2]string{{"ConfigMap", "fresh"}, {"Service", "picked"}} {
				if _, err := ts.srv.FSM().Get(k[0], "default", k[1]); err == nil {
					t.Errorf("%s: the dry run stored %s %s", ts.cfg.Name, k[0], k[1])
				}
			}
		}
		// A real write after the dry runs gets the next version as usual.
		resp, err := lc.Apply(ctx, &pb.WriteRequest{Object: changed})
		if err != nil || resp.GetAction() != "configured" || resp.GetObject().Meta().GetResourceVersion() <= stored.Meta().GetResourceVersion() {
			t.Fatalf("real apply: %v %v", resp, err)
		}
	})
}

// TestDryRunEncryptedSecret: with Secrets encrypted at rest, a dry run
// seals the data as the write does (re-applying the same Secret is
// "unchanged", not a change of ciphertext) and answers in plaintext.
func TestDryRunEncryptedSecret(t *testing.T) {
	t.Parallel()
	cfg := singleConfig(t)
	cfg.EncryptionKeyFile = writeKeyFile(t, newKey(t, "k1"))
	ts := startServer(t, cfg)
	waitLeader(t, []*testServer{ts})
	waitDefaultNamespace(t, ts.cluster())
	c := ts.cluster()
	ctx := ctxT(t, time.Minute)

	if _, err := c.Apply(ctx, &pb.WriteRequest{Object: secretObj("creds", map[string]string{"password": "hunter2"}, nil)}); err != nil {
		t.Fatal(err)
	}
	stored, err := ts.srv.FSM().Get("Secret", "default", "creds")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		password, action string
	}{{"hunter2", "unchanged"}, {"swordfish", "configured"}} {
		resp, err := c.Apply(ctx, &pb.WriteRequest{Object: secretObj("creds", map[string]string{"password": tc.password}, nil), DryRun: true})
		if err != nil || resp.GetAction() != tc.action || string(resp.GetObject().GetSecret().GetData()["password"]) != tc.password {
			t.Fatalf("dry apply of password %q: %v %v, want %s in plaintext", tc.password, resp, err, tc.action)
		}
	}
	if now, err := ts.srv.FSM().Get("Secret", "default", "creds"); err != nil || !gproto.Equal(now, stored) {
		t.Fatalf("the dry runs changed the stored Secret: %v %v", now, err)
	}
}
