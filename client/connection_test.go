package client

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

	"github.com/skiff-sh/skiff/pki"
)

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
	ca, cert := masterCert(t, tok)
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

func TestResolveSecurityToken(t *testing.T) {
	tok, err := pki.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tok.CA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	t.Setenv("SKIFF_CONFIG", cfgPath)
	t.Setenv(EnvTokenFile, "")
	t.Setenv(EnvToken, "")
	if err := WriteConfig(cfgPath, ConfigFile{Servers: []string{"127.0.0.1:1"}, Token: "abcdef.0123456789abcdefghijklmnopqrstuv", CA: string(pki.CertPEM(ca.DER))}); err != nil {
		t.Fatal(err)
	}
	sec, err := resolveSecurity("", "", "", false)
	if err != nil || sec.token != "abcdef.0123456789abcdefghijklmnopqrstuv" || len(sec.caPEM) == 0 || sec.tokenFile != "" {
		t.Fatalf("from the config: %+v %v", sec, err)
	}
	tlsCfg, creds, err := TokenTLS(sec.caPEM, sec.token)
	if err != nil || tlsCfg.GetClientCertificate != nil || !creds.RequireTransportSecurity() {
		t.Fatalf("TokenTLS: %v", err)
	}
	md, _ := creds.GetRequestMetadata(context.Background())
	if md["authorization"] != "Bearer abcdef.0123456789abcdefghijklmnopqrstuv" {
		t.Fatalf("metadata %v", md)
	}
	// The flag wins over the config; without a CA it says where to get one.
	if err := WriteConfig(cfgPath, ConfigFile{Servers: []string{"127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveSecurity("", "zzzzzz.0123456789abcdefghijklmnopqrstuv", "", false); err == nil || !strings.Contains(err.Error(), "--ca-file") {
		t.Fatalf("token without a CA: %v", err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pki.CertPEM(ca.DER), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvToken, "envtok.0123456789abcdefghijklmnopqrstuv")
	sec, err = resolveSecurity("", "", caFile, false)
	if err != nil || sec.token != "envtok.0123456789abcdefghijklmnopqrstuv" || len(sec.caPEM) == 0 {
		t.Fatalf("from $%s: %+v %v", EnvToken, sec, err)
	}
	if _, _, err := TokenTLS([]byte("not pem"), "x"); err == nil {
		t.Fatal("a CA without PEM was accepted")
	}
}

func TestResolveServers(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/config.yaml"
	t.Setenv("SKIFF_CONFIG", path)
	t.Setenv(EnvServer, "")
	if s, err := resolveServers(""); err != nil || len(s) != 0 {
		t.Fatalf("no config: %v %v", s, err)
	}
	if err := WriteConfig(path, ConfigFile{Servers: []string{"127.0.0.1:1", "127.0.0.1:2"}}); err != nil {
		t.Fatal(err)
	}
	if s, err := resolveServers(""); err != nil || len(s) != 2 {
		t.Fatalf("from config: %v %v", s, err)
	}
	t.Setenv(EnvServer, "127.0.0.1:3")
	if s, _ := resolveServers(""); len(s) != 1 || s[0] != "127.0.0.1:3" {
		t.Fatalf("env should win over config: %v", s)
	}
	if s, _ := resolveServers("127.0.0.1:4, 127.0.0.1:5"); len(s) != 2 || s[1] != "127.0.0.1:5" {
		t.Fatalf("flag should win: %v", s)
	}
}
