package server

// The audit log: one JSON line per mutating API request (who, what, when,
// result), written by the master the client called, so a write a follower
// forwards is logged once, where the caller connected. Only names and
// outcomes are logged, never objects, so Secret data cannot leak into it.
// The file is capped in size and rotated to one FILE.1. A failure to write
// it is logged and counted (skiff_audit_log_write_failures_total) but never
// fails the request: the write has already happened.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// auditEntry is one line of the audit log.
type auditEntry struct {
	Time            time.Time `json:"time"`
	Master          string    `json:"master"`
	Caller          string    `json:"caller"`
	Operation       string    `json:"operation"`
	Kind            string    `json:"kind,omitempty"`
	Namespace       string    `json:"namespace,omitempty"`
	Name            string    `json:"name,omitempty"`
	DryRun          bool      `json:"dryRun,omitempty"`
	ResourceVersion uint64    `json:"resourceVersion,omitempty"`
	Code            string    `json:"code"`
	Message         string    `json:"message,omitempty"`
	DurationSeconds float64   `json:"durationSeconds"`
}

// auditedMethods maps the mutating methods to their operation names.
var auditedMethods = map[string]string{
	pb.Cluster_Create_FullMethodName:              "create",
	pb.Cluster_Update_FullMethodName:              "update",
	pb.Cluster_UpdateStatus_FullMethodName:        "updateStatus",
	pb.Cluster_Apply_FullMethodName:               "apply",
	pb.Cluster_Delete_FullMethodName:              "delete",
	pb.Cluster_Bind_FullMethodName:                "bind",
	pb.Operator_TransferLeadership_FullMethodName: "transfer-leadership",
	pb.Operator_RemovePeer_FullMethodName:         "remove-peer",
	pb.Operator_SnapshotRestore_FullMethodName:    "snapshot-restore",
}

// maxAuditMessage bounds an error message in the log.
const maxAuditMessage = 1024

// auditLog appends entries to a file, rotating it at maxBytes.
type auditLog struct {
	path     string
	maxBytes int64
	log      *slog.Logger
	failures prometheus.Counter

	mu      sync.Mutex
	f       *os.File
	size    int64
	failing bool // logged the current run of failures already
}

// openAuditLog opens (appends to) path; a file that cannot be opened at
// start is a configuration error.
func openAuditLog(path string, maxBytes int64, log *slog.Logger, reg prometheus.Registerer) (*auditLog, error) {
	a := &auditLog{
		path: path, maxBytes: maxBytes, log: log,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_audit_log_write_failures_total",
			Help: "Audit log entries that could not be written.",
		}),
	}
	if err := a.open(); err != nil {
		return nil, err
	}
	reg.MustRegister(a.failures)
	return a, nil
}

func (a *auditLog) open() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open audit log: %w", err)
	}
	a.f, a.size = f, fi.Size()
	return nil
}

// write appends one entry; errors are logged and counted, not returned.
func (a *auditLog) write(e *auditEntry) {
	line, err := json.Marshal(e)
	if err == nil {
		line = append(line, '\n')
		a.mu.Lock()
		err = a.writeLocked(line)
		a.mu.Unlock()
	}
	if err != nil {
		a.failures.Inc()
		a.mu.Lock()
		first := !a.failing
		a.failing = true
		a.mu.Unlock()
		if first {
			a.log.Error("cannot write the audit log; requests still proceed (see skiff_audit_log_write_failures_total)",
				"path", a.path, "err", err)
		}
		return
	}
	a.mu.Lock()
	recovered := a.failing
	a.failing = false
	a.mu.Unlock()
	if recovered {
		a.log.Info("writing the audit log again", "path", a.path)
	}
}

func (a *auditLog) writeLocked(line []byte) error {
	if a.f != nil && a.size > 0 && a.size+int64(len(line)) > a.maxBytes {
		if err := a.rotate(); err != nil {
			return err
		}
	}
	if a.f == nil {
		// The last write or rotation failed: try again now.
		if err := a.open(); err != nil {
			return err
		}
	}
	n, err := a.f.Write(line)
	a.size += int64(n)
	if err != nil {
		a.f.Close()
		a.f = nil
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// rotate moves the file to path.1, replacing the previous one.
func (a *auditLog) rotate() error {
	err := a.f.Close()
	a.f = nil
	if rerr := os.Rename(a.path, a.path+".1"); rerr != nil {
		return fmt.Errorf("rotate audit log: %w", errors.Join(err, rerr))
	}
	return a.open()
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

func (s *Server) auditUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	op, ok := auditedMethods[info.FullMethod]
	if !ok || s.audit == nil || fromMaster(ctx) {
		return h(ctx, req)
	}
	start := time.Now()
	resp, err := h(ctx, req)
	e := s.auditEntry(ctx, op, start, err)
	describeAudit(e, req, resp)
	s.audit.write(e)
	return resp, err
}

func (s *Server) auditStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	op, ok := auditedMethods[info.FullMethod]
	if !ok || s.audit == nil || fromMaster(ss.Context()) {
		return h(srv, ss)
	}
	start := time.Now()
	rs := &recordingStream{ServerStream: ss}
	err := h(srv, rs)
	e := s.auditEntry(ss.Context(), op, start, err)
	describeAudit(e, nil, rs.last)
	s.audit.write(e)
	return err
}

// recordingStream keeps the last message a handler sent (the response of a
// client-streaming call).
type recordingStream struct {
	grpc.ServerStream
	last any
}

func (r *recordingStream) SendMsg(m any) error {
	r.last = m
	return r.ServerStream.SendMsg(m)
}

func (s *Server) auditEntry(ctx context.Context, op string, start time.Time, err error) *auditEntry {
	st := status.Convert(err)
	msg := st.Message()
	if len(msg) > maxAuditMessage {
		msg = msg[:maxAuditMessage] + "..."
	}
	return &auditEntry{
		Time: start.UTC(), Master: s.cfg.Name, Caller: callerFrom(ctx), Operation: op,
		Code: st.Code().String(), Message: msg, DurationSeconds: time.Since(start).Seconds(),
	}
}

// describeAudit fills in what the request was about and, from the
// response, the resourceVersion it produced.
func describeAudit(e *auditEntry, req, resp any) {
	switch r := req.(type) {
	case *pb.WriteRequest:
		m := metaOf(r.GetObject())
		e.Kind, e.Namespace, e.Name = r.GetObject().KindName(), m.GetNamespace(), m.GetName()
		e.DryRun = r.GetDryRun()
	case *pb.DeleteRequest:
		d := r.GetDelete()
		e.Kind, e.Namespace, e.Name = d.GetKind(), d.GetNamespace(), d.GetName()
		if k, ok := pb.LookupKind(d.GetKind()); ok {
			e.Kind = k.Kind
		}
	case *pb.BindRequest:
		e.Kind = "Pod"
		var names []string
		for _, b := range r.GetBinds() {
			if e.Namespace == "" || e.Namespace == b.GetNamespace() {
				e.Namespace = b.GetNamespace()
				names = append(names, b.GetName())
			} else {
				names = append(names, b.GetNamespace()+"/"+b.GetName())
			}
		}
		e.Name = strings.Join(names, ",")
	case *pb.TransferLeadershipRequest:
		e.Name = r.GetTo()
	case *pb.RemovePeerRequest:
		e.Name = r.GetName()
	}
	switch r := resp.(type) {
	case *pb.WriteResponse:
		if m := metaOf(r.GetObject()); m != nil {
			// A create with generateName only has its name now.
			e.Namespace, e.Name, e.ResourceVersion = m.GetNamespace(), m.GetName(), m.GetResourceVersion()
		}
	case *pb.BatchResponse:
		failed := 0
		for _, res := range r.GetResults() {
			e.ResourceVersion = max(e.ResourceVersion, metaOf(res.GetObject()).GetResourceVersion())
			if res.GetCode() != 0 {
				failed++
			}
		}
		if failed > 0 && e.Message == "" {
			e.Message = fmt.Sprintf("%d of %d binds failed", failed, len(r.GetResults()))
		}
	case *pb.TransferLeadershipResponse:
		e.Name = r.GetLeader()
	case *pb.SnapshotRestoreResponse:
		e.ResourceVersion = r.GetIndex()
	}
}

// metaOf returns o's metadata or nil, without setting an empty one as
// Object.Meta does: responses may share objects with the store.
func metaOf(o *pb.Object) *pb.ObjectMeta {
	if r := o.Resource(); r != nil {
		return r.GetMetadata()
	}
	return nil
}
