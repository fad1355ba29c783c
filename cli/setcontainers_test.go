package cli

import (
	"strings"
	"testing"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestSelectContainers(t *testing.T) {
	spec := podSpecOf(webDeployment())
	names := func(cs []*pb.Container) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.GetName())
		}
		return strings.Join(out, ",")
	}
	for pattern, want := range map[string]string{
		"*": "app,proxy,migrate", "app": "app", "migrate": "migrate", "*p*": "app,proxy", "pro?y": "proxy", "[am]*": "app,migrate",
	} {
		cs, err := selectContainers(spec, pattern)
		if err != nil || names(cs) != want {
			t.Errorf("selectContainers(%q) = %s, %v; want %s", pattern, names(cs), err, want)
		}
	}
	if _, err := selectContainers(spec, "x*"); err == nil || err.Error() != `unable to find container named "x*" (containers: app, proxy, migrate)` {
		t.Errorf("no match: err = %v", err)
	}
	if _, err := selectContainers(spec, "[a"); err == nil || !strings.Contains(err.Error(), `--containers "[a"`) {
		t.Errorf("bad pattern: err = %v", err)
	}
}

func TestPodSpecOf(t *testing.T) {
	spec := &pb.PodSpec{Containers: []*pb.Container{{Name: "app"}}}
	tmpl := &pb.PodTemplateSpec{Spec: spec}
	for _, obj := range []*pb.Object{
		pb.Wrap(&pb.Deployment{Spec: &pb.DeploymentSpec{Template: tmpl}}),
		pb.Wrap(&pb.DaemonSet{Spec: &pb.DaemonSetSpec{Template: tmpl}}),
		pb.Wrap(&pb.ReplicaSet{Spec: &pb.ReplicaSetSpec{Template: tmpl}}),
		pb.Wrap(&pb.Job{Spec: &pb.JobSpec{Template: tmpl}}),
		pb.Wrap(&pb.Pod{Spec: spec}),
	} {
		if got := podSpecOf(obj); got != spec {
			t.Errorf("podSpecOf(%s) is not its pod spec", obj.KindName())
		}
	}
	if got := podSpecOf(pb.Wrap(&pb.ConfigMap{})); got != nil {
		t.Errorf("podSpecOf(ConfigMap) = %v", got)
	}
}
