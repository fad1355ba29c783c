package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/pki"
)

// metricsAuthHelp is the body of a 401 from /metrics.
const metricsAuthHelp = "/metrics needs a credential: a client certificate signed by the cluster CA " +
	"(as the skiff CLI makes one from --token-file) or \"Authorization: Bearer <token>\" with a token of any role " +
	"from `skiff token create` (--print-config also prints the CA to verify this server with, as server name " +
	pki.MasterServerName + "); /healthz and /readyz need none"

// newHTTPServer serves:
//
//	/metrics  Prometheus metrics of this master (its own registry)
//	/healthz  200 while the process serves and raft runs
//	/readyz   200 when a leader is known (for the leader itself: ready to
//	          serve) and this master's store is within ReadyMaxLag entries
//	          of the commit index it knows; 503 with the reason otherwise
//
// Unless the master runs with --insecure it serves HTTPS with the same
// certificate as the API (read on every handshake, so renewals apply), and
// /metrics needs an authenticated caller of any role: a client certificate
// from the cluster CA or a bearer token the API would accept. The health
// checks stay anonymous, as Kubernetes' are, so that load balancers and
// process supervisors need no credential; they reveal nothing but
// readiness.
func (s *Server) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	var metrics http.Handler = promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg})
	if s.tls != nil {
		metrics = s.requireCaller(metrics)
	}
	mux.Handle("/metrics", metrics)
	if s.cfg.EnablePprof {
		s.handlePprof(mux)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.raft.State() == raft.Shutdown {
			http.Error(w, "raft is shut down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := s.notReady(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Failed handshakes (a scanner, a client of another cluster) would
		// otherwise go to the standard logger.
		ErrorLog: slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelWarn),
	}
	if s.tls != nil {
		// A client certificate is optional at the TLS layer so that
		// health checks and bearer tokens work; one that is given must
		// chain to the cluster CA, or the handshake fails.
		srv.TLSConfig = pki.ServerConfig(s.tls.ca.Pool(), s.tls.cert, tls.VerifyClientCertIfGiven)
	}
	return srv
}

// handlePprof serves Go's profiler under /debug/pprof/ (--enable-pprof),
// for admins only unless the master runs with --insecure: profiles and
// goroutine dumps show the master's internals and cost CPU to take.
func (s *Server) handlePprof(mux *http.ServeMux) {
	wrap := func(h http.Handler) http.Handler {
		if s.tls == nil {
			return h
		}
		return s.requireCaller(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if p, _, _ := s.httpCaller(r); p.role != RoleAdmin {
				http.Error(w, fmt.Sprintf("/debug/pprof needs the admin role; %s has role %q", p.caller(), p.role), http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		}))
	}
	mux.Handle("/debug/pprof/", wrap(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", wrap(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", wrap(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", wrap(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", wrap(http.HandlerFunc(pprof.Trace)))
}

// serveHTTP serves the HTTP endpoint until it is shut down: HTTPS unless
// the master runs with --insecure.
func (s *Server) serveHTTP() error {
	if s.tls != nil {
		// The certificate comes from TLSConfig.GetCertificate.
		return s.http.ServeTLS(s.httpLn, "", "")
	}
	return s.http.Serve(s.httpLn)
}

// requireCaller lets a request through only from an authenticated caller
// with a role: 401 (with how to authenticate) without a credential or with
// a bad token, 403 for a certificate that names no role.
func (s *Server) requireCaller(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, code, msg := s.httpCaller(r)
		if code != http.StatusOK {
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="skiff"`)
			}
			http.Error(w, msg, code)
			return
		}
		s.log.Debug("HTTP request", "path", r.URL.Path, "caller", p.caller())
		next.ServeHTTP(w, r)
	})
}

// httpCaller authenticates an HTTPS request as authenticate does a gRPC
// call: the verified client certificate, else the bearer token. It returns
// the HTTP status to answer with when the caller may not proceed.
func (s *Server) httpCaller(r *http.Request) (principal, int, string) {
	if r.TLS != nil {
		if id, ok := pki.IdentityOf(*r.TLS); ok {
			p := principalOf(id)
			if p.role == "" {
				return p, http.StatusForbidden, fmt.Sprintf("%s names no role (organization master, node or admin)", p)
			}
			return p, http.StatusOK, ""
		}
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return principal{}, http.StatusUnauthorized, metricsAuthHelp
	}
	tok, ok := cutBearer(auth)
	if !ok {
		return principal{}, http.StatusUnauthorized, "the Authorization header is not \"Bearer <token>\"; " + metricsAuthHelp
	}
	p, err := s.authenticateToken(r.Context(), tok, time.Now())
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unauthenticated {
			return principal{}, http.StatusUnauthorized, st.Message()
		}
		// The token could not be checked (no leader to confirm a token
		// that this master has not seen yet): try again later.
		return principal{}, http.StatusServiceUnavailable, st.Message()
	}
	return p, http.StatusOK, ""
}

// cutBearer returns the token of a "Bearer X" header value; the scheme is
// case-insensitive (RFC 9110).
func cutBearer(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	return v[len(scheme):], true
}

// notReady says why this master should not receive traffic, or "".
func (s *Server) notReady() string {
	select {
	case <-s.stopping:
		return "shutting down"
	default:
	}
	li := s.leaderInfo()
	switch {
	case li.self && !li.ready:
		return "leader elected but not ready yet"
	case !li.self && li.name == "":
		return "no leader known"
	}
	commit, applied := s.raft.CommitIndex(), s.fsm.AppliedIndex()
	if commit > applied+s.cfg.ReadyMaxLag {
		return fmt.Sprintf("store is catching up: applied %d of %d", applied, commit)
	}
	return ""
}
