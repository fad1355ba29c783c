package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testdataObjects decodes every manifest in testdata/.
func testdataObjects(t testing.TB) map[string][]*Object {
	t.Helper()
	return manifestObjects(t, "testdata/*.*")
}

// manifestObjects decodes every manifest file that matches pattern (golden
// outputs left out), by file.
func manifestObjects(t testing.TB, pattern string) map[string][]*Object {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*Object{}
	for _, f := range files {
		if strings.Contains(f, ".golden.") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := DecodeManifests(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = objs
	}
	return out
}

func TestDecodeErrors(t *testing.T) {
	const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx
        - name: sidecar
          image: busybox
          imagePullPolicyy: Always
`
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error
		not  []string // must not appear
	}{
		{
			name: "malformed YAML reports the line in the whole input",
			in:   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  labels: [\n",
			want: []string{"document 2: yaml: line 9: did not find expected node content"},
		},
		{
			name: "tab indentation",
			in:   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: a\n",
			want: []string{"document 1: yaml: line 4: found character that cannot start any token"},
		},
		{
			name: "unknown field nested in a list",
			in:   deployment,
			want: []string{"document 1 (Deployment web): spec.template.spec.containers[1].imagePullPolicyy: unknown field"},
		},
		{
			name: "proto field names are not accepted",
			in:   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, generate_name: b}\n",
			want: []string{"metadata.generate_name: unknown field"},
		},
		{
			name: "int32 given as a string",
			in:   strings.Replace(deployment, "replicas: 3", `replicas: "3"`, 1),
			want: []string{"document 1 (Deployment web): spec.replicas: expected integer, got string"},
		},
		{
			name: "every problem is listed",
			in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p, creationTimestamp: yesterday, resourceVersion: abc, generation: 1.5}\n" +
				"spec: {priority: 3000000000, containers: [{name: a, ports: [{containerPort: '80'}]}], hostNetwork: 1}\n",
			want: []string{
				`metadata.creationTimestamp: expected RFC 3339 timestamp, got "yesterday"`,
				"metadata.generation: expected integer, got number 1.5",
				`metadata.resourceVersion: expected a decimal resourceVersion, got "abc"`,
				"spec.containers[0].ports[0].containerPort: expected integer, got string",
				"spec.priority: integer 3000000000 is out of range",
				"spec.hostNetwork: expected boolean, got number",
			},
		},
		{
			name: "object where a list belongs",
			in:   "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {name: a}}\n",
			want: []string{"spec.containers: expected array, got object"},
		},
		{
			name: "int-or-string and label values",
			in:   "apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: {v: 1.0, ok: true}}\nspec: {ports: [{port: 80, targetPort: true}, {port: 81, targetPort: 1.5}]}\n",
			want: []string{
				"metadata.labels[v]: expected string, got number",
				"metadata.labels[ok]: expected string, got boolean",
				"spec.ports[0].targetPort: expected integer or string, got boolean",
				"spec.ports[1].targetPort: expected integer or string, got number 1.5",
			},
		},
		{
			name: "bad base64",
			in:   "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: 'not base64!'}\n",
			want: []string{"(Secret s): data[password]: invalid base64"},
		},
		{
			name: "unknown kind",
			in:   "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n",
			want: []string{`document 1 (Ingress web): unknown kind "Ingress" (apiVersion "networking.k8s.io/v1")`},
		},
		{
			name: "kind in the wrong case",
			in:   "apiVersion: apps/v1\nkind: deployment\nmetadata: {name: web}\n",
			want: []string{`unknown kind "deployment"`, `did you mean "Deployment"?`},
		},
		{
			name: "wrong apiVersion",
			in:   strings.Replace(deployment, "apps/v1", "extensions/v1beta1", 1),
			want: []string{`document 1 (Deployment web): apiVersion "extensions/v1beta1" is not supported for Deployment, use "apps/v1"`},
		},
		{
			name: "missing kind",
			in:   "apiVersion: v1\nmetadata: {name: a}\n",
			want: []string{"document 1: kind not set"},
		},
		{
			name: "missing apiVersion",
			in:   "kind: ConfigMap\nmetadata: {name: a}\n",
			want: []string{"document 1 (ConfigMap a): apiVersion not set"},
		},
		{
			name: "not an object",
			in:   "- a\n- b\n",
			want: []string{"document 1: expected an object, got array"},
		},
		{
			name: "multi-doc with one bad document reports its index",
			in: "# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, nodeport: 30000}]}\n" +
				"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
			want: []string{"document 2 (Service web): spec.ports[0].nodeport: unknown field"},
			not:  []string{"document 1", "document 3"},
		},
		{
			name: "several bad documents",
			in:   "apiVersion: v1\nkind: ConfigMap\nmetadata: {nam: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\nkind: Pod\n",
			want: []string{"document 1 (ConfigMap): metadata.nam: unknown field", "document 3 (Pod): apiVersion not set"},
			not:  []string{"document 2"},
		},
		{
			name: "duplicate YAML key",
			in:   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n",
			want: []string{`document 1: yaml: unmarshal errors: line 5: key "name" already set in map`},
		},
		{
			name: "duplicate JSON key",
			in:   `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "name": "b"}}`,
			want: []string{"document 1 (ConfigMap b): metadata.name: duplicate field"},
		},
		{
			name: "JSON stream with a bad second object",
			in:   "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}}\n{\"apiVersion\": \"v1\" \"kind\": 1}",
			want: []string{"document 2: json: line 2: invalid character"},
		},
		{
			name: "JSON stream cut short",
			in:   `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}} {"apiVersion": "v1",`,
			want: []string{"document 2: json: unexpected end of input"},
		},
		{
			name: "List item",
			in:   "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {foo: 1}}\n",
			want: []string{"document 1, items[1] (Service b): spec.foo: unknown field"},
			not:  []string{"items[0]"},
		},
		{
			name: "typed List with the wrong apiVersion",
			in:   "apiVersion: v1\nkind: DeploymentList\nitems: []\n",
			want: []string{`document 1 (DeploymentList): apiVersion "v1" is not supported for DeploymentList, use "apps/v1"`},
		},
		{
			name: "List inside a List",
			in:   "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n",
			want: []string{"document 1, items[0] (List): a List may not hold another List"},
		},
		{
			name: "unknown field in a List",
			in:   "apiVersion: v1\nkind: List\nitem: []\n",
			want: []string{"document 1 (List): item: unknown field"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := DecodeManifests([]byte(tt.in))
			if err == nil {
				t.Fatalf("decoded %d objects, want an error", len(objs))
			}
			if objs != nil {
				t.Errorf("returned %d objects with the error", len(objs))
			}
			if !errors.Is(err, ErrManifest) {
				t.Errorf("errors.Is(err, ErrManifest) = false for %v", err)
			}
			var de *DocumentError
			if !errors.As(err, &de) {
				t.Errorf("error is not a *DocumentError: %T", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error %q\ncontains %q", err, n)
				}
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		count int
		check func(t *testing.T, objs []*Object)
	}{
		{
			name:  "markers, comments and empty documents",
			in:    "# comment only\n---\n---\n# another\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n--- # trailing comment\n...\n---\n~\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\n\n",
			count: 2,
		},
		{
			name:  "document end marker without a following start",
			in:    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n...\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
			count: 2,
		},
		{
			name:  "content on the marker line",
			in:    "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n--- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
			count: 2,
		},
		{
			name:  "directive",
			in:    "%YAML 1.1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
			count: 1,
		},
		{
			name:  "a block scalar holding a dashed line",
			in:    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  x: |\n    ---\n    not a marker\n",
			count: 1,
			check: func(t *testing.T, objs []*Object) {
				if got := objs[0].GetConfigMap().GetData()["x"]; got != "---\nnot a marker\n" {
					t.Errorf("data[x] = %q", got)
				}
			},
		},
		{
			name:  "CRLF and a byte order mark",
			in:    "\xef\xbb\xbfapiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: a\r\n---\r\napiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: b\r\n",
			count: 2,
		},
		{
			name:  "empty input",
			in:    "\n# nothing\n---\n",
			count: 0,
		},
		{
			name:  "JSON stream",
			in:    "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}}\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"b\"}}\nnull\n",
			count: 2,
		},
		{
			name:  "YAML flow mapping",
			in:    "{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}",
			count: 1,
		},
		{
			name:  "typed List whose items omit apiVersion and kind",
			in:    "apiVersion: v1\nkind: PodList\nmetadata: {resourceVersion: \"5\"}\nitems:\n- metadata: {name: a}\n- metadata: {name: b}\n",
			count: 2,
			check: func(t *testing.T, objs []*Object) {
				if objs[1].GetPod().GetMetadata().GetName() != "b" || objs[1].GetPod().GetApiVersion() != "v1" {
					t.Errorf("item 1 = %v", objs[1])
				}
			},
		},
		{
			name:  "nulls and empty objects as kubectl writes them",
			in:    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  creationTimestamp: null\n  name: web\nspec:\n  strategy: {}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      creationTimestamp: null\n      labels: {app: web}\n    spec:\n      containers:\n      - image: nginx\n        name: nginx\n        resources: {}\nstatus: {}\n",
			count: 1,
			check: func(t *testing.T, objs []*Object) {
				d := objs[0].GetDeployment()
				if d.GetMetadata().GetCreationTimestamp() != nil || d.GetSpec().GetStrategy() == nil || d.GetStatus() == nil {
					t.Errorf("got %v", d)
				}
			},
		},
		{
			name:  "int64 and resourceVersion in either form",
			in:    `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "generation": "7", "resourceVersion": 42, "deletionGracePeriodSeconds": 3e1}, "spec": {"terminationGracePeriodSeconds": "30"}}`,
			count: 1,
			check: func(t *testing.T, objs []*Object) {
				p := objs[0].GetPod()
				m := p.GetMetadata()
				if m.GetGeneration() != 7 || m.GetResourceVersion() != 42 || m.GetDeletionGracePeriodSeconds() != 30 || p.GetSpec().GetTerminationGracePeriodSeconds() != 30 {
					t.Errorf("got %v", p)
				}
			},
		},
		{
			name:  "numbers for quantities and int-or-string, YAML octal",
			in:    "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: a\n    image: a\n    resources: {limits: {cpu: 2, memory: 1e3}, requests: {cpu: 0.5}}\n    livenessProbe: {tcpSocket: {port: 8080}}\n  volumes:\n  - name: v\n    secret: {secretName: s, defaultMode: 0644}\n",
			count: 1,
			check: func(t *testing.T, objs []*Object) {
				s := objs[0].GetPod().GetSpec()
				c := s.GetContainers()[0]
				if c.GetResources().GetLimits()["cpu"] != "2" || c.GetResources().GetRequests()["cpu"] != "0.5" ||
					c.GetLivenessProbe().GetTcpSocket().GetPort() != "8080" || s.GetVolumes()[0].GetSecret().GetDefaultMode() != 0o644 {
					t.Errorf("got %v", s)
				}
			},
		},
		{
			name:  "null list elements and map values are zero values",
			in:    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, finalizers: [null]}\ndata:\n  k:\n",
			count: 1,
			check: func(t *testing.T, objs []*Object) {
				c := objs[0].GetConfigMap()
				if v, ok := c.GetData()["k"]; !ok || v != "" || len(c.GetMetadata().GetFinalizers()) != 1 {
					t.Errorf("got %v", c)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := DecodeManifests([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != tt.count {
				t.Fatalf("decoded %d objects, want %d", len(objs), tt.count)
			}
			if tt.check != nil {
				tt.check(t, objs)
			}
		})
	}
}

func TestDecodeObject(t *testing.T) {
	if _, err := DecodeObject([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"", "# nothing\n", "apiVersion: v1\nkind: List\nitems: []\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"} {
		if _, err := DecodeObject([]byte(in)); !errors.Is(err, ErrManifest) {
			t.Errorf("DecodeObject(%q) error = %v, want ErrManifest", in, err)
		}
	}
}

// TestRoundTrip encodes every test object as JSON and YAML, before and
// after defaulting, and decodes it back to an equal object.
func TestRoundTrip(t *testing.T) {
	kinds := map[string]bool{}
	for file, objs := range testdataObjects(t) {
		for i, o := range objs {
			kinds[o.KindName()] = true
			defaulted := o.Clone()
			SetDefaults(defaulted)
			for _, obj := range []*Object{o, defaulted} {
				roundTrip(t, file, i, obj)
			}
		}
	}
	for _, k := range Kinds() {
		if !kinds[k.Kind] {
			t.Errorf("no object of kind %s in testdata", k.Kind)
		}
	}
}

func roundTrip(t testing.TB, file string, i int, o *Object) {
	t.Helper()
	j, err := EncodeJSON(o)
	if err != nil {
		t.Fatalf("%s[%d]: EncodeJSON: %v", file, i, err)
	}
	back, err := DecodeObject(j)
	if err != nil {
		t.Fatalf("%s[%d]: decode JSON: %v\n%s", file, i, err, j)
	}
	if !gproto.Equal(o, back) {
		t.Fatalf("%s[%d]: JSON round trip differs:\n%v\n%v\n%s", file, i, o, back, j)
	}
	y, err := EncodeYAML(o)
	if err != nil {
		t.Fatalf("%s[%d]: EncodeYAML: %v", file, i, err)
	}
	back, err = DecodeObject(y)
	if err != nil {
		t.Fatalf("%s[%d]: decode YAML: %v\n%s", file, i, err, y)
	}
	if !gproto.Equal(o, back) {
		t.Fatalf("%s[%d]: YAML round trip differs:\n%v\n%v\n%s", file, i, o, back, y)
	}
}

// TestDecodeProtojson checks that protojson's rendering of an object (int64
// as strings, int-or-string as strings) is accepted and decodes to the same
// object, so data written by other protobuf tools is readable.
func TestDecodeProtojson(t *testing.T) {
	for file, objs := range testdataObjects(t) {
		for i, o := range objs {
			j, err := protojson.Marshal(o.Resource())
			if err != nil {
				t.Fatal(err)
			}
			back, err := DecodeObject(j)
			if err != nil {
				t.Fatalf("%s[%d]: %v\n%s", file, i, err, j)
			}
			if !gproto.Equal(o, back) {
				t.Errorf("%s[%d]: differs:\n%v\n%v", file, i, o, back)
			}
		}
	}
}

func TestEncodeKubernetesStyle(t *testing.T) {
	objs := testdataObjects(t)
	var y []byte
	for _, o := range append(objs["testdata/web.yaml"], objs["testdata/pod.yaml"]...) {
		SetDefaults(o)
		b, err := EncodeYAML(o)
		if err != nil {
			t.Fatal(err)
		}
		y = append(y, b...)
	}
	for _, want := range []string{
		"\n  replicas: 3\n",
		"\n        - containerPort: 80\n",
		"\n  generation: 2\n",
		"\n    targetPort: 8080\n",
		"\n    targetPort: http\n",
		"\n  resourceVersion: \"1234\"\n",
		"\n  terminationGracePeriodSeconds: 30\n",
		"\n      maxSurge: 1\n",
		"\n      maxUnavailable: 0\n",
		"\n        port: 8080\n",
		"\n        port: grpc\n",
		"\n  creationTimestamp: \"2024-05-01T12:00:00Z\"\n",
		"\n        memory: 512Mi\n",
		"\n        cpu: \"1\"\n",
		"\n    nodePort: 30080\n",
	} {
		if !bytes.Contains(y, []byte(want)) {
			t.Errorf("YAML lacks %q", want)
		}
	}
	j, err := EncodeJSON(objs["testdata/pod.yaml"][0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(j, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"api-0",`)) {
		t.Errorf("JSON does not start with apiVersion, kind, metadata: %.80s", j)
	}
	for _, want := range []string{`"resourceVersion":"1234"`, `"generation":2`, `"terminationGracePeriodSeconds":30`, `"port":8080`, `"port":"grpc"`} {
		if !bytes.Contains(j, []byte(want)) {
			t.Errorf("JSON lacks %s", want)
		}
	}
}

// TestEncodeGolden pins the complete YAML rendering of a defaulted
// Deployment and Service; run with -update after a deliberate change.
func TestEncodeGolden(t *testing.T) {
	var got []byte
	for _, o := range testdataObjects(t)["testdata/web.yaml"] {
		SetDefaults(o)
		y, err := EncodeYAML(o)
		if err != nil {
			t.Fatal(err)
		}
		got = append(append(got, "---\n"...), y...)
	}
	const golden = "testdata/web.golden.yaml"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("EncodeYAML differs from %s (run go test -update):\n%s", golden, got)
	}
}

func TestEncodeMinimal(t *testing.T) {
	// Objects built in Go often leave apiVersion and kind empty.
	o := Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "a"}})
	j, err := EncodeJSON(o)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`; string(j) != want {
		t.Errorf("got %s, want %s", j, want)
	}
	// Set-but-zero optional fields are printed, unset ones are not.
	d := Wrap(&Deployment{Metadata: &ObjectMeta{Name: "d"}, Spec: &DeploymentSpec{Replicas: gproto.Int32(0)}})
	j, err = EncodeJSON(d)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":0}}`; string(j) != want {
		t.Errorf("got %s, want %s", j, want)
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		o    *Object
		want string
	}{
		{"empty object", &Object{}, "object is empty"},
		{"nil object", nil, "object is empty"},
		{"invalid UTF-8", Wrap(&ConfigMap{Metadata: &ObjectMeta{Name: "a"}, Data: map[string]string{"k": "\xff"}}), "data[k]: string is not valid UTF-8"},
		{"timestamp out of range", Wrap(&Pod{Metadata: &ObjectMeta{Name: "a", CreationTimestamp: &timestamppb.Timestamp{Seconds: 1 << 50}}}), "metadata.creationTimestamp: invalid timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EncodeJSON(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("EncodeJSON error = %v, want %q", err, tt.want)
			}
			if _, err := EncodeYAML(tt.o); err == nil {
				t.Error("EncodeYAML succeeded")
			}
		})
	}
}

// TestEncodeStrings checks that strings YAML or JSON treat specially survive
// both encodings, as values and as map keys.
func TestEncodeStrings(t *testing.T) {
	strs := []string{"", "plain", `quote" back\slash`, "<html>&amp;", "\n\r\t\x00\x1f", "\x7f", "\u0085", "\u00a0",
		"\u2028\u2029", "\ufeff", "\uffff", "\U0001F600", "日本語", "yes", "no", "on", "~", "null", "true", "0x10", "0o17", "017",
		"1e3", "1_000", ".inf", "- a", ": b", "#c", "  lead", "trail  ", "a: b", "'q'", "---", "...", "@x", "`x", "%x", "*a", "&a", "!t",
		"2024-01-01", "2024-01-01T00:00:00Z", "=", "<<", "skiff-merge-key", "line\n  indented\n"}
	data := map[string]string{}
	for i, s := range strs {
		data[s] = strconv.Itoa(i)
		data[strconv.Itoa(i)] = s
	}
	o := Wrap(&ConfigMap{ApiVersion: "v1", Kind: "ConfigMap", Metadata: &ObjectMeta{Name: "s"}, Data: data})
	roundTrip(t, "strings", 0, o)
	for _, s := range strs {
		var e encoder
		if err := e.str(s); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := json.Unmarshal(e.buf, &got); err != nil || got != s {
			t.Errorf("str(%q) = %s, which decodes to %q, %v", s, e.buf, got, err)
		}
	}
}

// TestSpecialFields keeps the table of non-plain fields in step with the
// .proto files.
func TestSpecialFields(t *testing.T) {
	for name, kind := range specialFields {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		fd, ok := d.(protoreflect.FieldDescriptor)
		if !ok {
			t.Errorf("%s is not a field", name)
			continue
		}
		if fd.IsMap() {
			fd = fd.MapValue()
		}
		want := protoreflect.StringKind
		if kind == resourceVersion {
			want = protoreflect.Uint64Kind
		}
		if fd.Kind() != want || fd.IsList() {
			t.Errorf("%s is %v, want %v", name, fd.Kind(), want)
		}
	}
	// Every uint64 field must be listed: plain ones would print as numbers
	// though Kubernetes prints resourceVersion-like values as strings.
	for _, k := range Kinds() {
		walkFields(k.New().ProtoReflect().Descriptor(), map[protoreflect.FullName]bool{}, func(fd protoreflect.FieldDescriptor) {
			if fd.Kind() == protoreflect.Uint64Kind && specialFields[fd.FullName()] != resourceVersion {
				t.Errorf("uint64 field %s is not in specialFields", fd.FullName())
			}
		})
	}
}

func walkFields(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool, fn func(protoreflect.FieldDescriptor)) {
	if seen[md.FullName()] {
		return
	}
	seen[md.FullName()] = true
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		fn(fd)
		if fd.Message() != nil {
			walkFields(fd.Message(), seen, fn)
		}
	}
}

func FuzzDecodeManifests(f *testing.F) {
	// One seed per document: small inputs keep executions, and the
	// minimization of new inputs, fast.
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			f.Add(doc)
		}
	}
	for _, s := range []string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {'1': '2'}}\ndata: {'yes': 'no', '0x10': '1.0'}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, targetPort: -1}, {port: 81, targetPort: '007'}]}\n",
		`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"a":"AAEC"}} {"apiVersion":"v1","kind":"List","items":[]}`,
		"apiVersion: v1\nkind: Pod\nmetadata: {name: a, creationTimestamp: '2024-01-01T00:00:00.123456789+02:00'}\n",
		"---\n...\n%YAML 1.1\n--- |\n  x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := DecodeManifests(data)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		for i, o := range objs {
			roundTrip(t, "input", i, o)
			_ = Validate(o)
			d := o.Clone()
			SetDefaults(d)
			again := d.Clone()
			SetDefaults(again)
			if !gproto.Equal(d, again) {
				t.Fatalf("SetDefaults is not idempotent:\n%v\n%v", d, again)
			}
		}
	})
}

func BenchmarkDecodeManifests(b *testing.B) {
	data, err := os.ReadFile("testdata/web.yaml")
	if err != nil {
		b.Fatal(err)
	}
	doc := data[:bytes.Index(data, []byte("\n---\napiVersion: v1\nkind: Service"))+1]
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		objs, err := DecodeManifests(doc)
		if err != nil || len(objs) != 1 {
			b.Fatal(objs, err)
		}
	}
}

func BenchmarkEncodeJSON(b *testing.B) {
	data, err := os.ReadFile("testdata/pod.yaml")
	if err != nil {
		b.Fatal(err)
	}
	o, err := DecodeObject(data)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeJSON(o); err != nil {
			b.Fatal(err)
		}
	}
}

// kubectl get -o yaml output carries server-written fields; it must apply
// unchanged.
func TestDecodeKubectlOutput(t *testing.T) {
	const doc = `
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  selfLink: /api/v1/namespaces/default/pods/web
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    manager: kubectl-client-side-apply
    operation: Update
spec:
  automountServiceAccountToken: false
  imagePullSecrets:
  - name: regcred
  containers:
  - name: app
    image: nginx:1.27
    terminationMessagePolicy: File
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "sleep 2"]
`
	objs, err := DecodeManifests([]byte(doc))
	if err != nil {
		t.Fatalf("decode kubectl output: %v", err)
	}
	pod := objs[0].GetPod()
	if got := pod.GetSpec().GetContainers()[0].GetLifecycle().GetPreStop().GetExec().GetCommand(); len(got) != 3 {
		t.Errorf("preStop exec command = %v", got)
	}
	if pod.GetSpec().GetImagePullSecrets()[0].GetName() != "regcred" {
		t.Errorf("imagePullSecrets lost: %v", pod.GetSpec().GetImagePullSecrets())
	}
	// Only the known server-written metadata fields are dropped.
	if _, err := DecodeManifests([]byte(strings.Replace(doc, "selfLink", "selfLinq", 1))); err == nil || !strings.Contains(err.Error(), "metadata.selfLinq") {
		t.Errorf("unknown metadata field: err = %v", err)
	}
}

// TestEncodeZeroValuesKubernetesPrints checks the zero values Kubernetes
// always prints (fields without omitempty in its Go types): a container that
// exited 0 must show exitCode: 0, not look as if it never ran.
func TestEncodeZeroValuesKubernetesPrints(t *testing.T) {
	pod := Wrap(&Pod{
		ApiVersion: "v1", Kind: "Pod",
		Metadata: &ObjectMeta{Name: "job-1", Namespace: "default"},
		Status: &PodStatus{Phase: "Succeeded", ContainerStatuses: []*ContainerStatus{{
			Name:  "main",
			State: &ContainerState{Terminated: &ContainerStateTerminated{Reason: "Completed"}},
		}}},
	})
	j, err := EncodeJSON(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"containerStatuses":[{"name":"main","state":{"terminated":{"exitCode":0,"reason":"Completed"}},"ready":false,"restartCount":0}]`,
	} {
		if !bytes.Contains(j, []byte(want)) {
			t.Errorf("JSON lacks %s:\n%s", want, j)
		}
	}
	// Only those fields: other zero scalars stay omitted, as in Kubernetes.
	for _, absent := range []string{`"signal"`, `"image"`, `"started"`, `"waiting"`, `"podIP"`} {
		if bytes.Contains(j, []byte(absent)) {
			t.Errorf("JSON has %s:\n%s", absent, j)
		}
	}
	y, err := EncodeYAML(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n        exitCode: 0\n", "\n    ready: false\n", "\n    restartCount: 0\n"} {
		if !bytes.Contains(y, []byte(want)) {
			t.Errorf("YAML lacks %q:\n%s", want, y)
		}
	}
	roundTrip(t, "pod", 0, pod)

	// A scaled-down ReplicaSet reports replicas: 0; one without a status
	// prints none.
	rs := Wrap(&ReplicaSet{Metadata: &ObjectMeta{Name: "web-1", Namespace: "default"}, Status: &ReplicaSetStatus{ObservedGeneration: 2}})
	if j, _ := EncodeJSON(rs); !bytes.Contains(j, []byte(`"status":{"replicas":0,"observedGeneration":2}`)) {
		t.Errorf("ReplicaSet status: %s", j)
	}
	rs.GetReplicaSet().Status = nil
	if j, _ := EncodeJSON(rs); bytes.Contains(j, []byte(`"status"`)) || bytes.Contains(j, []byte(`"replicas"`)) {
		t.Errorf("ReplicaSet without status: %s", j)
	}
	ds := Wrap(&DaemonSet{Metadata: &ObjectMeta{Name: "agent", Namespace: "default"}, Status: &DaemonSetStatus{}})
	if j, _ := EncodeJSON(ds); !bytes.Contains(j, []byte(`"status":{"currentNumberScheduled":0,"numberMisscheduled":0,"desiredNumberScheduled":0,"numberReady":0}`)) {
		t.Errorf("DaemonSet status: %s", j)
	}
}

// TestEmittedZeroFieldsResolve keeps emittedZeroFields in step with the
// .proto files: a renamed field would silently stop printing.
func TestEmittedZeroFieldsResolve(t *testing.T) {
	for name := range emittedZeroFields {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		fd, ok := d.(protoreflect.FieldDescriptor)
		if !ok || fd.IsList() || fd.IsMap() || fd.Message() != nil || fd.HasPresence() {
			t.Errorf("%s is not a proto3 scalar without presence", name)
		}
	}
}

func TestDecodeManifestObjectsPositions(t *testing.T) {
	in := `# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
---
apiVersion: v1
kind: Namespace
metadata: {name: d}
`
	mos, err := DecodeManifestObjects([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	type pos struct {
		name            string
		doc, item, line int
	}
	want := []pos{{"a", 1, -1, 1}, {"b", 2, 0, 5}, {"c", 2, 1, 5}, {"d", 3, -1, 11}}
	if len(mos) != len(want) {
		t.Fatalf("got %d objects, want %d", len(mos), len(want))
	}
	for i, mo := range mos {
		got := pos{mo.Object.Meta().GetName(), mo.Document, mo.Item, mo.Line}
		if got != want[i] {
			t.Errorf("object %d: got %+v, want %+v", i, got, want[i])
		}
	}
}
