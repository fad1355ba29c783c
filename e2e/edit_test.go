package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// editorScript writes an editor for skiff edit: its n-th run runs the n-th
// of rounds, shell commands editing "$1"; later runs change nothing. Each
// run first copies the file it was given to dir/presentedN.
func editorScript(t *testing.T, rounds ...string) (editor, dir string) {
	t.Helper()
	dir = t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\nset -e\ndir='%s'\n", dir)
	b.WriteString(`n=$(( $(cat "$dir/n" 2>/dev/null || echo 0) + 1 ))
echo $n > "$dir/n"
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

// editCLI runs skiff with EDITOR set to editor (and SKIFF_EDITOR unset),
// its temporary files in a directory of the test, standard input not a
// terminal.
func editCLI(t *testing.T, c *cluster, editor string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = strings.NewReader("")
	cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"),
		"EDITOR="+editor, "SKIFF_EDITOR=", "TMPDIR="+t.TempDir())
	err := cmd.Run()
	return out.String(), err
}

// skiffLine is the skiff command line, for an editor script that changes
// the object while it is open, as another user would.
func skiffLine(c *cluster) string {
	args := append([]string{skiffBin, "--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...)
	for i, a := range args {
		args[i] = "'" + a + "'"
	}
	return strings.Join(args, " ")
}

// TestEditCLI drives skiff edit against three masters and a hollow worker,
// with EDITOR a script: a Deployment's replicas and a ConfigMap's data
// changed; an unknown field that reopens the editor with the error above
// the edit, fixed on the second save; a save without changes and an
// empty one that cancel; an edit given up after its error, with a copy
// kept; and changes made by someone else while the editor is open: to
// other fields (carried over) and to the same field (not overwritten).
func TestEditCLI(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	hollowWorker(t, c, "h1")
	api := rolloutAPI{t: t, cl: c.client()}
	c.mustCLI(t, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: example/web:v1
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue, size: large}
`, "apply", "-f", "-")
	replicas := func() int32 {
		t.Helper()
		return api.mustGet("Deployment", "web").GetDeployment().GetSpec().GetReplicas()
	}
	data := func() map[string]string {
		t.Helper()
		return api.mustGet("ConfigMap", "settings").GetConfigMap().GetData()
	}
	edit := func(editor string, args ...string) string {
		t.Helper()
		out, err := editCLI(t, c, editor, append([]string{"edit"}, args...)...)
		if err != nil {
			t.Fatalf("skiff edit %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// setReplicas edits spec.replicas only: status has a replicas too.
	setReplicas := func(from, to string) string {
		return fmt.Sprintf(`sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: %s$/  replicas: %s/' "$1"`, from, to)
	}

	// The replicas of a Deployment and the data of a ConfigMap, while the
	// hollow worker runs the Deployment's pods and writes their status.
	editor, dir := editorScript(t, setReplicas("2", "3"))
	if out := edit(editor, "deployment/web"); out != "deployment/web edited\n" {
		t.Errorf("edit deployment/web: %q", out)
	}
	if got := replicas(); got != 3 {
		t.Errorf("spec.replicas = %d after the edit, want 3", got)
	}
	shown, _ := os.ReadFile(filepath.Join(dir, "presented1"))
	if !strings.HasPrefix(string(shown), "# Please edit the object below. Lines beginning with a '#' will be ignored,\n") ||
		!strings.Contains(string(shown), "\nstatus:\n") || !regexp.MustCompile(`(?m)^  replicas: 2$`).Match(shown) {
		t.Errorf("the editor was not given kubectl's header and the object with its status, numbers as numbers:\n%s", shown)
	}
	editor, _ = editorScript(t, `sed -i -e 's/^  color: blue$/  color: green/' "$1"`)
	if out := edit(editor, "configmap", "settings"); out != "configmap/settings edited\n" {
		t.Errorf("edit configmap settings: %q", out)
	}
	if got := data()["color"]; got != "green" {
		t.Errorf("data.color = %q after the edit, want green", got)
	}

	// An unknown field: the editor opens again with the error above the
	// edit; the second save fixes it and is written.
	editor, dir = editorScript(t,
		setReplicas("3", "4")+` && sed -i -e '/^spec:/,/^[a-z]/ s/^  replicas: 4$/  replicaz: 4/' "$1"`,
		`grep -q '^# \* spec.replicaz: unknown field$' "$1" && sed -i -e 's/^  replicaz: 4$/  replicas: 4/' "$1"`)
	out := edit(editor, "deploy", "web")
	if !strings.Contains(out, "error: deployment/web was not saved: spec.replicaz: unknown field\n") || !strings.HasSuffix(out, "deployment/web edited\n") {
		t.Errorf("edit with an unknown field, then fixed:\n%s", out)
	}
	reopened, _ := os.ReadFile(filepath.Join(dir, "presented2"))
	if !strings.Contains(string(reopened), "#\n# deployment/web was not saved:\n# * spec.replicaz: unknown field\n#\n") ||
		!strings.Contains(string(reopened), "\n  replicaz: 4\n") {
		t.Errorf("the reopened file does not show the error above the edit:\n%s", reopened)
	}
	if got := replicas(); got != 4 {
		t.Errorf("spec.replicas = %d after the fixed edit, want 4", got)
	}

	// Saved unchanged, or empty: cancelled, nothing written.
	before := api.mustGet("ConfigMap", "settings").Meta().GetResourceVersion()
	if out := edit("true", "cm/settings"); out != "Edit cancelled, no changes made.\n" {
		t.Errorf("edit saved unchanged: %q", out)
	}
	editor, _ = editorScript(t, `: > "$1"`)
	if out := edit(editor, "cm/settings", "-o", "json"); out != "Edit cancelled, saved file was empty.\n" {
		t.Errorf("edit saved empty: %q", out)
	}
	if after := api.mustGet("ConfigMap", "settings").Meta().GetResourceVersion(); after != before {
		t.Errorf("a cancelled edit wrote the configmap: resourceVersion %d, was %d", after, before)
	}

	// An error saved again unchanged: the command fails with the error and
	// keeps a copy of the edit.
	editor, _ = editorScript(t, `sed -i -e 's/^  color: green$/  color: red/' -e 's/^kind: ConfigMap$/kind: ConfigMap\ncolour: red/' "$1"`)
	out, err := editCLI(t, c, editor, "edit", "configmap/settings")
	m := regexp.MustCompile(`A copy of your changes has been stored to "([^"]+)"`).FindStringSubmatch(out)
	if err == nil || m == nil || !strings.Contains(out, "error: configmap/settings was not edited: colour: unknown field") {
		t.Fatalf("an edit given up: err %v, want the error and the copy's path:\n%s", err, out)
	}
	if kept, _ := os.ReadFile(m[1]); !strings.Contains(string(kept), "\ncolour: red\n") || !strings.Contains(string(kept), "\n  color: red\n") {
		t.Errorf("the copy does not hold the edit:\n%s", kept)
	}
	if got := data()["color"]; got != "green" {
		t.Errorf("data.color = %q after an edit given up, want green", got)
	}

	// Someone else labels the ConfigMap while the editor is open: the edit
	// is carried over onto that version, and both changes are kept.
	editor, _ = editorScript(t, skiffLine(c)+` label configmap settings team=payments >/dev/null && sed -i -e 's/^  size: large$/  size: small/' "$1"`)
	if out := edit(editor, "configmap/settings"); out != "configmap/settings edited\n" {
		t.Errorf("edit with a label added meanwhile: %q", out)
	}
	cm := api.mustGet("ConfigMap", "settings")
	if cm.GetConfigMap().GetData()["size"] != "small" || cm.Meta().GetLabels()["team"] != "payments" {
		t.Errorf("data %v, labels %v: want the edit and the label", cm.GetConfigMap().GetData(), cm.Meta().GetLabels())
	}

	// Someone else scales the Deployment while the editor is open, and the
	// edit changes replicas too: nothing is written, the editor opens
	// again naming the field. Set back, the rest of the edit (a label) is
	// written and the other replicas kept.
	editor, dir = editorScript(t,
		skiffLine(c)+` scale deployment web --replicas 6 >/dev/null && `+setReplicas("4", "5")+
			` && sed -i -e 's/^metadata:$/metadata:\n  labels:\n    tier: frontend/' "$1"`,
		setReplicas("5", "4"))
	out = edit(editor, "deployment/web")
	if !strings.Contains(out, "error: deployment/web was not saved: Conflict: it was changed by someone else since it was read") ||
		!strings.Contains(out, "spec.replicas: 4 when read, now 6, yours 5") || !strings.HasSuffix(out, "deployment/web edited\n") {
		t.Errorf("edit with a conflicting scale:\n%s", out)
	}
	reopened, _ = os.ReadFile(filepath.Join(dir, "presented2"))
	if !strings.Contains(string(reopened), "\n# * spec.replicas: 4 when read, now 6, yours 5\n") {
		t.Errorf("the reopened file does not name the field both changed:\n%s", reopened)
	}
	d := api.mustGet("Deployment", "web")
	if d.GetDeployment().GetSpec().GetReplicas() != 6 || d.Meta().GetLabels()["tier"] != "frontend" {
		t.Errorf("replicas %d, labels %v: want the other user's 6 and the edit's label", d.GetDeployment().GetSpec().GetReplicas(), d.Meta().GetLabels())
	}
}
