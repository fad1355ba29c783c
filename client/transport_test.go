package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

type fakeOperator struct {
	pb.UnimplementedOperatorServer
}

func (fakeOperator) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Leader: "m1"}, nil
}

// masterCert derives tok's cluster CA and issues it a master's serving
// certificate, as a master makes its own.
func masterCert(t *testing.T, tok pki.Token) (*pki.CA, tls.Certificate) {
	t.Helper()
	ca, err := tok.CA()
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueKeyPair(key, pki.Leaf{CommonName: pki.MasterCNPrefix + "m1", Organization: pki.OrgMaster,
		DNSNames: []string{pki.MasterServerName}, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return ca, cert
}

// serveOperator serves Operator.Status on loopback, over TLS with a
// master certificate of a fresh cluster when secure; it returns the
// address and the client TLS configuration that trusts it.
func serveOperator(t *testing.T, secure bool) (string, *tls.Config) {
	t.Helper()
	tok, err := pki.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	ca, cert := masterCert(t, tok)
	r := pki.NewReloader(cert)
	var opts []grpc.ServerOption
	if secure {
		opts = append(opts, grpc.Creds(credentials.NewTLS(pki.ServerConfig(ca.Pool(), r, tls.VerifyClientCertIfGiven))))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	pb.RegisterOperatorServer(g, fakeOperator{})
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String(), pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster)
}

// A client whose TLS setting differs from the master's fails at once with
// an error that says which side speaks TLS, instead of retrying until
// RetryFor ends with "cannot connect"; matching settings work, and a
// master that is down is not mistaken for a mismatch.
func TestTransportMismatch(t *testing.T) {
	tlsAddr, tlsCfg := serveOperator(t, true)
	plainAddr, _ := serveOperator(t, false)
	down := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()

	for _, tc := range []struct {
		name      string
		addr      string
		tls       *tls.Config
		mismatch  bool
		serverTLS bool
		want      string
	}{
		{name: "plaintext client, TLS master", addr: tlsAddr, mismatch: true, serverTLS: true, want: "serves TLS, but this client connects in plaintext"},
		{name: "TLS client, plaintext master", addr: plainAddr, tls: tlsCfg, mismatch: true, want: "serves plaintext (it runs with --insecure), but this client connects with TLS"},
		{name: "TLS both", addr: tlsAddr, tls: tlsCfg},
		{name: "plaintext both", addr: plainAddr},
		{name: "plaintext client, master down", addr: down},
		{name: "TLS client, master down", addr: down, tls: tlsCfg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Servers = []string{tc.addr}
			cfg.TLS = tc.tls
			// Long enough that only the mismatch check ends a mismatched
			// call before ctx does.
			cfg.RetryFor = time.Minute
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			timeout := 30 * time.Second
			if tc.addr == down {
				timeout = 2 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			st, err := c.Status(ctx)
			var mm *TransportMismatchError
			switch {
			case tc.mismatch:
				if !errors.Is(err, ErrTransportMismatch) || !errors.As(err, &mm) {
					t.Fatalf("Status: %v, want a TransportMismatchError", err)
				}
				if mm.ServerTLS != tc.serverTLS || mm.Server != tc.addr || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %+v (%q), want ServerTLS %v, Server %s, containing %q", mm, err, tc.serverTLS, tc.addr, tc.want)
				}
			case tc.addr == down:
				if err == nil || errors.Is(err, ErrTransportMismatch) {
					t.Fatalf("Status of a master that is down: %v, want a plain connection failure", err)
				}
			default:
				if err != nil || st.GetLeader() != "m1" {
					t.Fatalf("Status: %v, %v", st, err)
				}
			}
		})
	}
}
