package pki

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Reloader holds the current certificate of a process. TLS configurations
// read it on every handshake (GetCertificate, GetClientCertificate), so a
// renewed certificate is used by the next connection with no restart;
// established connections keep the one they authenticated with.
type Reloader struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewReloader returns a Reloader holding cert.
func NewReloader(cert tls.Certificate) *Reloader {
	r := &Reloader{}
	r.Store(cert)
	return r
}

// Store replaces the certificate.
func (r *Reloader) Store(cert tls.Certificate) {
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	r.cur.Store(&cert)
}

// Current returns the certificate, nil before the first Store.
func (r *Reloader) Current() *tls.Certificate { return r.cur.Load() }

// Leaf returns the parsed current certificate, nil before the first Store.
func (r *Reloader) Leaf() *x509.Certificate {
	if c := r.cur.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// GetCertificate serves as tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := r.cur.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no certificate yet")
}

// GetClientCertificate serves as tls.Config.GetClientCertificate. Without a
// certificate it sends none (the server then decides).
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := r.cur.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// Renewer replaces a Reloader's certificate before it expires.
type Renewer struct {
	Cert *Reloader
	// Issue gets a new certificate (a master signs one itself, a worker asks
	// a master).
	Issue func(ctx context.Context) (tls.Certificate, error)
	// OnRenew and OnError report outcomes (logging); either may be nil.
	OnRenew func(*x509.Certificate)
	OnError func(error)
	// RetryInterval is the pause after a failed renewal; default 30s.
	RetryInterval time.Duration
}

// Run renews at RenewAt of the current certificate, and at once when there
// is none, until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	retry := r.RetryInterval
	if retry <= 0 {
		retry = 30 * time.Second
	}
	for {
		wait := time.Duration(0)
		if leaf := r.Cert.Leaf(); leaf != nil {
			wait = time.Until(RenewAt(leaf))
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		cert, err := r.Issue(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if r.OnError != nil {
				r.OnError(err)
			}
			// Retry sooner than the certificate expires.
			d := retry
			if leaf := r.Cert.Leaf(); leaf != nil {
				d = min(d, max(time.Until(leaf.NotAfter)/10, 100*time.Millisecond))
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
			continue
		}
		r.Cert.Store(cert)
		if r.OnRenew != nil {
			r.OnRenew(r.Cert.Leaf())
		}
	}
}

// ServerConfig is the TLS 1.3 configuration of a skiff server: it presents
// cert and verifies client certificates against roots (clientAuth says
// whether one is required). A verified client certificate must name one of
// orgs, when orgs are given.
func ServerConfig(roots *x509.CertPool, cert *Reloader, clientAuth tls.ClientAuthType, orgs ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: cert.GetCertificate,
		ClientAuth:     clientAuth,
		ClientCAs:      roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(orgs) == 0 || len(cs.VerifiedChains) == 0 {
				return nil
			}
			return checkOrg(cs.VerifiedChains[0][0], orgs)
		},
	}
}

// ClientConfig is the TLS 1.3 configuration of a skiff client: it trusts
// only roots, expects serverName (MasterServerName or NodeServerName) in
// the server's certificate and, when orgs are given, one of them as its
// organization; it presents cert when it has one (cert may be nil).
func ClientConfig(roots *x509.CertPool, cert *Reloader, serverName string, orgs ...string) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(orgs) == 0 {
				return nil
			}
			if len(cs.VerifiedChains) == 0 {
				return errors.New("the server's certificate was not verified")
			}
			return checkOrg(cs.VerifiedChains[0][0], orgs)
		},
	}
	if cert != nil {
		c.GetClientCertificate = cert.GetClientCertificate
	}
	return c
}

func checkOrg(c *x509.Certificate, orgs []string) error {
	for _, o := range orgs {
		if HasOrg(c, o) {
			return nil
		}
	}
	return fmt.Errorf("certificate %q (O=%s) is not one of %s", c.Subject.CommonName,
		strings.Join(c.Subject.Organization, ","), strings.Join(orgs, ", "))
}

// Identity is who a verified certificate names.
type Identity struct {
	CommonName string
	Orgs       []string
}

// IdentityOf returns the identity in a verified connection, false when the
// peer presented no verified certificate.
func IdentityOf(cs tls.ConnectionState) (Identity, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	c := cs.VerifiedChains[0][0]
	return Identity{CommonName: c.Subject.CommonName, Orgs: slices.Clone(c.Subject.Organization)}, true
}

// Files of a process's own certificate under a directory (DATA-DIR/tls).
const (
	keyFile  = "key.pem"
	certFile = "cert.pem"
)

// LoadOrCreateKey reads dir/key.pem or generates and writes one (0600).
func LoadOrCreateKey(dir string) (crypto.Signer, error) {
	path := filepath.Join(dir, keyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		return ParseKeyPEM(data)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read the TLS key: %w", err)
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	pemData, err := KeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, pemData); err != nil {
		return nil, err
	}
	return key, nil
}

// LoadCert reads dir/cert.pem for key; ok is false when there is none or it
// does not belong to key (the caller issues a new one).
func LoadCert(dir string, key crypto.Signer) (tls.Certificate, bool) {
	data, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return tls.Certificate{}, false
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return tls.Certificate{}, false
	}
	c, err := KeyPair(b.Bytes, key)
	if err != nil {
		return tls.Certificate{}, false
	}
	return c, true
}

// SaveCert writes cert's leaf to dir/cert.pem.
func SaveCert(dir string, cert tls.Certificate) error {
	if len(cert.Certificate) == 0 {
		return errors.New("save certificate: empty")
	}
	return writeFile(filepath.Join(dir, certFile), CertPEM(cert.Certificate[0]))
}

// CertPEM encodes a certificate.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// KeyPEM encodes a private key as PKCS#8.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a PKCS#8 private key.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("the key cannot sign")
	}
	return s, nil
}

// writeFile writes data (0600) through a temporary file and a rename, so a
// crash never leaves a half-written key or certificate.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
