package cli

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
)

func env(kv ...string) []*pb.EnvVar {
	var out []*pb.EnvVar
	for _, s := range kv {
		name, value, _ := strings.Cut(s, "=")
		out = append(out, &pb.EnvVar{Name: name, Value: value})
	}
	return out
}

func envStrings(vars []*pb.EnvVar) []string {
	var out []string
	for _, v := range vars {
		if v.GetValueFrom() != nil {
			out = append(out, v.GetName()+" from "+envRefString(v.GetValueFrom()))
			continue
		}
		out = append(out, v.GetName()+"="+v.GetValue())
	}
	return out
}

func cmRef(name, key string) *pb.EnvVarSource {
	return &pb.EnvVarSource{ConfigMapKeyRef: &pb.ConfigMapKeySelector{Name: name, Key: key}}
}

// webDeployment has an app and a sidecar container and an init container.
func webDeployment() *pb.Object {
	return pb.Wrap(&pb.Deployment{
		Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: &pb.DeploymentSpec{Template: &pb.PodTemplateSpec{Spec: &pb.PodSpec{
			InitContainers: []*pb.Container{{Name: "migrate", Image: "example/migrate:v1"}},
			Containers: []*pb.Container{
				{Name: "app", Image: "example/web:v1", Env: []*pb.EnvVar{
					{Name: "MODE", Value: "slow"},
					{Name: "COLOR", ValueFrom: cmRef("settings", "color")},
					{Name: "POD", ValueFrom: &pb.EnvVarSource{FieldRef: &pb.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "CPU", ValueFrom: &pb.EnvVarSource{ResourceFieldRef: &pb.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu"}}},
					{Name: "PASSWORD", ValueFrom: &pb.EnvVarSource{SecretKeyRef: &pb.SecretKeySelector{Name: "db", Key: "password"}}},
				}},
				{Name: "proxy", Image: "example/proxy:v1"},
			},
		}}},
	})
}

func TestParseEnvChanges(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		stdin   string
		set     []string
		remove  []string
		wantErr []string // every one must be in the error
	}{
		{name: "set and remove", args: []string{"A=1", "B=", "C=x=y", "OLD-", "OLD-", "my.env-name=2"},
			set: []string{"A=1", "B=", "C=x=y", "my.env-name=2"}, remove: []string{"OLD"}},
		{name: "order kept, duplicates too", args: []string{"B=1", "A=2", "B=3"}, set: []string{"B=1", "A=2", "B=3"}},
		{name: "stdin", args: []string{"A=1", "-"}, stdin: "# a comment\nB=2 # trailing\n\nnot a variable\nC=3\n",
			set: []string{"A=1", "B=2 ", "C=3"}},
		{name: "bad names named", args: []string{"GOOD=1", "1BAD=x", "has space=y", "=z"},
			wantErr: []string{`"1BAD" is not a valid key name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit`,
				`"has space" is not a valid key name`, `"" is not a valid key name`}},
		{name: "missing =", args: []string{"A=1", "NOEQ"}, wantErr: []string{`"NOEQ": expected KEY=VALUE to set a variable or KEY- to remove one`}},
		{name: "bad name on stdin", args: []string{"-"}, stdin: "9LIVES=1\n", wantErr: []string{`"9LIVES" is not a valid key name`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseEnvChanges(tc.args, strings.NewReader(tc.stdin))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := envStrings(e.set); strings.Join(got, "|") != strings.Join(tc.set, "|") {
				t.Errorf("set = %q, want %q", got, tc.set)
			}
			if strings.Join(e.remove, "|") != strings.Join(tc.remove, "|") {
				t.Errorf("remove = %q, want %q", e.remove, tc.remove)
			}
		})
	}
}

func TestEnvEditWith(t *testing.T) {
	e, err := parseEnvChanges([]string{"HOST=db", "OLD-"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.with([]*pb.EnvVar{{Name: "COLOR", ValueFrom: cmRef("settings", "color")}}, "APP_")
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(envStrings(got.set), "|"); s != "APP_HOST=db|APP_COLOR from configmap settings, key color" {
		t.Errorf("with --from and --prefix: %s", s)
	}
	if e.set[0].GetName() != "HOST" {
		t.Errorf("with changed the edit it was called on: %q", e.set[0].GetName())
	}
	if _, err := e.with(env("OLD=1"), ""); err == nil || !strings.Contains(err.Error(), `"OLD" is both set and removed: can not both modify and remove the same environment variable in the same command`) {
		t.Errorf("set and removed: err = %v", err)
	}
}

func TestKeyToEnvName(t *testing.T) {
	for key, want := range map[string]string{"color": "COLOR", "log-level": "LOG_LEVEL", "app.port": "APP_PORT", "Already_OK9": "ALREADY_OK9"} {
		if got := keyToEnvName(key); got != want {
			t.Errorf("keyToEnvName(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestEnvFrom(t *testing.T) {
	cm := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "settings"}, Data: map[string]string{"log-level": "debug", "color": "blue"},
		BinaryData: map[string][]byte{"logo": []byte("png")}})
	vars, err := envFrom(cm, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted by key; binaryData is not offered, as kubectl does not.
	if s := strings.Join(envStrings(vars), "|"); s != "COLOR from configmap settings, key color|LOG_LEVEL from configmap settings, key log-level" {
		t.Errorf("from a configmap: %s", s)
	}
	sec := pb.Wrap(&pb.Secret{Metadata: &pb.ObjectMeta{Name: "db"}, Data: map[string][]byte{"password": []byte("x"), "user": []byte("y")}})
	vars, err = envFrom(sec, []string{"password"})
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(envStrings(vars), "|"); s != "PASSWORD from secret db, key password" {
		t.Errorf("from a secret, one key: %s", s)
	}
	if _, err := envFrom(sec, []string{"token", "password"}); err == nil || err.Error() != "secret/db has no key token (keys: password, user)" {
		t.Errorf("a missing key: err = %v", err)
	}
}

func TestParseFrom(t *testing.T) {
	for _, tc := range []struct{ from, kind, name, wantErr string }{
		{from: "configmap/settings", kind: "ConfigMap", name: "settings"},
		{from: "cm/settings", kind: "ConfigMap", name: "settings"},
		{from: "secret/db", kind: "Secret", name: "db"},
		{from: "settings", wantErr: `--from "settings": expected configmap/NAME or secret/NAME`},
		{from: "configmap/", wantErr: "expected configmap/NAME"},
		{from: "deployment/web", wantErr: "variables come from a configmap or a secret, not deployments"},
		{from: "widget/x", wantErr: `unknown kind "widget"`},
	} {
		info, name, err := parseFrom(tc.from)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseFrom(%q): err = %v, want %q", tc.from, err, tc.wantErr)
			}
			continue
		}
		if err != nil || info.Kind != tc.kind || name != tc.name {
			t.Errorf("parseFrom(%q) = %s, %q, %v", tc.from, info.Kind, name, err)
		}
	}
}

func TestUpdateEnv(t *testing.T) {
	tests := []struct {
		name     string
		existing []*pb.EnvVar
		args     []string
		want     []string
	}{
		{name: "replace in place, append new", existing: env("A=1", "B=2", "C=3"), args: []string{"B=20", "D=4"}, want: []string{"A=1", "B=20", "C=3", "D=4"}},
		{name: "remove", existing: env("A=1", "B=2"), args: []string{"A-", "GONE-"}, want: []string{"B=2"}},
		{name: "first of several wins", existing: env("A=1"), args: []string{"A=5", "A=6", "N=1", "N=2"}, want: []string{"A=5", "N=1"}},
		{name: "duplicates in the container collapse to the one set", existing: env("A=1", "A=2"), args: []string{"A=3"}, want: []string{"A=3"}},
		{name: "nothing to start from", args: []string{"A=1"}, want: []string{"A=1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseEnvChanges(tc.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := envStrings(updateEnv(tc.existing, e)); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("= %q, want %q", got, tc.want)
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		containers string
		noOverwrt  bool
		changed    bool
		app, proxy []string // env afterwards (as before on an error)
		migrate    []string
		wantErr    string
	}{
		{name: "every container, init ones too", containers: "*", args: []string{"MODE=fast", "REGION=eu"}, changed: true,
			app:   []string{"MODE=fast", "COLOR from configmap settings, key color", "POD from field path metadata.name", "CPU from resource field app/limits.cpu", "PASSWORD from secret db, key password", "REGION=eu"},
			proxy: []string{"MODE=fast", "REGION=eu"}, migrate: []string{"MODE=fast", "REGION=eu"}},
		{name: "one container", containers: "proxy", args: []string{"PORT=8080"}, changed: true, proxy: []string{"PORT=8080"}},
		{name: "a glob", containers: "*r*", args: []string{"X=1"}, changed: true, proxy: []string{"X=1"}, migrate: []string{"X=1"}},
		{name: "replace a reference by a value", containers: "app", args: []string{"COLOR=red", "POD-", "CPU-", "PASSWORD-"}, changed: true,
			app: []string{"MODE=slow", "COLOR=red"}},
		{name: "no change", containers: "app", args: []string{"MODE=slow", "ABSENT-"}},
		{name: "unknown container", containers: "db", args: []string{"X=1"}, wantErr: `unable to find container named "db" (containers: app, proxy, migrate)`},
		{name: "overwrite refused", containers: "app", noOverwrt: true, args: []string{"NEW=1", "MODE=fast"}, wantErr: "'MODE' already has a value (slow), and --overwrite is false"},
		{name: "overwrite of a reference refused", containers: "app", noOverwrt: true, args: []string{"COLOR=red"},
			wantErr: "'COLOR' already has a value (configmap settings, key color), and --overwrite is false"},
		{name: "same value is no overwrite", containers: "app", noOverwrt: true, args: []string{"MODE=slow", "NEW=1"}, changed: true,
			app: []string{"MODE=slow", "COLOR from configmap settings, key color", "POD from field path metadata.name", "CPU from resource field app/limits.cpu", "PASSWORD from secret db, key password", "NEW=1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj := webDeployment()
			before := proto.Clone(obj)
			e, err := parseEnvChanges(tc.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			spec := podSpecOf(obj)
			changed, err := applyEnv(spec, tc.containers, e, !tc.noOverwrt)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || changed != tc.changed {
				t.Fatalf("= %v, %v; want %v", changed, err, tc.changed)
			}
			if !changed {
				if !proto.Equal(obj, before) {
					t.Errorf("nothing changed, yet the object did")
				}
				return
			}
			if tc.app == nil {
				tc.app = envStrings(podSpecOf(before.(*pb.Object)).GetContainers()[0].GetEnv())
			}
			for _, c := range []struct {
				name string
				got  []*pb.EnvVar
				want []string
			}{{"app", spec.GetContainers()[0].GetEnv(), tc.app}, {"proxy", spec.GetContainers()[1].GetEnv(), tc.proxy}, {"migrate", spec.GetInitContainers()[0].GetEnv(), tc.migrate}} {
				if got := envStrings(c.got); strings.Join(got, "|") != strings.Join(c.want, "|") {
					t.Errorf("container %s: env %q, want %q", c.name, got, c.want)
				}
			}
		})
	}
}

func TestListEnv(t *testing.T) {
	var out bytes.Buffer
	if err := listEnv(&out, webDeployment(), "*", envEdit{}); err != nil {
		t.Fatal(err)
	}
	// kubectl 1.32 prints exactly this for the same Deployment.
	want := `# Deployment web, container app
MODE=slow
# COLOR from configmap settings, key color
# POD from field path metadata.name
# CPU from resource field app/limits.cpu
# PASSWORD from secret db, key password
# Deployment web, container proxy
# Deployment web, container migrate
`
	if out.String() != want {
		t.Errorf("--list:\n%s\nwant:\n%s", out.String(), want)
	}

	// With changes, --list shows them and changes nothing.
	obj := webDeployment()
	e, err := parseEnvChanges([]string{"MODE-", "B=2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := listEnv(&out, obj, "a*", e); err != nil {
		t.Fatal(err)
	}
	want = `# Deployment web, container app
# COLOR from configmap settings, key color
# POD from field path metadata.name
# CPU from resource field app/limits.cpu
# PASSWORD from secret db, key password
B=2
`
	if out.String() != want {
		t.Errorf("--list -c 'a*' MODE- B=2:\n%s\nwant:\n%s", out.String(), want)
	}
	if !proto.Equal(obj, webDeployment()) {
		t.Errorf("--list changed the object")
	}

	pod := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "web-1"}, Spec: &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Env: env("A=1")}}}})
	out.Reset()
	if err := listEnv(&out, pod, "*", envEdit{}); err != nil || out.String() != "# Pod web-1, container app\nA=1\n" {
		t.Errorf("--list of a pod: %v\n%s", err, out.String())
	}
	if err := listEnv(&out, pod, "db", envEdit{}); err == nil || !strings.Contains(err.Error(), `unable to find container named "db"`) {
		t.Errorf("--list -c db: err = %v", err)
	}
}

func TestCheckEnvObjects(t *testing.T) {
	if err := checkEnvObjects([]string{"deployment/web", "FOO"}); err == nil ||
		err.Error() != `"FOO" is neither KIND/NAME nor a change: set a variable with FOO=VALUE, remove one with FOO-` {
		t.Errorf("KIND/NAME then a bare word: err = %v", err)
	}
	for _, ok := range [][]string{{"deployment/web", "daemonset/agent"}, {"deployments", "web", "api"}, nil} {
		if err := checkEnvObjects(ok); err != nil {
			t.Errorf("checkEnvObjects(%q): %v", ok, err)
		}
	}
}

func TestSetEnvRefusesBadArgumentsBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `"1BAD" is not a valid key name`, "set", "env", "deployment/web", "GOOD=1", "1BAD=x")
	refusedBeforeConnecting(t, `"FOO" is neither KIND/NAME nor a change`, "set", "env", "deployment/web", "FOO")
	refusedBeforeConnecting(t, `"FOO": expected KEY=VALUE`, "set", "env", "deployment/web", "-e", "FOO")
	refusedBeforeConnecting(t, "at least one environment variable change is required", "set", "env", "deployment/web")
	refusedBeforeConnecting(t, `"A" is both set and removed`, "set", "env", "deployment/web", "A=1", "A-")
	refusedBeforeConnecting(t, `"web": name every object before the environment changes`, "set", "env", "deployment", "A=1", "web")
	refusedBeforeConnecting(t, "configmaps have no containers: skiff set env works on deployment, daemonset, replicaset, job, pod", "set", "env", "configmap/settings", "A=1")
	refusedBeforeConnecting(t, "a pod's environment can not be changed once the pod exists", "set", "env", "pod/web-1", "A=1")
	refusedBeforeConnecting(t, "a pod's environment can not be changed once the pod exists", "set", "env", "pods", "--all", "A=1")
	refusedBeforeConnecting(t, "a Job's pod template can not be changed once the Job exists", "set", "env", "job/migrate", "A=1")
	refusedBeforeConnecting(t, `--from "settings": expected configmap/NAME or secret/NAME`, "set", "env", "deployment/web", "--from", "settings")
	refusedBeforeConnecting(t, "--keys picks keys of the configmap or secret given with --from", "set", "env", "deployment/web", "--keys", "a", "A=1")
	refusedBeforeConnecting(t, `--prefix: "1_" is not a valid key name`, "set", "env", "deployment/web", "--prefix", "1_", "A=1")
	refusedBeforeConnecting(t, "give -l or --all, not both", "set", "env", "deployments", "-l", "app=web", "--all", "A=1")
}

func TestSetHelpHasExamples(t *testing.T) {
	for _, sub := range []string{"env", "resources"} {
		root := NewRootCommand("test")
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"set", sub, "--help"})
		if err := root.Execute(); err != nil {
			t.Fatalf("skiff set %s --help: %v", sub, err)
		}
		for _, want := range []string{"Examples:", "skiff set " + sub + " deployment/web", "--containers"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("skiff set %s --help lacks %q:\n%s", sub, want, out.String())
			}
		}
	}
}
