package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// secureConfigs is testConfigs with a shared cluster token (created by the
// first master to start).
func secureConfigs(t *testing.T, n, expect int) ([]Config, string) {
	t.Helper()
	token := filepath.Join(t.TempDir(), "token")
	cfgs := testConfigs(t, n, expect)
	for i := range cfgs {
		cfgs[i].Insecure, cfgs[i].TokenFile = false, token
	}
	return cfgs, token
}

// issueFrom issues a client certificate from the CA of the token in file.
func issueFrom(t *testing.T, ca *pki.CA, cn, org string) *pki.Reloader {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueKeyPair(key, pki.Leaf{CommonName: cn, Organization: org, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return pki.NewReloader(c)
}

func tokenCA(t *testing.T, file string) (pki.Token, *pki.CA) {
	t.Helper()
	tok, err := pki.ReadTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tok.CA()
	if err != nil {
		t.Fatal(err)
	}
	return tok, ca
}

// adminCredentials are an operator's: an admin certificate signed locally
// with the CA derived from the token, as the CLI does.
func adminCredentials(t *testing.T, file string) credentials.TransportCredentials {
	t.Helper()
	_, ca := tokenCA(t, file)
	return credentials.NewTLS(pki.ClientConfig(ca.Pool(), issueFrom(t, ca, pki.AdminCNPrefix+"test", pki.OrgAdmin), pki.MasterServerName, pki.OrgMaster))
}

func dialWith(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestSecureCluster(t *testing.T) {
	cfgs, token := secureConfigs(t, 3, 3)
	for i := range cfgs {
		cfgs[i].CertLifetime = 4 * time.Second
	}
	// The first master creates the token; the others read it.
	servers := []*testServer{startServer(t, cfgs[0])}
	if st, err := os.Stat(token); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	servers = append(servers, startServer(t, cfgs[1]), startServer(t, cfgs[2]))
	leader := waitLeader(t, servers)
	var follower *testServer
	for _, s := range servers {
		if s != leader {
			follower = s
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A write through a follower is forwarded to the leader over TLS and
	// replicated over the TLS raft transport.
	if _, err := follower.cluster().Create(ctx, &pb.WriteRequest{Object: configMap("secure", nil)}); err != nil {
		t.Fatalf("create through a follower: %v", err)
	}

	tok, ca := tokenCA(t, token)
	get := func(conn *grpc.ClientConn) error {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := pb.NewClusterClient(conn).Get(cctx, &pb.GetRequest{Kind: "ConfigMap", Namespace: "default", Name: "secure"})
		return err
	}
	addr := follower.srv.APIAddr()
	t.Run("plaintext refused", func(t *testing.T) {
		if err := get(dialWith(t, addr, insecure.NewCredentials())); err == nil {
			t.Fatal("a plaintext client was served")
		}
	})
	t.Run("certificate from another CA refused", func(t *testing.T) {
		other, err := pki.GenerateToken()
		if err != nil {
			t.Fatal(err)
		}
		oca, _ := other.CA()
		foreign := pki.ClientConfig(ca.Pool(), issueFrom(t, oca, "admin:mallory", pki.OrgAdmin), pki.MasterServerName)
		if err := get(dialWith(t, addr, credentials.NewTLS(foreign))); err == nil {
			t.Fatal("a client certificate from another CA was accepted")
		}
	})
	noCert := dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster)))
	t.Run("no client certificate", func(t *testing.T) {
		err := get(noCert)
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "client certificate signed by the cluster CA is required") {
			t.Fatalf("got %v, want Unauthenticated naming the certificate", err)
		}
	})

	key, _ := pki.NewKey()
	csr, err := pki.NewCSR(key, "w1")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(conn *grpc.ClientConn, cred, node string) (*pb.IssueNodeCertificateResponse, error) {
		cctx := ctx
		if cred != "" {
			cctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
		}
		return pb.NewClusterClient(conn).IssueNodeCertificate(cctx, &pb.IssueNodeCertificateRequest{NodeName: node, Csr: csr})
	}
	if _, err := issue(noCert, "wrong", "w1"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a wrong join credential: %v, want Unauthenticated", err)
	}
	resp, err := issue(noCert, tok.JoinCredential(), "w1")
	if err != nil {
		t.Fatalf("join with the token's credential: %v", err)
	}
	nodeCert, err := pki.KeyPair(resp.GetCertificate(), key)
	if err != nil {
		t.Fatal(err)
	}
	if nodeCert.Leaf.Subject.CommonName != "system:node:w1" || !pki.HasOrg(nodeCert.Leaf, pki.OrgNode) {
		t.Fatalf("node certificate subject %v", nodeCert.Leaf.Subject)
	}
	asNode := dialWith(t, addr, credentials.NewTLS(pki.ClientConfig(ca.Pool(), pki.NewReloader(nodeCert), pki.MasterServerName, pki.OrgMaster)))
	if _, err := issue(asNode, "", "w1"); err != nil {
		t.Fatalf("renewal with the node's own certificate: %v", err)
	}
	if _, err := issue(asNode, "", "w2"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a node asking for another node's certificate: %v, want PermissionDenied", err)
	}

	// Masters rotate their own certificates in-process (lifetime 4s:
	// renewed after about 2.7s) and keep working.
	first := leader.srv.tls.cert.Leaf().SerialNumber
	eventually(t, 20*time.Second, "master certificate renewed", func() error {
		if leader.srv.tls.cert.Leaf().SerialNumber.Cmp(first) == 0 {
			return errors.New("still the first certificate")
		}
		return nil
	})
	eventually(t, 20*time.Second, "cluster serves after rotation", func() error {
		_, err := follower.cluster().Apply(ctx, &pb.WriteRequest{Object: configMap("after-rotation", nil)})
		return err
	})
	// A fresh connection after the first certificate expired handshakes with
	// the renewed one.
	eventually(t, 20*time.Second, "new connection after expiry", func() error {
		return get(dialWith(t, addr, adminCredentials(t, token)))
	})
}

func TestTokenPinMismatch(t *testing.T) {
	cfgs, token := secureConfigs(t, 1, 1)
	tok, err := pki.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	tok.CAHash[0] ^= 1
	if err := os.WriteFile(token, []byte(tok.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfgs[0]); err == nil || !strings.Contains(err.Error(), "CA hash does not match") {
		t.Fatalf("New with a tampered token: %v", err)
	}
}
