package worker

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
)

// adminTLS is an operator's TLS configuration: an admin certificate signed
// with the CA derived from the token, as the CLI makes it.
func adminTLS(t *testing.T, tokenFile string) *tls.Config {
	t.Helper()
	tok, err := pki.ReadTokenFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tok.CA()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	c, err := ca.IssueKeyPair(key, pki.Leaf{CommonName: pki.AdminCNPrefix + "test", Organization: pki.OrgAdmin, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return pki.ClientConfig(ca.Pool(), pki.NewReloader(c), pki.MasterServerName, pki.OrgMaster)
}

// TestNodeCertificateBootstrap: a worker with the token obtains its
// certificate, is registered (the leader calls its node agent over mutual
// TLS), keeps the certificate across a restart, and one with another
// cluster's token gets nowhere.
func TestNodeCertificateBootstrap(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	dir := t.TempDir()
	a := tc.startAgent(t, "w1", withFakes(rt, newFakeProber()), func(c *Config) { c.DataDir = dir })
	eventually(t, 30*time.Second, "a node certificate", func() error {
		if a.Certificate() == nil {
			return errString("none yet")
		}
		return nil
	})
	c := a.Certificate()
	if c.Subject.CommonName != "system:node:w1" || !pki.HasOrg(c, pki.OrgNode) {
		t.Fatalf("certificate subject %v", c.Subject)
	}
	if _, err := os.Stat(filepath.Join(dir, "tls", "cert.pem")); err != nil {
		t.Fatalf("certificate not stored: %v", err)
	}
	tc.waitNodeReady(t, "w1", "True", 30*time.Second)
	a.stop(t)

	// A restart loads the stored certificate before talking to anyone.
	b := tc.startAgent(t, "w1", withFakes(rt, newFakeProber()), func(c *Config) { c.DataDir = dir })
	if got := b.Certificate(); got == nil || got.SerialNumber.Cmp(c.SerialNumber) != 0 {
		t.Fatalf("the restarted worker did not reuse its certificate")
	}

	// Another cluster's token: gossip is encrypted with another key and the
	// CA differs, so the worker neither joins nor gets a certificate.
	other := filepath.Join(t.TempDir(), "token")
	if _, _, err := pki.LoadOrCreateTokenFile(other); err != nil {
		t.Fatal(err)
	}
	x := tc.startAgent(t, "intruder", withFakes(newFakeRuntime(), newFakeProber()), func(c *Config) { c.TokenFile = other })
	// Nothing to wait for here: watch it for 3 s, checking every 100 ms.
	deadline := time.Now().Add(3 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; time.Now().Before(deadline); <-tick.C {
		if x.Certificate() != nil {
			t.Fatal("a worker with another cluster's token got a certificate")
		}
		if n, err := tc.api.Get(ctxFor(t, 2*time.Second), "Node", "", "intruder", client.ReadOptions{}); err == nil {
			t.Fatalf("a worker with another cluster's token was registered: %v", n)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestWorkerTokenConfig(t *testing.T) {
	base := DefaultConfig()
	base.Name, base.DataDir, base.Join = "w1", "/var/lib/skiff", []string{"127.0.0.1:7946"}
	if err := base.Validate(); err == nil || !strings.Contains(err.Error(), "TokenFile") {
		t.Fatalf("no token and not insecure: %v", err)
	}
	base.TokenFile, base.Insecure = "/x", true
	if err := base.Validate(); err == nil || !strings.Contains(err.Error(), "Insecure") {
		t.Fatalf("token and insecure: %v", err)
	}
	base.Insecure = false
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
}
