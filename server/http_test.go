package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// httpGet fetches url with hc and returns the status code and body.
func httpGet(t *testing.T, hc *http.Client, url, bearerToken string) (int, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+bearerToken)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// httpsClient connects with cfg; each client has its own connections, so
// every one of them makes a fresh handshake.
func httpsClient(t *testing.T, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestHTTPSEndpoint runs one secure master and checks its --http-addr:
// HTTPS (TLS 1.3) with the master's certificate, anonymous health checks,
// and /metrics only for an authenticated caller.
func TestHTTPSEndpoint(t *testing.T) {
	cfgs, token := secureConfigs(t, 1, 1)
	cfgs[0].EnablePprof = true
	m := startServer(t, cfgs[0])
	waitLeader(t, []*testServer{m})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const viewerTok = "view01.0123456789abcdefghijklmnopqrstuv"
	admin := m.cluster()
	if _, err := admin.Create(ctx, &pb.WriteRequest{Object: pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: TokenNamespace}})}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Create(ctx, &pb.WriteRequest{Object: tokenSecret("view01", "0123456789abcdefghijklmnopqrstuv", RoleViewer, "metrics", time.Now().Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}

	_, ca := tokenCA(t, token)
	base := "https://" + m.srv.HTTPAddr()
	anon := httpsClient(t, pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster))

	t.Run("health checks are anonymous", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			eventually(t, 10*time.Second, path, func() error {
				code, body, err := httpGet(t, anon, base+path, "")
				if err != nil || code != http.StatusOK || body != "ok\n" {
					return fmt.Errorf("GET %s: %d %q %v", path, code, body, err)
				}
				return nil
			})
		}
	})
	t.Run("anonymous metrics refused", func(t *testing.T) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "Authorization: Bearer <token>") ||
			!strings.Contains(string(body), "client certificate signed by the cluster CA") || strings.Contains(string(body), "skiff_") {
			t.Fatalf("anonymous /metrics: %d %q", resp.StatusCode, body)
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("viewer token", func(t *testing.T) {
		code, body, err := httpGet(t, anon, base+"/metrics", viewerTok)
		if err != nil || code != http.StatusOK || !strings.Contains(body, "skiff_raft_commit_index") {
			t.Fatalf("/metrics with a viewer token: %d %v\n%.300s", code, err, body)
		}
		code, body, err = httpGet(t, anon, base+"/metrics", "view01.0123456789abcdefghijklmnopqrstux")
		if err != nil || code != http.StatusUnauthorized || !strings.Contains(body, `unknown token "view01"`) {
			t.Fatalf("/metrics with a wrong secret: %d %q %v", code, body, err)
		}
	})
	t.Run("client certificates", func(t *testing.T) {
		for _, tc := range []struct {
			cn, org string
			want    int
		}{
			{pki.AdminCNPrefix + "test", pki.OrgAdmin, http.StatusOK},
			{pki.NodeCNPrefix + "w1", pki.OrgNode, http.StatusOK},
			{"someone", "nobody", http.StatusForbidden},
		} {
			hc := httpsClient(t, pki.ClientConfig(ca.Pool(), issueFrom(t, ca, tc.cn, tc.org), pki.MasterServerName, pki.OrgMaster))
			code, body, err := httpGet(t, hc, base+"/metrics", "")
			if err != nil || code != tc.want || (code == http.StatusOK) != strings.Contains(body, "skiff_") {
				t.Errorf("/metrics as %s (O=%s): %d %v, want %d\n%.300s", tc.cn, tc.org, code, err, tc.want, body)
			}
		}
	})
	t.Run("profiler for admins only", func(t *testing.T) {
		const path = "/debug/pprof/cmdline"
		admin := httpsClient(t, pki.ClientConfig(ca.Pool(), issueFrom(t, ca, pki.AdminCNPrefix+"prof", pki.OrgAdmin), pki.MasterServerName, pki.OrgMaster))
		code, body, err := httpGet(t, admin, base+path, "")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "server.test") {
			t.Fatalf("%s as an admin: %d %v %q", path, code, err, body)
		}
		node := httpsClient(t, pki.ClientConfig(ca.Pool(), issueFrom(t, ca, pki.NodeCNPrefix+"w1", pki.OrgNode), pki.MasterServerName, pki.OrgMaster))
		if code, body, err := httpGet(t, node, base+path, ""); err != nil || code != http.StatusForbidden || !strings.Contains(body, "needs the admin role") {
			t.Fatalf("%s as a node: %d %v %q", path, code, err, body)
		}
		if code, body, err := httpGet(t, anon, base+path, viewerTok); err != nil || code != http.StatusForbidden {
			t.Fatalf("%s with a viewer token: %d %v %q", path, code, err, body)
		}
		if code, _, err := httpGet(t, anon, base+path, ""); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("%s anonymous: %d %v", path, code, err)
		}
	})
	t.Run("certificate from another CA refused", func(t *testing.T) {
		other, err := pki.GenerateToken()
		if err != nil {
			t.Fatal(err)
		}
		oca, err := other.CA()
		if err != nil {
			t.Fatal(err)
		}
		hc := httpsClient(t, pki.ClientConfig(ca.Pool(), issueFrom(t, oca, pki.AdminCNPrefix+"intruder", pki.OrgAdmin), pki.MasterServerName, pki.OrgMaster))
		if code, body, err := httpGet(t, hc, base+"/metrics", ""); err == nil {
			t.Fatalf("a certificate from another CA was served: %d %.200s", code, body)
		}
		// Nor does a bearer token help a connection that presents one.
		if code, _, err := httpGet(t, hc, base+"/healthz", viewerTok); err == nil {
			t.Fatalf("a certificate from another CA got /healthz: %d", code)
		}
	})
	t.Run("plain HTTP refused", func(t *testing.T) {
		code, body, err := httpGet(t, &http.Client{}, "http://"+m.srv.HTTPAddr()+"/metrics", viewerTok)
		// net/http answers a plaintext request on a TLS port with a 400
		// that says so; either way no metrics.
		if err == nil && (code != http.StatusBadRequest || strings.Contains(body, "skiff_")) {
			t.Fatalf("plain HTTP to the TLS port: %d %.200s", code, body)
		}
	})
	t.Run("TLS 1.3 only", func(t *testing.T) {
		cfg := pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if code, _, err := httpGet(t, httpsClient(t, cfg), base+"/healthz", ""); err == nil {
			t.Fatalf("a TLS 1.2 client was served: %d", code)
		}
	})
	t.Run("renewed certificate served", func(t *testing.T) {
		c, err := m.srv.tls.issue()
		if err != nil {
			t.Fatal(err)
		}
		m.srv.tls.cert.Store(c)
		conn, err := tls.Dial("tcp", m.srv.HTTPAddr(), pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		got := conn.ConnectionState().PeerCertificates[0]
		if want := m.srv.tls.cert.Leaf(); got.SerialNumber.Cmp(want.SerialNumber) != 0 {
			t.Fatalf("HTTPS serves certificate %s after the renewal to %s", got.SerialNumber, want.SerialNumber)
		}
	})
}

// TestHTTPInsecure: a master run with --insecure keeps plain HTTP, and
// /metrics needs no credential there.
func TestHTTPInsecure(t *testing.T) {
	cfg := testConfigs(t, 1, 1)[0]
	cfg.DataDir = filepath.Join(t.TempDir(), "m1")
	m := startServer(t, cfg)
	waitLeader(t, []*testServer{m})
	eventually(t, 10*time.Second, "/metrics over plain HTTP", func() error {
		code, body, err := httpGet(t, &http.Client{}, "http://"+m.srv.HTTPAddr()+"/metrics", "")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "skiff_raft_commit_index") {
			return fmt.Errorf("%d %v %.200s", code, err, body)
		}
		return nil
	})
	// No TLS on this port.
	cfgTLS := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // only checks that no TLS is spoken
	if code, _, err := httpGet(t, httpsClient(t, cfgTLS), "https://"+m.srv.HTTPAddr()+"/healthz", ""); err == nil {
		t.Fatalf("an insecure master answered HTTPS: %d", code)
	}
}

// TestPprofOffByDefault: without --enable-pprof a master serves no profiler,
// even with --insecure.
func TestPprofOffByDefault(t *testing.T) {
	t.Parallel()
	m := startServer(t, testConfigs(t, 1, 1)[0])
	waitLeader(t, []*testServer{m})
	code, body, err := httpGet(t, &http.Client{}, "http://"+m.srv.HTTPAddr()+"/debug/pprof/", "")
	if err != nil || code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ without EnablePprof: %d %v %.200s", code, err, body)
	}
}
