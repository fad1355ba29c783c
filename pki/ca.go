package pki

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Organizations (the certificate's O) name what a certificate's holder
// is; authorization keys on them.
const (
	OrgMaster = "master"
	OrgNode   = "node"
	OrgAdmin  = "admin"
)

// Common name prefixes of issued certificates.
const (
	MasterCNPrefix = "master:"
	NodeCNPrefix   = "system:node:"
	AdminCNPrefix  = "admin:"
)

// Server names every master's (and node's) certificate carries as a DNS SAN,
// and clients verify: like Consul's server.<dc>.consul, a fixed name means
// a client need not know which address a master has (NAT, DNS, a load
// balancer), while only a certificate the masters issued as a master can
// carry it, since the issuer, not the requester, chooses the SANs.
const (
	MasterServerName = "master.skiff.cluster"
	NodeServerName   = "node.skiff.cluster"
)

// DefaultLifetime is how long issued leaf certificates are valid.
const DefaultLifetime = 30 * 24 * time.Hour

// Fixed validity of the derived CA: every master must build the identical
// certificate, so nothing in it may depend on the clock.
var (
	caNotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)
)

// CA is the cluster certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  ed25519.PrivateKey
	// DER is Cert's encoding; its SHA-256 is the token's pin.
	DER  []byte
	pool *x509.CertPool
}

// DeriveCA builds the CA from the cluster secret: its key from
// HKDF(secret, "skiff ca v1") and its certificate from a fixed template,
// signed with ed25519 (deterministic), so the result is the same bytes on
// every machine.
func DeriveCA(secret []byte) (*CA, error) {
	if len(secret) == 0 {
		return nil, errors.New("derive the cluster CA: empty secret")
	}
	key := ed25519.NewKeyFromSeed(derive(secret, infoCA, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	h := sha256.Sum256(pub)
	serial := new(big.Int).SetBytes(h[:16])
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "skiff cluster CA"},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          h[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("derive the cluster CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("derive the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, DER: der, pool: pool}, nil
}

// Hash is the SHA-256 of the CA certificate, the token's pin.
func (ca *CA) Hash() [32]byte { return sha256.Sum256(ca.DER) }

// Pool holds only this CA: the one root every skiff connection trusts.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Leaf describes a certificate to issue. The issuer decides all of it;
// nothing is taken from a request.
type Leaf struct {
	CommonName   string
	Organization string
	DNSNames     []string
	IPs          []net.IP
	// Lifetime defaults to DefaultLifetime.
	Lifetime time.Duration
	// Now is the issue time (tests); zero means the clock.
	Now time.Time
}

// clockSkew backdates NotBefore so a peer whose clock is a little behind
// accepts a fresh certificate.
const clockSkew = 5 * time.Minute

// Issue signs a certificate for pub as described by l. It is valid for both
// server and client authentication: every skiff process is both.
func (ca *CA) Issue(pub crypto.PublicKey, l Leaf) ([]byte, error) {
	if l.CommonName == "" || l.Organization == "" {
		return nil, errors.New("issue certificate: CommonName and Organization are required")
	}
	now := l.Now
	if now.IsZero() {
		now = time.Now()
	}
	life := l.Lifetime
	if life <= 0 {
		life = DefaultLifetime
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{l.Organization}},
		// Backdated by the skew but not counted in the lifetime, so renewal
		// at 2/3 happens at 2/3 of the time the issuer meant.
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(life),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              slices.Clone(l.DNSNames),
		IPAddresses:           slices.Clone(l.IPs),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", l.CommonName, err)
	}
	return der, nil
}

// IssueKeyPair issues a certificate for key and returns it ready for TLS.
func (ca *CA) IssueKeyPair(key crypto.Signer, l Leaf) (tls.Certificate, error) {
	der, err := ca.Issue(key.Public(), l)
	if err != nil {
		return tls.Certificate{}, err
	}
	return KeyPair(der, key)
}

// SignCSR issues a certificate for the key of a PKCS#10 request whose
// signature proves possession of it. Only the key is taken from the
// request: names, organization and lifetime come from l.
func (ca *CA) SignCSR(csrDER []byte, l Leaf) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse the certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate request's signature does not verify: %w", err)
	}
	return ca.Issue(csr.PublicKey, l)
}

// NewKey generates a private key for a leaf certificate.
func NewKey() (crypto.Signer, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate a key: %w", err)
	}
	return key, nil
}

// NewCSR makes a certificate request for key (the issuer ignores the name;
// it is there for humans reading the request).
func NewCSR(key crypto.Signer, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create a certificate request: %w", err)
	}
	return der, nil
}

// KeyPair assembles a TLS certificate from a leaf's DER and its key,
// checking that they match.
func KeyPair(der []byte, key crypto.Signer) (tls.Certificate, error) {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate: %w", err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, errors.New("the certificate is not for this key")
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// RenewAt is when a certificate should be replaced: after two thirds of
// its lifetime (counted from its NotBefore plus the backdating skew).
func RenewAt(c *x509.Certificate) time.Time {
	start := c.NotBefore.Add(clockSkew)
	if !start.Before(c.NotAfter) {
		start = c.NotBefore
	}
	return start.Add(c.NotAfter.Sub(start) * 2 / 3)
}

// HasOrg reports whether the certificate's subject names org.
func HasOrg(c *x509.Certificate, org string) bool {
	return c != nil && slices.Contains(c.Subject.Organization, org)
}
