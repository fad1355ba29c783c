package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/user"
	"strings"
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

// Connection says how a program reaches the masters, with the CLI's own
// rules (resolveServers, resolveSecurity): empty fields fall back to the
// environment ($SKIFF_SERVER, $SKIFF_TOKEN_FILE, $SKIFF_TOKEN) and then to
// the CLI's configuration file, so that a Go program such as an
// out-of-process controller connects exactly as `skiff` would.
type Connection struct {
	// Servers is a comma-separated list of master API addresses.
	Servers string
	// TokenFile is the cluster token: the program signs itself an admin
	// certificate (AdminTLS).
	TokenFile string
	// Token is a bearer token from `skiff token create`; it needs CAFile
	// (or ca in the configuration file).
	Token  string
	CAFile string
	// Insecure talks plaintext to masters run with --insecure.
	Insecure bool
}

// ClientConfig resolves c into a client configuration (DefaultConfig with
// Servers and the TLS credentials set). It fails with ErrNoCredentials
// when nothing says how to authenticate.
func (c Connection) ClientConfig() (Config, error) {
	cfg := DefaultConfig()
	servers, err := resolveServers(c.Servers)
	if err != nil {
		return cfg, err
	}
	cfg.Servers = servers
	if len(servers) == 0 {
		return cfg, ErrNoServers
	}
	var token string
	if cfg.TLS, token, err = c.credentials(); err != nil {
		return cfg, err
	}
	if token != "" {
		cfg.PerRPC = bearerToken(token)
	}
	return cfg, nil
}

// ResolveServers returns the master API addresses c resolves to (Servers,
// then $SKIFF_SERVER, then the configuration file).
func (c Connection) ResolveServers() ([]string, error) { return resolveServers(c.Servers) }

// CAPEM returns the cluster CA that c trusts (derived from the token file,
// or the bearer token's CA); an error when c talks plaintext.
func (c Connection) CAPEM() ([]byte, error) {
	sec, err := resolveSecurity(c.TokenFile, c.Token, c.CAFile, c.Insecure)
	if err != nil {
		return nil, err
	}
	switch {
	case sec.tokenFile != "":
		tok, err := pki.ReadTokenFile(sec.tokenFile)
		if err != nil {
			return nil, err
		}
		ca, err := tok.CA()
		if err != nil {
			return nil, err
		}
		return pki.CertPEM(ca.DER), nil
	case sec.token != "":
		return sec.caPEM, nil
	}
	return nil, errors.New("this connection talks to the masters without TLS, so there is no cluster CA")
}

// credentials returns the TLS configuration and bearer token of c: nil
// and "" with Insecure; the token is "" with a token file.
func (c Connection) credentials() (*tls.Config, string, error) {
	sec, err := resolveSecurity(c.TokenFile, c.Token, c.CAFile, c.Insecure)
	if err != nil {
		return nil, "", err
	}
	switch {
	case sec.insecure:
		return nil, "", nil
	case sec.tokenFile != "":
		t, err := AdminTLS(sec.tokenFile)
		return t, "", err
	case sec.token != "":
		t, _, err := TokenTLS(sec.caPEM, sec.token)
		return t, sec.token, err
	}
	return nil, "", ErrNoCredentials
}

// HTTPClient is a client of the masters' --http-addr endpoints (/metrics,
// /healthz, /readyz): HTTPS with the cluster's credentials, or plain HTTP
// to masters run with --insecure.
type HTTPClient struct {
	// Client sends the credentials (client certificate or bearer token) on
	// every request.
	Client *http.Client
	// Scheme is "https", or "http" for insecure masters.
	Scheme string
}

// HTTPClient resolves c (as ClientConfig does) into a client of the
// masters' HTTP endpoints. /metrics on a TLS master needs a credential of
// any role; the health checks need none.
func (c Connection) HTTPClient() (*HTTPClient, error) {
	t, tok, err := c.credentials()
	if err != nil {
		return nil, err
	}
	return NewHTTPClient(t, tok), nil
}

// NewHTTPClient returns a client of the masters' HTTP endpoints that
// connects with tlsConfig (nil: plain HTTP) and sends token, when not
// empty, as "Authorization: Bearer <token>" (only over TLS).
func NewHTTPClient(tlsConfig *tls.Config, token string) *HTTPClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig == nil {
		return &HTTPClient{Client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, Scheme: "http"}
	}
	// The configuration expects pki.MasterServerName in the masters'
	// certificates whatever address is dialled, as for the API.
	tr.TLSClientConfig = tlsConfig.Clone()
	var rt http.RoundTripper = tr
	if token != "" {
		rt = bearerTransport{token: token, next: tr}
	}
	return &HTTPClient{Client: &http.Client{Transport: rt, Timeout: 30 * time.Second}, Scheme: "https"}
}

// Get fetches path (such as "/metrics") from the master whose --http-addr
// is hostPort. A status other than 200 is an error that carries the
// master's answer (which says how to authenticate, for a 401).
func (h *HTTPClient) Get(ctx context.Context, hostPort, path string) ([]byte, error) {
	url := h.Scheme + "://" + hostPort + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// bearerTransport adds the bearer token to every request.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
