package worker

// Transport security of a worker (see docs/architecture.md, Security).
//
// The worker reads the cluster token, derives the cluster CA from its
// secret (checking the token's pin) and so verifies the masters from its
// very first connection. Its own certificate (CN system:node:NAME, O node)
// is signed by a master: the first one through IssueNodeCertificate
// authenticated by the join credential derived from the token, later ones
// by the current certificate, at 2/3 of its lifetime. The key and the
// certificate stay in DATA-DIR/tls, so a restarted worker keeps its
// identity. The NodeAgent service accepts only masters (O master).
//
// Hollow nodes (RunHollow) each have a key (in memory: they keep no state),
// a certificate and an API client of their own, so that every API call is
// made with the identity of the node it is about. They share the token,
// the derived CA, the NodeAgent listener (served with the certificate of
// any one of them: masters check only O node and the server name) and a
// connection without a certificate for the first IssueNodeCertificate,
// which at most hollowIssueConcurrency of them call at once.

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/skiff-sh/skiff/client"
	"github.com/skiff-sh/skiff/pki"
)

// workerTLS is a worker's key material; nil when the worker runs insecure.
type workerTLS struct {
	token pki.Token
	ca    *pki.CA
	key   crypto.Signer
	cert  *pki.Reloader
	dir   string // "": the certificate is not saved (hollow nodes)
	// hollow is the state shared by the hollow nodes of one process.
	hollow *hollowTLS
}

// hollowIssueConcurrency bounds the first IssueNodeCertificate calls of
// one process's hollow nodes: enough to bootstrap 1,000 nodes in seconds,
// few enough not to flood the masters when all learn them at once.
const hollowIssueConcurrency = 16

// hollowTLS is shared by the secure hollow nodes of one process.
type hollowTLS struct {
	token pki.Token
	ca    *pki.CA
	// server is the NodeAgent's certificate: the first node certificate
	// obtained, replaced by any with a later expiry.
	server *pki.Reloader
	mu     sync.Mutex
	// boot carries the first IssueNodeCertificate calls, on connections
	// without a certificate (authorized by the join credential).
	boot *masterSet
	sem  chan struct{}
}

func newHollowTLS(tokenFile string, log *slog.Logger) (*hollowTLS, error) {
	tok, err := pki.ReadTokenFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("worker config: TokenFile: %w", err)
	}
	ca, err := tok.CA()
	if err != nil {
		return nil, fmt.Errorf("worker config: TokenFile %s: %w", tokenFile, err)
	}
	h := &hollowTLS{token: tok, ca: ca, server: &pki.Reloader{}, sem: make(chan struct{}, hollowIssueConcurrency)}
	h.boot = newMasterSet(log, pki.ClientConfig(ca.Pool(), nil, pki.MasterServerName, pki.OrgMaster))
	return h, nil
}

// serverConfig is the shared NodeAgent's: only masters call it.
func (h *hollowTLS) serverConfig() *tls.Config {
	return pki.ServerConfig(h.ca.Pool(), h.server, tls.RequireAndVerifyClientCert, pki.OrgMaster)
}

// offer makes cert the NodeAgent's when it has none yet or cert lasts
// longer.
func (h *hollowTLS) offer(cert *tls.Certificate) {
	if cert == nil || cert.Leaf == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.server.Leaf(); cur == nil || cert.Leaf.NotAfter.After(cur.NotAfter) {
		h.server.Store(*cert)
	}
}

func (h *hollowTLS) close() { h.boot.close() }

func newWorkerTLS(cfg Config, log interface{ Warn(string, ...any) }) (*workerTLS, error) {
	if cfg.Insecure {
		if cfg.api != nil {
			return nil, nil // one of many hollow nodes: RunHollow warned
		}
		log.Warn("INSECURE: the node agent and the connections to the masters are plaintext and unauthenticated, gossip is unencrypted; only for local experiments (use --token-file)")
		return nil, nil
	}
	if h := cfg.hollowTLS; h != nil {
		key, err := pki.NewKey()
		if err != nil {
			return nil, fmt.Errorf("hollow node %s: %w", cfg.Name, err)
		}
		return &workerTLS{token: h.token, ca: h.ca, key: key, cert: &pki.Reloader{}, hollow: h}, nil
	}
	tok, err := pki.ReadTokenFile(cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("worker config: TokenFile: %w", err)
	}
	ca, err := tok.CA()
	if err != nil {
		return nil, fmt.Errorf("worker config: TokenFile %s: %w", cfg.TokenFile, err)
	}
	t := &workerTLS{token: tok, ca: ca, dir: filepath.Join(cfg.DataDir, "tls"), cert: &pki.Reloader{}}
	if t.key, err = pki.LoadOrCreateKey(t.dir); err != nil {
		return nil, fmt.Errorf("node key in %s: %w", t.dir, err)
	}
	// A certificate of an earlier run is used while it is valid and for
	// this node; the renewer replaces it in time.
	if c, ok := pki.LoadCert(t.dir, t.key); ok && time.Now().Before(c.Leaf.NotAfter) &&
		c.Leaf.Subject.CommonName == pki.NodeCNPrefix+cfg.Name && ca.Cert.CheckSignature(c.Leaf.SignatureAlgorithm, c.Leaf.RawTBSCertificate, c.Leaf.Signature) == nil {
		t.cert.Store(c)
	}
	return t, nil
}

// serverConfig is the NodeAgent's: only masters call it.
func (t *workerTLS) serverConfig() *tls.Config {
	return pki.ServerConfig(t.ca.Pool(), t.cert, tls.RequireAndVerifyClientCert, pki.OrgMaster)
}

// clientConfig is for calls to the masters' API.
func (t *workerTLS) clientConfig() *tls.Config {
	return pki.ClientConfig(t.ca.Pool(), t.cert, pki.MasterServerName, pki.OrgMaster)
}

// certificateLoop obtains the node's certificate (at once when it has none)
// and renews it at 2/3 of its lifetime, until ctx ends.
func (a *Agent) certificateLoop(ctx context.Context) {
	t := a.tls
	hadCert := t.cert.Current() != nil
	r := &pki.Renewer{
		Cert:          t.cert,
		RetryInterval: a.cfg.JoinRetryInterval,
		Issue: func(ctx context.Context) (tls.Certificate, error) {
			// The first certificate is asked for on connections of their
			// own: connections made without a certificate stay without one.
			first := t.cert.Current() == nil
			var c *client.Client
			var err error
			switch {
			case first && t.hollow != nil:
				c, err = a.hollowBootClient(ctx)
				if err != nil {
					return tls.Certificate{}, err
				}
				select {
				case t.hollow.sem <- struct{}{}:
					defer func() { <-t.hollow.sem }()
				case <-ctx.Done():
					return tls.Certificate{}, ctx.Err()
				}
			case first:
				c, err = a.api.fresh(ctx)
				if err == nil {
					defer c.Close()
				}
			default:
				c, err = a.api.get(ctx)
			}
			if err != nil {
				return tls.Certificate{}, err
			}
			csr, err := pki.NewCSR(t.key, a.cfg.Name)
			if err != nil {
				return tls.Certificate{}, err
			}
			if first {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+t.token.JoinCredential())
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			der, err := c.IssueNodeCertificate(cctx, a.cfg.Name, csr)
			if err != nil {
				return tls.Certificate{}, fmt.Errorf("ask the masters for a node certificate: %w", err)
			}
			cert, err := pki.KeyPair(der, t.key)
			if err != nil {
				return tls.Certificate{}, err
			}
			if t.dir != "" {
				if err := pki.SaveCert(t.dir, cert); err != nil {
					return tls.Certificate{}, err
				}
			}
			return cert, nil
		},
		OnRenew: func(c *x509.Certificate) {
			if t.hollow != nil {
				// A thousand of these in a few seconds say nothing new.
				a.log.Debug("obtained a node certificate", "expires", c.NotAfter)
				t.hollow.offer(t.cert.Current())
			} else {
				a.log.Info("obtained a node certificate", "expires", c.NotAfter)
			}
			if !hadCert {
				hadCert = true
				a.reconnectAPI()
			}
			a.api.open()
		},
		OnError: func(err error) { a.log.Warn("node certificate", "err", err) },
	}
	_ = r.Run(ctx)
}

// reconnectAPI replaces the API client once the first certificate is
// there: a connection opened before it would stay without one, and not
// every caller waits at the gate (hollowCIDRLoop reads through current()).
func (a *Agent) reconnectAPI() {
	m := a.api
	m.mu.Lock()
	addrs := m.addrs
	m.addrs = nil // update builds a new client only for a changed set
	m.mu.Unlock()
	m.update(addrs)
}

// hollowBootClient returns the client without a certificate shared by
// the hollow nodes of this process, pointed at the masters this node knows
// (waiting for gossip to name one).
func (a *Agent) hollowBootClient(ctx context.Context) (*client.Client, error) {
	if _, err := a.api.known(ctx); err != nil {
		return nil, err
	}
	a.api.mu.Lock()
	addrs := slices.Clone(a.api.addrs)
	a.api.mu.Unlock()
	boot := a.tls.hollow.boot
	boot.update(addrs)
	return boot.known(ctx)
}

// Certificate returns the node's current certificate, nil before the
// first one arrives or when the worker runs insecure.
func (a *Agent) Certificate() *x509.Certificate {
	if a.tls == nil {
		return nil
	}
	return a.tls.cert.Leaf()
}
