package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/pki"
)

func TestNewUserToken(t *testing.T) {
	tok, id, err := NewUserToken()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{32}$`).MatchString(tok) || !strings.HasPrefix(tok, id+".") {
		t.Fatalf("token %q id %q", tok, id)
	}
	obj := tokenObject(tok, "viewer", "alice", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := obj.GetSecret()
	h := sha256.Sum256([]byte(strings.TrimPrefix(tok, id+".")))
	if s.GetMetadata().GetName() != "skiff-token-"+id || s.GetMetadata().GetNamespace() != "skiff-system" || s.GetType() != "skiff.dev/token" ||
		string(s.GetData()["tokenHash"]) != hex.EncodeToString(h[:]) || string(s.GetData()["role"]) != "viewer" ||
		string(s.GetData()["expires"]) != "2030-01-02T03:04:05Z" || string(s.GetData()["description"]) != "alice" {
		t.Fatalf("stored form: %v", s)
	}
	if strings.Contains(obj.String(), strings.TrimPrefix(tok, id+".")) {
		t.Fatal("the stored form contains the secret")
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
	if err := WriteConfig(cfgPath, Config{Servers: []string{"127.0.0.1:1"}, Token: "abcdef.0123456789abcdefghijklmnopqrstuv", CA: string(pki.CertPEM(ca.DER))}); err != nil {
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
	if err := WriteConfig(cfgPath, Config{Servers: []string{"127.0.0.1:1"}}); err != nil {
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
