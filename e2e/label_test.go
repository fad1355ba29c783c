package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLabelAnnotateTaintCLI drives skiff label, annotate and taint against
// real masters as a user would: labels that selectors then find, an
// overwrite refused and then allowed, removal, a bad key that stores
// nothing, concurrent labelers that lose nothing; annotations; and a taint
// that keeps a pod off the only node until it is removed.
func TestLabelAnnotateTaintCLI(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	hollowWorker(t, c, "h1")
	run := func(args ...string) string {
		t.Helper()
		return c.mustCLI(t, "", args...)
	}
	// fail runs a command that must fail and returns its output.
	fail := func(args ...string) string {
		t.Helper()
		out, err := c.cli("", args...)
		if err == nil {
			t.Fatalf("skiff %s succeeded, want an error:\n%s", strings.Join(args, " "), out)
		}
		return out
	}
	expect := func(got, want, what string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
	}

	c.mustCLI(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {color: blue}\n", "apply", "-f", "-")

	// Labels, and selectors find them.
	expect(run("label", "configmap", "settings", "app=web", "tier=db"), "configmap/settings labeled\n", "label")
	expect(run("get", "configmaps", "-l", "app=web,tier=db", "-o", "name"), "configmap/settings\n", "get -l app=web,tier=db")
	// Another value needs --overwrite; without it nothing changes.
	out := fail("label", "configmap/settings", "app=api")
	if !strings.Contains(out, "'app' already has a value (web), and --overwrite is false") {
		t.Errorf("label without --overwrite: want kubectl's refusal:\n%s", out)
	}
	expect(run("label", "configmap", "settings", "--list"), "app=web\ntier=db\n", "labels after the refused overwrite")
	expect(run("label", "configmap", "settings", "app=api", "--overwrite"), "configmap/settings labeled\n", "label --overwrite")
	expect(run("get", "configmaps", "-l", "app=api", "-o", "name"), "configmap/settings\n", "get -l app=api")
	if out := run("get", "configmaps", "-l", "app=web", "-o", "name"); strings.Contains(out, "settings") {
		t.Errorf("the old label value still selects the configmap:\n%s", out)
	}
	// Removal, and a removal of what is not there.
	expect(run("label", "configmap", "settings", "tier-"), "configmap/settings unlabeled\n", "label tier-")
	expect(run("label", "configmap", "settings", "tier-"), "configmap/settings not labeled\n", "label tier- again")
	expect(run("label", "configmap", "settings", "app=api"), "configmap/settings not labeled\n", "label with the value it has")
	// One bad key: nothing is stored, the good one neither.
	out = fail("label", "configmap", "settings", "good=1", "bad key=1")
	if !strings.Contains(out, `invalid label key "bad key"`) {
		t.Errorf("label with a bad key: the error does not name it:\n%s", out)
	}
	expect(run("label", "configmap", "settings", "--list"), "app=api\n", "labels after the bad key")

	// Concurrent labelers of one object each keep their label: a write
	// that lost the race reads again and retries.
	var wg sync.WaitGroup
	errs := make([]error, 5)
	outs := make([]string, 5)
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = c.cli("", "label", "configmap", "settings", fmt.Sprintf("k%d=v%d", i, i))
		}()
	}
	wg.Wait()
	for i := range 5 {
		if errs[i] != nil || outs[i] != "configmap/settings labeled\n" {
			t.Errorf("concurrent label k%d: %v\n%s", i, errs[i], outs[i])
		}
	}
	expect(run("label", "configmap", "settings", "--list"), "app=api\nk0=v0\nk1=v1\nk2=v2\nk3=v3\nk4=v4\n", "labels after concurrent labelers")

	// Of several objects, one missing: the others are still done, and the
	// command fails naming the missing one.
	out = fail("label", "configmap", "settings", "nosuch", "k0=v0")
	if !strings.Contains(out, "configmap/settings not labeled\n") || !strings.Contains(out, "error: configmap/nosuch: not found in namespace default\n") ||
		!strings.Contains(out, "1 of 2 objects were not labeled") {
		t.Errorf("label of an existing and a missing configmap:\n%s", out)
	}
	if out := fail("annotate", "configmap", "nosuch", "a=1"); !strings.Contains(out, `error: configmap "nosuch" not found in namespace default`) {
		t.Errorf("annotate of a missing configmap:\n%s", out)
	}

	// Annotations: free-form values, selected by label, removed.
	expect(run("annotate", "configmaps", "-l", "app=api", "description=my settings: color=blue"), "configmap/settings annotated\n", "annotate -l")
	if out := run("get", "configmap", "settings", "-o", "yaml"); !strings.Contains(out, "description: 'my settings: color=blue'") {
		t.Errorf("get -o yaml lacks the annotation:\n%s", out)
	}
	out = fail("annotate", "configmap", "settings", "description=other")
	if !strings.Contains(out, "'description' already has a value (my settings: color=blue), and --overwrite is false") {
		t.Errorf("annotate without --overwrite:\n%s", out)
	}
	expect(run("annotate", "configmap", "settings", "description-"), "configmap/settings annotated\n", "annotate description-")
	expect(run("annotate", "configmap", "settings", "--list"), "", "annotations after removal")

	// A node: cluster-scoped objects take labels too.
	waitNodesReady(t, c, "h1")
	expect(run("label", "nodes", "h1", "disk=ssd"), "node/h1 labeled\n", "label nodes h1")
	expect(run("get", "nodes", "-l", "disk=ssd", "-o", "name"), "node/h1\n", "get nodes -l disk=ssd")

	// A taint keeps a pod that does not tolerate it off the only node.
	expect(run("taint", "nodes", "h1", "dedicated=db:NoSchedule"), "node/h1 tainted\n", "taint")
	out = fail("taint", "node/h1", "dedicated=web:NoSchedule")
	if !strings.Contains(out, "node h1 already has dedicated taint(s) with same effect(s) and --overwrite is false") {
		t.Errorf("taint of an existing key and effect without --overwrite:\n%s", out)
	}
	out = fail("taint", "nodes", "h1", "dedicated:NoExecute-")
	if !strings.Contains(out, `taint "dedicated:NoExecute" not found: node h1 has taints`) || !strings.Contains(out, "dedicated=db:NoSchedule") {
		t.Errorf("removing a taint the node does not have:\n%s", out)
	}
	if out := run("describe", "node", "h1"); !regexp.MustCompile(`(?m)^Taints:\s+dedicated=db:NoSchedule$`).MatchString(out) {
		t.Errorf("describe node h1 does not head with its taint:\n%s", out)
	}
	if out := run("get", "node", "h1", "-o", "yaml"); !strings.Contains(out, "key: dedicated") || !strings.Contains(out, "value: db") || !strings.Contains(out, "effect: NoSchedule") {
		t.Errorf("the node's spec lacks the taint:\n%s", out)
	}
	c.mustCLI(t, `
apiVersion: v1
kind: Pod
metadata: {name: db-client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: example/app:v1
`, "apply", "-f", "-")
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pod", "db-client", "-o", "yaml")
		// YAML folds the long message: compare with whitespace collapsed.
		if err != nil || !strings.Contains(strings.Join(strings.Fields(out), " "), "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}.") {
			return fmt.Errorf("want the pod unschedulable because of the taint: %v\n%s", err, out)
		}
		if strings.Contains(out, "nodeName:") || !strings.Contains(out, "phase: Pending") {
			return fmt.Errorf("the pod was placed on the tainted node:\n%s", out)
		}
		return nil
	})
	expect(run("taint", "nodes", "h1", "dedicated:NoSchedule-"), "node/h1 untainted\n", "untaint")
	eventually(t, 30*time.Second, func() error {
		out, err := c.cli("", "get", "pod", "db-client", "-o", "yaml")
		if err != nil || !strings.Contains(out, "nodeName: h1") {
			return fmt.Errorf("want the pod scheduled to h1 once the taint is gone: %v\n%s", err, out)
		}
		return nil
	})
}
