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

func TestParseWaitFor(t *testing.T) {
	tests := []struct {
		in      string
		want    waitCondition
		wantErr string
	}{
		{in: "delete", want: waitCondition{deleted: true}},
		{in: "Delete", want: waitCondition{deleted: true}},
		{in: "condition=Ready", want: waitCondition{types: []string{"Ready"}, status: "True"}},
		{in: "condition=Ready=False", want: waitCondition{types: []string{"Ready"}, status: "False"}},
		{in: "condition=Complete,Failed", want: waitCondition{types: []string{"Complete", "Failed"}, status: "True"}},
		{in: "create", want: waitCondition{created: true}},
		{in: "jsonpath={.status.phase}=Running", want: waitCondition{expr: "{.status.phase}", value: "Running"}},
		{in: "jsonpath='{.status.phase}'=Running", wantErr: "--for=jsonpath"}, // quotes the shell did not remove
		{in: "jsonpath={.status.readyReplicas}='3'", want: waitCondition{expr: "{.status.readyReplicas}", value: "3"}},
		{in: "jsonpath=.status.phase=Running", want: waitCondition{expr: "{.status.phase}", value: "Running"}},
		{in: "jsonpath=status.phase=Running", want: waitCondition{expr: "{.status.phase}", value: "Running"}},
		{in: "jsonpath={.status.podIP}", want: waitCondition{expr: "{.status.podIP}", anyValue: true}},
		{in: "jsonpath={.status.containerStatuses[0].ready}=true", want: waitCondition{expr: "{.status.containerStatuses[0].ready}", value: "true"}},
		{in: `jsonpath={.status.conditions[?(@.type=="Ready")].status}=True`, want: waitCondition{expr: `{.status.conditions[?(@.type=="Ready")].status}`, value: "True"}},

		{in: "", wantErr: "--for is required"},
		{in: "ready", wantErr: `unrecognized condition: "ready"; use --for=delete, --for=create, --for=condition=TYPE`},
		{in: "condition=", wantErr: "the condition type is missing"},
		{in: "condition=Ready=", wantErr: "the status after the second '=' is missing"},
		{in: "jsonpath=", wantErr: "jsonpath expression cannot be empty"},
		{in: "jsonpath={}=x", wantErr: "jsonpath expression cannot be empty"},
		{in: "jsonpath={.status.phase}=", wantErr: "has to have a value after equal sign"},
		{in: "jsonpath={.a}=b=c", wantErr: "jsonpath wait format must be"},
		{in: "jsonpath={.items[*}=x", wantErr: "unterminated array"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseWaitFor(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseWaitFor(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseWaitFor(%q): %v", tc.in, err)
			}
			if got.deleted != tc.want.deleted || got.created != tc.want.created || !slices.Equal(got.types, tc.want.types) || got.status != tc.want.status ||
				got.expr != tc.want.expr || got.value != tc.want.value || got.anyValue != tc.want.anyValue {
				t.Errorf("parseWaitFor(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestWaitConditionMet(t *testing.T) {
	replicas := int32(2)
	pod := pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Name: "web-0", Namespace: "default", Labels: map[string]string{"app": "web"}},
		Spec:     &pb.PodSpec{NodeName: "h1"},
		Status: &pb.PodStatus{Phase: "Running", PodIp: "10.0.0.5", Conditions: []*pb.PodCondition{
			{Type: "PodScheduled", Status: "True"},
			{Type: "Ready", Status: "False"},
		}},
	})
	deployment := func(gen, observed int64) *pb.Object {
		return pb.Wrap(&pb.Deployment{
			Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default", Generation: gen},
			Spec:     &pb.DeploymentSpec{Replicas: &replicas},
			Status: &pb.DeploymentStatus{ObservedGeneration: observed, ReadyReplicas: 2, Conditions: []*pb.WorkloadCondition{
				{Type: "Available", Status: "True"}, {Type: "Progressing", Status: "True"},
			}},
		})
	}
	node := pb.Wrap(&pb.Node{Metadata: &pb.ObjectMeta{Name: "h1"}, Status: &pb.NodeStatus{Conditions: []*pb.NodeCondition{{Type: "Ready", Status: "True"}}}})
	job := pb.Wrap(&pb.Job{Metadata: &pb.ObjectMeta{Name: "migrate", Namespace: "default"}, Status: &pb.JobStatus{Conditions: []*pb.WorkloadCondition{{Type: "Failed", Status: "True"}}}})
	noStatus := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "new", Namespace: "default"}})

	tests := []struct {
		name    string
		forFlag string
		obj     *pb.Object
		want    bool
		wantErr string
	}{
		{"pod scheduled", "condition=PodScheduled", pod, true, ""},
		{"type in any case", "condition=podscheduled", pod, true, ""},
		{"pod not ready", "condition=Ready", pod, false, ""},
		{"waiting for not ready", "condition=Ready=False", pod, true, ""},
		{"status in any case", "condition=Ready=false", pod, true, ""},
		{"unknown is not false", "condition=Ready=Unknown", pod, false, ""},
		{"absent condition", "condition=Initialized", pod, false, ""},
		{"no status at all", "condition=Ready", noStatus, false, ""},
		{"deployment available", "condition=Available", deployment(3, 3), true, ""},
		{"spec change not yet observed", "condition=Available", deployment(3, 2), false, ""},
		{"node ready", "condition=Ready", node, true, ""},
		{"job complete or failed", "condition=Complete,Failed", job, true, ""},
		{"job not complete", "condition=Complete", job, false, ""},

		{"phase", "jsonpath={.status.phase}=Running", pod, true, ""},
		{"other phase", "jsonpath={.status.phase}=Pending", pod, false, ""},
		{"value case matters", "jsonpath={.status.phase}=running", pod, false, ""},
		{"renamed json field", "jsonpath={.status.podIP}=10.0.0.5", pod, true, ""},
		{"number", "jsonpath={.status.readyReplicas}=2", deployment(1, 1), true, ""},
		{"int64 number", "jsonpath={.metadata.generation}=7", deployment(7, 7), true, ""},
		{"map value", "jsonpath={.metadata.labels.app}=web", pod, true, ""},
		{"exists", "jsonpath={.spec.nodeName}", pod, true, ""},
		{"missing", "jsonpath={.spec.nodeName}", noStatus, false, ""},
		{"missing with value", "jsonpath={.status.phase}=Running", noStatus, false, ""},
		{"path through a scalar", "jsonpath={.status.phase.x}=y", pod, false, ""},
		{"nested object", "jsonpath={.status}=x", pod, false, "nested object or list"},
		{"list", "jsonpath={.status.conditions}", pod, false, "nested object or list"},
		{"filter", `jsonpath={.status.conditions[?(@.type=="PodScheduled")].status}=True`, pod, true, ""},
		{"filter not met", `jsonpath={.status.conditions[?(@.type=="Ready")].status}=True`, pod, false, ""},
		{"index", "jsonpath={.status.conditions[1].type}=Ready", pod, true, ""},
		{"several values", "jsonpath={.status.conditions[*].type}=Ready", pod, false, "gives 2 values, not one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := parseWaitFor(tc.forFlag)
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.met(tc.obj)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("met = %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("--for=%s on %s: met = %v, %v; want %v", tc.forFlag, objectRef(tc.obj), got, err, tc.want)
			}
		})
	}
}

func TestWaitTargets(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		sel     waitSelection
		want    []string // kind:name,name
		wantErr string
	}{
		{"kind/name", []string{"deployment/web", "pod/web-0"}, waitSelection{}, []string{"Deployment:web", "Pod:web-0"}, ""},
		{"kind names", []string{"pods", "a", "b"}, waitSelection{}, []string{"Pod:a,b"}, ""},
		{"selector", []string{"pod"}, waitSelection{selector: "app=web"}, []string{"Pod:"}, ""},
		{"all", []string{"po"}, waitSelection{all: true}, []string{"Pod:"}, ""},
		{"all namespaces", []string{"pod"}, waitSelection{all: true, allNamespaces: true}, []string{"Pod:"}, ""},
		{"field selector", []string{"pod"}, waitSelection{fieldSelector: "spec.nodeName=h1"}, []string{"Pod:"}, ""},

		{"nothing", nil, waitSelection{}, nil, "name what to wait for"},
		{"kind alone", []string{"pod"}, waitSelection{}, nil, "name the pods to wait for"},
		{"names and selector", []string{"pod", "a"}, waitSelection{selector: "app=web"}, nil, "either names or a selection"},
		{"kind/name and all", []string{"pod/a"}, waitSelection{all: true}, nil, "either names or a selection"},
		{"all and selector", []string{"pod"}, waitSelection{all: true, selector: "app=web"}, nil, "--all selects every object"},
		{"names across namespaces", []string{"pod/a"}, waitSelection{allNamespaces: true}, nil, "cannot be retrieved by name across all namespaces"},
		{"unknown kind", []string{"gizmo/a"}, waitSelection{}, nil, `unknown kind "gizmo"`},
		{"missing name", []string{"pod/"}, waitSelection{}, nil, "expected KIND/NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			targets, err := waitTargets(tc.args, tc.sel)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("waitTargets(%q) = %v, %v; want an error containing %q", tc.args, targets, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range targets {
				got = append(got, tg.kind.Kind+":"+strings.Join(tg.names, ","))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("waitTargets(%q) = %v, want %v", tc.args, got, tc.want)
			}
		})
	}
}

// Bad input is refused before the CLI connects anywhere: the server named
// here does not exist.
func TestWaitCommandRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"pod/web-0"}, "--for is required"},
		{[]string{"--for=ready", "pod/web-0"}, `unrecognized condition: "ready"`},
		{[]string{"--for=jsonpath={.status.containerStatuses[0}=true", "pod/web-0"}, "unterminated array"},
		{[]string{"--for=create", "pod", "-l", "app=web"}, "--for=create waits for named objects"},
		{[]string{"--for=condition=Ready", "pod"}, "name the pods to wait for"},
		{[]string{"--for=condition=Ready", "pod", "web-0", "-l", "app=web"}, "either names or a selection"},
	} {
		root := NewRootCommand("test")
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--server", "127.0.0.1:1", "--insecure", "wait"}, tc.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("skiff wait %s: %v; want an error containing %q", strings.Join(tc.args, " "), err, tc.wantErr)
		}
	}
}

// A wait that ends because --timeout passed says so in kubectl's words,
// whatever error the call in flight returned (a master whose copy of a
// deadline expired first answered DeadlineExceeded before this process's
// own context ended); Ctrl-C says it was interrupted; anything else is the
// cluster's error.
func TestWaitFailed(t *testing.T) {
	serverDeadline := status.Error(codes.DeadlineExceeded, "context deadline exceeded")

	ctx, cancel := withWaitTimeout(context.Background(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	if err := waitFailed(ctx, serverDeadline, "pods/web-0"); err == nil || err.Error() != "timed out waiting for the condition on pods/web-0" {
		t.Errorf("after --timeout: %v", err)
	}

	parent, interrupt := context.WithCancel(context.Background())
	ctx, cancel = withWaitTimeout(parent, time.Hour)
	defer cancel()
	interrupt()
	if err := waitFailed(ctx, context.Canceled, "pods/web-0"); err == nil || err.Error() != "interrupted while waiting for the condition on pods/web-0" {
		t.Errorf("after Ctrl-C: %v", err)
	}

	ctx, cancel = withWaitTimeout(context.Background(), time.Hour)
	defer cancel()
	denied := status.Error(codes.PermissionDenied, "pods: forbidden")
	if err := waitFailed(ctx, denied, "pods/web-0"); err == nil || err.Error() != "pods: forbidden" {
		t.Errorf("an API error while waiting: %v", err)
	}

	ctx, cancel = withWaitTimeout(context.Background(), -1)
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		t.Errorf("the wait's context has a deadline (%v): it would travel with each request", d)
	}
}
