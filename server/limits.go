package server

// Request limits, so that one client cannot starve the masters: a token
// bucket of unary requests per client, and caps on open watches per client
// and in total. Limits apply where a client connects; requests another
// master forwards were limited there. The interceptors of the API are
// chained here, in one place (interceptors).

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/pki"
	pb "github.com/skiff-sh/skiff/proto"
)

// interceptors returns the API's interceptor chain: metrics see every call
// (rejected ones too); authentication (tls.go) names the caller for
// everything after it; limits come before the audit log so a flood of
// rejected requests cannot flush the audit history; the audit log sees
// what the handler did, and denials, because authorization (authz.go) runs
// last.
func (s *Server) interceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.metrics.unaryInterceptor, s.authUnary, s.limitUnary, s.auditUnary, s.authzUnary),
		grpc.ChainStreamInterceptor(s.metrics.streamInterceptor, s.authStream, s.limitStream, s.auditStream, s.authzStream),
	}
}

// callerFrom names who made a call: the authenticated principal
// (token:ID for bearer tokens, cn=... for certificates), else the verified
// TLS client certificate's common name, else the peer's address (one
// client connection). This is the one place that decides identity, for
// limits and the audit log.
func callerFrom(ctx context.Context) string {
	if pr, ok := principalFrom(ctx); ok {
		return pr.caller()
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if ch := ti.State.VerifiedChains; len(ch) > 0 && len(ch[0]) > 0 && ch[0][0].Subject.CommonName != "" {
			return "cn=" + ch[0][0].Subject.CommonName
		}
	}
	if p.Addr == nil {
		return "unknown"
	}
	return p.Addr.String()
}

// fromMaster reports a call another master forwarded on a client's behalf:
// it was limited and audited on that master. Over TLS only a master's
// certificate (O=master) may carry the mark; without TLS (Insecure) it is
// taken on trust.
func fromMaster(ctx context.Context) bool {
	if !isForwarded(ctx) {
		return false
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			id, ok := pki.IdentityOf(ti.State)
			return ok && contains(id.Orgs, pki.OrgMaster)
		}
	}
	return true
}

// limitsConfig is the part of Config that limits clients (see Config).
type limitsConfig struct {
	rps              float64
	burst            int
	watchesPerClient int
	watches          int
}

// limiter holds per-client token buckets and watch counts.
type limiter struct {
	cfg      limitsConfig
	rejected *prometheus.CounterVec

	mu        sync.Mutex
	clients   map[string]*clientLimits
	watches   int
	lastSweep time.Time
	now       func() time.Time
}

type clientLimits struct {
	bucket   *rate.Limiter
	watches  int
	lastSeen time.Time
}

// idleEvict is how long a client without watches is remembered: its bucket
// refills in burst/rps (2 s at the defaults), after which forgetting it
// loses nothing.
const idleEvict = time.Minute

func newLimiter(cfg limitsConfig, reg prometheus.Registerer) *limiter {
	l := &limiter{
		cfg: cfg,
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_api_rejected_total",
			Help: "API calls refused by a client limit, by limit (rate, watches_per_client, watches).",
		}, []string{"limit"}),
		clients: map[string]*clientLimits{},
		now:     time.Now,
	}
	reg.MustRegister(l.rejected)
	return l
}

// client returns the caller's state; l.mu is held.
func (l *limiter) client(caller string, now time.Time) *clientLimits {
	if now.Sub(l.lastSweep) > idleEvict {
		l.lastSweep = now
		for k, c := range l.clients {
			if c.watches == 0 && now.Sub(c.lastSeen) > idleEvict {
				delete(l.clients, k)
			}
		}
	}
	c := l.clients[caller]
	if c == nil {
		c = &clientLimits{bucket: rate.NewLimiter(rate.Limit(l.cfg.rps), l.cfg.burst)}
		l.clients[caller] = c
	}
	c.lastSeen = now
	return c
}

// allow takes one token of caller's bucket.
func (l *limiter) allow(caller string) error {
	if l.cfg.rps <= 0 {
		return nil
	}
	l.mu.Lock()
	now := l.now()
	ok := l.client(caller, now).bucket.AllowN(now, 1)
	l.mu.Unlock()
	if ok {
		return nil
	}
	l.rejected.WithLabelValues("rate").Inc()
	// Nothing was done: the client may retry once a token is back.
	retry := max(time.Duration(float64(time.Second)/l.cfg.rps), 10*time.Millisecond)
	return pb.RateLimitedError(fmt.Sprintf(
		"rate limit of %g requests/s exceeded for %s: slow down or raise --max-requests-per-second", l.cfg.rps, caller), retry)
}

// acquireWatch counts one more open watch for caller; release gives it back.
func (l *limiter) acquireWatch(caller string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.watches > 0 && l.watches >= l.cfg.watches {
		l.rejected.WithLabelValues("watches").Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"this master already serves %d watches, its limit: watch through another master, close unused watches, or raise --max-watches",
			l.watches)
	}
	c := l.client(caller, l.now())
	if l.cfg.watchesPerClient > 0 && c.watches >= l.cfg.watchesPerClient {
		l.rejected.WithLabelValues("watches_per_client").Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"%s already has %d watches open on this master, the limit per client: share watches between informers, close unused ones, or raise --max-watches-per-client",
			caller, c.watches)
	}
	c.watches++
	l.watches++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			c.watches--
			l.watches--
			c.lastSeen = l.now()
		})
	}, nil
}

func (s *Server) limitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !fromMaster(ctx) {
		if err := s.limits.allow(callerFrom(ctx)); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (s *Server) limitStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	// A List streams only to carry a large answer in chunks: it is one
	// request, limited as the unary calls are, and no watch.
	if info.FullMethod == pb.Cluster_List_FullMethodName && !fromMaster(ss.Context()) {
		if err := s.limits.allow(callerFrom(ss.Context())); err != nil {
			return err
		}
	}
	if info.FullMethod == pb.Cluster_Watch_FullMethodName {
		release, err := s.limits.acquireWatch(callerFrom(ss.Context()))
		if err != nil {
			return err
		}
		defer release()
	}
	return h(srv, ss)
}
