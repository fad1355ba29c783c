package worker

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

func TestContainerSecurity(t *testing.T) {
	pod := func(ann map[string]string) *pb.Pod {
		return &pb.Pod{Metadata: &pb.ObjectMeta{Name: "p", Namespace: "default", Annotations: ann}}
	}
	app := &pb.Container{Name: "app"}
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want wrt.SeccompProfile
	}{
		{"no annotations: the default profile", nil, wrt.SeccompRuntimeDefault},
		{"pod unconfined", map[string]string{annotationSeccompPod: "unconfined"}, wrt.SeccompUnconfined},
		{"pod runtime/default", map[string]string{annotationSeccompPod: "runtime/default"}, wrt.SeccompRuntimeDefault},
		{"docker/default alias", map[string]string{annotationSeccompPod: "docker/default"}, wrt.SeccompRuntimeDefault},
		{"container over pod", map[string]string{annotationSeccompPod: "unconfined", annotationSeccompContainerPrefix + "app": "runtime/default"}, wrt.SeccompRuntimeDefault},
		{"container unconfined", map[string]string{annotationSeccompPod: "runtime/default", annotationSeccompContainerPrefix + "app": "unconfined"}, wrt.SeccompUnconfined},
		{"another container's annotation", map[string]string{annotationSeccompContainerPrefix + "sidecar": "unconfined"}, wrt.SeccompRuntimeDefault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, err := containerSecurity(pod(tc.ann), app)
			if err != nil {
				t.Fatal(err)
			}
			if sec == nil || sec.Seccomp != tc.want {
				t.Errorf("got %+v, want seccomp %s", sec, tc.want)
			}
		})
	}
	for _, v := range []string{"localhost/my.json", "strict"} {
		_, err := containerSecurity(pod(map[string]string{annotationSeccompContainerPrefix + "app": v}), app)
		if !errors.Is(err, errConfig) || configReason(err) != reasonCreateConfigError || !strings.Contains(err.Error(), annotationSeccompContainerPrefix+"app") {
			t.Errorf("%q: err = %v, want a config error naming the annotation", v, err)
		}
	}
	// A nil pod (a static test fixture) still gets the defaults.
	if sec, err := containerSecurity(nil, app); err != nil || sec.Seccomp != wrt.SeccompRuntimeDefault {
		t.Errorf("nil pod: %+v, %v", sec, err)
	}
}

func TestSeccompProfileField(t *testing.T) {
	field := func(typ string) *pb.SeccompProfile { return &pb.SeccompProfile{Type: typ} }
	for _, tc := range []struct {
		name      string
		pod, ctr  *pb.SeccompProfile
		ann       map[string]string
		want      wrt.SeccompProfile
		wantError string
	}{
		{"pod field", field("Unconfined"), nil, nil, wrt.SeccompUnconfined, ""},
		{"container field over pod field", field("Unconfined"), field("RuntimeDefault"), nil, wrt.SeccompRuntimeDefault, ""},
		{"field over annotation", nil, field("RuntimeDefault"), map[string]string{annotationSeccompContainerPrefix + "app": "unconfined"}, wrt.SeccompRuntimeDefault, ""},
		{"localhost refused", nil, &pb.SeccompProfile{Type: "Localhost", LocalhostProfile: "x.json"}, nil, "", `containers[app].securityContext.seccompProfile: type "Localhost" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &pb.Pod{Metadata: &pb.ObjectMeta{Name: "p", Annotations: tc.ann}, Spec: &pb.PodSpec{SecurityContext: &pb.PodSecurityContext{SeccompProfile: tc.pod}}}
			sec, err := containerSecurity(pod, &pb.Container{Name: "app", SecurityContext: &pb.SecurityContext{SeccompProfile: tc.ctr}})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil || sec.Seccomp != tc.want {
				t.Fatalf("got %+v, %v; want %s", sec, err, tc.want)
			}
		})
	}
}
