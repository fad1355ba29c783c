package server

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

func readAudit(t *testing.T, path string) []auditEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e auditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Writes through different masters are logged once each, by the master
// the client called, with who, what, the outcome and the resourceVersion;
// a rejected write is logged with its code; Secret data never is.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	cfgs := testConfigs(t, 3, 3)
	for i := range cfgs {
		cfgs[i].AuditLogFile = filepath.Join(cfgs[i].DataDir, "audit.log")
	}
	servers := startCluster(t, cfgs)
	leader := waitLeader(t, servers)
	fol := followers(servers, leader)
	ctx := ctxT(t, 30*time.Second)
	const secretValue = "audit-must-not-see-THIS"

	created, err := fol[0].cluster().Create(ctx, &pb.WriteRequest{Object: configMap("a", map[string]string{"k": "v"})})
	if err != nil {
		t.Fatal(err)
	}
	cm := created.GetObject()
	cm.GetConfigMap().Data["k"] = "v2"
	updated, err := leader.cluster().Update(ctx, &pb.WriteRequest{Object: cm})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := fol[1].cluster().Apply(ctx, &pb.WriteRequest{Object: secretObj("s", map[string]string{"p": secretValue}, nil)})
	if err != nil {
		t.Fatal(err)
	}
	// Rejected by validation on the follower.
	_, err = fol[1].cluster().Create(ctx, &pb.WriteRequest{Object: configMap("Bad_Name", nil)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("create with a bad name: %v", err)
	}
	// Rejected by the store on the leader, after forwarding.
	_, err = fol[1].cluster().Create(ctx, &pb.WriteRequest{Object: configMap("a", nil)})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate create: %v", err)
	}
	deleted, err := fol[0].cluster().Delete(ctx, &pb.DeleteRequest{Delete: &pb.DeleteOp{Kind: "cm", Namespace: "default", Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	// Reads are not audited.
	if _, err := fol[0].cluster().Get(ctx, &pb.GetRequest{Kind: "Secret", Namespace: "default", Name: "s"}); err != nil {
		t.Fatal(err)
	}

	type want struct {
		op, name, code string
		rv             uint64
	}
	check := func(ts *testServer, wants []want) {
		t.Helper()
		raw, err := os.ReadFile(ts.cfg.AuditLogFile)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), secretValue) {
			t.Errorf("%s audit log contains Secret data", ts.cfg.Name)
		}
		got := readAudit(t, ts.cfg.AuditLogFile)
		if len(got) != len(wants) {
			t.Fatalf("%s audit log has %d lines, want %d:\n%s", ts.cfg.Name, len(got), len(wants), raw)
		}
		for i, w := range wants {
			e := got[i]
			if e.Operation != w.op || e.Name != w.name || e.Code != w.code || e.Namespace != "default" ||
				e.Master != ts.cfg.Name || e.ResourceVersion != w.rv {
				t.Errorf("%s line %d: %+v, want %+v", ts.cfg.Name, i, e, w)
			}
			if !strings.HasPrefix(e.Caller, "127.0.0.1:") || e.Time.IsZero() || time.Since(e.Time) > time.Minute || e.DurationSeconds <= 0 {
				t.Errorf("%s line %d: caller, time or duration: %+v", ts.cfg.Name, i, e)
			}
			if w.code != "OK" && e.Message == "" {
				t.Errorf("%s line %d: a failure without its message: %+v", ts.cfg.Name, i, e)
			}
		}
	}
	rv := func(r *pb.WriteResponse) uint64 { return r.GetObject().Meta().GetResourceVersion() }
	check(fol[0], []want{
		{"create", "a", "OK", rv(created)},
		{"delete", "a", "OK", rv(deleted)},
	})
	check(leader, []want{{"update", "a", "OK", rv(updated)}})
	check(fol[1], []want{
		{"apply", "s", "OK", rv(secret)},
		{"create", "Bad_Name", "InvalidArgument", 0},
		{"create", "a", "AlreadyExists", 0},
	})
	if e := readAudit(t, fol[0].cfg.AuditLogFile)[1]; e.Kind != "ConfigMap" {
		t.Errorf("delete by the alias cm logged kind %q, want ConfigMap", e.Kind)
	}

	// Operator calls are audited too.
	if _, err := fol[0].operator().TransferLeadership(ctx, &pb.TransferLeadershipRequest{To: fol[1].cfg.Name}); err != nil {
		t.Fatal(err)
	}
	got := readAudit(t, fol[0].cfg.AuditLogFile)
	if e := got[len(got)-1]; e.Operation != "transfer-leadership" || e.Name != fol[1].cfg.Name || e.Code != "OK" {
		t.Errorf("transfer leadership: %+v", e)
	}
}

func TestAuditLogRotationAndFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	reg := prometheus.NewRegistry()
	a, err := openAuditLog(path, 4096, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.close() })
	for i := range 100 {
		a.write(&auditEntry{Operation: "create", Kind: "ConfigMap", Name: strings.Repeat("x", i%10), Code: "OK"})
	}
	cur, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(path + ".1")
	if err != nil {
		t.Fatalf("no rotated file: %v", err)
	}
	if cur.Size() > 4096 || old.Size() > 4096 || cur.Size() == 0 {
		t.Fatalf("sizes after rotation: %d and %d, cap 4096", cur.Size(), old.Size())
	}
	if n := len(readAudit(t, path)) + len(readAudit(t, path+".1")); n < 20 {
		t.Fatalf("only %d entries kept", n)
	}

	// A write that fails is counted and does not stop later ones.
	a.mu.Lock()
	a.f.Close() // the next write fails
	a.mu.Unlock()
	a.write(&auditEntry{Operation: "delete", Code: "OK"})
	if n := counterValue(t, reg, "skiff_audit_log_write_failures_total"); n != 1 {
		t.Fatalf("failures counted: %v, want 1", n)
	}
	a.write(&auditEntry{Operation: "update", Code: "OK"})
	got := readAudit(t, path)
	if last := got[len(got)-1]; last.Operation != "update" {
		t.Fatalf("after a failure: last entry %+v", last)
	}
	if n := counterValue(t, reg, "skiff_audit_log_write_failures_total"); n != 1 {
		t.Fatalf("failures counted: %v, want 1", n)
	}
}

// counterValue reads a counter without labels from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
