package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os/user"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/skiff-sh/skiff/pki"
)

// adminLifetime bounds the CLI's own certificate: it is made afresh by
// every invocation, so it only has to outlive one command (a long watch or
// log stream keeps its connection).
const adminLifetime = 24 * time.Hour

// ErrNoCredentials is returned when the CLI has neither a token nor
// --insecure.
var ErrNoCredentials = errors.New("no cluster credentials: pass --token-file (the masters' token file), set " +
	EnvTokenFile + " or tokenFile in " + ConfigPath() + "; or a bearer token with --token and --ca-file (or token and ca in the config); or --insecure for masters run with --insecure")

// AdminTLS derives the cluster CA from the token and signs an admin
// certificate with it, in memory. The token is root-equivalent, so a
// holder may as well be its own issuer; nothing is written to disk.
func AdminTLS(tokenFile string) (*tls.Config, error) {
	tok, err := pki.ReadTokenFile(tokenFile)
	if err != nil {
		return nil, err
	}
	ca, err := tok.CA()
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", tokenFile, err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	name := "cli"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	cert, err := ca.IssueKeyPair(key, pki.Leaf{CommonName: pki.AdminCNPrefix + name, Organization: pki.OrgAdmin, Lifetime: adminLifetime})
	if err != nil {
		return nil, err
	}
	return pki.ClientConfig(ca.Pool(), pki.NewReloader(cert), pki.MasterServerName, pki.OrgMaster), nil
}

// TokenTLS is how a bearer-token user connects: TLS that trusts only the
// cluster CA in caPEM (and checks the masters' name and organization), no
// client certificate, and the token on every call.
func TokenTLS(caPEM []byte, token string) (*tls.Config, credentials.PerRPCCredentials, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, errors.New("the cluster CA (--ca-file or ca in the config) holds no PEM certificate")
	}
	return pki.ClientConfig(pool, nil, pki.MasterServerName, pki.OrgMaster), bearerToken(token), nil
}

// bearerToken sends "authorization: Bearer <token>", over TLS only.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }
