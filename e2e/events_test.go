package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEventsCLI runs skiff events against three masters and a hollow
// worker: the events the Deployment, ReplicaSet and scheduler controllers
// record for a rollout are listed oldest first with kubectl events'
// columns, --for keeps one object's, --types keeps a pod's scheduling
// warnings, -A adds the namespace, an empty namespace says so, bad flags
// say which and why, and -w prints the event of a scale made after it
// started.
func TestEventsCLI(t *testing.T) {
	c := startCluster(t, 3)
	hollowWorker(t, c, "h1")
	waitNodesReady(t, c, "h1")
	fails := func(args ...string) string {
		t.Helper()
		out, err := c.cli("", args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("skiff %s: want a non-zero exit, got %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	c.mustCLI(t, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
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
kind: Pod
metadata: {name: stuck}
spec:
  nodeSelector: {disk: none}
  containers:
  - name: app
    image: example/web:v1
`, "apply", "-f", "-")

	header := regexp.MustCompile(`^LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE$`)
	rs := regexp.MustCompile(`Scaled up replica set (web-[a-z0-9]+) from 0 to 1`)
	var out, rsName string
	eventually(t, 60*time.Second, func() error {
		var err error
		out, err = c.cli("", "events")
		if err != nil {
			return fmt.Errorf("events: %v\n%s", err, out)
		}
		m := rs.FindStringSubmatch(out)
		switch {
		case m == nil || !regexpLine(out, "Normal", "ScalingReplicaSet", "Deployment/web", "Scaled", "up"):
			return fmt.Errorf("no ScalingReplicaSet event of deployment/web:\n%s", out)
		case !regexpLine(out, "Normal", "SuccessfulCreate", "ReplicaSet/"+m[1], "Created", "pod:"):
			return fmt.Errorf("no SuccessfulCreate event of replicaset/%s:\n%s", m[1], out)
		case !regexpLine(out, "Normal", "Scheduled", "Successfully", "assigned", "to", "h1"):
			return fmt.Errorf("no Scheduled event of the pod:\n%s", out)
		case !regexpLine(out, "Warning", "FailedScheduling", "Pod/stuck"):
			return fmt.Errorf("no FailedScheduling event of pod/stuck:\n%s", out)
		}
		rsName = m[1]
		return nil
	})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !header.MatchString(lines[0]) {
		t.Errorf("header %q, want kubectl events' columns", lines[0])
	}
	// LAST SEEN with repeats folded in ("5s (x3 over 2m)"), TYPE, REASON,
	// OBJECT as Kind/name (kubectl events'), MESSAGE.
	row := regexp.MustCompile(`^([0-9]+[smhdy])+( \(x[0-9]+ over ([0-9]+[smhdy])+\))?\s+(Normal|Warning)\s+\S+\s+[A-Z][A-Za-z]*/\S+\s+\S`)
	for _, l := range lines[1:] {
		if !row.MatchString(l) {
			t.Errorf("row %q: want LAST SEEN, TYPE, REASON, Kind/name and a message", l)
		}
	}

	// Oldest first: -o json lists the same events, by lastTimestamp.
	var list struct {
		Kind  string
		Items []struct {
			Metadata      struct{ Name string }
			LastTimestamp time.Time
		}
	}
	if err := json.Unmarshal([]byte(c.mustCLI(t, "", "events", "-o", "json")), &list); err != nil || list.Kind != "List" || len(list.Items) < 4 {
		t.Fatalf("events -o json: %v, %+v", err, list)
	}
	for i := 1; i < len(list.Items); i++ {
		a, b := list.Items[i-1], list.Items[i]
		if b.LastTimestamp.Before(a.LastTimestamp) || (b.LastTimestamp.Equal(a.LastTimestamp) && b.Metadata.Name < a.Metadata.Name) {
			t.Errorf("events out of order: %s (%s) before %s (%s)", a.Metadata.Name, a.LastTimestamp, b.Metadata.Name, b.LastTimestamp)
		}
	}

	// One object's: kinds in any case, plural or short.
	for _, f := range []string{"deployment/web", "Deployments/web", "deploy/web"} {
		out := c.mustCLI(t, "", "events", "--for", f)
		rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if !header.MatchString(rows[0]) || len(rows) < 2 {
			t.Errorf("events --for %s:\n%s", f, out)
		}
		for _, r := range rows[1:] {
			if !regexpLine(r, "Normal", "ScalingReplicaSet", "Deployment/web") {
				t.Errorf("events --for %s has another object's row %q", f, r)
			}
		}
	}
	if out := c.mustCLI(t, "", "events", "--for", "rs/"+rsName, "--no-headers"); !regexpLine(out, "SuccessfulCreate", "ReplicaSet/"+rsName) || strings.Contains(out, "LAST SEEN") || strings.Contains(out, "Deployment/web") {
		t.Errorf("events --for rs/%s --no-headers:\n%s", rsName, out)
	}

	// The masters select events as Kubernetes' do: get events
	// --field-selector on involvedObject.* and type.
	out = c.mustCLI(t, "", "get", "events", "--field-selector", "involvedObject.kind=Pod,involvedObject.name=stuck,type=Warning", "--no-headers")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !regexpLine(l, "Warning", "FailedScheduling", "pod/stuck") {
			t.Errorf("get events --field-selector involvedObject.name=stuck,type=Warning: only pod/stuck's warnings, got:\n%s", out)
			break
		}
	}

	// Types.
	out = c.mustCLI(t, "", "events", "--types", "Warning")
	if !regexpLine(out, "Warning", "FailedScheduling", "Pod/stuck") || regexpLine(out, "Normal") {
		t.Errorf("events --types Warning:\n%s", out)
	}
	out = c.mustCLI(t, "", "events", "--types", "normal", "--for", "pod/stuck")
	if out != "No events found in default namespace.\n" {
		t.Errorf("events --types normal --for pod/stuck: %q", out)
	}
	if out := fails("events", "--types", "Normal,Error"); out != "error: --types \"Error\": valid types are Normal, Warning (comma-separated)\n" {
		t.Errorf("events --types Normal,Error: %q", out)
	}
	if out := fails("events", "--for", "web"); !strings.Contains(out, `--for "web": give the object as KIND/NAME`) {
		t.Errorf("events --for web: %q", out)
	}

	// Every namespace: NAMESPACE first. A namespace without events.
	out = c.mustCLI(t, "", "events", "-A", "--for", "deployment/web")
	if !regexp.MustCompile(`^NAMESPACE\s+LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE\n`).MatchString(out) || !regexpLine(out, "default", "Normal", "ScalingReplicaSet", "Deployment/web") {
		t.Errorf("events -A:\n%s", out)
	}
	if out := c.mustCLI(t, "", "events", "-n", "empty"); out != "No events found in empty namespace.\n" {
		t.Errorf("events -n empty: %q", out)
	}
	// A node's events are looked for in default.
	if out := c.mustCLI(t, "", "events", "-n", "empty", "--for", "node/h1"); out != "No events found in default namespace.\n" && !regexpLine(out, "Node/h1") {
		t.Errorf("events --for node/h1: %q", out)
	}

	// -w: the listing, then the event of a scale made after it.
	var watchOut syncBuffer
	w := exec.Command(skiffBin, append(append([]string{"--server", strings.Join(c.apiAddrs(), ",")}, c.securityArgs()...), "events", "-w", "--for", "deployment/web")...)
	w.Stdout, w.Stderr = &watchOut, &watchOut
	w.Env = append(os.Environ(), "SKIFF_CONFIG="+filepath.Join(t.TempDir(), "none.yaml"))
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.Wait() }()
	stop := func() {
		w.Process.Kill() // nothing to do if it has exited
		<-exited
	}
	defer stop()
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(watchOut.String(), "Scaled up replica set "+rsName+" from 0 to 1") {
			return fmt.Errorf("events -w has not listed the rollout yet: %q", watchOut.String())
		}
		return nil
	})
	c.mustCLI(t, "", "scale", "deployment", "web", "--replicas", "2")
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("events -w exited: %v\n%s", err, watchOut.String())
		default:
		}
		if !regexpLine(watchOut.String(), "Normal", "ScalingReplicaSet", "Deployment/web", "Scaled", "up", "replica", "set", rsName, "from", "1", "to", "2") {
			return fmt.Errorf("events -w has not printed the scale: %q", watchOut.String())
		}
		return nil
	})
	if strings.Count(watchOut.String(), "LAST SEEN") != 1 || strings.Contains(watchOut.String(), "SuccessfulCreate") {
		t.Errorf("events -w --for deployment/web: one header, and only deployment/web's events:\n%s", watchOut.String())
	}
}
