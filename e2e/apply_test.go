package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
)

// TestApplyCLI drives apply, replace and cluster status through the real
// binary against three masters: a manifest with one bad document stores
// nothing, replace releases an object stuck in deletion on a finalizer,
// and cluster status -o json prints numbers as numbers.
func TestApplyCLI(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	cl := c.client()
	run := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out, err := c.cli(stdin, args...)
		if err != nil {
			t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	fails := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out, err := c.cli(stdin, args...)
		if err == nil {
			t.Fatalf("skiff %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		return out
	}
	absent := func(t *testing.T, ns, name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cl.Get(ctx, "ConfigMap", ns, name, client.ReadOptions{}); status.Code(err) != codes.NotFound {
			t.Errorf("configmap %s/%s: got %v, want NotFound (nothing stored)", ns, name, err)
		}
	}

	t.Run("a bad document stores nothing", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "mixed.yaml")
		if err := os.WriteFile(file, []byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: good1}
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: Bad_Name}
data: {b: "2"}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		out := fails(t, "", "apply", "-f", file)
		for _, want := range []string{
			file + `: document 2 (ConfigMap Bad_Name): metadata.name: Invalid value: "Bad_Name"`,
			"1 of 2 objects failed the checks: nothing was applied",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		absent(t, "default", "good1")

		// A problem only the cluster knows of (a namespace that does not
		// exist) also stores nothing, and so does --dry-run.
		out = fails(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: good2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: lost, namespace: nowhere}
`, "apply", "-f", "-")
		if want := `standard input: document 2 (ConfigMap lost): metadata.namespace: namespace "nowhere" not found`; !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
		absent(t, "default", "good2")
		out = run(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good3}\n", "apply", "-f", "-", "--dry-run")
		if !strings.Contains(out, "configmap/good3 created (dry run)") {
			t.Errorf("dry run output: %s", out)
		}
		absent(t, "default", "good3")

		// Fixed, the same file applies in full.
		out = run(t, `apiVersion: v1
kind: Namespace
metadata: {name: nowhere}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: lost, namespace: nowhere}
`, "apply", "-f", "-")
		if !strings.Contains(out, "namespace/nowhere created") || !strings.Contains(out, "configmap/lost created") {
			t.Errorf("apply: %s", out)
		}
	})

	t.Run("dry run runs the store's checks", func(t *testing.T) {
		service := func(name, ip string) string {
			return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s}
spec:
  clusterIP: %s
  selector: {app: %s}
  ports: [{port: 80, targetPort: 8080}]
`, name, ip, name)
		}
		serviceAbsent := func(t *testing.T, name string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cl.Get(ctx, "Service", "default", name, client.ReadOptions{}); status.Code(err) != codes.NotFound {
				t.Errorf("service default/%s: got %v, want NotFound (nothing stored)", name, err)
			}
		}
		out := run(t, service("holder", "10.96.0.77"), "apply", "-f", "-")
		if !strings.Contains(out, "service/holder created") {
			t.Fatalf("apply: %s", out)
		}
		// Only the store knows the IP is taken: the dry run asks it.
		out = fails(t, service("thief", "10.96.0.77"), "apply", "-f", "-", "--dry-run")
		for _, want := range []string{
			`standard input: document 1 (Service thief): `,
			`spec.clusterIP: Invalid value: "10.96.0.77": provided IP is already allocated`,
			"1 of 1 objects failed the checks: nothing was applied",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		serviceAbsent(t, "thief")

		// A namespace and its contents in one manifest: the masters refuse
		// the contents' dry run (no such namespace yet), the CLI knows the
		// manifest creates it.
		manifest := `apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
`
		out = run(t, manifest, "apply", "-f", "-", "--dry-run")
		if !strings.Contains(out, "namespace/team created (dry run)") || !strings.Contains(out, "configmap/settings created (dry run)") {
			t.Errorf("dry run of a namespace and its contents: %s", out)
		}
		absent(t, "team", "settings")
	})

	t.Run("replace releases an object stuck on a finalizer", func(t *testing.T) {
		run(t, `apiVersion: v1
kind: ConfigMap
metadata:
  name: held
  finalizers: [example.com/hold]
  annotations: {owner: gone-controller}
data: {k: v}
`, "apply", "-f", "-")
		// delete waits for the object to go; held by a finalizer, it does
		// not, until --timeout; --wait=false returns at once.
		if out, err := c.cli("", "delete", "configmap", "held", "--timeout", "1s"); err == nil || !strings.Contains(out, "configmap/held deletion started\nerror: timed out waiting for the condition on configmaps/held") {
			t.Fatalf("delete of an object held by a finalizer, --timeout 1s: %v\n%s", err, out)
		}
		out := run(t, "", "delete", "configmap", "held", "--wait=false")
		if !strings.Contains(out, "configmap/held") {
			t.Fatalf("delete: %s", out)
		}
		yaml := run(t, "", "get", "configmap", "held", "-o", "yaml")
		if !strings.Contains(yaml, "deletionTimestamp:") || !strings.Contains(yaml, "- example.com/hold") {
			t.Fatalf("not stuck in deletion:\n%s", yaml)
		}
		// apply merges, so a manifest without finalizers keeps them: this
		// is why replace exists.
		run(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held}\ndata: {k: v}\n", "apply", "-f", "-")
		if y := run(t, "", "get", "configmap", "held", "-o", "yaml"); !strings.Contains(y, "- example.com/hold") {
			t.Fatalf("apply removed the finalizer?\n%s", y)
		}

		// The --help example: the object's own YAML without its finalizers.
		yaml = run(t, "", "get", "configmap", "held", "-o", "yaml")
		edited := regexp.MustCompile(`(?m)^  finalizers:\n(  - .*\n)+`).ReplaceAllString(yaml, "")
		if edited == yaml {
			t.Fatalf("no finalizers list to remove in:\n%s", yaml)
		}
		out = run(t, edited, "replace", "-f", "-")
		if !strings.Contains(out, "configmap/held replaced and deleted") {
			t.Errorf("replace: %s", out)
		}
		absent(t, "default", "held")

		// Replace needs an existing object, and says what to use instead.
		out = fails(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: never}\n", "replace", "-f", "-")
		if !strings.Contains(out, "configmap/never not found: replace changes existing objects; create it with skiff apply") {
			t.Errorf("replace of a missing object: %s", out)
		}
		absent(t, "default", "never")

		// Replace overwrites the metadata lists whole: labels and
		// annotations the manifest leaves out are removed.
		run(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain, labels: {a: x}, annotations: {b: yes-please}}\n", "apply", "-f", "-")
		run(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {c: z}\n", "replace", "-f", "-")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := cl.Get(ctx, "ConfigMap", "default", "plain", client.ReadOptions{})
		if err != nil || len(got.Meta().GetLabels()) != 0 || len(got.Meta().GetAnnotations()) != 0 || got.GetConfigMap().GetData()["c"] != "z" {
			t.Errorf("after replace: %v %v", got, err)
		}
	})

	t.Run("cluster status json has numbers", func(t *testing.T) {
		cmd := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...),
			"cluster", "status", "-o", "json")...)
		cmd.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("cluster status -o json: %v\n%s", err, stderr.String())
		}
		var st struct {
			Leader      string
			Term        json.RawMessage
			CommitIndex json.RawMessage
			Servers     []struct {
				Name         string
				AppliedIndex json.RawMessage
			}
		}
		if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
			t.Fatalf("%v:\n%s", err, stdout.String())
		}
		isNumber := func(what string, raw json.RawMessage) {
			t.Helper()
			var n uint64
			if err := json.Unmarshal(raw, &n); err != nil || n == 0 {
				t.Errorf("%s is %s, want a positive JSON number", what, raw)
			}
		}
		isNumber("term", st.Term)
		isNumber("commitIndex", st.CommitIndex)
		if len(st.Servers) != 3 {
			t.Fatalf("servers: %s", stdout.String())
		}
		for _, s := range st.Servers {
			isNumber(fmt.Sprintf("servers[%s].appliedIndex", s.Name), s.AppliedIndex)
		}
	})
}
