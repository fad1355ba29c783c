package runtime

import (
	"errors"
	"slices"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
)

func TestSecurityNoNewPrivileges(t *testing.T) {
	for _, tc := range []struct {
		name string
		sc   *pb.SecurityContext
		want bool
	}{
		{"no securityContext", nil, true},
		{"unset", &pb.SecurityContext{}, true},
		{"explicitly disallowed", &pb.SecurityContext{AllowPrivilegeEscalation: ptr(false)}, true},
		{"explicitly allowed", &pb.SecurityContext{AllowPrivilegeEscalation: ptr(true)}, false},
		{"privileged implies allowed", &pb.SecurityContext{Privileged: ptr(true)}, false},
		{"privileged false", &pb.SecurityContext{Privileged: ptr(false)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := noNewPrivileges(tc.sc); got != tc.want {
				t.Errorf("noNewPrivileges = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSecurityContextValidation(t *testing.T) {
	all := append(slices.Clone(defaultCapabilities), "CAP_SYS_ADMIN")
	for name, sc := range map[string]*pb.SecurityContext{
		"privileged without escalation": {Privileged: ptr(true), AllowPrivilegeEscalation: ptr(false)},
		"SYS_ADMIN without escalation":  {AllowPrivilegeEscalation: ptr(false), Capabilities: &pb.Capabilities{Add: []string{"sys_admin"}}},
		"misspelt drop":                 {Capabilities: &pb.Capabilities{Drop: []string{"NET_RAWW"}}},
		"add of an unavailable cap":     {Capabilities: &pb.Capabilities{Add: []string{"SYS_MODULE"}}},
	} {
		if _, err := resolveCapabilities(sc, all); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: err = %v, want ErrInvalidSpec", name, err)
		}
	}
	// Dropping a real capability the worker cannot give is harmless.
	got, err := resolveCapabilities(&pb.SecurityContext{Capabilities: &pb.Capabilities{Drop: []string{"CAP_SYS_MODULE", "KILL"}}}, all)
	if err != nil || slices.Contains(got, "CAP_KILL") || len(got) != len(defaultCapabilities)-1 {
		t.Errorf("drop unavailable: %q, %v", got, err)
	}
	// Defaults the worker lacks are left out rather than failing the start.
	limited := slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return c == "CAP_MKNOD" })
	got, err = resolveCapabilities(nil, limited)
	if err != nil || !slices.Equal(got, sortedCopy(limited)) {
		t.Errorf("limited worker: %q, %v", got, err)
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestSecurityRunAsNonRoot(t *testing.T) {
	nonRoot := &pb.PodSecurityContext{RunAsNonRoot: ptr(true)}
	for _, tc := range []struct {
		name      string
		imageUser string
		sc        *pb.SecurityContext
		podSC     *pb.PodSecurityContext
		refused   bool
	}{
		{"image runs as root by default", "", nil, nonRoot, true},
		{"image user uid 0", "0:0", nil, nonRoot, true},
		{"runAsUser 0", "app", &pb.SecurityContext{RunAsUser: ptr[int64](0)}, nonRoot, true},
		{"runAsGroup alone keeps root", "", &pb.SecurityContext{RunAsGroup: ptr[int64](5)}, nonRoot, true},
		{"runAsUser 1000", "", &pb.SecurityContext{RunAsUser: ptr[int64](1000)}, nonRoot, false},
		{"pod runAsUser", "", nil, &pb.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr[int64](1000)}, false},
		{"named user is checked by the shim", "app", nil, nonRoot, false},
		{"container-level runAsNonRoot", "", &pb.SecurityContext{RunAsNonRoot: ptr(true)}, nil, true},
		{"container-level false wins", "", &pb.SecurityContext{RunAsNonRoot: ptr(false)}, nonRoot, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &pb.Container{Command: []string{"/x"}, SecurityContext: tc.sc}
			_, err := resolveProcess(c, image.ImageConfig{User: tc.imageUser}, tc.podSC, "h")
			if got := errors.Is(err, ErrRunAsNonRoot); got != tc.refused {
				t.Errorf("err = %v, want refused %v", err, tc.refused)
			}
		})
	}
}

func TestSecurityGroups(t *testing.T) {
	podSC := &pb.PodSecurityContext{RunAsUser: ptr[int64](1000), RunAsGroup: ptr[int64](1000), SupplementalGroups: []int64{3000, 4000}, FsGroup: ptr[int64](5000)}
	p, err := resolveProcess(&pb.Container{Command: []string{"/x"}}, image.ImageConfig{User: "root"}, podSC, "h")
	if err != nil {
		t.Fatal(err)
	}
	if p.User != "1000:1000" || !slices.Equal(p.AdditionalGids, []int{3000, 4000, 5000}) {
		t.Errorf("user %q groups %v, want 1000:1000 [3000 4000 5000]", p.User, p.AdditionalGids)
	}
	podSC.FsGroup = ptr[int64](4000)
	p, _ = resolveProcess(&pb.Container{Command: []string{"/x"}, SecurityContext: &pb.SecurityContext{RunAsUser: ptr[int64](7)}}, image.ImageConfig{}, podSC, "h")
	if p.User != "7:1000" || !slices.Equal(p.AdditionalGids, []int{3000, 4000}) {
		t.Errorf("container runAsUser over pod's, fsGroup once: user %q groups %v", p.User, p.AdditionalGids)
	}
}

func TestSecuritySeccompProfile(t *testing.T) {
	for _, tc := range []struct {
		name string
		sc   *pb.SecurityContext
		sec  *Security
		want SeccompProfile
	}{
		{"default", nil, nil, SeccompRuntimeDefault},
		{"zero Security", nil, &Security{}, SeccompRuntimeDefault},
		{"unconfined", nil, &Security{Seccomp: SeccompUnconfined}, SeccompUnconfined},
		{"unknown value is the default", nil, &Security{Seccomp: "Localhost"}, SeccompRuntimeDefault},
		{"privileged is unconfined", &pb.SecurityContext{Privileged: ptr(true)}, &Security{Seccomp: SeccompRuntimeDefault}, SeccompUnconfined},
		{"allowPrivilegeEscalation keeps the profile", &pb.SecurityContext{AllowPrivilegeEscalation: ptr(true)}, nil, SeccompRuntimeDefault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := seccompProfile(tc.sc, tc.sec); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}
