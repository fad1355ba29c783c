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

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
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
	dir   string
}

func newWorkerTLS(cfg Config, log interface{ Warn(string, ...any) }) (*workerTLS, error) {
	if cfg.Insecure {
		if cfg.api != nil {
			return nil, nil // one of many hollow nodes: RunHollow warned
		}
		log.Warn("INSECURE: the node agent and the connections to the masters are plaintext and unauthenticated, gossip is unencrypted; only for local experiments (use --token-file)")
		return nil, nil
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
	r := &pki.Renewer{
		Cert:          t.cert,
		RetryInterval: a.cfg.JoinRetryInterval,
		Issue: func(ctx context.Context) (tls.Certificate, error) {
			// The first certificate is asked for on connections of their
			// own: connections made without a certificate stay without one.
			first := t.cert.Current() == nil
			var c *client.Client
			var err error
			if first {
				c, err = a.api.fresh(ctx)
			} else {
				c, err = a.api.get(ctx)
			}
			if err != nil {
				return tls.Certificate{}, err
			}
			if first {
				defer c.Close()
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
			if err := pki.SaveCert(t.dir, cert); err != nil {
				return tls.Certificate{}, err
			}
			return cert, nil
		},
		OnRenew: func(c *x509.Certificate) {
			a.log.Info("obtained a node certificate", "expires", c.NotAfter)
			a.api.open()
		},
		OnError: func(err error) { a.log.Warn("node certificate", "err", err) },
	}
	_ = r.Run(ctx)
}

// Certificate returns the node's current certificate, nil before the
// first one arrives or when the worker runs insecure.
func (a *Agent) Certificate() *x509.Certificate {
	if a.tls == nil {
		return nil
	}
	return a.tls.cert.Leaf()
}
