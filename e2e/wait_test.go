package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// TestWaitCLI drives `skiff wait` against three masters and a hollow
// worker as a script would, by exit status and output: a Deployment's
// Available condition, its pods' Ready condition and phase through a
// selector, a jsonpath on the Deployment, --timeout 0, a pod held by a
// finalizer that --for=delete waits out until it is gone, an absent pod,
// and the failures (timeout, NotFound, empty selection, unknown --for).
func TestWaitCLI(t *testing.T) {
	c := startCluster(t, 3)
	hollowWorker(t, c, "h1")
	cl := c.client()
	api := rolloutAPI{t: t, cl: cl}
	// fails runs skiff expecting a non-zero exit and returns the output.
	fails := func(args ...string) string {
		t.Helper()
		out, err := c.cli("", args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("skiff %s: want a non-zero exit, got %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	waitNodesReady(t, c, "h1")
	if out := c.mustCLI(t, "", "wait", "--for=condition=Ready", "node/h1"); out != "node/h1 condition met\n" {
		t.Errorf("wait for node/h1 Ready: %q", out)
	}

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
`, "apply", "-f", "-")
	// Right after the apply nothing is available yet: wait has to follow
	// the Deployment until its controller reports both replicas.
	if out := c.mustCLI(t, "", "wait", "--for=condition=Available", "deployment/web", "--timeout", "60s"); out != "deployment/web condition met\n" {
		t.Errorf("wait for deployment/web Available: %q", out)
	}
	d := api.mustGet("Deployment", "web").GetDeployment()
	if st := d.GetStatus(); st.GetAvailableReplicas() != 2 || st.GetObservedGeneration() < d.GetMetadata().GetGeneration() {
		t.Errorf("wait returned before deployment/web was available: %d available, generation %d observed %d",
			st.GetAvailableReplicas(), d.GetMetadata().GetGeneration(), st.GetObservedGeneration())
	}
	var want []string
	for _, p := range api.list("Pod", "app=web") {
		want = append(want, "pod/"+p.Meta().GetName()+" condition met")
	}
	sort.Strings(want)
	if len(want) != 2 {
		t.Fatalf("deployment/web has pods %v, want 2", want)
	}
	lines := func(out string) []string {
		l := strings.Split(strings.TrimSpace(out), "\n")
		sort.Strings(l)
		return l
	}
	if out := c.mustCLI(t, "", "wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout", "60s"); !slices.Equal(lines(out), want) {
		t.Errorf("wait for Ready pods -l app=web: %q, want a line for each of %v", out, want)
	}
	if out := c.mustCLI(t, "", "wait", "--for=jsonpath={.status.phase}=Running", "pod", "-l", "app=web", "--timeout", "60s"); !slices.Equal(lines(out), want) {
		t.Errorf("wait for Running pods -l app=web: %q, want a line for each of %v", out, want)
	}
	if out := c.mustCLI(t, "", "wait", "--for=condition=Available", "deployment/web", "--timeout", "0"); out != "deployment/web condition met\n" {
		t.Errorf("wait --timeout 0 for an available Deployment: %q", out)
	}
	// A jsonpath that becomes true only after a change made meanwhile.
	c.mustCLI(t, "", "scale", "deployment", "web", "--replicas", "3")
	if out := c.mustCLI(t, "", "wait", "--for=jsonpath={.status.readyReplicas}=3", "deployment/web", "--timeout", "60s"); out != "deployment/web condition met\n" {
		t.Errorf("wait for 3 ready replicas: %q", out)
	}
	if n := api.mustGet("Deployment", "web").GetDeployment().GetStatus().GetReadyReplicas(); n != 3 {
		t.Errorf("wait returned with %d ready replicas, want 3", n)
	}

	// Conditions that do not come true.
	pod := strings.TrimSuffix(strings.TrimPrefix(want[0], "pod/"), " condition met")
	start := time.Now()
	if out := fails("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/"+pod, "--timeout", "1s"); out != "error: timed out waiting for the condition on pods/"+pod+"\n" {
		t.Errorf("wait that cannot be met: %q", out)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("wait --timeout 1s took %s", d)
	}
	if out := fails("wait", "--for=condition=Ready=False", "pod/"+pod, "--timeout", "0"); out != "error: condition not met for pods/"+pod+"\n" {
		t.Errorf("wait --timeout 0, unmet: %q", out)
	}
	if out := fails("wait", "--for=condition=Ready", "pod/nosuch", "--timeout", "5s"); out != "Error from server (NotFound): pods \"nosuch\" not found\n" {
		t.Errorf("wait for a condition of a missing pod: %q", out)
	}
	if out := fails("wait", "--for=condition=Ready", "pod", "-l", "app=nosuch"); out != "error: no matching resources found\n" {
		t.Errorf("wait on an empty selection: %q", out)
	}
	if out := fails("wait", "--for=ready", "pod/"+pod); !strings.Contains(out, `unrecognized condition: "ready"`) || !strings.Contains(out, "--for=condition=TYPE") {
		t.Errorf("unknown --for: %q", out)
	}
	// Kubernetes' JSONPath: a filter picks the condition; a path that gives
	// several values is an error.
	if out := c.mustCLI(t, "", "wait", `--for=jsonpath={.status.conditions[?(@.type=="Ready")].status}=True`, "pod/"+pod, "--timeout", "60s"); out != "pod/"+pod+" condition met\n" {
		t.Errorf("jsonpath with a filter: %q", out)
	}
	if out := fails("wait", "--for=jsonpath={.status.conditions[*].type}=Ready", "pod/"+pod); !strings.Contains(out, "values, not one: give the path of a single field") {
		t.Errorf("jsonpath of several values: %q", out)
	}

	// --for=delete: an absent pod is deleted already.
	start = time.Now()
	if out := c.mustCLI(t, "", "wait", "--for=delete", "pod/nosuch", "--timeout", "60s"); out != "" {
		t.Errorf("wait --for=delete of an absent pod printed %q", out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("wait --for=delete of an absent pod took %s", d)
	}
	// A pod whose deletion a finalizer holds: terminating is not deleted.
	c.mustCLI(t, `
apiVersion: v1
kind: Pod
metadata: {name: held, finalizers: [example.com/hold]}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: example/web:v1
`, "apply", "-f", "-")
	if out := c.mustCLI(t, "", "wait", "--for=condition=Ready", "pod/held", "--timeout", "60s"); out != "pod/held condition met\n" {
		t.Errorf("wait for pod/held Ready: %q", out)
	}
	c.mustCLI(t, "", "delete", "pod", "held", "--wait=false")
	if out := fails("wait", "--for=delete", "pod/held", "--timeout", "1s"); out != "error: timed out waiting for the condition on pods/held\n" {
		t.Errorf("wait --for=delete of a terminating pod: %q", out)
	}
	// Waiting on one master, whose open watches tell when the wait has
	// read the pod and is watching it; then the finalizer goes.
	m := c.masters[0]
	watchers := func() float64 {
		t.Helper()
		v, err := scrapeGauge(m.httpAd, "skiff_api_watchers", c.token)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// startWait runs skiff wait against m in the background and returns
	// once it watches.
	startWait := func(args ...string) (out *syncBuffer, exited chan struct{}, waitErr *error) {
		t.Helper()
		before := watchers()
		out, exited, waitErr = &syncBuffer{}, make(chan struct{}), new(error)
		w := exec.Command(skiffBin, append(append([]string{"--server", m.apiAddr}, c.securityArgs()...), append([]string{"wait"}, args...)...)...)
		w.Stdout, w.Stderr = out, out
		w.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { *waitErr = w.Wait(); close(exited) }()
		t.Cleanup(func() {
			w.Process.Kill() // nothing to do if it has exited
			<-exited
		})
		eventually(t, 30*time.Second, func() error {
			if n := watchers(); n <= before {
				return fmt.Errorf("%s has %v watches open, as before the wait started (output so far %q)", m.name, n, out.String())
			}
			return nil
		})
		select {
		case <-exited:
			t.Fatalf("skiff wait %s returned before the change it waits for: %v\n%s", strings.Join(args, " "), *waitErr, out.String())
		default:
		}
		return out, exited, waitErr
	}
	out, exited, waitErr := startWait("--for=delete", "pod/held", "--timeout", "60s")
	eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := cl.Get(ctx, "Pod", "default", "held", client.ReadOptions{})
		if chaosNotFound(err) {
			return nil // an earlier try took, though its answer was lost
		}
		if err != nil {
			return err
		}
		p.Meta().Finalizers = nil
		_, err = cl.Update(ctx, p)
		return err
	})
	select {
	case <-exited:
		if *waitErr != nil || out.String() != "pod/held condition met\n" {
			t.Errorf("wait --for=delete once the finalizer went: %v, %q", *waitErr, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("wait --for=delete still running 30s after the pod went\n%s", out.String())
	}
	if _, err := api.get("Pod", "held"); !chaosNotFound(err) {
		t.Errorf("pod/held after wait --for=delete returned: %v", err)
	}

	// --for=create: waits, watching, until the object appears.
	out, exited, waitErr = startWait("--for=create", "configmap/later", "--timeout", "60s")
	c.mustCLI(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\n", "apply", "-f", "-")
	select {
	case <-exited:
		if *waitErr != nil || out.String() != "configmap/later condition met\n" {
			t.Errorf("wait --for=create once the configmap was created: %v, %q", *waitErr, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("wait --for=create still running 30s after the configmap was created\n%s", out.String())
	}
}
