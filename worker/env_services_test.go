package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

func svc(ns, name, ip string, ports ...*pb.ServicePort) *pb.Service {
	return &pb.Service{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: name},
		Spec:     &pb.ServiceSpec{ClusterIp: ip, Ports: ports},
	}
}

func sport(name, proto string, port int32) *pb.ServicePort {
	return &pb.ServicePort{Name: name, Protocol: proto, Port: port}
}

// fakeServices is a listServices over a fixed set of Services of every
// namespace; like the API it answers only the namespace asked for, and it
// records which namespaces were asked.
type fakeServices struct {
	all   []*pb.Service
	err   error
	asked []string
}

func (f *fakeServices) list(_ context.Context, ns string) ([]*pb.Service, error) {
	f.asked = append(f.asked, ns)
	if f.err != nil {
		return nil, f.err
	}
	var out []*pb.Service
	for _, s := range f.all {
		if s.GetMetadata().GetNamespace() == ns {
			out = append(out, s)
		}
	}
	return out, nil
}

// fakeObjects is a getObject over a few ConfigMaps.
func fakeObjects(cms ...*pb.ConfigMap) getObject {
	return func(_ context.Context, kind, ns, name string) (*pb.Object, error) {
		for _, cm := range cms {
			if kind == "ConfigMap" && cm.GetMetadata().GetNamespace() == ns && cm.GetMetadata().GetName() == name {
				return &pb.Object{Kind: &pb.Object_ConfigMap{ConfigMap: cm}}, nil
			}
		}
		return nil, status.Errorf(codes.NotFound, "%s %s/%s not found", kind, ns, name)
	}
}

// processView does what the runtime does with the resolved env (see
// worker/runtime's resolveProcess): each value is expanded against the
// values before it, then command and args against all of them. It returns
// the process's env as NAME=VALUE in order, and its argv.
func processView(env []*pb.EnvVar, argv []string) ([]string, []string) {
	defined := map[string]string{}
	lookup := func(n string) (string, bool) { v, ok := defined[n]; return v, ok }
	var outEnv []string
	for _, e := range env {
		v := expandRefs(e.GetValue(), lookup)
		defined[e.GetName()] = v
		outEnv = append(outEnv, e.GetName()+"="+v)
	}
	var outArgs []string
	for _, a := range argv {
		outArgs = append(outArgs, expandRefs(a, lookup))
	}
	return outEnv, outArgs
}

func podIn(ns string, links *bool) *pb.Pod {
	return &pb.Pod{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: "p", Uid: "u1"},
		Spec:     &pb.PodSpec{EnableServiceLinks: links},
	}
}

func TestServiceEnvVars(t *testing.T) {
	f := false
	tr := true
	webVars := []string{
		"WEB_SERVICE_HOST=10.96.0.10",
		"WEB_SERVICE_PORT=80",
		"WEB_PORT=tcp://10.96.0.10:80",
		"WEB_PORT_80_TCP=tcp://10.96.0.10:80",
		"WEB_PORT_80_TCP_PROTO=tcp",
		"WEB_PORT_80_TCP_PORT=80",
		"WEB_PORT_80_TCP_ADDR=10.96.0.10",
	}
	web := svc("default", "web", "10.96.0.10", sport("", "TCP", 80))
	cases := []struct {
		name  string
		svcs  []*pb.Service
		links *bool
		c     *pb.Container
		cms   []*pb.ConfigMap
		want  []string // process env, in order
		args  []string // argv after expansion, when c has command/args
	}{
		{
			name: "unnamed port",
			svcs: []*pb.Service{web},
			c:    &pb.Container{},
			want: webVars,
		},
		{
			name: "protocol unset is TCP",
			svcs: []*pb.Service{svc("default", "web", "10.96.0.10", sport("", "", 80))},
			c:    &pb.Container{},
			want: webVars,
		},
		{
			name: "named and multiple ports, UDP, dashes in names",
			svcs: []*pb.Service{svc("default", "my-dns", "10.96.0.53",
				sport("dns-udp", "UDP", 53), sport("dns-tcp", "TCP", 53), sport("metrics", "TCP", 9153))},
			c: &pb.Container{},
			want: []string{
				"MY_DNS_SERVICE_HOST=10.96.0.53",
				"MY_DNS_SERVICE_PORT=53",
				"MY_DNS_SERVICE_PORT_DNS_UDP=53",
				"MY_DNS_SERVICE_PORT_DNS_TCP=53",
				"MY_DNS_SERVICE_PORT_METRICS=9153",
				"MY_DNS_PORT=udp://10.96.0.53:53",
				"MY_DNS_PORT_53_UDP=udp://10.96.0.53:53",
				"MY_DNS_PORT_53_UDP_PROTO=udp",
				"MY_DNS_PORT_53_UDP_PORT=53",
				"MY_DNS_PORT_53_UDP_ADDR=10.96.0.53",
				"MY_DNS_PORT_53_TCP=tcp://10.96.0.53:53",
				"MY_DNS_PORT_53_TCP_PROTO=tcp",
				"MY_DNS_PORT_53_TCP_PORT=53",
				"MY_DNS_PORT_53_TCP_ADDR=10.96.0.53",
				"MY_DNS_PORT_9153_TCP=tcp://10.96.0.53:9153",
				"MY_DNS_PORT_9153_TCP_PROTO=tcp",
				"MY_DNS_PORT_9153_TCP_PORT=9153",
				"MY_DNS_PORT_9153_TCP_ADDR=10.96.0.53",
			},
		},
		{
			name: "IPv6 cluster IP is bracketed in URLs",
			svcs: []*pb.Service{svc("default", "v6", "fd00::a", sport("", "TCP", 443))},
			c:    &pb.Container{},
			want: []string{
				"V6_SERVICE_HOST=fd00::a",
				"V6_SERVICE_PORT=443",
				"V6_PORT=tcp://[fd00::a]:443",
				"V6_PORT_443_TCP=tcp://[fd00::a]:443",
				"V6_PORT_443_TCP_PROTO=tcp",
				"V6_PORT_443_TCP_PORT=443",
				"V6_PORT_443_TCP_ADDR=fd00::a",
			},
		},
		{
			name: "headless and ExternalName skipped, services in name order",
			svcs: []*pb.Service{
				svc("default", "zeta", "10.96.0.9", sport("", "TCP", 9)),
				svc("default", "headless", "None", sport("", "TCP", 80)),
				svc("default", "external", "", sport("", "TCP", 80)),
				svc("default", "alpha", "10.96.0.1", sport("", "TCP", 1)),
			},
			c: &pb.Container{},
			want: []string{
				"ALPHA_SERVICE_HOST=10.96.0.1", "ALPHA_SERVICE_PORT=1",
				"ALPHA_PORT=tcp://10.96.0.1:1", "ALPHA_PORT_1_TCP=tcp://10.96.0.1:1",
				"ALPHA_PORT_1_TCP_PROTO=tcp", "ALPHA_PORT_1_TCP_PORT=1", "ALPHA_PORT_1_TCP_ADDR=10.96.0.1",
				"ZETA_SERVICE_HOST=10.96.0.9", "ZETA_SERVICE_PORT=9",
				"ZETA_PORT=tcp://10.96.0.9:9", "ZETA_PORT_9_TCP=tcp://10.96.0.9:9",
				"ZETA_PORT_9_TCP_PROTO=tcp", "ZETA_PORT_9_TCP_PORT=9", "ZETA_PORT_9_TCP_ADDR=10.96.0.9",
			},
		},
		{
			name: "other namespaces not seen",
			svcs: []*pb.Service{web, svc("other", "db", "10.96.0.20", sport("", "TCP", 5432))},
			c:    &pb.Container{},
			want: webVars,
		},
		{
			name:  "enableServiceLinks false",
			svcs:  []*pb.Service{web},
			links: &f,
			c:     &pb.Container{Env: []*pb.EnvVar{{Name: "A", Value: "$(WEB_SERVICE_HOST)"}}},
			want:  []string{"A=$(WEB_SERVICE_HOST)"},
		},
		{
			name:  "enableServiceLinks true",
			svcs:  []*pb.Service{web},
			links: &tr,
			c:     &pb.Container{},
			want:  webVars,
		},
		{
			name: "env and envFrom override service variables",
			svcs: []*pb.Service{web},
			cms: []*pb.ConfigMap{{
				Metadata: &pb.ObjectMeta{Namespace: "default", Name: "cfg"},
				Data:     map[string]string{"WEB_SERVICE_PORT": "8080", "WEB_PORT": "from-cm"},
			}},
			c: &pb.Container{
				EnvFrom: []*pb.EnvFromSource{{ConfigMapRef: &pb.ConfigMapEnvSource{Name: "cfg"}}},
				Env:     []*pb.EnvVar{{Name: "WEB_SERVICE_HOST", Value: "override"}, {Name: "WEB_PORT", Value: "from-env"}},
			},
			want: []string{
				"WEB_PORT_80_TCP=tcp://10.96.0.10:80",
				"WEB_PORT_80_TCP_PROTO=tcp",
				"WEB_PORT_80_TCP_PORT=80",
				"WEB_PORT_80_TCP_ADDR=10.96.0.10",
				"WEB_PORT=from-env",
				"WEB_SERVICE_PORT=8080",
				"WEB_SERVICE_HOST=override",
			},
		},
		{
			name: "$(VAR) in env values and args sees service variables",
			svcs: []*pb.Service{web},
			c: &pb.Container{
				Command: []string{"/app", "--upstream=http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)/"},
				Args:    []string{"$(URL)", "$$(WEB_SERVICE_HOST)", "$(NOPE)"},
				Env:     []*pb.EnvVar{{Name: "URL", Value: "$(WEB_PORT)/x"}},
			},
			want: append(slices.Clone(webVars), "URL=tcp://10.96.0.10:80/x"),
			args: []string{"/app", "--upstream=http://10.96.0.10:80/", "tcp://10.96.0.10:80/x", "$(WEB_SERVICE_HOST)", "$(NOPE)"},
		},
		{
			// A literal may refer to a Service variable that a later env
			// entry overrides, and an override may refer to variables
			// defined before it (kubelet: MappingFuncFor(tmpEnv, serviceEnv)).
			name: "expansion order around overrides",
			svcs: []*pb.Service{web},
			c: &pb.Container{
				Command: []string{"/app", "$(WEB_SERVICE_HOST)"},
				Env: []*pb.EnvVar{
					{Name: "ORIG", Value: "$(WEB_SERVICE_HOST)"},
					{Name: "PROXY", Value: "127.0.0.1"},
					{Name: "WEB_SERVICE_HOST", Value: "$(PROXY)"},
					{Name: "BACK", Value: "$(WEB_SERVICE_HOST)"},
					{Name: "DOLLAR", Value: "$$(WEB_SERVICE_HOST) costs $5"},
				},
			},
			want: append(slices.Clone(webVars[1:]),
				"ORIG=10.96.0.10", "PROXY=127.0.0.1", "WEB_SERVICE_HOST=127.0.0.1", "BACK=127.0.0.1",
				"DOLLAR=$(WEB_SERVICE_HOST) costs $5"),
			args: []string{"/app", "127.0.0.1"},
		},
		{
			name: "values from ConfigMaps are not expanded",
			svcs: []*pb.Service{web},
			cms: []*pb.ConfigMap{{
				Metadata: &pb.ObjectMeta{Namespace: "default", Name: "cfg"},
				Data:     map[string]string{"RAW": "$(WEB_SERVICE_HOST)"},
			}},
			c: &pb.Container{
				EnvFrom: []*pb.EnvFromSource{{ConfigMapRef: &pb.ConfigMapEnvSource{Name: "cfg"}}},
				Env: []*pb.EnvVar{{Name: "KEY", ValueFrom: &pb.EnvVarSource{
					ConfigMapKeyRef: &pb.ConfigMapKeySelector{Name: "cfg", Key: "RAW"}}}},
			},
			want: append(slices.Clone(webVars), "RAW=$(WEB_SERVICE_HOST)", "KEY=$(WEB_SERVICE_HOST)"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeServices{all: tc.svcs}
			env, err := resolveContainerEnv(context.Background(), fakeObjects(tc.cms...), fs.list, podIn("default", tc.links), tc.c, "192.0.2.1", nil)
			if err != nil {
				t.Fatal(err)
			}
			gotEnv, gotArgs := processView(env, append(slices.Clone(tc.c.GetCommand()), tc.c.GetArgs()...))
			if !slices.Equal(gotEnv, tc.want) {
				t.Errorf("env:\n got %q\nwant %q", gotEnv, tc.want)
			}
			if tc.args != nil && !slices.Equal(gotArgs, tc.args) {
				t.Errorf("args:\n got %q\nwant %q", gotArgs, tc.args)
			}
			wantAsked := []string{"default"}
			if tc.links != nil && !*tc.links {
				wantAsked = nil // no list at all: a failing API must not block such pods
			}
			if !slices.Equal(fs.asked, wantAsked) {
				t.Errorf("listed namespaces %q, want %q", fs.asked, wantAsked)
			}
		})
	}
}

func TestServiceEnvListFailure(t *testing.T) {
	fs := &fakeServices{err: status.Error(codes.Unavailable, "no leader")}
	c := &pb.Container{Env: []*pb.EnvVar{{Name: "A", Value: "b"}}}
	_, err := resolveContainerEnv(context.Background(), fakeObjects(), fs.list, podIn("shop", nil), c, "", nil)
	if err == nil {
		t.Fatal("resolved env although listing Services failed")
	}
	if !errors.Is(err, errConfig) || configReason(err) != reasonCreateConfigError {
		t.Errorf("err %v: reason %s, want %s so the start is retried", err, configReason(err), reasonCreateConfigError)
	}
	if !strings.Contains(err.Error(), "no leader") {
		t.Errorf("err %v does not carry the cause", err)
	}
	for _, want := range []string{`namespace "shop"`, "service environment variables", "enableServiceLinks"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q does not mention %q", err, want)
		}
	}

	// Service links disabled: the pod does not depend on the list.
	env, err := resolveContainerEnv(context.Background(), fakeObjects(), fs.list, podIn("shop", new(bool)), c, "", nil)
	if err != nil || len(env) != 1 {
		t.Errorf("enableServiceLinks=false: env %v, err %v", env, err)
	}
}

// TestServiceEnvNilLister: without a lister there are no Service variables
// and nothing else changes.
func TestServiceEnvNilLister(t *testing.T) {
	c := &pb.Container{Env: []*pb.EnvVar{{Name: "A", Value: "$(WEB_SERVICE_HOST)"}}}
	env, err := resolveContainerEnv(context.Background(), fakeObjects(), nil, podIn("default", nil), c, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := processView(env, nil)
	if want := []string{"A=$(WEB_SERVICE_HOST)"}; !slices.Equal(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
}

// TestEnvExpandRefs pins expandRefs to the runtime's expand (the same
// table as worker/runtime's TestExpand): values expanded here and command
// and args expanded there must follow one rule.
func TestEnvExpandRefs(t *testing.T) {
	vars := map[string]string{"X": "x", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":         "plain",
		"$(X)":          "x",
		"a$(X)b$(X)":    "axbx",
		"$$(X)":         "$(X)",
		"$$$(X)":        "$x",
		"$(Y)":          "$(Y)",
		"$(EMPTY)!":     "!",
		"$X":            "$X",
		"$(X":           "$(X",
		"trailing $":    "trailing $",
		"$(X)$(X)$$":    "xx$",
		"cost: $5.00":   "cost: $5.00",
		"$()":           "$()",
		"nested $((X))": "nested $((X))",
	} {
		if got := expandRefs(in, lookup); got != want {
			t.Errorf("expandRefs(%q) = %q, want %q", in, got, want)
		}
	}
}
