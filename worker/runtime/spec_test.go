package runtime

import (
	"errors"
	"slices"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

func ptr[T any](v T) *T { return &v }

func TestResolveProcessCommand(t *testing.T) {
	img := image.ImageConfig{Entrypoint: []string{"/entry", "-v"}, Cmd: []string{"serve", "--port=80"}}
	for _, tc := range []struct {
		name          string
		command, args []string
		img           image.ImageConfig
		want          []string
	}{
		{"image defaults", nil, nil, img, []string{"/entry", "-v", "serve", "--port=80"}},
		{"command replaces entrypoint and cmd", []string{"/bin/sh", "-c"}, nil, img, []string{"/bin/sh", "-c"}},
		{"args replace cmd", nil, []string{"run"}, img, []string{"/entry", "-v", "run"}},
		{"command and args", []string{"/app"}, []string{"a", "b"}, img, []string{"/app", "a", "b"}},
		{"image cmd without entrypoint", nil, nil, image.ImageConfig{Cmd: []string{"/cmd"}}, []string{"/cmd"}},
		{"args without entrypoint", nil, []string{"/x", "y"}, image.ImageConfig{Cmd: []string{"/cmd"}}, []string{"/x", "y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := resolveProcess(&pb.Container{Command: tc.command, Args: tc.args}, tc.img, nil, "h")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Args, tc.want) {
				t.Errorf("args = %q, want %q", p.Args, tc.want)
			}
		})
	}
	if _, err := resolveProcess(&pb.Container{}, image.ImageConfig{}, nil, "h"); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("no command at all: %v", err)
	}
	if _, err := resolveProcess(&pb.Container{Command: []string{"/x"}, WorkingDir: "rel"}, image.ImageConfig{}, nil, "h"); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("relative workingDir: %v", err)
	}
}

func TestResolveProcessEnv(t *testing.T) {
	c := &pb.Container{
		Command: []string{"/app", "$(A)", "$$(A)", "$(MISSING)"},
		Args:    []string{"--b=$(B)"},
		Env: []*pb.EnvVar{
			{Name: "A", Value: "a"},
			{Name: "B", Value: "$(A)-b"},
			{Name: "IMG", Value: "from-container"},
			{Name: "LATER", Value: "$(C)"},
			{Name: "C", Value: "c"},
		},
	}
	img := image.ImageConfig{Env: []string{"IMG=from-image", "PATH=/bin", "KEEP=1"}, WorkingDir: "/srv"}
	p, err := resolveProcess(c, img, nil, "host")
	if err != nil {
		t.Fatal(err)
	}
	wantEnv := []string{"HOSTNAME=host", "IMG=from-container", "PATH=/bin", "KEEP=1", "A=a", "B=a-b", "LATER=$(C)", "C=c"}
	if !slices.Equal(p.Env, wantEnv) {
		t.Errorf("env = %q, want %q", p.Env, wantEnv)
	}
	wantArgs := []string{"/app", "a", "$(A)", "$(MISSING)", "--b=a-b"}
	if !slices.Equal(p.Args, wantArgs) {
		t.Errorf("args = %q, want %q", p.Args, wantArgs)
	}
	if p.Cwd != "/srv" {
		t.Errorf("cwd = %q", p.Cwd)
	}
	p, _ = resolveProcess(&pb.Container{Command: []string{"/x"}}, image.ImageConfig{}, nil, "h")
	if !slices.Contains(p.Env, defaultPath) || p.Cwd != "/" {
		t.Errorf("defaults: env %q cwd %q", p.Env, p.Cwd)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"X": "x", "EMPTY": ""}
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
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUserSpec(t *testing.T) {
	for _, tc := range []struct {
		name      string
		imageUser string
		sc        *pb.SecurityContext
		podSC     *pb.PodSecurityContext
		want      string
	}{
		{"image default", "", nil, nil, ""},
		{"image user", "app:staff", nil, nil, "app:staff"},
		{"runAsUser replaces image user and group", "app:staff", &pb.SecurityContext{RunAsUser: ptr[int64](1000)}, nil, "1000"},
		{"runAsGroup replaces group only", "app:staff", &pb.SecurityContext{RunAsGroup: ptr[int64](5)}, nil, "app:5"},
		{"runAsGroup with root image", "", &pb.SecurityContext{RunAsGroup: ptr[int64](5)}, nil, "0:5"},
		{"pod level", "app", nil, &pb.PodSecurityContext{RunAsUser: ptr[int64](7), RunAsGroup: ptr[int64](8)}, "7:8"},
		{"container over pod", "app", &pb.SecurityContext{RunAsUser: ptr[int64](9)}, &pb.PodSecurityContext{RunAsUser: ptr[int64](7), RunAsGroup: ptr[int64](8)}, "9:8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := userSpec(tc.imageUser, tc.sc, tc.podSC); got != tc.want {
				t.Errorf("userSpec = %q, want %q", got, tc.want)
			}
		})
	}
	p, _ := resolveProcess(&pb.Container{Command: []string{"/x"}, SecurityContext: &pb.SecurityContext{RunAsNonRoot: ptr(false)}},
		image.ImageConfig{}, &pb.PodSecurityContext{RunAsNonRoot: ptr(true), SupplementalGroups: []int64{10, 11}}, "h")
	if p.RunAsNonRoot || !slices.Equal(p.AdditionalGids, []int{10, 11}) {
		t.Errorf("runAsNonRoot %v (container false overrides pod true), gids %v", p.RunAsNonRoot, p.AdditionalGids)
	}
}

func TestResolveResources(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *pb.ResourceRequirements
		want resources
	}{
		{"best effort", nil, resources{CPUShares: 2}},
		{"request only", &pb.ResourceRequirements{Requests: map[string]string{"cpu": "250m", "memory": "1Gi"}}, resources{CPUShares: 256}},
		{"limit only: request defaults to it", &pb.ResourceRequirements{Limits: map[string]string{"cpu": "2", "memory": "128Mi"}},
			resources{CPUShares: 2048, CPUQuota: 200000, CPUPeriod: 100000, Memory: 128 << 20}},
		{"both", &pb.ResourceRequirements{Requests: map[string]string{"cpu": "100m"}, Limits: map[string]string{"cpu": "500m"}},
			resources{CPUShares: 102, CPUQuota: 50000, CPUPeriod: 100000}},
		{"tiny", &pb.ResourceRequirements{Requests: map[string]string{"cpu": "1m"}, Limits: map[string]string{"cpu": "1m"}},
			resources{CPUShares: 2, CPUQuota: 1000, CPUPeriod: 100000}},
		{"decimal memory", &pb.ResourceRequirements{Limits: map[string]string{"memory": "64M"}}, resources{CPUShares: 2, Memory: 64e6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveResources(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := resolveResources(&pb.ResourceRequirements{Limits: map[string]string{"cpu": "fast"}}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("bad cpu: %v", err)
	}
}

func TestResolveCapabilities(t *testing.T) {
	all := append(slices.Clone(defaultCapabilities), "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE")
	slices.Sort(all)
	sorted := func(s ...string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	without := func(drop ...string) []string {
		return sorted(slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return slices.Contains(drop, c) })...)
	}
	for _, tc := range []struct {
		name string
		sc   *pb.SecurityContext
		want []string
	}{
		{"default", nil, sorted(defaultCapabilities...)},
		{"add and drop", &pb.SecurityContext{Capabilities: &pb.Capabilities{Add: []string{"NET_ADMIN"}, Drop: []string{"cap_net_raw", "MKNOD"}}},
			sorted(append(without("CAP_NET_RAW", "CAP_MKNOD"), "CAP_NET_ADMIN")...)},
		{"drop all add one", &pb.SecurityContext{Capabilities: &pb.Capabilities{Add: []string{"NET_BIND_SERVICE"}, Drop: []string{"ALL"}}},
			[]string{"CAP_NET_BIND_SERVICE"}},
		{"add all", &pb.SecurityContext{Capabilities: &pb.Capabilities{Add: []string{"ALL"}, Drop: []string{"SYS_ADMIN"}}},
			sorted(slices.DeleteFunc(slices.Clone(all), func(c string) bool { return c == "CAP_SYS_ADMIN" })...)},
		{"privileged", &pb.SecurityContext{Privileged: ptr(true), Capabilities: &pb.Capabilities{Drop: []string{"ALL"}}}, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveCapabilities(tc.sc, all)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sorted(got...), tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := resolveCapabilities(&pb.SecurityContext{Capabilities: &pb.Capabilities{Add: []string{"CAP_TELEPORT"}}}, all); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("unknown capability: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.DataDir, valid.StateDir = "/var/lib/skiff", "/run/skiff"
	valid.ShimCommand = []string{"/usr/bin/skiff", shim.Subcommand}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no DataDir":          func(c *Config) { c.DataDir = "" },
		"relative StateDir":   func(c *Config) { c.StateDir = "run" },
		"colon in DataDir":    func(c *Config) { c.DataDir = "/a:b" },
		"relative cgroup":     func(c *Config) { c.CgroupParent = "skiff" },
		"root cgroup":         func(c *Config) { c.CgroupParent = "/" },
		"no shim":             func(c *Config) { c.ShimCommand = nil },
		"tiny logs":           func(c *Config) { c.LogMaxSize = 10 },
		"no log files":        func(c *Config) { c.LogMaxFiles = 0 },
		"no logger":           func(c *Config) { c.Logger = nil },
		"negative shm":        func(c *Config) { c.ShmSize = -1 },
		"unclean cgroup path": func(c *Config) { c.CgroupParent = "/a/../b" },
	} {
		c := valid
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
