package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

// fakeEditor writes an editor script: its n-th run runs the n-th of
// rounds, shell commands editing "$1"; later runs change nothing. Every
// run copies the file it was given to dir/presentedN, before editing it,
// and its path to dir/path.
func fakeEditor(t *testing.T, rounds ...string) (editor, dir string) {
	t.Helper()
	dir = t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\nset -e\ndir='%s'\n", dir)
	b.WriteString(`n=$(( $(cat "$dir/n" 2>/dev/null || echo 0) + 1 ))
echo $n > "$dir/n"
echo "$1" > "$dir/path"
cp "$1" "$dir/presented$n"
case $n in
`)
	for i, r := range rounds {
		fmt.Fprintf(&b, "%d)\n%s\n;;\n", i+1, r)
	}
	b.WriteString("esac\n")
	editor = filepath.Join(dir, "editor.sh")
	if err := os.WriteFile(editor, []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return editor, dir
}

// presented is what the editor's n-th run was given.
func presented(t *testing.T, dir string, n int) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("presented%d", n)))
	if err != nil {
		t.Fatalf("the editor did not run %d times: %v", n, err)
	}
	return string(data)
}

// runs is how often the fake editor ran.
func runs(t *testing.T, dir string) string {
	t.Helper()
	data, _ := os.ReadFile(filepath.Join(dir, "n"))
	return strings.TrimSpace(string(data))
}

// editedPath is the file the fake editor was last given.
func editedPath(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "path"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func settingsConfigMap() *pb.Object {
	return pb.Wrap(&pb.ConfigMap{
		Metadata: &pb.ObjectMeta{Name: "settings", Namespace: "default", Uid: "uid-settings", Labels: map[string]string{"app": "web"}},
		Data:     map[string]string{"color": "blue", "size": "large", "script.sh": "#!/bin/sh\n# a comment of the script\necho hi\n"},
	})
}

func editDeployment() *pb.Object {
	two := int32(2)
	return pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default", Uid: "uid-web", Generation: 1},
		Spec: &pb.DeploymentSpec{
			Replicas: &two,
			Selector: &pb.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &pb.PodTemplateSpec{
				Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: "example/web:v1"}}},
			},
		},
		Status: &pb.DeploymentStatus{Replicas: 2, ObservedGeneration: 1},
	})
}

func key(t *testing.T, kind, ns, name string) objectKey {
	t.Helper()
	info, ok := pb.LookupKind(kind)
	if !ok {
		t.Fatalf("no kind %s", kind)
	}
	return objectKey{kind: info, namespace: ns, name: name}
}

// editSessionFor returns a session with the fake editor; the files it
// edits, and the copies it keeps, go to a directory of the test.
func editSessionFor(t *testing.T, c editClient, editor, format string) (*editSession, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	t.Setenv("TMPDIR", t.TempDir())
	o, out, errOut := testOptions()
	o.Timeout = 10 * time.Second
	return &editSession{o: o, c: c, format: format, editor: editor}, out, errOut
}

// racingCluster is a fakeCluster where someone else writes, with before,
// just ahead of the first update, as if while the editor was open.
type racingCluster struct {
	*fakeCluster
	once   sync.Once
	before func(f *fakeCluster)
}

func (r *racingCluster) Update(ctx context.Context, obj *pb.Object) (*pb.WriteResponse, error) {
	r.once.Do(func() {
		r.fakeCluster.mu.Lock()
		r.before(r.fakeCluster)
		r.fakeCluster.rv++
		for _, o := range r.fakeCluster.objects {
			o.Meta().ResourceVersion = r.fakeCluster.rv
		}
		r.fakeCluster.mu.Unlock()
	})
	return r.fakeCluster.Update(ctx, obj)
}

func (f *fakeCluster) stored(t *testing.T, kind, name string) *pb.Object {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.objects[fakeKey(kind, "default", name)]
	if o == nil {
		t.Fatalf("%s/%s is not stored", kind, name)
	}
	return o.Clone()
}

// TestEditWritesTheChange: the editor gets kubectl's header and the
// object as get -o yaml prints it, status included; what it saves is
// written as an update carrying the resourceVersion read; the file is
// removed afterwards.
func TestEditWritesTheChange(t *testing.T) {
	f := newFakeCluster(editDeployment(), settingsConfigMap())
	read := f.stored(t, "Deployment", "web")
	// Only spec's replicas: status has a replicas: 2 too.
	editor, dir := fakeEditor(t, `sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicas: 5/' "$1"`)
	s, out, errOut := editSessionFor(t, f, editor, "yaml")
	if err := s.editAll([]objectKey{key(t, "deployment", "default", "web")}); err != nil {
		t.Fatalf("edit: %v\n%s", err, errOut)
	}
	if got := out.String(); got != "deployment/web edited\n" {
		t.Errorf("output %q, want %q", got, "deployment/web edited\n")
	}
	yml, _ := pb.EncodeYAML(read)
	want := "# Please edit the object below. Lines beginning with a '#' will be ignored,\n" +
		"# and an empty file will abort the edit. If an error occurs while saving this file will be\n" +
		"# reopened with the relevant failures.\n#\n" + string(yml)
	if got := presented(t, dir, 1); got != want {
		t.Errorf("the editor was given\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(want, "status:") {
		t.Errorf("the object shown has no status:\n%s", want)
	}
	if len(f.updates) != 1 {
		t.Fatalf("%d updates, want 1", len(f.updates))
	}
	u := f.updates[0]
	if got := u.GetDeployment().GetSpec().GetReplicas(); got != 5 {
		t.Errorf("spec.replicas written %d, want 5", got)
	}
	if u.Meta().GetResourceVersion() != read.Meta().GetResourceVersion() || u.Meta().GetUid() != "uid-web" {
		t.Errorf("the update carries resourceVersion %d uid %q, want %d and the uid read", u.Meta().GetResourceVersion(), u.Meta().GetUid(), read.Meta().GetResourceVersion())
	}
	if _, err := os.Stat(editedPath(t, dir)); !os.IsNotExist(err) {
		t.Errorf("the edited file is left behind: %v", err)
	}
	if got := runs(t, dir); got != "1" {
		t.Errorf("the editor ran %s times, want once", got)
	}
}

// TestEditJSONAndEditorWithArguments: -o json shows indented JSON, and an
// editor command line with arguments and quotes is run as the shell would.
func TestEditJSONAndEditorWithArguments(t *testing.T) {
	f := newFakeCluster(settingsConfigMap())
	s, out, errOut := editSessionFor(t, f, `sed -i -e 's/"color": "blue"/"color": "green"/'`, "json")
	if err := s.editAll([]objectKey{key(t, "cm", "default", "settings")}); err != nil {
		t.Fatalf("edit: %v\n%s", err, errOut)
	}
	if got := out.String(); got != "configmap/settings edited\n" {
		t.Errorf("output %q", got)
	}
	if got := f.stored(t, "ConfigMap", "settings").GetConfigMap().GetData()["color"]; got != "green" {
		t.Errorf("color = %q, want green", got)
	}
}

// TestEditCancels: saving the file unchanged, empty, or with changes to
// status only writes nothing and is no failure.
func TestEditCancels(t *testing.T) {
	tests := []struct {
		name, round, want string
	}{
		{"unchanged", `:`, "Edit cancelled, no changes made.\n"},
		{"only comments changed", `sed -i -e 's/^# Please/# Please do/' "$1"`, "Edit cancelled, no changes made.\n"},
		{"empty", `: > "$1"`, "Edit cancelled, saved file was empty.\n"},
		{"comments only", `printf '# nothing\n\n' > "$1"`, "Edit cancelled, saved file was empty.\n"},
		{"status only", `sed -i -e 's/^  observedGeneration: 1$/  observedGeneration: 7/' "$1"`,
			"Edit cancelled, no changes made (changes to status are not saved: the cluster's controllers and workers write it).\n"},
		{"same values written otherwise", `sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicas:   2   # two/' "$1"`, "Edit cancelled, no changes made.\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(editDeployment())
			editor, dir := fakeEditor(t, tc.round)
			s, out, errOut := editSessionFor(t, f, editor, "yaml")
			if err := s.editAll([]objectKey{key(t, "deploy", "default", "web")}); err != nil {
				t.Fatalf("edit: %v\n%s", err, errOut)
			}
			if errOut.String() != tc.want || out.Len() != 0 {
				t.Errorf("stdout %q, stderr %q; want stderr %q", out, errOut, tc.want)
			}
			if len(f.updates) != 0 {
				t.Errorf("%d updates, want none", len(f.updates))
			}
			if _, err := os.Stat(editedPath(t, dir)); !os.IsNotExist(err) {
				t.Errorf("the edited file is left behind: %v", err)
			}
		})
	}
}

// TestEditReopensUntilValid: an edit that cannot be saved opens the editor
// again with the errors as comments above the user's content; a valid
// second save is written.
func TestEditReopensUntilValid(t *testing.T) {
	f := newFakeCluster(editDeployment())
	editor, dir := fakeEditor(t,
		`sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicaz: 4/' "$1"`,
		`sed -i -e 's/^  replicaz: 4$/  replicas: 4/' "$1"`)
	s, out, errOut := editSessionFor(t, f, editor, "yaml")
	if err := s.editAll([]objectKey{key(t, "deploy", "default", "web")}); err != nil {
		t.Fatalf("edit: %v\n%s", err, errOut)
	}
	second := presented(t, dir, 2)
	wantTop := "# Please edit the object below. Lines beginning with a '#' will be ignored,\n" +
		"# and an empty file will abort the edit. If an error occurs while saving this file will be\n" +
		"# reopened with the relevant failures.\n#\n" +
		"# deployment/web was not saved:\n" +
		"# * spec.replicaz: unknown field\n#\n"
	if !strings.HasPrefix(second, wantTop) || !strings.Contains(second, "\n  replicaz: 4\n") {
		t.Errorf("the reopened file:\n%s\nwant it to begin with\n%s\nand hold the edit", second, wantTop)
	}
	if !strings.Contains(errOut.String(), "error: deployment/web was not saved: spec.replicaz: unknown field") {
		t.Errorf("stderr lacks the error:\n%s", errOut)
	}
	if out.String() != "deployment/web edited\n" || len(f.updates) != 1 || f.updates[0].GetDeployment().GetSpec().GetReplicas() != 4 {
		t.Errorf("output %q, %d updates; want replicas 4 written", out, len(f.updates))
	}
}

// TestEditGivesUp: an edit that is not valid, saved again unchanged (or
// empty), fails the command with the last error and keeps a copy of the
// edit; nothing is written. Each error names the field.
func TestEditGivesUp(t *testing.T) {
	tests := []struct {
		name   string
		round  string
		want   string // in the error, and in the reopened file
		second string // the second round; "" saves it unchanged
	}{
		{"unknown field", `sed -i -e 's/^  replicas: 2$/  replicas: 2\n  paused2: true/' "$1"`, "spec.paused2: unknown field", ""},
		{"wrong type", `sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicas: many/' "$1"`, "spec.replicas: expected integer", ""},
		{"invalid value", `sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicas: -1/' "$1"`, "spec.replicas: Invalid value: -1", ""},
		{"name", `sed -i -e 's/^  name: web$/  name: web2/' "$1"`, `metadata.name: Invalid value: "web2": cannot be changed from "web"`, ""},
		{"namespace", `sed -i -e 's/^  namespace: default$/  namespace: other/' "$1"`, `metadata.namespace: Invalid value: "other": cannot be changed from "default"`, ""},
		{"kind", `sed -i -e 's/^kind: Deployment$/kind: DaemonSet/' "$1"`, `kind: Invalid value: "DaemonSet": cannot be changed from "Deployment"`, ""},
		{"apiVersion", `sed -i -e 's|^apiVersion: apps/v1$|apiVersion: apps/v2|' "$1"`, `apiVersion: Invalid value: "apps/v2": cannot be changed from "apps/v1"`, ""},
		{"two objects", `printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n' >> "$1"`, "the file holds 2 objects", ""},
		{"syntax", `sed -i -e 's/^spec:$/spec: [/' "$1"`, "yaml: line", ""},
		{"empty the second time", `sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicas: many/' "$1"`, "spec.replicas: expected integer", `: > "$1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(editDeployment())
			editor, dir := fakeEditor(t, tc.round, tc.second)
			s, out, errOut := editSessionFor(t, f, editor, "yaml")
			err := s.editAll([]objectKey{key(t, "deploy", "default", "web")})
			if err == nil || !strings.Contains(err.Error(), "deployment/web was not edited: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want the last error, %q", err, tc.want)
			}
			if second := presented(t, dir, 2); !strings.Contains(second, "# * "+tc.want) {
				t.Errorf("the reopened file lacks the error %q:\n%s", tc.want, second)
			}
			path := editedPath(t, dir)
			if !strings.Contains(errOut.String(), fmt.Sprintf("A copy of your changes has been stored to %q\n", path)) {
				t.Errorf("stderr does not say where the copy is:\n%s", errOut)
			}
			copied, rerr := os.ReadFile(path)
			if rerr != nil || string(copied) != presented(t, dir, 2) {
				t.Errorf("the copy is not the edit shown with its errors: %v\n%s", rerr, copied)
			}
			if len(f.updates) != 0 || out.Len() != 0 {
				t.Errorf("%d updates, stdout %q; want nothing written", len(f.updates), out)
			}
			if got := runs(t, dir); got != "2" {
				t.Errorf("the editor ran %s times, want 2", got)
			}
		})
	}
}

// TestEditConflictStatusOnly: a write of status meanwhile does not touch
// what the edit writes, so the edit goes onto the current version.
func TestEditConflictStatusOnly(t *testing.T) {
	f := newFakeCluster(editDeployment())
	rc := &racingCluster{fakeCluster: f, before: func(f *fakeCluster) {
		f.objects[fakeKey("Deployment", "default", "web")].GetDeployment().Status.ReadyReplicas = 2
	}}
	editor, _ := fakeEditor(t, `sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 2$/  replicas: 3/' "$1"`)
	s, out, errOut := editSessionFor(t, rc, editor, "yaml")
	if err := s.editAll([]objectKey{key(t, "deploy", "default", "web")}); err != nil {
		t.Fatalf("edit: %v\n%s", err, errOut)
	}
	got := f.stored(t, "Deployment", "web").GetDeployment()
	if out.String() != "deployment/web edited\n" || got.GetSpec().GetReplicas() != 3 || len(f.updates) != 1 {
		t.Errorf("output %q, replicas %d, %d updates; want 3 written once", out, got.GetSpec().GetReplicas(), len(f.updates))
	}
}

// TestEditConflictOtherFields: someone else's change to other fields is
// kept, and the edit written over it.
func TestEditConflictOtherFields(t *testing.T) {
	f := newFakeCluster(settingsConfigMap())
	rc := &racingCluster{fakeCluster: f, before: func(f *fakeCluster) {
		cm := f.objects[fakeKey("ConfigMap", "default", "settings")]
		cm.GetConfigMap().Data["size"] = "small"
		cm.Meta().Labels["team"] = "payments"
	}}
	editor, _ := fakeEditor(t, `sed -i -e 's/^  color: blue$/  color: green/' -e 's/^    app: web$/    app: api/' "$1"`)
	s, out, errOut := editSessionFor(t, rc, editor, "yaml")
	if err := s.editAll([]objectKey{key(t, "cm", "default", "settings")}); err != nil {
		t.Fatalf("edit: %v\n%s", err, errOut)
	}
	cm := f.stored(t, "ConfigMap", "settings")
	data, labels := cm.GetConfigMap().GetData(), cm.Meta().GetLabels()
	if out.String() != "configmap/settings edited\n" || data["color"] != "green" || data["size"] != "small" ||
		labels["app"] != "api" || labels["team"] != "payments" || data["script.sh"] != "#!/bin/sh\n# a comment of the script\necho hi\n" {
		t.Errorf("output %q; stored data %v labels %v; want both changes", out, data, labels)
	}
}

// TestEditConflictSameField: a field both changed is not overwritten: the
// editor opens again naming it with its three values; saving that
// unchanged gives up; setting the field back writes the rest of the edit
// over the other change.
func TestEditConflictSameField(t *testing.T) {
	for _, giveUp := range []bool{true, false} {
		t.Run(fmt.Sprintf("giveUp=%v", giveUp), func(t *testing.T) {
			f := newFakeCluster(settingsConfigMap())
			rc := &racingCluster{fakeCluster: f, before: func(f *fakeCluster) {
				f.objects[fakeKey("ConfigMap", "default", "settings")].GetConfigMap().Data["color"] = "red"
			}}
			second := `sed -i -e 's/^  color: green$/  color: blue/' "$1"`
			if giveUp {
				second = ""
			}
			editor, dir := fakeEditor(t, `sed -i -e 's/^  color: blue$/  color: green/' -e 's/^  size: large$/  size: huge/' "$1"`, second)
			s, out, errOut := editSessionFor(t, rc, editor, "yaml")
			err := s.editAll([]objectKey{key(t, "cm", "default", "settings")})
			reopened := presented(t, dir, 2)
			for _, w := range []string{
				"# configmap/settings was not saved: Conflict: it was changed by someone else since it was read (resourceVersion 11, now 12), in fields your edit changes too:\n" +
					`# * data.color: "blue" when read, now "red", yours "green"` + "\n" +
					"# Nothing was written. To keep their values and write the rest of your edit, set these fields back to their value when read and save; " +
					"to edit the current version, quit without saving and run skiff edit again.\n#\n",
				"\n  color: green\n",
			} {
				if !strings.Contains(reopened, w) {
					t.Errorf("the reopened file lacks %q:\n%s", w, reopened)
				}
			}
			data := f.stored(t, "ConfigMap", "settings").GetConfigMap().GetData()
			if giveUp {
				if err == nil || !strings.Contains(err.Error(), `configmap/settings was not edited: Conflict: it was changed by someone else since it was read (resourceVersion 11, now 12), in fields your edit changes too: data.color: "blue" when read, now "red", yours "green". Nothing was written.`) {
					t.Errorf("err = %v, want the conflict", err)
				}
				if data["color"] != "red" || data["size"] != "large" || len(f.updates) != 0 {
					t.Errorf("stored %v after %d updates: want the other change only", data, len(f.updates))
				}
				return
			}
			if err != nil || out.String() != "configmap/settings edited\n" {
				t.Fatalf("err = %v, output %q\n%s", err, out, errOut)
			}
			if data["color"] != "red" || data["size"] != "huge" {
				t.Errorf("stored %v: want color kept red, size huge", data)
			}
		})
	}
}

// TestEditObjectGoneMeanwhile: an object deleted while the editor was open
// cannot be saved: the command fails at once, keeping the edit.
func TestEditObjectGoneMeanwhile(t *testing.T) {
	f := newFakeCluster(settingsConfigMap())
	rc := &racingCluster{fakeCluster: f, before: func(f *fakeCluster) {
		delete(f.objects, fakeKey("ConfigMap", "default", "settings"))
	}}
	editor, dir := fakeEditor(t, `sed -i -e 's/^  color: blue$/  color: green/' "$1"`)
	s, _, errOut := editSessionFor(t, rc, editor, "yaml")
	err := s.editAll([]objectKey{key(t, "cm", "default", "settings")})
	if err == nil || !strings.Contains(err.Error(), "configmap/settings was not edited: ") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v, want not found", err)
	}
	path := editedPath(t, dir)
	if copied, _ := os.ReadFile(path); !strings.Contains(string(copied), "color: green") || !strings.Contains(errOut.String(), "A copy of your changes has been stored to") {
		t.Errorf("the copy holds %q; stderr %q", copied, errOut)
	}
	if runs(t, dir) != "1" {
		t.Errorf("the editor was reopened for an error no edit can fix")
	}
}

// TestEditSeveral: objects are edited one after the other; a missing or
// cancelled one does not stop the others, and the command fails if one
// failed.
func TestEditSeveral(t *testing.T) {
	other := settingsConfigMap()
	other.Meta().Name = "other"
	f := newFakeCluster(settingsConfigMap(), other)
	editor, dir := fakeEditor(t, `:`, `sed -i -e 's/^  color: blue$/  color: green/' "$1"`)
	s, out, errOut := editSessionFor(t, f, editor, "yaml")
	err := s.editAll([]objectKey{key(t, "cm", "default", "settings"), key(t, "cm", "default", "nosuch"), key(t, "cm", "default", "other")})
	if err == nil || err.Error() != "1 of 3 objects were not edited" {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(errOut.String(), "Edit cancelled, no changes made.\n") || !strings.Contains(errOut.String(), `error: configmap "nosuch" not found in namespace default`) {
		t.Errorf("stderr:\n%s", errOut)
	}
	if out.String() != "configmap/other edited\n" || !strings.Contains(presented(t, dir, 2), "name: other") {
		t.Errorf("stdout %q; want the second object edited in the second session", out)
	}
}

func TestFindEditor(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if e, err := findEditor(nil, env(map[string]string{"SKIFF_EDITOR": "nano", "EDITOR": "vim"})); e != "nano" || err != nil {
		t.Errorf("= %q, %v; want SKIFF_EDITOR first", e, err)
	}
	if e, err := findEditor(nil, env(map[string]string{"SKIFF_EDITOR": " ", "EDITOR": "code --wait"})); e != "code --wait" || err != nil {
		t.Errorf("= %q, %v; want EDITOR", e, err)
	}
	_, err := findEditor(strings.NewReader(""), env(nil))
	if err == nil || !strings.Contains(err.Error(), "standard input is not a terminal") || !strings.Contains(err.Error(), "set EDITOR") {
		t.Errorf("no editor, no terminal: err = %v", err)
	}
}

func TestEditorArgv(t *testing.T) {
	tests := []struct {
		editor string
		want   []string
	}{
		{"vi", []string{"vi", "/t/f.yaml"}},
		{"/usr/bin/nano", []string{"/usr/bin/nano", "/t/f.yaml"}},
		{"code --wait", []string{"sh", "-c", `code --wait "$@"`, "code --wait", "/t/f.yaml"}},
		{`"/opt/my editor/ed" -x`, []string{"sh", "-c", `"/opt/my editor/ed" -x "$@"`, `"/opt/my editor/ed" -x`, "/t/f.yaml"}},
	}
	for _, tc := range tests {
		if got := editorArgv(tc.editor, "/t/f.yaml"); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("editorArgv(%q) = %q, want %q", tc.editor, got, tc.want)
		}
	}
}

// TestEditEditorNotFound: a missing editor is an error that says to set
// EDITOR, for a plain path and for a command line run by the shell.
func TestEditEditorNotFound(t *testing.T) {
	for _, editor := range []string{filepath.Join(t.TempDir(), "no-editor"), "no-such-editor-skiff --wait"} {
		f := newFakeCluster(settingsConfigMap())
		s, _, errOut := editSessionFor(t, f, editor, "yaml")
		err := s.editAll([]objectKey{key(t, "cm", "default", "settings")})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("editor %q not found: set SKIFF_EDITOR or EDITOR", editor)) {
			t.Errorf("editor %q: err = %v", editor, err)
		}
		if !regexp.MustCompile(`A copy of your changes has been stored to "[^"]+"`).MatchString(errOut.String()) {
			t.Errorf("editor %q: the file is not kept:\n%s", editor, errOut)
		}
	}
}

func TestStripComments(t *testing.T) {
	yml := "# header\n#\napiVersion: v1\ndata:\n  script.sh: |\n    # kept: a line of the script\n    echo\n  # an indented comment YAML ignores\n"
	if got, want := string(stripComments([]byte(yml), "yaml", false)), "apiVersion: v1\ndata:\n  script.sh: |\n    # kept: a line of the script\n    echo\n  # an indented comment YAML ignores\n"; got != want {
		t.Errorf("yaml: got\n%s\nwant\n%s", got, want)
	}
	if got, want := string(stripComments([]byte(yml), "yaml", true)), "\n\napiVersion: v1\ndata:\n  script.sh: |\n    # kept: a line of the script\n    echo\n  # an indented comment YAML ignores\n"; got != want {
		t.Errorf("yaml, blanked: got %q, want %q", got, want)
	}
	js := "# header\n{\n    # a comment\n    \"a\": \"# not a comment\"\n}\n"
	if got, want := string(stripComments([]byte(js), "json", false)), "{\n    \"a\": \"# not a comment\"\n}\n"; got != want {
		t.Errorf("json: got %q, want %q", got, want)
	}
}

func TestChangedPathsAndOverlaps(t *testing.T) {
	a := map[string]any{"spec": map[string]any{"replicas": 1, "template": map[string]any{"containers": []any{"x"}}}, "metadata": map[string]any{}}
	b := map[string]any{"spec": map[string]any{"replicas": 1, "template": map[string]any{"containers": []any{"y"}}, "paused": true},
		"metadata": map[string]any{"labels": map[string]any{"a.b/c": "d"}}}
	var got []string
	for _, p := range changedPaths(a, b, nil) {
		got = append(got, fieldName(p))
	}
	if want := "metadata.labels spec.paused spec.template.containers"; strings.Join(got, " ") != want {
		t.Errorf("changedPaths = %q, want %q", got, want)
	}
	if fieldName([]string{"metadata", "labels", "a.b/c"}) != "metadata.labels[a.b/c]" {
		t.Errorf("fieldName of a label key: %s", fieldName([]string{"metadata", "labels", "a.b/c"}))
	}
	if !overlaps([]string{"spec"}, []string{"spec", "replicas"}) || overlaps([]string{"spec", "paused"}, []string{"spec", "replicas"}) {
		t.Error("overlaps is wrong")
	}
}

func TestEditRefusedBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `--output "wide": use yaml or json`, "edit", "deploy/web", "-o", "wide")
	refusedBeforeConnecting(t, "name the objects to edit", "edit")
	refusedBeforeConnecting(t, "no deployments named", "edit", "deployment")
	refusedBeforeConnecting(t, `unknown kind "nosuch"`, "edit", "nosuch/x")
}

// Test that the errors are classed: a status the edit can fix reopens.
func TestFixable(t *testing.T) {
	if !fixable(status.Error(codes.InvalidArgument, "x")) || fixable(status.Error(codes.NotFound, "x")) ||
		fixable(status.Error(codes.Unknown, "outcome unknown")) || !fixable(&invalidEdit{lines: []string{"x"}}) {
		t.Error("fixable is wrong")
	}
}
