// Package pki is skiff's cluster public-key infrastructure: the cluster
// token, everything derived from its secret (the cluster CA, the gossip key,
// the workers' join credential), leaf certificates for masters, nodes and
// operators, and TLS configurations that trust only the cluster CA.
//
// The design follows k3s: one token, skiff1.<CA hash>.<secret>, is all a
// machine needs to join. Unlike k3s the CA is not stored anywhere: its key
// is derived from the secret (HKDF), and its certificate is built from a
// fixed template, so every master computes the identical CA without any
// distribution step, and a worker can verify the masters from its very first
// connection. The CA hash in the token catches a mistyped or tampered secret
// before anything is sent. Whoever holds the secret holds the CA key: the
// token is root-equivalent, as k3s's server token is.
//
// The package is pure crypto and file handling; it imports nothing of
// skiff's, so servers, workers, the client and the CLI may all use it.
package pki

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tokenPrefix versions the token format.
const tokenPrefix = "skiff1"

// secretBytes is the size of a generated secret.
const secretBytes = 32

// HKDF info strings: one per derived key, so that no two uses share a key.
const (
	infoCA       = "skiff ca v1"
	infoGossip   = "skiff gossip v1"
	infoNodeJoin = "skiff node join v1"
)

// ErrTokenMismatch is returned when the CA derived from a token's secret
// does not hash to the token's pin.
var ErrTokenMismatch = errors.New("the token's CA hash does not match the CA derived from its secret: the token is mistyped or was tampered with; copy it again from the first master (skiff token show)")

// Token is a parsed cluster token.
type Token struct {
	// CAHash is the SHA-256 of the cluster CA certificate's DER.
	CAHash [32]byte
	// Secret is the cluster secret everything else is derived from.
	Secret []byte
}

// GenerateToken makes a new random secret and pins the CA derived from it.
func GenerateToken() (Token, error) {
	secret := make([]byte, secretBytes)
	if _, err := rand.Read(secret); err != nil {
		return Token{}, fmt.Errorf("generate the cluster secret: %w", err)
	}
	ca, err := DeriveCA(secret)
	if err != nil {
		return Token{}, err
	}
	return Token{CAHash: ca.Hash(), Secret: secret}, nil
}

// ParseToken parses skiff1.<sha256-hex>.<base64url secret>. It checks the
// format only; CA verifies the pin.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != tokenPrefix {
		return Token{}, fmt.Errorf("not a skiff token: want %s.<CA hash>.<secret>", tokenPrefix)
	}
	var t Token
	h, err := hex.DecodeString(parts[1])
	if err != nil || len(h) != len(t.CAHash) {
		return Token{}, errors.New("bad token: the CA hash is not 64 hex digits")
	}
	copy(t.CAHash[:], h)
	t.Secret, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return Token{}, fmt.Errorf("bad token: the secret is not base64url: %w", err)
	}
	if len(t.Secret) < 16 {
		return Token{}, fmt.Errorf("bad token: the secret is %d bytes, want at least 16", len(t.Secret))
	}
	return t, nil
}

// String formats the token as ParseToken reads it.
func (t Token) String() string {
	return tokenPrefix + "." + hex.EncodeToString(t.CAHash[:]) + "." + base64.RawURLEncoding.EncodeToString(t.Secret)
}

// CA derives the cluster CA and checks it against the pin.
func (t Token) CA() (*CA, error) {
	ca, err := DeriveCA(t.Secret)
	if err != nil {
		return nil, err
	}
	h := ca.Hash()
	if subtle.ConstantTimeCompare(h[:], t.CAHash[:]) != 1 {
		return nil, ErrTokenMismatch
	}
	return ca, nil
}

// GossipKey is the 32-byte AES-256 key memberlist encrypts gossip with.
func (t Token) GossipKey() []byte { return derive(t.Secret, infoGossip, 32) }

// JoinCredential is the bearer credential a worker without a certificate
// presents to get its first one.
func (t Token) JoinCredential() string {
	m := hmac.New(sha256.New, t.Secret)
	m.Write([]byte(infoNodeJoin))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckJoinCredential compares a presented join credential in constant
// time.
func (t Token) CheckJoinCredential(got string) bool {
	want := t.JoinCredential()
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func derive(secret []byte, info string, n int) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, info, n)
	if err != nil {
		// Only for n > 255*32, a programming error.
		panic(fmt.Sprintf("pki: hkdf: %v", err))
	}
	return k
}

// ReadTokenFile reads and parses a token file.
func ReadTokenFile(path string) (Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Token{}, fmt.Errorf("read the token file: %w (copy it from a master, where skiff server --token-file created it)", err)
	}
	t, err := ParseToken(string(bytes.TrimSpace(data)))
	if err != nil {
		return Token{}, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// LoadOrCreateTokenFile reads the token at path, or, if there is no file,
// generates one and writes it (0600). created reports the latter. Two
// processes creating the same file at once agree on the one written first.
func LoadOrCreateTokenFile(path string) (t Token, created bool, err error) {
	if _, err := os.Stat(path); err == nil {
		t, err := ReadTokenFile(path)
		return t, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return Token{}, false, fmt.Errorf("token file: %w", err)
	}
	if t, err = GenerateToken(); err != nil {
		return Token{}, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Token{}, false, fmt.Errorf("create the token file's directory: %w", err)
	}
	// Written aside and linked into place: link fails if the file exists,
	// and a reader never sees a half-written token.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return Token{}, false, fmt.Errorf("create the token file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return Token{}, false, fmt.Errorf("create the token file: %w", err)
	}
	if _, err := tmp.WriteString(t.String() + "\n"); err != nil {
		tmp.Close()
		return Token{}, false, fmt.Errorf("write the token file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return Token{}, false, fmt.Errorf("write the token file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		t, err := ReadTokenFile(path)
		return t, false, err
	} else if err != nil {
		return Token{}, false, fmt.Errorf("create the token file %s: %w", path, err)
	}
	return t, true, nil
}
