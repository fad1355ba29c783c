package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"
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
