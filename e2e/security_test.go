package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
)

// TestSecureCluster runs three masters, a worker and the CLI with a cluster
// token, and checks what transport security promises: the CLI works with the
// token; plaintext and a certificate from another CA are refused; a worker
// with the token gets a node certificate and renews it; a worker with
// another cluster's token neither joins gossip nor gets a certificate.
func TestSecureCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a real worker)")
	}
	// Short certificates so that renewal happens within the test.
	c := startClusterArgs(t, 3, "--cert-lifetime", "9s", "--node-monitor-grace-period", "5s")
	c.waitLeader(60 * time.Second)
	if c.token == "" {
		t.Fatal("the harness did not give the cluster a token")
	}

	if out, err := c.cli("", "cluster", "status"); err != nil {
		t.Fatalf("CLI with the token: %v\n%s", err, out)
	}
	cli := func(args ...string) (string, error) {
		cmd := append([]string{"--server", strings.Join(c.apiAddrs(), ","), "--request-timeout", "5s"}, args...)
		return runSkiff(t, cmd...)
	}
	if out, err := cli("--insecure", "get", "nodes"); err == nil {
		t.Fatalf("a plaintext CLI was served:\n%s", out)
	}
	other := filepath.Join(t.TempDir(), "other-token")
	if _, _, err := pki.LoadOrCreateTokenFile(other); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("--token-file", other, "get", "nodes"); err == nil {
		t.Fatalf("a CLI with another cluster's certificate was served:\n%s", out)
	}
	if out, _ := runSkiff(t, "token", "show", "--token-file", c.token); !strings.HasPrefix(out, "skiff1.") {
		t.Fatalf("token show: %q", out)
	}

	checkViewerToken(t, c)

	start := func(name, token string) (*workerProc, string) {
		dir := t.TempDir()
		var joins []string
		for _, m := range c.masters {
			joins = append(joins, m.gossip)
		}
		cg := fmt.Sprintf("/skiff-e2e-%d-%s", os.Getpid(), name)
		w := &workerProc{t: t, logPath: filepath.Join(dir, name+".log"), args: []string{
			"worker", "--name", name, "--data-dir", filepath.Join(dir, name), "--join", strings.Join(joins, ","),
			"--listen-addr", "127.0.0.1:0", "--heartbeat-interval", "1s", "--cgroup-parent", cg,
			"--log-level", "debug", "--pod-network", "none", "--proxy-mode", "none", "--token-file", token,
		}}
		t.Cleanup(func() {
			w.kill()
			cleanupRuntime(t, filepath.Join(dir, name), cg)
			if t.Failed() {
				t.Logf("---- last log lines of %s ----\n%s", name, tailFile(w.logPath, 60))
			}
		})
		w.start()
		return w, filepath.Join(dir, name, "tls", "cert.pem")
	}
	_, certPath := start("w1", c.token)
	intruder, intruderCert := start("intruder", other)

	var first string
	eventually(t, 60*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !strings.Contains(out, "w1") || !strings.Contains(out, "Ready") {
			return fmt.Errorf("w1 not ready: %v\n%s", err, out)
		}
		data, err := os.ReadFile(certPath)
		if err != nil {
			return err
		}
		first = string(data)
		return nil
	})
	// 9s certificates are renewed after 6s; the node stays Ready on its
	// renewed certificate.
	eventually(t, 30*time.Second, func() error {
		data, err := os.ReadFile(certPath)
		if err != nil {
			return err
		}
		if string(data) == first {
			return errors.New("the node certificate was not renewed yet")
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		out, err := c.cli("", "get", "nodes")
		if err != nil || !strings.Contains(out, "w1") || strings.Contains(out, "NotReady") {
			return fmt.Errorf("w1 not ready after renewal: %v\n%s", err, out)
		}
		return nil
	})

	// By now the intruder has had many join attempts.
	if _, err := os.Stat(intruderCert); err == nil {
		t.Fatal("a worker with another cluster's token got a certificate")
	}
	if out, _ := c.cli("", "get", "nodes"); strings.Contains(out, "intruder") {
		t.Fatalf("a worker with another cluster's token was registered:\n%s", out)
	}
	if log := tailFile(intruder.logPath, 200); strings.Contains(log, "obtained a node certificate") {
		t.Fatalf("intruder log says it got a certificate:\n%s", log)
	}
}

// checkViewerToken creates a viewer token as admin and uses it the way a
// colleague would, from the configuration --print-config prints: reads
// work, writes are refused naming the token and the missing permission, and
// a deleted token stops working.
func checkViewerToken(t *testing.T, c *cluster) {
	t.Helper()
	conf, err := c.cli("", "token", "create", "--role", "viewer", "--ttl", "1h", "--description", "e2e colleague", "--print-config")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, conf)
	}
	var cfg struct {
		Token string `json:"token"`
		CA    string `json:"ca"`
	}
	if err := yaml.Unmarshal([]byte(conf), &cfg); err != nil || cfg.CA == "" || !strings.Contains(cfg.Token, ".") {
		t.Fatalf("token create --print-config printed %q (%v)", conf, err)
	}
	id, _, _ := strings.Cut(cfg.Token, ".")
	path := filepath.Join(t.TempDir(), "colleague.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	as := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(skiffBin, append([]string{"--request-timeout", "10s"}, args...)...)
		cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+path)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := as("", "get", "pods", "-A"); err != nil {
		t.Fatalf("get pods with a viewer token: %v\n%s", err, out)
	}
	manifest := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: by-viewer\n  namespace: default\ndata:\n  a: b\n"
	out, err := as(manifest, "apply", "-f", "-")
	want := fmt.Sprintf(`viewer token %q may not apply configmaps "default/by-viewer": role viewer is read-only`, id)
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("apply with a viewer token: %v\n%s\nwant an error containing %s", err, out, want)
	}
	if out, err := as("", "token", "list"); err == nil {
		t.Fatalf("a viewer listed tokens:\n%s", out)
	}
	if out, err := c.cli("", "token", "list"); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "e2e colleague") {
		t.Fatalf("token list: %v\n%s", err, out)
	}
	if out, err := c.cli("", "token", "delete", id); err != nil {
		t.Fatalf("token delete: %v\n%s", err, out)
	}
	// Followers refuse it once they have applied the deletion.
	eventually(t, 20*time.Second, func() error {
		if out, err := as("", "get", "pods"); err == nil || !strings.Contains(out, "unknown token") {
			return fmt.Errorf("a deleted token still works: %v\n%s", err, out)
		}
		return nil
	})
}

// runSkiff runs the skiff binary without any CLI configuration file.
func runSkiff(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(skiffBin, args...)
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// metricsClient is a client of the masters' --http-addr: HTTPS with an
// admin certificate made from the cluster token file when one is given
// (and not ""), plain HTTP otherwise.
func metricsClient(tokenFile ...string) (*client.HTTPClient, error) {
	if len(tokenFile) > 0 && tokenFile[0] != "" {
		return client.Connection{TokenFile: tokenFile[0]}.HTTPClient()
	}
	return client.Connection{Insecure: true}.HTTPClient()
}

// TestSecurityTransportMismatch runs a TLS cluster and an --insecure one
// (one master each) and checks what a user sees when the two are mixed up,
// and the masters' HTTP endpoint on each: the CLI with --insecure against
// the TLS cluster, and with the token against the insecure one, fails at
// once saying which side uses TLS and what to do; the TLS master serves
// HTTPS with anonymous health checks and /metrics only for a credential,
// the insecure one plain HTTP.
func TestSecurityTransportMismatch(t *testing.T) {
	secure := startCluster(t, 1)
	plain := startClusterWith(t, 1, clusterOptions{insecure: true})
	secure.waitLeader(60 * time.Second)
	plain.waitLeader(60 * time.Second)

	// The request timeout is far longer than the answer should take: a
	// plain "cannot connect" retry loop would end with a deadline instead.
	out, err := runSkiff(t, "--server", secure.masters[0].apiAddr, "--insecure", "--request-timeout", "60s", "get", "nodes")
	for _, want := range []string{"the cluster uses TLS", secure.masters[0].apiAddr, "drop --insecure", "--token-file", "skiff token show"} {
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("skiff --insecure against a TLS cluster: %v\n%s\nwant a message containing %q", err, out, want)
		}
	}
	t.Logf("skiff --insecure against a TLS cluster says: %s", out)
	out, err = runSkiff(t, "--server", plain.masters[0].apiAddr, "--token-file", secure.token, "--request-timeout", "60s", "get", "nodes")
	for _, want := range []string{"runs with --insecure", "pass --insecure"} {
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("skiff --token-file against an --insecure cluster: %v\n%s\nwant a message containing %q", err, out, want)
		}
	}
	t.Logf("skiff --token-file against an --insecure cluster says: %s", out)

	// The TLS master's HTTP endpoint.
	m := secure.masters[0]
	tok, err := pki.ReadTokenFile(secure.token)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tok.CA()
	if err != nil {
		t.Fatal(err)
	}
	anon := client.NewHTTPClient(pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster), "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eventually(t, 20*time.Second, func() error {
		_, err := anon.Get(ctx, m.httpAd, "/readyz")
		return err
	})
	if body, err := anon.Get(ctx, m.httpAd, "/metrics"); err == nil || !strings.Contains(err.Error(), "401") ||
		!strings.Contains(err.Error(), "skiff token create") {
		t.Fatalf("anonymous /metrics: %v\n%.300s", err, body)
	}
	if _, err := scrapeGauge(m.httpAd, "skiff_api_watchers", secure.token); err != nil {
		t.Fatalf("/metrics with the cluster token: %v", err)
	}
	if _, err := scrapeGauge(m.httpAd, "skiff_api_watchers"); err == nil {
		t.Fatal("a TLS master served /metrics over plain HTTP")
	}
	// The insecure master keeps plain HTTP.
	if _, err := scrapeGauge(plain.masters[0].httpAd, "skiff_api_watchers"); err != nil {
		t.Fatalf("/metrics of an --insecure master: %v", err)
	}
}
