package cli

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func drainPod(name, ownerKind string, opts ...func(*pb.Pod)) *pb.Pod {
	p := &pb.Pod{Metadata: &pb.ObjectMeta{Name: name, Namespace: "default"}, Spec: &pb.PodSpec{NodeName: "w2"}, Status: &pb.PodStatus{Phase: "Running"}}
	if ownerKind != "" {
		tr := true
		p.Metadata.OwnerReferences = []*pb.OwnerReference{{Kind: ownerKind, Name: "x", Controller: &tr}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func names(pods []*pb.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.GetMetadata().GetName())
	}
	return out
}

func TestPlanDrain(t *testing.T) {
	pods := []*pb.Pod{
		drainPod("web", "ReplicaSet"),
		drainPod("agent", "DaemonSet"),
		drainPod("bare", ""),
		drainPod("cache", "ReplicaSet", func(p *pb.Pod) { p.Spec.Volumes = []*pb.Volume{{Name: "tmp", EmptyDir: &pb.EmptyDirVolumeSource{}}} }),
		drainPod("done", "", func(p *pb.Pod) { p.Status.Phase = "Succeeded" }),
		drainPod("going", "ReplicaSet", func(p *pb.Pod) { p.Metadata.DeletionTimestamp = timestamppb.Now() }),
	}
	p := planDrain(pods, drainOptions{})
	if len(p.problems) != 3 || !strings.Contains(p.problems[0], "--ignore-daemonsets") || !strings.Contains(p.problems[1], "--force") || !strings.Contains(p.problems[2], "--delete-emptydir-data") {
		t.Errorf("problems = %q", p.problems)
	}
	p = planDrain(pods, drainOptions{ignoreDaemonSets: true, force: true, deleteEmptyDirData: true})
	if len(p.problems) != 0 || !slices.Equal(names(p.evict), []string{"web", "bare", "cache", "done"}) || !slices.Equal(names(p.waitFor), []string{"going"}) {
		t.Errorf("plan = evict %v, wait %v, problems %q", names(p.evict), names(p.waitFor), p.problems)
	}
	if len(p.warnings) != 3 || !strings.Contains(p.warnings[0], "default/agent") {
		t.Errorf("warnings = %q", p.warnings)
	}
}
