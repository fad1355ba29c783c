package cli

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		args             []string
		objects, changes []string
		wantErr          string
	}{
		{args: []string{"pods", "web", "app=x", "tier-"}, objects: []string{"pods", "web"}, changes: []string{"app=x", "tier-"}},
		{args: []string{"pod/a", "pod/b", "note=a=b"}, objects: []string{"pod/a", "pod/b"}, changes: []string{"note=a=b"}},
		{args: []string{"nodes"}, objects: []string{"nodes"}},
		{args: []string{"pods", "a=1", "web"}, wantErr: `"web": name every object before the label changes`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			objects, changes, err := splitArgs(tc.args, "label", isMapChange)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(objects, tc.objects) || !slices.Equal(changes, tc.changes) {
				t.Errorf("= %q, %q, %v; want %q, %q", objects, changes, err, tc.objects, tc.changes)
			}
		})
	}
}

func TestParseMapEdit(t *testing.T) {
	tests := []struct {
		name    string
		f       metaMap
		args    []string
		set     map[string]string
		remove  []string
		wantErr []string // every one must be in the error
	}{
		{name: "set and remove", f: labelMap, args: []string{"app=web", "example.com/tier=db", "empty=", "old-", "old-"},
			set: map[string]string{"app": "web", "example.com/tier": "db", "empty": ""}, remove: []string{"old"}},
		{name: "last value wins", f: labelMap, args: []string{"app=a", "app=b"}, set: map[string]string{"app": "b"}},
		{name: "bad keys and values named", f: labelMap, args: []string{"ok=1", "bad key=1", "app=has space", "Example.com/x=1", "-x-"},
			wantErr: []string{`invalid label key "bad key"`, `invalid label value "has space" for key "app"`, `invalid label key "Example.com/x": prefix part`, `invalid label key "-x"`}},
		{name: "long value", f: labelMap, args: []string{"app=" + strings.Repeat("a", 64)}, wantErr: []string{`for key "app": must be no more than 63 bytes`}},
		{name: "long name", f: labelMap, args: []string{strings.Repeat("k", 64) + "=v"}, wantErr: []string{"name part must be no more than 63 bytes"}},
		{name: "label value with =", f: labelMap, args: []string{"a=b=c"}, wantErr: []string{`invalid label value "b=c" for key "a"`}},
		{name: "set and removed", f: labelMap, args: []string{"app=web", "app-"}, wantErr: []string{`"app" is both set and removed`}},
		{name: "empty key", f: labelMap, args: []string{"=v"}, wantErr: []string{`invalid label key ""`}},
		{name: "annotation values free", f: annotationMap, args: []string{"note=a=b: {\"x\": 1}\nline 2", "Example.com/Owner=me"},
			set: map[string]string{"note": "a=b: {\"x\": 1}\nline 2", "Example.com/Owner": "me"}},
		{name: "annotation key checked", f: annotationMap, args: []string{"bad key=x"}, wantErr: []string{`invalid annotation key "bad key"`}},
		{name: "annotations too big", f: annotationMap, args: []string{"big=" + strings.Repeat("x", pb.TotalAnnotationSizeLimit)},
			wantErr: []string{"more than the 262144 bytes all of an object's annotations may take together"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseMapEdit(tc.f, tc.args)
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
			if !maps.Equal(e.set, tc.set) || !slices.Equal(e.remove, tc.remove) {
				t.Errorf("= set %q remove %q, want set %q remove %q", e.set, e.remove, tc.set, tc.remove)
			}
		})
	}
}

func labeledConfigMap(labels, annotations map[string]string) *pb.Object {
	return pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "settings", Namespace: "default", Labels: labels, Annotations: annotations}})
}

func TestApplyMapEdit(t *testing.T) {
	tests := []struct {
		name      string
		f         metaMap
		have      map[string]string
		args      []string
		overwrite bool
		word      string
		changed   bool
		want      map[string]string // the map afterwards (unchanged on an error)
		wantErr   string
	}{
		{name: "add", f: labelMap, have: nil, args: []string{"app=web"}, word: "labeled", changed: true, want: map[string]string{"app": "web"}},
		{name: "same value is no change", f: labelMap, have: map[string]string{"app": "web"}, args: []string{"app=web"}, word: "not labeled", want: map[string]string{"app": "web"}},
		{name: "other value needs overwrite", f: labelMap, have: map[string]string{"app": "web", "tier": "db"}, args: []string{"app=api", "tier=cache", "new=1"},
			wantErr: "'app' already has a value (web), and --overwrite is false; 'tier' already has a value (db), and --overwrite is false", want: map[string]string{"app": "web", "tier": "db"}},
		{name: "overwrite", f: labelMap, have: map[string]string{"app": "web"}, args: []string{"app=api"}, overwrite: true, word: "labeled", changed: true, want: map[string]string{"app": "api"}},
		{name: "remove only", f: labelMap, have: map[string]string{"app": "web", "tier": "db"}, args: []string{"tier-"}, word: "unlabeled", changed: true, want: map[string]string{"app": "web"}},
		{name: "remove the last", f: labelMap, have: map[string]string{"tier": "db"}, args: []string{"tier-"}, word: "unlabeled", changed: true, want: nil},
		{name: "remove absent", f: labelMap, have: map[string]string{"app": "web"}, args: []string{"tier-"}, word: "not labeled", want: map[string]string{"app": "web"}},
		{name: "set and remove", f: labelMap, have: map[string]string{"app": "web", "tier": "db"}, args: []string{"tier-", "zone=a"}, word: "labeled", changed: true, want: map[string]string{"app": "web", "zone": "a"}},
		{name: "annotate remove", f: annotationMap, have: map[string]string{"note": "x"}, args: []string{"note-"}, word: "annotated", changed: true, want: nil},
		{name: "annotate no change", f: annotationMap, have: map[string]string{"note": "x"}, args: []string{"note=x"}, word: "not annotated", want: map[string]string{"note": "x"}},
		{name: "annotations over the limit together", f: annotationMap, have: map[string]string{"big": strings.Repeat("x", pb.TotalAnnotationSizeLimit-10)},
			args: []string{"more=" + strings.Repeat("y", 20)}, wantErr: "annotations would take 262161 bytes, more than the 262144",
			want: map[string]string{"big": strings.Repeat("x", pb.TotalAnnotationSizeLimit-10)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseMapEdit(tc.f, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			var obj *pb.Object
			if tc.f.noun == "label" {
				obj = labeledConfigMap(maps.Clone(tc.have), nil)
			} else {
				obj = labeledConfigMap(nil, maps.Clone(tc.have))
			}
			word, changed, err := applyMapEdit(tc.f, obj, e, tc.overwrite)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || word != tc.word || changed != tc.changed {
				t.Errorf("= %q, %v, %v; want %q, %v", word, changed, err, tc.word, tc.changed)
			}
			if got := tc.f.get(obj.Meta()); !maps.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Errorf("%s afterwards = %q, want %q", tc.f.plural, got, tc.want)
			}
		})
	}
}

func TestSelectionPlan(t *testing.T) {
	tests := []struct {
		name    string
		sel     selection
		args    []string
		named   []string // kind/namespace/name
		kinds   []string
		wantErr string
	}{
		{name: "kind and names", args: []string{"cm", "a", "b"}, sel: selection{namespace: "demo"}, named: []string{"ConfigMap/demo/a", "ConfigMap/demo/b"}},
		{name: "kind/name, default namespace", args: []string{"pod/web", "deploy/web"}, named: []string{"Pod/default/web", "Deployment/default/web"}},
		{name: "cluster-scoped", args: []string{"nodes", "w1"}, sel: selection{namespace: "demo"}, named: []string{"Node//w1"}},
		{name: "selector", args: []string{"pods"}, sel: selection{selector: "app=web"}, kinds: []string{"Pod"}},
		{name: "all", args: []string{"nodes"}, sel: selection{all: true}, kinds: []string{"Node"}},
		{name: "no names", args: []string{"pods"}, wantErr: "no pods named"},
		{name: "nothing", args: nil, wantErr: "name the objects to label"},
		{name: "names and selector", args: []string{"pods", "web"}, sel: selection{selector: "app=web"}, wantErr: "give names or -l/--all, not both"},
		{name: "selector and all", args: []string{"pods"}, sel: selection{selector: "app=web", all: true}, wantErr: "give -l or --all, not both"},
		{name: "-A with names", args: []string{"pods", "web"}, sel: selection{allNamespaces: true}, wantErr: "--all-namespaces selects with -l or --all"},
		{name: "unknown kind", args: []string{"widgets", "w"}, wantErr: `unknown kind "widgets"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			named, kinds, err := tc.sel.plan(tc.args, "label")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotNamed, gotKinds []string
			for _, k := range named {
				gotNamed = append(gotNamed, k.kind.Kind+"/"+k.namespace+"/"+k.name)
			}
			for _, k := range kinds {
				gotKinds = append(gotKinds, k.Kind)
			}
			if !slices.Equal(gotNamed, tc.named) || !slices.Equal(gotKinds, tc.kinds) {
				t.Errorf("= %q, %q; want %q, %q", gotNamed, gotKinds, tc.named, tc.kinds)
			}
		})
	}
}

// refusedBeforeConnecting runs skiff with args against a server that does
// not exist and checks the command fails with want: reaching for the
// server would be a different error, so bad arguments store nothing.
func refusedBeforeConnecting(t *testing.T, want string, args ...string) {
	t.Helper()
	root := NewRootCommand("test")
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--server", "127.0.0.1:1", "--insecure", "--request-timeout", "1s"}, args...))
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("skiff %s: err = %v, want %q", strings.Join(args, " "), err, want)
	}
}

func TestLabelRefusesBadArgumentsBeforeConnecting(t *testing.T) {
	refusedBeforeConnecting(t, `invalid label key "bad key"`, "label", "cm", "settings", "good=1", "bad key=1")
	refusedBeforeConnecting(t, "at least one label update is required", "label", "cm", "settings")
	refusedBeforeConnecting(t, "--list shows labels", "label", "cm", "settings", "--list", "a=1")
	refusedBeforeConnecting(t, "no configmaps named", "annotate", "cm", "a=1")
	refusedBeforeConnecting(t, `"web": name every object before the annotation changes`, "annotate", "pods", "a=1", "web")
}
