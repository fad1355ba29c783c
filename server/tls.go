package server

// Transport security of a master (see docs/architecture.md, Security).
//
// Everything derives from the cluster token (package pki): the CA, which
// every master derives identically from the secret, so that masters need no
// distribution step; the master's own certificate, issued by itself on
// start and re-issued in-process at 2/3 of its lifetime; the gossip key; and
// the credential a worker presents for its first certificate. The API
// accepts a connection without a client certificate only so that such a
// worker can call IssueNodeCertificate; every other call needs a verified
// certificate (authenticate). Raft and master-to-master forwarding accept
// only certificates with O=master.

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// errNoClientCert is the answer to a call without a verified certificate.
var errNoClientCert = status.Error(codes.Unauthenticated,
	"a client certificate signed by the cluster CA is required, or a bearer token: pass --token-file, or --token with --ca-file, or use skiff's CLI config")

// serverTLS is a master's key material; nil when the master runs insecure.
type serverTLS struct {
	token    pki.Token
	ca       *pki.CA
	key      crypto.Signer
	cert     *pki.Reloader
	dir      string
	name     string
	ips      []net.IP
	lifetime time.Duration
}

// newServerTLS reads the token (creating it, and so the cluster, when the
// file does not exist), derives the CA and issues this master's certificate.
func newServerTLS(cfg Config) (*serverTLS, error) {
	if cfg.Insecure {
		cfg.Logger.Warn("INSECURE: the API, Raft, forwarding and gossip are plaintext and unauthenticated; only for local experiments (use --token-file)")
		return nil, nil
	}
	tok, created, err := pki.LoadOrCreateTokenFile(cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("server config: TokenFile: %w", err)
	}
	ca, err := tok.CA()
	if err != nil {
		return nil, fmt.Errorf("server config: TokenFile %s: %w", cfg.TokenFile, err)
	}
	if created {
		cfg.Logger.Info("created the cluster token: start the other masters and the workers with a copy of this file", "token_file", cfg.TokenFile)
	}
	t := &serverTLS{token: tok, ca: ca, dir: filepath.Join(cfg.DataDir, "tls"), name: cfg.Name, lifetime: cfg.CertLifetime}
	if t.key, err = pki.LoadOrCreateKey(t.dir); err != nil {
		return nil, fmt.Errorf("master key in %s: %w", t.dir, err)
	}
	for _, a := range []string{cfg.RaftAddr, cfg.APIAddr, cfg.GossipAddr} {
		if host, _, err := net.SplitHostPort(a); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				t.ips = append(t.ips, ip)
			}
		}
	}
	// A master holds the CA, so a fresh certificate on every start costs
	// nothing and picks up changed addresses.
	c, err := t.issue()
	if err != nil {
		return nil, err
	}
	t.cert = pki.NewReloader(c)
	return t, nil
}

// issue signs a new certificate for this master and keeps a copy in
// DATA-DIR/tls for inspection.
func (t *serverTLS) issue() (tls.Certificate, error) {
	c, err := t.ca.IssueKeyPair(t.key, pki.Leaf{
		CommonName:   pki.MasterCNPrefix + t.name,
		Organization: pki.OrgMaster,
		DNSNames:     []string{pki.MasterServerName, "localhost"},
		IPs:          t.ips,
		Lifetime:     t.lifetime,
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue the master certificate: %w", err)
	}
	if err := pki.SaveCert(t.dir, c); err != nil {
		return tls.Certificate{}, err
	}
	return c, nil
}

// renew re-issues the certificate at 2/3 of its lifetime until ctx ends.
func (s *Server) renewCertificate(ctx context.Context) {
	if s.tls == nil {
		return
	}
	r := &pki.Renewer{
		Cert:    s.tls.cert,
		Issue:   func(context.Context) (tls.Certificate, error) { return s.tls.issue() },
		OnRenew: func(c *x509.Certificate) { s.log.Info("renewed the master certificate", "expires", c.NotAfter) },
		OnError: func(err error) { s.log.Error("renew the master certificate", "err", err) },
	}
	_ = r.Run(ctx)
}

// apiCredentials are the gRPC server's: a client certificate is optional at
// the TLS layer so that a new worker can ask for one; authenticate requires
// it for everything else.
func (t *serverTLS) apiCredentials() grpc.ServerOption {
	return grpc.Creds(credentials.NewTLS(pki.ServerConfig(t.ca.Pool(), t.cert, tls.VerifyClientCertIfGiven)))
}

// peerCredentials are for calls to other masters (forwarding).
func (t *serverTLS) peerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(pki.ClientConfig(t.ca.Pool(), t.cert, pki.MasterServerName, pki.OrgMaster))
}

// agentCredentials are for calls to workers' node agents.
func (t *serverTLS) agentCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(pki.ClientConfig(t.ca.Pool(), t.cert, pki.NodeServerName, pki.OrgNode))
}

// identity returns the verified certificate of a call's peer.
func identity(ctx context.Context) (pki.Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, false
	}
	return pki.IdentityOf(ti.State)
}

// authenticate finds who makes a call: the principal of a verified client
// certificate, else of a bearer token (tokens.go), which the context then
// carries for authorization (authz.go), limits and the audit log.
// IssueNodeCertificate authenticates on its own (its bearer is the join
// credential, not a user token).
func (s *Server) authenticate(ctx context.Context, method string) (context.Context, error) {
	if s.tls == nil || method == pb.Cluster_IssueNodeCertificate_FullMethodName {
		return ctx, nil
	}
	if id, ok := identity(ctx); ok {
		return withPrincipal(ctx, principalOf(id)), nil
	}
	tok := bearer(ctx)
	if tok == "" {
		return ctx, errNoClientCert
	}
	p, err := s.authenticateToken(ctx, tok, time.Now())
	if err != nil {
		return ctx, err
	}
	return withPrincipal(ctx, p), nil
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

// contextStream is a stream with a different context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *contextStream) Context() context.Context { return c.ctx }

// IssueNodeCertificate signs a worker's certificate. Any master can: each
// holds the CA.
func (a *clusterAPI) IssueNodeCertificate(ctx context.Context, req *pb.IssueNodeCertificateRequest) (*pb.IssueNodeCertificateResponse, error) {
	s := a.s
	if s.tls == nil {
		return nil, status.Error(codes.FailedPrecondition, "this master runs with --insecure and issues no certificates: start the masters with --token-file")
	}
	name := req.GetNodeName()
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "node_name %q: %s", name, strings.Join(errs, "; "))
	}
	if id, ok := identity(ctx); ok {
		// Renewal: a node may renew only its own certificate.
		if id.CommonName != pki.NodeCNPrefix+name || !contains(id.Orgs, pki.OrgNode) {
			return nil, status.Errorf(codes.PermissionDenied, "certificate %q may not obtain a certificate for node %q: a node renews only its own", id.CommonName, name)
		}
	} else if !s.tls.token.CheckJoinCredential(bearer(ctx)) {
		return nil, status.Error(codes.Unauthenticated, "a node's first certificate needs the join credential derived from the cluster token: start the worker with the masters' --token-file")
	}
	der, err := s.tls.ca.SignCSR(req.GetCsr(), pki.Leaf{
		CommonName:   pki.NodeCNPrefix + name,
		Organization: pki.OrgNode,
		DNSNames:     []string{pki.NodeServerName},
		Lifetime:     s.cfg.CertLifetime,
	})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	s.log.Info("issued a node certificate", "node", name, "renewal", contains(identityOrgs(ctx), pki.OrgNode))
	return &pb.IssueNodeCertificateResponse{Certificate: der}, nil
}

func identityOrgs(ctx context.Context) []string {
	id, _ := identity(ctx)
	return id.Orgs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bearer returns the token of an "authorization: Bearer X" header.
func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return t
		}
	}
	return ""
}

// tlsStreamLayer is Raft's transport over TLS: both ends present master
// certificates (O=master) signed by the cluster CA.
type tlsStreamLayer struct {
	net.Listener
	advertise net.Addr
	dial      *tls.Config
}

func newTLSStreamLayer(bind string, t *serverTLS) (*tlsStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	// The handshake runs on the first read in raft's connection goroutine,
	// so a slow or hostile peer never blocks Accept.
	srv := pki.ServerConfig(t.ca.Pool(), t.cert, tls.RequireAndVerifyClientCert, pki.OrgMaster)
	return &tlsStreamLayer{
		Listener:  tls.NewListener(ln, srv),
		advertise: ln.Addr(),
		dial:      pki.ClientConfig(t.ca.Pool(), t.cert, pki.MasterServerName, pki.OrgMaster),
	}, nil
}

func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), l.dial)
}
