package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// fakeCluster is a manifestClient over a map, recording every write.
type fakeCluster struct {
	mu      sync.Mutex
	objects map[string]*pb.Object // kind/namespace/name
	rv      uint64
	// dryRunErr fails the dry run of the named object (kind/namespace/name).
	dryRunErr map[string]error
	// conflicts makes that many updates fail with Aborted after bumping
	// the object's resourceVersion, as a concurrent writer would.
	conflicts int
	applied   []string // objects stored by Apply (not dry runs)
	updates   []*pb.Object
	// forbidNamespaces makes reads of namespaces PermissionDenied, as for
	// a credential that may not read them.
	forbidNamespaces bool
}

func fakeKey(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

func newFakeCluster(objs ...*pb.Object) *fakeCluster {
	f := &fakeCluster{objects: map[string]*pb.Object{}, dryRunErr: map[string]error{}, rv: 10}
	for _, o := range objs {
		f.rv++
		o.Meta().ResourceVersion = f.rv
		f.objects[fakeKey(o.KindName(), o.Meta().GetNamespace(), o.Meta().GetName())] = o
	}
	return f
}

func (f *fakeCluster) Get(_ context.Context, kind, ns, name string, _ client.ReadOptions) (*pb.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, _ := pb.LookupKind(kind)
	if f.forbidNamespaces && info.Kind == "Namespace" {
		return nil, status.Error(codes.PermissionDenied, "reading namespaces is not allowed")
	}
	o, ok := f.objects[fakeKey(info.Kind, ns, name)]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s %q not found", kind, name)
	}
	return o.Clone(), nil
}

func (f *fakeCluster) Apply(_ context.Context, obj *pb.Object, dryRun bool) (*pb.WriteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := obj.Meta()
	key := fakeKey(obj.KindName(), m.GetNamespace(), m.GetName())
	if dryRun {
		if err := f.dryRunErr[key]; err != nil {
			return nil, err
		}
	}
	// As the store: a new object needs an active namespace, in a dry run too.
	if info, _ := pb.LookupKind(obj.KindName()); info.Namespaced && f.objects[key] == nil {
		ns := f.objects[fakeKey("Namespace", "", m.GetNamespace())]
		switch {
		case ns == nil:
			return nil, status.Errorf(codes.FailedPrecondition, "failed precondition: namespace %q not found", m.GetNamespace())
		case ns.Meta().GetDeletionTimestamp() != nil:
			return nil, status.Errorf(codes.FailedPrecondition, "failed precondition: namespace %q is terminating", m.GetNamespace())
		}
	}
	if dryRun {
		action := "configured"
		if f.objects[key] == nil {
			action = "created"
		}
		return &pb.WriteResponse{Object: obj, Action: action}, nil
	}
	f.rv++
	o := obj.Clone()
	o.Meta().ResourceVersion = f.rv
	f.objects[key] = o
	f.applied = append(f.applied, key)
	return &pb.WriteResponse{Object: o, Action: "created"}, nil
}

func (f *fakeCluster) Update(_ context.Context, obj *pb.Object) (*pb.WriteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := obj.Meta()
	key := fakeKey(obj.KindName(), m.GetNamespace(), m.GetName())
	cur := f.objects[key]
	if cur == nil {
		return nil, status.Errorf(codes.NotFound, "%s not found", key)
	}
	if f.conflicts > 0 {
		f.conflicts--
		f.rv++
		cur.Meta().ResourceVersion = f.rv
	}
	if rv := m.GetResourceVersion(); rv != 0 && rv != cur.Meta().GetResourceVersion() {
		return nil, status.Errorf(codes.Aborted, "%s: the object has been modified", key)
	}
	f.updates = append(f.updates, obj.Clone())
	f.rv++
	o := obj.Clone()
	o.Meta().ResourceVersion = f.rv
	o.Meta().DeletionTimestamp = cur.Meta().GetDeletionTimestamp()
	action := "configured"
	if o.Meta().DeletionTimestamp != nil && len(o.Meta().GetFinalizers()) == 0 {
		delete(f.objects, key)
		action = "deleted"
	} else {
		f.objects[key] = o
	}
	return &pb.WriteResponse{Object: o, Action: action}, nil
}

func writeManifest(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testOptions() (*Options, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &Options{Out: &out, ErrOut: &errOut}, &out, &errOut
}

const mixedManifest = `apiVersion: v1
kind: ConfigMap
metadata: {name: good1}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: Bad_Name}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx
        resources: {limits: {memory: 12 apples}}
`

// TestCheckObjectsNamesEveryBadDocument: the local check finds every
// mistake, each with its file, document, object and field path.
func TestCheckObjectsNamesEveryBadDocument(t *testing.T) {
	p := writeManifest(t, mixedManifest)
	objs, err := loadManifests([]string{p}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := checkObjects(objs)
	if len(bad) != 2 {
		t.Fatalf("got %d problems, want 2: %q", len(bad), bad)
	}
	for i, want := range []string{
		p + ": document 2 (ConfigMap Bad_Name): metadata.name: Invalid value: \"Bad_Name\"",
		p + ": document 3 (Deployment web): spec.template.spec.containers[0].resources.limits[memory]: Invalid value: \"12 apples\"",
	} {
		if !strings.HasPrefix(bad[i], want) {
			t.Errorf("problem %d:\n got %s\nwant prefix %s", i, bad[i], want)
		}
	}
	// The check works on copies: the objects sent are the user's.
	if objs[2].Object.GetDeployment().GetSpec().Replicas != nil {
		t.Error("checkObjects defaulted the object itself")
	}
}

func TestCheckObjectsGenerateName(t *testing.T) {
	objs, err := loadManifests([]string{writeManifest(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: x-}\n")}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := checkObjects(objs); len(bad) != 1 || !strings.Contains(bad[0], "metadata.name: Required value: generateName works only with create") {
		t.Fatalf("got %q", bad)
	}
}

// TestApplyAllOrNothing: a problem only the masters or the namespace check
// find (here a dry-run refusal and a missing namespace) still stores
// nothing, and every problem is reported.
func TestApplyAllOrNothing(t *testing.T) {
	manifest := `apiVersion: v1
kind: ConfigMap
metadata: {name: good1}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: too-big}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: missing}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: inside, namespace: fresh}
---
apiVersion: v1
kind: Namespace
metadata: {name: fresh}
`
	objs, err := loadManifests([]string{writeManifest(t, manifest)}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := checkObjects(objs); len(bad) > 0 {
		t.Fatalf("local check: %q", bad)
	}
	f := newFakeCluster(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}))
	f.dryRunErr[fakeKey("ConfigMap", "default", "too-big")] = status.Error(codes.ResourceExhausted, `ConfigMap "too-big" is 2000000 bytes, over the limit of 1048576 bytes`)
	o, out, errOut := testOptions()
	err = runApply(context.Background(), o, f, objs, false)
	if err == nil || !strings.Contains(err.Error(), "2 of 5 objects failed the checks: nothing was applied") {
		t.Fatalf("runApply: %v", err)
	}
	if len(f.applied) != 0 {
		t.Fatalf("stored %v despite failed checks", f.applied)
	}
	for _, want := range []string{
		"document 2 (ConfigMap too-big): ConfigMap \"too-big\" is 2000000 bytes, over the limit",
		"document 3 (ConfigMap elsewhere): metadata.namespace: namespace \"missing\" not found: create it first",
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("errors lack %q:\n%s", want, errOut.String())
		}
	}
	if strings.Contains(errOut.String(), "fresh") || out.Len() != 0 {
		t.Errorf("a namespace created by the same manifests was refused, or output printed:\n%s%s", errOut.String(), out.String())
	}

	// Fixed, everything is applied, the namespace first.
	delete(f.dryRunErr, fakeKey("ConfigMap", "default", "too-big"))
	objs = slices.DeleteFunc(objs, func(m manifestObject) bool { return m.Object.Meta().GetName() == "elsewhere" })
	if err := runApply(context.Background(), o, f, objs, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"Namespace//fresh", "ConfigMap/default/good1", "ConfigMap/default/too-big", "ConfigMap/fresh/inside"}
	if strings.Join(f.applied, " ") != strings.Join(want, " ") {
		t.Errorf("applied %v, want %v", f.applied, want)
	}
}

func TestApplyRefusesTerminatingNamespace(t *testing.T) {
	ns := pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "old", DeletionTimestamp: timestamppb.Now()}})
	existing := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "kept", Namespace: "old"}})
	f := newFakeCluster(ns, existing)
	objs, err := loadManifests([]string{writeManifest(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: kept, namespace: old}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: new, namespace: old}
`)}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	o, _, errOut := testOptions()
	if err := runApply(context.Background(), o, f, objs, false); err == nil || len(f.applied) != 0 {
		t.Fatalf("err %v, applied %v", err, f.applied)
	}
	// Updating an existing object is fine; creating one is not.
	if got := errOut.String(); strings.Contains(got, "kept") || !strings.Contains(got, `(ConfigMap new): metadata.namespace: namespace "old" is terminating`) {
		t.Errorf("errors:\n%s", got)
	}
}

func TestApplyDryRunStoresNothing(t *testing.T) {
	f := newFakeCluster(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}))
	objs, err := loadManifests([]string{writeManifest(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	o, out, _ := testOptions()
	if err := runApply(context.Background(), o, f, objs, true); err != nil {
		t.Fatal(err)
	}
	if len(f.applied) != 0 || out.String() != "configmap/a created (dry run)\n" {
		t.Errorf("applied %v, output %q", f.applied, out.String())
	}
}

// TestApplyDryRunNamespaceInManifests: the masters refuse a dry run of an
// object whose namespace does not exist yet; when the same manifests create
// that namespace, apply --dry-run reports it would be created, and apply
// stores the namespace first and then its contents.
func TestApplyDryRunNamespaceInManifests(t *testing.T) {
	manifest := `apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
---
apiVersion: v1
kind: Namespace
metadata: {name: team}
`
	for _, forbid := range []bool{false, true} {
		t.Run(fmt.Sprintf("namespaces readable: %v", !forbid), func(t *testing.T) {
			objs, err := loadManifests([]string{writeManifest(t, manifest)}, false, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			f := newFakeCluster(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}))
			f.forbidNamespaces = forbid
			// The fake refuses as the store does: the dry run of the
			// ConfigMap alone fails.
			if _, err := f.Apply(context.Background(), objs[1].Object, true); status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("fake dry run in a missing namespace: %v", err)
			}
			o, out, errOut := testOptions()
			if err := runApply(context.Background(), o, f, objs, true); err != nil {
				t.Fatalf("dry run: %v\n%s", err, errOut.String())
			}
			if want := "namespace/team created (dry run)\nconfigmap/settings created (dry run)\n"; out.String() != want || len(f.applied) != 0 {
				t.Fatalf("dry run: output %q, want %q; applied %v", out.String(), want, f.applied)
			}
			out.Reset()
			if err := runApply(context.Background(), o, f, objs, false); err != nil {
				t.Fatalf("apply: %v\n%s", err, errOut.String())
			}
			if want := []string{"Namespace//team", "ConfigMap/team/settings"}; !slices.Equal(f.applied, want) {
				t.Errorf("applied %v, want %v", f.applied, want)
			}
		})
	}
}

// TestApplyReportsOtherPreconditions: a refusal that is not about the
// namespace is reported as the masters word it, even in a namespace the
// manifests create.
func TestApplyReportsOtherPreconditions(t *testing.T) {
	objs, err := loadManifests([]string{writeManifest(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, namespace: lost}
`)}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeCluster(pb.Wrap(&pb.Namespace{Metadata: &pb.ObjectMeta{Name: "default"}}))
	f.forbidNamespaces = true
	f.dryRunErr[fakeKey("ConfigMap", "default", "a")] = status.Error(codes.FailedPrecondition, "something else entirely")
	o, _, errOut := testOptions()
	if err := runApply(context.Background(), o, f, objs, true); err == nil || len(f.applied) != 0 {
		t.Fatalf("err %v, applied %v", err, f.applied)
	}
	for _, want := range []string{
		"(ConfigMap a): something else entirely",
		// Namespaces cannot be read here: the masters' message stands.
		`(ConfigMap b): failed precondition: namespace "lost" not found`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("errors lack %q:\n%s", want, errOut.String())
		}
	}
}

// TestReplaceClearsFinalizers: replace sends the manifest's metadata lists
// whole (none here), with the live resourceVersion, retrying conflicts.
func TestReplaceClearsFinalizers(t *testing.T) {
	stuck := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "settings", Namespace: "default",
		Finalizers: []string{"example.com/hold"}, Annotations: map[string]string{"a": "1"}, DeletionTimestamp: timestamppb.Now()}})
	f := newFakeCluster(stuck)
	f.conflicts = 2
	objs, err := loadManifests([]string{writeManifest(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {k: v}\n")}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	live, bad, err := readLive(context.Background(), f, objs)
	if err != nil || len(bad) > 0 {
		t.Fatal(err, bad)
	}
	resp, err := replaceObject(context.Background(), f, objs[0].Object, live[0])
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAction() != "deleted" || replacedWord(resp.GetAction()) != "replaced and deleted (no finalizers remain)" {
		t.Errorf("action %q", resp.GetAction())
	}
	if len(f.updates) != 1 || len(f.updates[0].Meta().GetFinalizers()) != 0 || f.updates[0].Meta().GetResourceVersion() == 0 {
		t.Fatalf("updates %v", f.updates)
	}
	if _, err := f.Get(context.Background(), "ConfigMap", "default", "settings", client.ReadOptions{}); status.Code(err) != codes.NotFound {
		t.Errorf("object still there: %v", err)
	}
}

func TestReplaceConflictLimits(t *testing.T) {
	cm := func() *pb.Object {
		return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "c", Namespace: "default"}})
	}
	// A writer that never stops: give up after replaceAttempts.
	f := newFakeCluster(cm())
	f.conflicts = 1000
	live, _ := f.Get(context.Background(), "ConfigMap", "default", "c", client.ReadOptions{})
	if _, err := replaceObject(context.Background(), f, cm(), live); status.Code(err) != codes.Aborted || f.conflicts != 1000-replaceAttempts {
		t.Errorf("err %v after %d attempts", err, 1000-f.conflicts)
	}
	// A resourceVersion in the manifest is a precondition: no retry.
	f = newFakeCluster(cm())
	f.conflicts = 1
	pinned := cm()
	pinned.Meta().ResourceVersion = 11
	if _, err := replaceObject(context.Background(), f, pinned, live); status.Code(err) != codes.Aborted || len(f.updates) != 0 {
		t.Errorf("pinned: err %v, updates %d", err, len(f.updates))
	}
	// Missing objects are reported with a hint, before anything is written.
	objs, err := loadManifests([]string{writeManifest(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope}\n")}, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, bad, err := readLive(context.Background(), f, objs)
	if err != nil || len(bad) != 1 || !strings.Contains(bad[0], "(ConfigMap nope): configmap/nope not found: replace changes existing objects; create it with skiff apply") {
		t.Errorf("err %v, bad %q", err, bad)
	}
}

func TestClusterStatusJSONNumbers(t *testing.T) {
	st := &pb.StatusResponse{Leader: "m1", Term: 2, CommitIndex: 4, Servers: []*pb.ServerStatus{
		{Name: "m1", Id: "m1", State: "Leader", Voter: true, AppliedIndex: 4, LastIndex: 4},
		{Name: "m2", Id: "m2", State: "Follower"},
	}}
	data, err := statusJSON(st)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Term        json.RawMessage
		CommitIndex json.RawMessage
		Warning     *string
		Members     []any
		Servers     []map[string]json.RawMessage
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Term) != "2" || string(got.CommitIndex) != "4" {
		t.Errorf("term %s, commitIndex %s: want JSON numbers\n%s", got.Term, got.CommitIndex, data)
	}
	if got.Warning == nil || got.Members == nil || len(got.Servers) != 2 {
		t.Errorf("unset fields missing:\n%s", data)
	}
	if a := string(got.Servers[0]["appliedIndex"]); a != "4" {
		t.Errorf("appliedIndex %s", a)
	}
	if a, v := string(got.Servers[1]["appliedIndex"]), string(got.Servers[1]["voter"]); a != "0" || v != "false" {
		t.Errorf("zero appliedIndex %s, voter %s", a, v)
	}
}
