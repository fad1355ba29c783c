package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

func TestSplitUserToken(t *testing.T) {
	id, secret, ok := splitUserToken("abc123.0123456789abcdefghijklmnopqrstuv")
	if !ok || id != "abc123" || secret != "0123456789abcdefghijklmnopqrstuv" {
		t.Fatalf("split: %q %q %v", id, secret, ok)
	}
	for _, bad := range []string{"", "abc123", "abc12.0123456789abcdefghijklmnopqrstuv", "ABC123.0123456789abcdefghijklmnopqrstuv", "abc123.short", "skiff1.x.y"} {
		if _, _, ok := splitUserToken(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSecureAuthorization runs one secure master and calls it with bearer
// tokens of each role and with node certificates.
func TestSecureAuthorization(t *testing.T) {
	cfgs, token := secureConfigs(t, 1, 1)
	audit := filepath.Join(t.TempDir(), "audit.log")
	cfgs[0].AuditLogFile = audit
	m := startServer(t, cfgs[0])
	waitLeader(t, []*testServer{m})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := m.cluster()

	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.Create(ctx, &pb.WriteRequest{Object: pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: TokenNamespace}})}))
	const (
		viewerTok  = "view01.0123456789abcdefghijklmnopqrstuv"
		adminTok   = "admn01.abcdefghijklmnopqrstuv0123456789"
		expiredTok = "expd01.0123456789abcdefghijklmnopqrstuv"
	)
	must(admin.Create(ctx, &pb.WriteRequest{Object: tokenSecret("view01", "0123456789abcdefghijklmnopqrstuv", RoleViewer, "a colleague", time.Now().Add(time.Hour))}))
	must(admin.Create(ctx, &pb.WriteRequest{Object: tokenSecret("admn01", "abcdefghijklmnopqrstuv0123456789", RoleAdmin, "", time.Time{})}))
	must(admin.Create(ctx, &pb.WriteRequest{Object: tokenSecret("ctrl01", "0123456789abcdefghijklmnopqrstuv", RoleController, "", time.Time{})}))
	must(admin.Create(ctx, &pb.WriteRequest{Object: tokenSecret("expd01", "0123456789abcdefghijklmnopqrstuv", RoleViewer, "", time.Now().Add(-time.Minute))}))
	must(admin.Create(ctx, &pb.WriteRequest{Object: pb.Wrap(&pb.Secret{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "db"}, StringData: map[string]string{"password": "hunter2"}})}))
	for _, n := range []string{"w1", "w2"} {
		must(admin.Create(ctx, &pb.WriteRequest{Object: ctlNode(n, "4", nil)}))
	}
	podOn := func(name, node string) *pb.Object {
		return pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Namespace: "default", Name: name},
			Spec: &pb.PodSpec{NodeName: node, Containers: []*pb.Container{{Name: "c", Image: "busybox"}}}})
	}
	must(admin.Create(ctx, &pb.WriteRequest{Object: podOn("web-1", "w1")}))
	must(admin.Create(ctx, &pb.WriteRequest{Object: podOn("web-2", "w2")}))

	_, ca := tokenCA(t, token)
	addr := m.srv.APIAddr()
	noCert := pb.NewClusterClient(dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster))))
	with := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	wantErr := func(err error, code codes.Code, msg string) {
		t.Helper()
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Fatalf("got %v, want %v containing %q", err, code, msg)
		}
	}

	t.Run("viewer", func(t *testing.T) {
		l, err := pb.CollectList(noCert.List(with(viewerTok), &pb.ListRequest{Kind: "Pod", Namespace: "default"}))
		if err != nil || len(l.GetItems()) < 2 {
			t.Fatalf("a viewer lists pods: %v, %d items", err, len(l.GetItems()))
		}
		_, err = noCert.Create(with(viewerTok), &pb.WriteRequest{Object: podOn("p", "")})
		wantErr(err, codes.PermissionDenied, `viewer token "view01" may not create pods "default/p": role viewer is read-only`)
		_, err = noCert.Get(with(viewerTok), &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "db"})
		wantErr(err, codes.PermissionDenied, `viewer token "view01" may not get secrets "default/db": role viewer may not read Secrets`)
		// Watches are authorized when they open.
		w, err := noCert.Watch(with(viewerTok), &pb.WatchRequest{Kind: "Secret"})
		if err == nil {
			_, err = w.Recv()
		}
		wantErr(err, codes.PermissionDenied, "may not watch secrets")
		if _, err := pb.NewOperatorClient(dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster)))).
			Status(with(viewerTok), &pb.StatusRequest{}); err != nil {
			t.Fatalf("a viewer reads the cluster status: %v", err)
		}
	})
	t.Run("admin token", func(t *testing.T) {
		if _, err := noCert.Create(with(adminTok), &pb.WriteRequest{Object: configMap("by-token", nil)}); err != nil {
			t.Fatalf("an admin token creates: %v", err)
		}
		if _, err := noCert.Get(with(adminTok), &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "db"}); err != nil {
			t.Fatalf("an admin token reads a Secret: %v", err)
		}
	})
	t.Run("controller token", func(t *testing.T) {
		const ctrlTok = "ctrl01.0123456789abcdefghijklmnopqrstuv"
		got, err := noCert.Get(with(ctrlTok), &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "db"})
		if err != nil || got.GetObject().GetSecret().GetMetadata().GetName() != "db" || got.GetObject().GetSecret().GetData() != nil {
			t.Fatalf("a controller reads a Secret without its data: %v %v", got, err)
		}
		if _, err := noCert.Create(with(ctrlTok), &pb.WriteRequest{Object: podOn("made-by-controller", "")}); err != nil {
			t.Fatalf("a controller creates a pod: %v", err)
		}
		_, err = noCert.Create(with(ctrlTok), &pb.WriteRequest{Object: pb.Wrap(&pb.Secret{Metadata: &pb.ObjectMeta{Namespace: "default", Name: "x"}})})
		wantErr(err, codes.PermissionDenied, `controller token "ctrl01" may not create secrets "default/x": role controller writes only workload kinds`)
	})
	t.Run("bad tokens", func(t *testing.T) {
		_, err := pb.CollectList(noCert.List(with(expiredTok), &pb.ListRequest{Kind: "Pod"}))
		wantErr(err, codes.Unauthenticated, `token "expd01" expired at`)
		_, err = pb.CollectList(noCert.List(with("nope01.0123456789abcdefghijklmnopqrstuv"), &pb.ListRequest{Kind: "Pod"}))
		wantErr(err, codes.Unauthenticated, `unknown token "nope01"`)
		_, err = pb.CollectList(noCert.List(with("view01.0123456789abcdefghijklmnopqrstux"), &pb.ListRequest{Kind: "Pod"}))
		wantErr(err, codes.Unauthenticated, `unknown token "view01"`)
		_, err = pb.CollectList(noCert.List(with("garbage"), &pb.ListRequest{Kind: "Pod"}))
		wantErr(err, codes.Unauthenticated, "malformed")
		_, err = pb.CollectList(noCert.List(ctx, &pb.ListRequest{Kind: "Pod"}))
		wantErr(err, codes.Unauthenticated, "is required, or a bearer token")
	})
	t.Run("node restriction", func(t *testing.T) {
		w1 := pb.NewClusterClient(dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(),
			issueFrom(t, ca, pki.NodeCNPrefix+"w1", pki.OrgNode), pki.MasterServerName, pki.OrgMaster))))
		_, err := w1.UpdateStatus(ctx, &pb.WriteRequest{Object: ctlNode("w2", "4", nil)})
		wantErr(err, codes.PermissionDenied, `node "w1" may not updateStatus nodes "w2": a node may only write its own Node object`)
		pod := podOn("web-2", "w2")
		pod.GetPod().Status = &pb.PodStatus{Phase: "Running"}
		_, err = w1.UpdateStatus(ctx, &pb.WriteRequest{Object: pod})
		wantErr(err, codes.PermissionDenied, `node "w1" may not updateStatus pods "default/web-2": the pod is bound to node "w2"`)
		_, err = w1.Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "Pod", Namespace: "default", Name: "web-2"}})
		wantErr(err, codes.PermissionDenied, `the pod is bound to node "w2"`)
		_, err = w1.Get(ctx, &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "db"})
		wantErr(err, codes.PermissionDenied, `no pod bound to node "w1" references it`)
		if _, err := w1.UpdateStatus(ctx, &pb.WriteRequest{Object: ctlNode("w1", "8", nil)}); err != nil {
			t.Fatalf("w1 updates its own Node: %v", err)
		}
		own := podOn("web-1", "w1")
		own.GetPod().Status = &pb.PodStatus{Phase: "Running"}
		if _, err := w1.UpdateStatus(ctx, &pb.WriteRequest{Object: own}); err != nil {
			t.Fatalf("w1 updates the status of its pod: %v", err)
		}
		if _, err := pb.CollectList(w1.List(ctx, &pb.ListRequest{Kind: "Pod", FieldSelector: "spec.nodeName=w1"})); err != nil {
			t.Fatalf("w1 lists its pods: %v", err)
		}
	})
	t.Run("audit names the token", func(t *testing.T) {
		data, err := os.ReadFile(audit)
		if err != nil {
			t.Fatal(err)
		}
		var denied, created bool
		for _, line := range strings.Split(string(data), "\n") {
			denied = denied || strings.Contains(line, `"caller":"token:view01"`) && strings.Contains(line, `"code":"PermissionDenied"`)
			created = created || strings.Contains(line, `"caller":"token:admn01"`) && strings.Contains(line, `"name":"by-token"`)
		}
		if !denied || !created {
			t.Fatalf("audit log lacks the token callers (denied %v, created %v):\n%s", denied, created, data)
		}
	})
}

// tokenSecret builds the stored form of a token as skiff token create does (cli/token.go).
func tokenSecret(id, secret, role, description string, expires time.Time) *pb.Object {
	data := map[string][]byte{
		TokenKeyHash: []byte(HashTokenSecret(secret)),
		TokenKeyRole: []byte(role),
	}
	if !expires.IsZero() {
		data[TokenKeyExpires] = []byte(expires.UTC().Format(time.RFC3339))
	}
	if description != "" {
		data[TokenKeyDescription] = []byte(description)
	}
	return pb.Wrap(&pb.Secret{ApiVersion: "v1", Kind: "Secret",
		Metadata: &pb.ObjectMeta{Namespace: TokenNamespace, Name: TokenSecretPrefix + id},
		Type:     TokenSecretType, Data: data})
}
