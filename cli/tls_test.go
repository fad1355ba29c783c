package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
)

// The client's TLS mismatch becomes a message in terms of the CLI's flags,
// whether a command returns the error as is or through apiError.
func TestTransportHint(t *testing.T) {
	toTLS := fmt.Errorf("list pods: %w", &client.TransportMismatchError{Server: "10.0.0.1:7001", ServerTLS: true})
	toPlain := &client.TransportMismatchError{Server: "10.0.0.1:7001"}
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{toTLS, []string{"the cluster uses TLS", "10.0.0.1:7001", "drop --insecure", "--token-file", "skiff token show", "--ca-file"}},
		{toPlain, []string{"master 10.0.0.1:7001 runs with --insecure", "pass --insecure"}},
	} {
		for _, msg := range []string{transportHint(tc.err), errMessage(tc.err), apiError(tc.err).Error()} {
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		}
	}
	if h := transportHint(status.Error(codes.Unavailable, "cannot connect")); h != "" {
		t.Errorf("hint for another error: %q", h)
	}
	if h := transportHint(errors.New("x")); h != "" {
		t.Errorf("hint for another error: %q", h)
	}
}

// Connection resolves like the CLI and builds clients for the masters' HTTP
// endpoints: HTTPS that trusts only the cluster CA and sends the bearer
// token, or plain HTTP with Insecure.
func TestConnectionHTTPClient(t *testing.T) {
	for _, env := range []string{EnvServer, EnvTokenFile, EnvToken} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	t.Setenv("SKIFF_CONFIG", filepath.Join(dir, "none.yaml"))
	tokenFile := filepath.Join(dir, "token")
	tok, _, err := pki.LoadOrCreateTokenFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
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
	// A stand-in for a master's HTTPS endpoint: it says what credential
	// each request came with.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var certs []string
		for _, c := range r.TLS.PeerCertificates {
			certs = append(certs, c.Subject.CommonName)
		}
		fmt.Fprintf(w, "auth=%q certs=%v", r.Header.Get("Authorization"), certs)
	}))
	srv.TLS = pki.ServerConfig(ca.Pool(), pki.NewReloader(cert), tls.VerifyClientCertIfGiven)
	srv.StartTLS()
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "https://")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pki.CertPEM(ca.DER), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const bearer = "abcdef.0123456789abcdefghijklmnopqrstuv"
	for _, tc := range []struct {
		name string
		conn Connection
		want string
	}{
		{"token file", Connection{TokenFile: tokenFile}, `auth="" certs=[` + pki.AdminCNPrefix},
		{"bearer token", Connection{Token: bearer, CAFile: caFile}, `auth="Bearer ` + bearer + `" certs=[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc, err := tc.conn.HTTPClient()
			if err != nil || hc.Scheme != "https" {
				t.Fatalf("HTTPClient: %+v %v", hc, err)
			}
			body, err := hc.Get(ctx, hostPort, "/metrics")
			if err != nil || !strings.HasPrefix(string(body), tc.want) {
				t.Fatalf("GET: %q %v, want a body starting with %q", body, err, tc.want)
			}
		})
	}
	plain, err := Connection{Insecure: true}.HTTPClient()
	if err != nil || plain.Scheme != "http" {
		t.Fatalf("insecure HTTPClient: %+v %v", plain, err)
	}
	if _, err := (Connection{}).HTTPClient(); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("no credentials: %v", err)
	}
	// A server certificate from another cluster is refused.
	if _, _, err := pki.LoadOrCreateTokenFile(filepath.Join(dir, "other")); err != nil {
		t.Fatal(err)
	}
	hc, err := Connection{TokenFile: filepath.Join(dir, "other")}.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	if body, err := hc.Get(ctx, hostPort, "/metrics"); err == nil {
		t.Fatalf("a master of another cluster was trusted: %q", body)
	}
}
