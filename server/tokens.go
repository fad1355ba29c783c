package server

// Bearer tokens for users (see docs/architecture.md, Security), shaped
// like kubeadm's bootstrap tokens: `<id>.<secret>`, a 6-character public
// ID and a 32-character secret, both [a-z0-9]. `skiff token create` (an
// admin) stores each as a Secret `skiff-token-<id>` of type
// skiff.dev/token in namespace skiff-system, in the replicated store, so
// every master accepts it; the Secret holds only the SHA-256 of the secret
// with the role, expiry and description, never the secret itself. A call
// over a TLS connection without a client certificate may present one as
// "authorization: Bearer <token>".

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"regexp"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/fsm"
)

// Where and how tokens are stored; cli/token.go writes the same form.
const (
	TokenNamespace    = "skiff-system"
	TokenSecretPrefix = "skiff-token-"
	TokenSecretType   = "skiff.dev/token"
	// Data keys of a token Secret.
	TokenKeyHash        = "tokenHash" // hex SHA-256 of the secret part
	TokenKeyRole        = "role"
	TokenKeyExpires     = "expires" // RFC 3339; absent never expires
	TokenKeyDescription = "description"
)

var userTokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{32})$`)

// splitUserToken returns a token's ID and secret, ok false when s is not
// shaped like one.
func splitUserToken(s string) (id, secret string, ok bool) {
	m := userTokenRE.FindStringSubmatch(s)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// HashTokenSecret is what a token Secret stores of the secret part.
func HashTokenSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// authenticateToken checks a bearer token against the store: the token's
// Secret must exist, its hash match, its role be known, and it must not
// have expired.
func (s *Server) authenticateToken(ctx context.Context, tok string, now time.Time) (principal, error) {
	id, secret, ok := splitUserToken(tok)
	if !ok {
		return principal{}, status.Error(codes.Unauthenticated,
			"the bearer token is malformed (want <6-character id>.<32-character secret> from skiff token create)")
	}
	obj, err := s.fsm.Get("Secret", TokenNamespace, TokenSecretPrefix+id)
	if errors.Is(err, fsm.ErrNotFound) {
		// A token created a moment ago may not have reached this master.
		if lerr := s.linearize(ctx); lerr != nil {
			return principal{}, lerr
		}
		obj, err = s.fsm.Get("Secret", TokenNamespace, TokenSecretPrefix+id)
	}
	unknown := status.Errorf(codes.Unauthenticated, "unknown token %q: it was deleted or never created; ask an admin for one (skiff token create)", id)
	if errors.Is(err, fsm.ErrNotFound) {
		return principal{}, unknown
	}
	if err != nil {
		return principal{}, status.Errorf(codes.Internal, "look up token %q: %v", id, err)
	}
	if obj, err = s.secrets.open(obj); err != nil {
		return principal{}, err
	}
	sec := obj.GetSecret()
	if sec.GetType() != TokenSecretType {
		return principal{}, unknown
	}
	want := string(sec.GetData()[TokenKeyHash])
	if subtle.ConstantTimeCompare([]byte(want), []byte(HashTokenSecret(secret))) != 1 {
		return principal{}, unknown
	}
	role := string(sec.GetData()[TokenKeyRole])
	if !slices.Contains(tokenRoles, role) {
		return principal{}, status.Errorf(codes.Unauthenticated, "token %q has an unknown role %q: delete it and create a new one", id, role)
	}
	if exp := string(sec.GetData()[TokenKeyExpires]); exp != "" {
		t, err := time.Parse(time.RFC3339, exp)
		if err != nil {
			return principal{}, status.Errorf(codes.Unauthenticated, "token %q has an unreadable expiry %q: delete it and create a new one", id, exp)
		}
		if !now.Before(t) {
			return principal{}, status.Errorf(codes.Unauthenticated, "token %q expired at %s: ask an admin for a new one (skiff token create)", id, t.UTC().Format(time.RFC3339))
		}
	}
	return principal{role: role, name: id, token: true}, nil
}
