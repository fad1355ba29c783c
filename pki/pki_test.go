package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustToken(t *testing.T) Token {
	t.Helper()
	tok, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	tok := mustToken(t)
	s := tok.String()
	if !strings.HasPrefix(s, "skiff1.") || strings.Count(s, ".") != 2 {
		t.Fatalf("token %q is not skiff1.<hash>.<secret>", s)
	}
	back, err := ParseToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if back.CAHash != tok.CAHash || !bytes.Equal(back.Secret, tok.Secret) {
		t.Fatal("round trip changed the token")
	}
	for _, bad := range []string{"", "skiff2.aa.bb", "skiff1.zz.AAAAAAAAAAAAAAAAAAAAAA", "skiff1." + strings.Repeat("a", 64) + ".!!", "skiff1." + strings.Repeat("a", 64) + ".AAAA"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestDerivationIsDeterministic(t *testing.T) {
	tok := mustToken(t)
	a, err := DeriveCA(tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DeriveCA(append([]byte(nil), tok.Secret...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.DER, b.DER) {
		t.Fatal("two derivations of the CA differ")
	}
	if a.Hash() != tok.CAHash {
		t.Fatal("the token does not pin its CA")
	}
	if !a.Cert.IsCA || a.Cert.Subject.CommonName != "skiff cluster CA" {
		t.Fatalf("CA certificate: %+v", a.Cert.Subject)
	}
	other := mustToken(t)
	if bytes.Equal(tok.GossipKey(), other.GossipKey()) || len(tok.GossipKey()) != 32 {
		t.Fatal("gossip keys must be 32 bytes and differ per secret")
	}
	if bytes.Equal(tok.GossipKey(), a.Key.Seed()) {
		t.Fatal("the gossip key equals the CA seed")
	}
	if !tok.CheckJoinCredential(tok.JoinCredential()) || tok.CheckJoinCredential(other.JoinCredential()) {
		t.Fatal("join credential check")
	}
}

func TestPinMismatch(t *testing.T) {
	tok := mustToken(t)
	tok.Secret[0] ^= 1
	if _, err := tok.CA(); !errors.Is(err, ErrTokenMismatch) {
		t.Fatalf("CA() = %v, want ErrTokenMismatch", err)
	}
}

func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "token")
	var wg sync.WaitGroup
	toks := make([]Token, 4)
	created := make([]bool, 4)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			toks[i], created[i], err = LoadOrCreateTokenFile(path)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	n := 0
	for i := range toks {
		if created[i] {
			n++
		}
		if toks[i].String() != toks[0].String() {
			t.Fatal("concurrent creators disagree on the token")
		}
	}
	if n != 1 {
		t.Fatalf("%d creators, want 1", n)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", st.Mode(), err)
	}
	if _, err := toks[0].CA(); err != nil {
		t.Fatal(err)
	}
}

func TestRenewAt(t *testing.T) {
	ca, _ := DeriveCA(mustToken(t).Secret)
	key, _ := NewKey()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := ca.IssueKeyPair(key, Leaf{CommonName: "master:m1", Organization: OrgMaster, Lifetime: 30 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := RenewAt(c.Leaf), now.Add(20*time.Hour); !got.Equal(want) {
		t.Fatalf("RenewAt = %v, want %v", got, want)
	}
	if !c.Leaf.NotAfter.Equal(now.Add(30 * time.Hour)) {
		t.Fatalf("NotAfter = %v", c.Leaf.NotAfter)
	}
}

func TestSignCSR(t *testing.T) {
	ca, _ := DeriveCA(mustToken(t).Secret)
	key, _ := NewKey()
	csr, err := NewCSR(key, "system:node:evil-admin")
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.SignCSR(csr, Leaf{CommonName: "system:node:w1", Organization: OrgNode})
	if err != nil {
		t.Fatal(err)
	}
	c, err := KeyPair(der, key)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.Subject.CommonName != "system:node:w1" || !HasOrg(c.Leaf, OrgNode) {
		t.Fatalf("subject %v: the issuer's names must win over the request's", c.Leaf.Subject)
	}
	csr[len(csr)-1] ^= 1
	if _, err := ca.SignCSR(csr, Leaf{CommonName: "x", Organization: OrgNode}); err == nil {
		t.Fatal("a tampered request was signed")
	}
	other, _ := NewKey()
	if _, err := KeyPair(der, other); err == nil {
		t.Fatal("KeyPair accepted a certificate for another key")
	}
}

// handshake runs one TLS handshake over loopback and returns both sides'
// errors.
func handshake(t *testing.T, srv, cli *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, srv)
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3 client certificates are checked after the client's
			// handshake returns; read to see the outcome on both sides.
			_, err = tc.Write([]byte("x"))
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	return <-done, err
}

func TestMutualTLS(t *testing.T) {
	tok := mustToken(t)
	ca, _ := tok.CA()
	otherCA, _ := DeriveCA(mustToken(t).Secret)
	issue := func(ca *CA, cn, org string, names []string, now time.Time, life time.Duration) *Reloader {
		key, _ := NewKey()
		c, err := ca.IssueKeyPair(key, Leaf{CommonName: cn, Organization: org, DNSNames: names, Now: now, Lifetime: life})
		if err != nil {
			t.Fatal(err)
		}
		return NewReloader(c)
	}
	now := time.Now()
	master := issue(ca, "master:m1", OrgMaster, []string{MasterServerName}, now, time.Hour)
	node := issue(ca, "system:node:w1", OrgNode, []string{NodeServerName}, now, time.Hour)
	foreign := issue(otherCA, "master:m9", OrgMaster, []string{MasterServerName}, now, time.Hour)
	expired := issue(ca, "master:old", OrgMaster, []string{MasterServerName}, now.Add(-3*time.Hour), time.Hour)

	srvMasters := ServerConfig(ca.Pool(), master, tls.RequireAndVerifyClientCert, OrgMaster)
	tests := []struct {
		name    string
		srv     *tls.Config
		cli     *tls.Config
		wantErr bool
	}{
		{"master to master", srvMasters, ClientConfig(ca.Pool(), master, MasterServerName, OrgMaster), false},
		{"node client refused where only masters may call", srvMasters, ClientConfig(ca.Pool(), node, MasterServerName, OrgMaster), true},
		{"client cert from another CA", srvMasters, ClientConfig(ca.Pool(), foreign, MasterServerName, OrgMaster), true},
		{"expired client cert", srvMasters, ClientConfig(ca.Pool(), expired, MasterServerName, OrgMaster), true},
		{"no client cert", srvMasters, ClientConfig(ca.Pool(), nil, MasterServerName, OrgMaster), true},
		{"server from another CA", ServerConfig(otherCA.Pool(), foreign, tls.RequireAndVerifyClientCert), ClientConfig(ca.Pool(), master, MasterServerName), true},
		{"node posing as a master server", ServerConfig(ca.Pool(), node, tls.VerifyClientCertIfGiven), ClientConfig(ca.Pool(), master, MasterServerName, OrgMaster), true},
		{"optional client cert", ServerConfig(ca.Pool(), master, tls.VerifyClientCertIfGiven), ClientConfig(ca.Pool(), nil, MasterServerName, OrgMaster), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			se, ce := handshake(t, tc.srv, tc.cli)
			if got := se != nil || ce != nil; got != tc.wantErr {
				t.Fatalf("server err %v, client err %v; want failure %v", se, ce, tc.wantErr)
			}
		})
	}
	old := tls.VersionTLS12
	cli := ClientConfig(ca.Pool(), master, MasterServerName)
	cli.MinVersion, cli.MaxVersion = uint16(old), uint16(old)
	if se, ce := handshake(t, srvMasters, cli); se == nil && ce == nil {
		t.Fatal("a TLS 1.2 client was accepted")
	}
}

func TestRenewerRotates(t *testing.T) {
	ca, _ := DeriveCA(mustToken(t).Secret)
	key, _ := NewKey()
	// 3 s lifetimes: renewed after 2 s.
	issue := func(context.Context) (tls.Certificate, error) {
		return ca.IssueKeyPair(key, Leaf{CommonName: "master:m1", Organization: OrgMaster, Lifetime: 3 * time.Second})
	}
	first, _ := issue(context.Background())
	r := NewReloader(first)
	renewed := make(chan struct{}, 10)
	rn := &Renewer{Cert: r, Issue: issue, OnRenew: func(*x509.Certificate) { renewed <- struct{}{} }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rn.Run(ctx) }()
	select {
	case <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("not renewed within 10s")
	}
	if r.Leaf().SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the certificate was not replaced")
	}
	if until := time.Until(RenewAt(first.Leaf)); until > 100*time.Millisecond {
		t.Fatalf("renewed %v before 2/3 of the lifetime", until)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
