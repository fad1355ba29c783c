package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newHTTPServer serves:
//
//	/metrics  Prometheus metrics of this master (its own registry)
//	/healthz  200 while the process serves and raft runs
//	/readyz   200 when a leader is known (for the leader itself: ready to
//	          serve) and this master's store is within ReadyMaxLag entries
//	          of the commit index it knows; 503 with the reason otherwise
func (s *Server) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
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
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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
