package e2e

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

// containerEnv is a container's variables as `set env --list` would show
// them, one "KEY=VALUE" or "KEY from ..." each.
func containerEnv(c *pb.Container) []string {
	var out []string
	for _, v := range c.GetEnv() {
		if r := v.GetValueFrom().GetConfigMapKeyRef(); r != nil {
			out = append(out, fmt.Sprintf("%s from configmap %s, key %s", v.GetName(), r.GetName(), r.GetKey()))
			continue
		}
		out = append(out, v.GetName()+"="+v.GetValue())
	}
	return out
}

// TestSetEnvCLI drives skiff set env and set resources against three
// masters and a hollow worker: a variable set on a Deployment rolls it out
// (a new ReplicaSet whose template, and pods, have it), --list in kubectl's
// form, a change that is no change is not written, removal with KEY-,
// --from=configmap with --prefix, several Deployments at once; a pod's
// environment is listed but not changed; resources set on one container,
// and bad input (a bad name, an unknown container, a missing ConfigMap, a
// bad quantity, a request above its limit) that stores nothing.
func TestSetEnvCLI(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(60 * time.Second)
	hollowWorker(t, c, "h1")
	api := rolloutAPI{t: t, cl: c.client()}
	run := func(args ...string) string {
		t.Helper()
		return c.mustCLI(t, "", args...)
	}
	fail := func(want string, args ...string) {
		t.Helper()
		out, err := c.cli("", args...)
		if err == nil {
			t.Fatalf("skiff %s succeeded, want an error:\n%s", strings.Join(args, " "), out)
		}
		if !strings.Contains(out, want) {
			t.Errorf("skiff %s: the error lacks %q:\n%s", strings.Join(args, " "), want, out)
		}
	}
	expect := func(got, want, what string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
	}
	rolledOut := func(name string) {
		t.Helper()
		want := fmt.Sprintf("deployment %q successfully rolled out", name)
		if out := run("rollout", "status", "deployment/"+name, "--timeout", "60s"); !strings.Contains(out, want) {
			t.Fatalf("rollout status of %s: %s", name, out)
		}
	}
	// written returns what of deployment/web a write by set env or set
	// resources would change: its generation and pod template. (Its
	// resourceVersion moves with every status update of a rollout.)
	type written struct {
		generation int64
		template   *pb.PodTemplateSpec
	}
	current := func() written {
		t.Helper()
		d := api.mustGet("Deployment", "web").GetDeployment()
		return written{d.GetMetadata().GetGeneration(), d.GetSpec().GetTemplate()}
	}
	// unchanged checks deployment/web was not written since was.
	unchanged := func(was written, after string) {
		t.Helper()
		if now := current(); now.generation != was.generation || !proto.Equal(now.template, was.template) {
			t.Errorf("deployment/web was written by %s: generation %d, was %d; template %v, was %v", after, now.generation, was.generation, now.template, was.template)
		}
	}
	waitNodesReady(t, c, "h1")

	c.mustCLI(t, `
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue, log-level: debug}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
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
        env: [{name: MODE, value: slow}]
      - name: proxy
        image: example/proxy:v1
`, "apply", "-f", "-")
	rolledOut("web")
	uid := api.mustGet("Deployment", "web").Meta().GetUid()
	firstRS := ownedBy(api.list("ReplicaSet", ""), uid)
	if len(firstRS) != 1 {
		t.Fatalf("deployment/web has ReplicaSets %v, want 1", firstRS)
	}

	// A variable set rolls the Deployment out: a new ReplicaSet whose
	// template has it in every container, and live pods that all have it.
	expect(run("set", "env", "deployment/web", "GREETING=hello", "MODE=fast"), "deployment/web env updated\n", "set env")
	rolledOut("web")
	wantApp, wantProxy := []string{"MODE=fast", "GREETING=hello"}, []string{"GREETING=hello", "MODE=fast"}
	eventually(t, 30*time.Second, func() error {
		rss := ownedBy(api.list("ReplicaSet", ""), uid)
		var fresh []*pb.Object
		for name, rs := range rss {
			if firstRS[name] == nil {
				fresh = append(fresh, rs)
			}
		}
		if len(fresh) != 1 {
			return fmt.Errorf("want one new ReplicaSet of deployment/web, have %d of %d", len(fresh), len(rss))
		}
		cs := fresh[0].GetReplicaSet().GetSpec().GetTemplate().GetSpec().GetContainers()
		if !slices.Equal(containerEnv(cs[0]), wantApp) || !slices.Equal(containerEnv(cs[1]), wantProxy) {
			return fmt.Errorf("the new ReplicaSet's containers have %q and %q", containerEnv(cs[0]), containerEnv(cs[1]))
		}
		live := 0
		for _, p := range api.list("Pod", "app=web") {
			if p.Meta().GetDeletionTimestamp() != nil {
				continue
			}
			live++
			if got := containerEnv(p.GetPod().GetSpec().GetContainers()[0]); !slices.Equal(got, wantApp) {
				return fmt.Errorf("pod %s still has %q", p.Meta().GetName(), got)
			}
		}
		if live != 2 {
			return fmt.Errorf("%d live pods, want 2", live)
		}
		return nil
	})

	expect(run("set", "env", "deployment/web", "--list"),
		"# Deployment web, container app\nMODE=fast\nGREETING=hello\n# Deployment web, container proxy\nGREETING=hello\nMODE=fast\n", "--list")
	// No change: nothing is written.
	was := current()
	expect(run("set", "env", "deployment/web", "GREETING=hello", "ABSENT-"), "deployment/web env unchanged\n", "set env with the values it has")
	unchanged(was, "a change that is none")

	// Removal, and variables referring to a ConfigMap's keys in one
	// container.
	expect(run("set", "env", "deployment/web", "MODE-"), "deployment/web env updated\n", "set env MODE-")
	expect(run("set", "env", "deployment/web", "-c", "app", "--from=configmap/settings", "--prefix=APP_"), "deployment/web env updated\n", "set env --from")
	expect(run("set", "env", "deployment/web", "--list"), `# Deployment web, container app
GREETING=hello
# APP_COLOR from configmap settings, key color
# APP_LOG_LEVEL from configmap settings, key log-level
# Deployment web, container proxy
GREETING=hello
`, "--list after MODE- and --from")

	// Bad input stores nothing.
	was = current()
	fail(`"1BAD" is not a valid key name`, "set", "env", "deployment/web", "GOOD=1", "1BAD=x")
	fail(`"GOOD" is neither KIND/NAME nor a change`, "set", "env", "deployment/web", "GOOD")
	fail(`unable to find container named "db"`, "set", "env", "deployment/web", "-c", "db", "X=1")
	fail(`configmap "nosuch" not found in namespace default`, "set", "env", "deployment/web", "--from=configmap/nosuch")
	unchanged(was, "refused env changes")

	// A pod's environment is listed, not changed. The env changes above
	// roll the pods: wait for the rollout, or the pod picked may be
	// replaced before the CLI reads it.
	run("rollout", "status", "deployment/web", "--timeout", "60s")
	var pod string
	for _, p := range api.list("Pod", "app=web") {
		if p.Meta().GetDeletionTimestamp() == nil {
			pod = p.Meta().GetName()
		}
	}
	fail("a pod's environment can not be changed once the pod exists", "set", "env", "pod/"+pod, "X=1")
	if out := run("set", "env", "pods", pod, "-c", "proxy", "--list"); !strings.HasPrefix(out, "# Pod "+pod+", container proxy\n") {
		t.Errorf("--list of pod %s:\n%s", pod, out)
	}

	// Resources of one container.
	expect(run("set", "resources", "deployment/web", "-c", "app", "--limits=cpu=200m,memory=512Mi", "--requests=cpu=0.1"),
		"deployment/web resource requirements updated\n", "set resources")
	wantRes := &pb.ResourceRequirements{Limits: map[string]string{"cpu": "200m", "memory": "512Mi"}, Requests: map[string]string{"cpu": "100m"}}
	cs := api.mustGet("Deployment", "web").GetDeployment().GetSpec().GetTemplate().GetSpec().GetContainers()
	if !proto.Equal(cs[0].GetResources(), wantRes) || cs[1].GetResources() != nil && len(cs[1].GetResources().GetLimits())+len(cs[1].GetResources().GetRequests()) > 0 {
		t.Errorf("after set resources: app has %v, proxy %v", cs[0].GetResources(), cs[1].GetResources())
	}
	was = current()
	expect(run("set", "resources", "deployment/web", "-c", "app", "--requests=cpu=100m"), "deployment/web resource requirements unchanged\n", "set resources again")
	fail(`--limits: invalid quantity "lots" for cpu`, "set", "resources", "deployment/web", "--limits=cpu=lots")
	fail("container app: the cpu request 300m is more than its limit 200m", "set", "resources", "deployment/web", "--requests=cpu=300m")
	fail("a pod's resource requirements can not be changed", "set", "resources", "pod/"+pod, "--limits=cpu=1")
	unchanged(was, "refused resource changes")
	rolledOut("web")

	// Several Deployments at once.
	c.mustCLI(t, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, labels: {app: api}}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: example/api:v1
`, "apply", "-f", "-")
	lines := strings.Split(strings.TrimSpace(run("set", "env", "deployments", "--all", "REGION=eu")), "\n")
	sort.Strings(lines)
	expect(strings.Join(lines, "\n"), "deployment/api env updated\ndeployment/web env updated", "set env deployments --all")
	expect(run("set", "env", "deployments", "-l", "app=api", "--list"), "# Deployment api, container app\nREGION=eu\n", "--list -l app=api")
	rolledOut("api")
	rolledOut("web")
}
