package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/skiff-sh/skiff/proto"
)

func deploymentWithStatus(gen, observed int64, replicas int32, st *pb.DeploymentStatus) *pb.Deployment {
	st.ObservedGeneration = observed
	return &pb.Deployment{Metadata: &pb.ObjectMeta{Name: "web", Generation: gen}, Spec: &pb.DeploymentSpec{Replicas: &replicas}, Status: st}
}

func TestDeploymentRolloutStatus(t *testing.T) {
	tests := []struct {
		name    string
		d       *pb.Deployment
		msg     string
		done    bool
		wantErr string
	}{
		{"not observed", deploymentWithStatus(2, 1, 3, &pb.DeploymentStatus{}), "Waiting for deployment spec update to be observed...", false, ""},
		{"updating", deploymentWithStatus(2, 2, 3, &pb.DeploymentStatus{Replicas: 4, UpdatedReplicas: 1}),
			`Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...`, false, ""},
		{"old pending", deploymentWithStatus(2, 2, 3, &pb.DeploymentStatus{Replicas: 4, UpdatedReplicas: 3}),
			`Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...`, false, ""},
		{"not available", deploymentWithStatus(2, 2, 3, &pb.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}),
			`Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...`, false, ""},
		{"done", deploymentWithStatus(2, 2, 3, &pb.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}),
			`deployment "web" successfully rolled out`, true, ""},
		{"deadline", deploymentWithStatus(2, 2, 3, &pb.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1,
			Conditions: []*pb.WorkloadCondition{{Type: "Progressing", Status: "False", Reason: "ProgressDeadlineExceeded"}}}),
			"", false, "exceeded its progress deadline"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, done, err := rolloutStatus(pb.Wrap(tc.d))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || msg != tc.msg || done != tc.done {
				t.Errorf("rolloutStatus = %q, %v, %v; want %q, %v", msg, done, err, tc.msg, tc.done)
			}
		})
	}
}

func TestDaemonSetRolloutStatus(t *testing.T) {
	ds := &pb.DaemonSet{
		Metadata: &pb.ObjectMeta{Name: "agent", Generation: 1},
		Spec:     &pb.DaemonSetSpec{UpdateStrategy: &pb.DaemonSetUpdateStrategy{Type: "RollingUpdate"}},
		Status:   &pb.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 3, UpdatedNumberScheduled: 3, NumberAvailable: 2},
	}
	msg, done, err := rolloutStatus(pb.Wrap(ds))
	if err != nil || done || msg != `Waiting for daemon set "agent" rollout to finish: 2 of 3 updated pods are available...` {
		t.Errorf("got %q %v %v", msg, done, err)
	}
	ds.Status.NumberAvailable = 3
	if msg, done, _ := rolloutStatus(pb.Wrap(ds)); !done || msg != `daemon set "agent" successfully rolled out` {
		t.Errorf("got %q %v", msg, done)
	}
	ds.Spec.UpdateStrategy.Type = "OnDelete"
	if _, _, err := rolloutStatus(pb.Wrap(ds)); err == nil {
		t.Error("OnDelete: no error")
	}
}

func rs(name, uid, rev, image string) *pb.Object {
	tr := true
	return pb.Wrap(&pb.ReplicaSet{
		Metadata: &pb.ObjectMeta{Name: name, Annotations: map[string]string{revisionAnnotation: rev},
			OwnerReferences: []*pb.OwnerReference{{Kind: "Deployment", Name: "web", Uid: uid, Controller: &tr}}},
		Spec: &pb.ReplicaSetSpec{Template: &pb.PodTemplateSpec{
			Metadata: &pb.ObjectMeta{Labels: map[string]string{"app": "web", podTemplateHashLabel: name}},
			Spec:     &pb.PodSpec{Containers: []*pb.Container{{Name: "app", Image: image}}},
		}},
	})
}

func TestHistoryAndUndoTarget(t *testing.T) {
	d := pb.Wrap(&pb.Deployment{Kind: "Deployment", Metadata: &pb.ObjectMeta{Name: "web", Uid: "d1"}})
	all := []*pb.Object{rs("web-c", "d1", "10", "v3"), rs("web-a", "d1", "2", "v1"), rs("other", "d2", "5", "x"), rs("web-b", "d1", "9", "v2")}
	revs := revisionsOf(d, all)
	var names []string
	for _, r := range revs {
		names = append(names, r.Meta().GetName())
	}
	if !slices.Equal(names, []string{"web-a", "web-b", "web-c"}) {
		t.Fatalf("revisions = %v", names)
	}
	var buf bytes.Buffer
	printHistory(&buf, d, revs)
	want := "deployment/web\nREVISION  CHANGE-CAUSE\n2         <none>\n9         <none>\n10        <none>\n"
	if buf.String() != want {
		t.Errorf("history:\n%s\nwant:\n%s", buf.String(), want)
	}
	if got, err := undoTarget(revs, 0); err != nil || got.Meta().GetName() != "web-b" {
		t.Errorf("undo target = %v, %v; want the previous revision web-b", got, err)
	}
	if got, err := undoTarget(revs, 2); err != nil || got.Meta().GetName() != "web-a" {
		t.Errorf("undo --to-revision 2 = %v, %v", got, err)
	}
	if _, err := undoTarget(revs, 7); err == nil {
		t.Error("undo to a missing revision: no error")
	}
	if l := withoutHash(revs[0].GetReplicaSet().GetSpec().GetTemplate()).GetMetadata().GetLabels(); len(l) != 1 || l["app"] != "web" {
		t.Errorf("template labels without hash = %v", l)
	}
}

func TestParseWorkload(t *testing.T) {
	for _, args := range [][]string{{"deployment/web"}, {"deploy", "web"}, {"deployments/web"}} {
		k, name, err := parseWorkload(args, "Deployment", "DaemonSet")
		if err != nil || k.Kind != "Deployment" || name != "web" {
			t.Errorf("%q: %v %q %v", args, k.Kind, name, err)
		}
	}
	for _, args := range [][]string{{"pod/web"}, {"web"}, {"deployment/"}, {"a", "b", "c"}} {
		if _, _, err := parseWorkload(args, "Deployment", "DaemonSet"); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestSetImages(t *testing.T) {
	spec := &pb.PodSpec{
		InitContainers: []*pb.Container{{Name: "init", Image: "busybox"}},
		Containers:     []*pb.Container{{Name: "app", Image: "web:v1"}, {Name: "proxy", Image: "envoy:1"}},
	}
	images, err := parseImages([]string{"app=web:v2"})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := setImages(spec, images); !changed || err != nil || spec.Containers[0].Image != "web:v2" || spec.Containers[1].Image != "envoy:1" {
		t.Errorf("set app: %v %v %v", changed, err, spec)
	}
	if changed, _ := setImages(spec, images); changed {
		t.Error("same image again: reported a change")
	}
	if _, err := setImages(spec, map[string]string{"nope": "x"}); err == nil || !strings.Contains(err.Error(), "app, proxy") {
		t.Errorf("unknown container: %v", err)
	}
	if changed, _ := setImages(spec, map[string]string{"*": "all:1"}); !changed || spec.InitContainers[0].Image != "all:1" || spec.Containers[1].Image != "all:1" {
		t.Errorf("*: %v", spec)
	}
	if _, err := parseImages([]string{"app"}); err == nil {
		t.Error("no =: no error")
	}
}

// Once --timeout has passed, the failure says so, whichever way the last
// request failed: the client's context ending, or a master answering
// DeadlineExceeded for the deadline the request carried.
func TestRolloutTimedOut(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	want := "timed out after 5s waiting for the rollout of deployment/web"
	for _, err := range []error{
		context.DeadlineExceeded,
		status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
		status.Error(codes.Unavailable, "connection reset"),
	} {
		if got := rolloutTimedOut(expired, err, 5*time.Second, "Deployment", "web"); got == nil || got.Error() != want {
			t.Errorf("after the timeout, %v: got %v, want %q", err, got, want)
		}
	}
	live := context.Background()
	other := status.Error(codes.DeadlineExceeded, "a master's own deadline")
	if got := rolloutTimedOut(live, other, 5*time.Second, "Deployment", "web"); got != other {
		t.Errorf("before the timeout: got %v, want the error unchanged", got)
	}
	if got := rolloutTimedOut(expired, nil, 5*time.Second, "Deployment", "web"); got != nil {
		t.Errorf("a rollout that completed: got %v", got)
	}
}
