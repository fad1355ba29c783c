package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{90 * time.Second, "90s"},
		{3*time.Minute + 20*time.Second, "3m20s"},
		{5 * time.Minute, "5m"},
		{90 * time.Minute, "90m"},
		{10 * time.Hour, "10h"},
		{72 * time.Hour, "3d"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestPodStatus(t *testing.T) {
	now := timestamppb.Now()
	for _, tc := range []struct {
		name string
		pod  *pb.Pod
		want string
	}{
		{"empty is Pending", &pb.Pod{}, "Pending"},
		{"phase", &pb.Pod{Status: &pb.PodStatus{Phase: "Running"}}, "Running"},
		{"waiting reason wins", &pb.Pod{Status: &pb.PodStatus{Phase: "Running", ContainerStatuses: []*pb.ContainerStatus{
			{State: &pb.ContainerState{Waiting: &pb.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}}, "CrashLoopBackOff"},
		{"terminated reason when not running", &pb.Pod{Status: &pb.PodStatus{Phase: "Failed", ContainerStatuses: []*pb.ContainerStatus{
			{State: &pb.ContainerState{Terminated: &pb.ContainerStateTerminated{Reason: "OOMKilled"}}}}}}, "OOMKilled"},
		{"deleting", &pb.Pod{Metadata: &pb.ObjectMeta{DeletionTimestamp: now}, Status: &pb.PodStatus{Phase: "Running"}}, "Terminating"},
	} {
		if got := podStatus(tc.pod); got != tc.want {
			t.Errorf("%s: podStatus = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestTablesLookLikeKubectl(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := created.Add(90 * time.Second)
	three := int32(3)
	objs := []*pb.Object{
		pb.Wrap(&pb.Deployment{
			Metadata: &pb.ObjectMeta{Name: "web", Namespace: "shop", CreationTimestamp: timestamppb.New(created)},
			Spec:     &pb.DeploymentSpec{Replicas: &three},
			Status:   &pb.DeploymentStatus{ReadyReplicas: 2, UpdatedReplicas: 3, AvailableReplicas: 2},
		}),
	}
	var buf bytes.Buffer
	p := newPrinter(&buf, "", true)
	p.now = func() time.Time { return now }
	if err := p.printList(objs); err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(buf.String())
	want := strings.Fields("NAMESPACE NAME READY UP-TO-DATE AVAILABLE AGE shop web 2/3 3 2 90s")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("table:\n%s\nwant fields %v", buf.String(), want)
	}

	// Pods in -o wide show IP and node.
	buf.Reset()
	p = newPrinter(&buf, "wide", false)
	p.now = func() time.Time { return now }
	pod := pb.Wrap(&pb.Pod{
		Metadata: &pb.ObjectMeta{Name: "web-1", CreationTimestamp: timestamppb.New(created)},
		Spec:     &pb.PodSpec{NodeName: "w1", Containers: []*pb.Container{{Name: "a"}, {Name: "b"}}},
		Status: &pb.PodStatus{Phase: "Running", PodIp: "10.244.1.5", ContainerStatuses: []*pb.ContainerStatus{
			{Name: "a", Ready: true, RestartCount: 2}, {Name: "b", Ready: false, RestartCount: 1}}},
	})
	if err := p.printList([]*pb.Object{pod}); err != nil {
		t.Fatal(err)
	}
	got = strings.Fields(buf.String())
	want = strings.Fields("NAME READY STATUS RESTARTS AGE IP NODE web-1 1/2 Running 3 90s 10.244.1.5 w1")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("wide pods:\n%s\nwant fields %v", buf.String(), want)
	}

	// --no-headers: the rows alone, of every kind in a mixed listing.
	buf.Reset()
	p = newPrinter(&buf, "wide", false)
	p.now, p.noHeaders = func() time.Time { return now }, true
	if err := p.printList([]*pb.Object{pod, objs[0]}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "pod/web-1 1/2 Running 3 90s 10.244.1.5 w1" ||
		!strings.HasPrefix(lines[1], "deployment/web ") {
		t.Errorf("--no-headers:\n%s", buf.String())
	}

	// A node's lease: its holder, and in -o wide when it was last renewed.
	buf.Reset()
	p = newPrinter(&buf, "wide", false)
	p.now = func() time.Time { return now }
	lease := pb.Wrap(&pb.Lease{
		Metadata: &pb.ObjectMeta{Name: "w1", Namespace: "kube-node-lease", CreationTimestamp: timestamppb.New(created)},
		Spec:     &pb.LeaseSpec{HolderIdentity: "w1", RenewTime: timestamppb.New(now.Add(-4 * time.Second))},
	})
	if err := p.printList([]*pb.Object{lease}); err != nil {
		t.Fatal(err)
	}
	got = strings.Fields(buf.String())
	want = strings.Fields("NAME HOLDER AGE RENEWED w1 w1 90s 4s ago")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("wide leases:\n%s\nwant fields %v", buf.String(), want)
	}
}

func TestPrintYAMLListKeepsNumbers(t *testing.T) {
	three := int32(3)
	var buf bytes.Buffer
	p := newPrinter(&buf, "yaml", false)
	objs := []*pb.Object{
		pb.Wrap(&pb.Deployment{Metadata: &pb.ObjectMeta{Name: "a", Namespace: "default", Generation: 2, ResourceVersion: 17}, Spec: &pb.DeploymentSpec{Replicas: &three}}),
		pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "b", Namespace: "default"}, Data: map[string]string{"k": "v"}}),
	}
	if err := p.printList(objs); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"kind: List", "replicas: 3", "generation: 2", `resourceVersion: "17"`, "kind: ConfigMap", "apiVersion: apps/v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("yaml list lacks %q:\n%s", want, out)
		}
	}
}

func TestParseTargets(t *testing.T) {
	ts, err := parseTargets([]string{"deploy/web", "svc/web"})
	if err != nil || len(ts) != 2 || ts[0].kind.Kind != "Deployment" || ts[1].kind.Kind != "Service" || ts[1].names[0] != "web" {
		t.Fatalf("parseTargets(deploy/web svc/web) = %+v, %v", ts, err)
	}
	ts, err = parseTargets([]string{"po", "a", "b"})
	if err != nil || len(ts) != 1 || ts[0].kind.Kind != "Pod" || len(ts[0].names) != 2 {
		t.Fatalf("parseTargets(po a b) = %+v, %v", ts, err)
	}
	if _, err := parseTargets([]string{"gizmos"}); err == nil || !strings.Contains(err.Error(), "known kinds") {
		t.Fatalf("unknown kind: err = %v", err)
	}
	ts, err = parseTargets([]string{"svc,ep", "web"})
	if err != nil || len(ts) != 2 || ts[0].kind.Kind != "Service" || ts[1].kind.Kind != "Endpoints" || ts[1].names[0] != "web" {
		t.Fatalf("parseTargets(svc,ep web) = %+v, %v", ts, err)
	}
	if _, err := parseTargets([]string{"svc,gizmos"}); err == nil || !strings.Contains(err.Error(), `"gizmos"`) {
		t.Fatalf("unknown kind in a list: err = %v", err)
	}
}

// TestTableOfSeveralKinds: get svc,ep prints a table per kind, names as
// kind/name.
func TestTableOfSeveralKinds(t *testing.T) {
	var buf strings.Builder
	p := newPrinter(&buf, "", false)
	p.now = func() time.Time { return time.Unix(1000, 0) }
	objs := []*pb.Object{
		pb.Wrap(&pb.Service{Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"}, Spec: &pb.ServiceSpec{Type: "ClusterIP", ClusterIp: "10.96.0.10", Ports: []*pb.ServicePort{{Port: 80, Protocol: "TCP"}}}}),
		pb.Wrap(&pb.Endpoints{Metadata: &pb.ObjectMeta{Name: "web", Namespace: "default"}, Subsets: []*pb.EndpointSubset{{Addresses: []*pb.EndpointAddress{{Ip: "10.244.0.2"}}, Ports: []*pb.EndpointPort{{Port: 8080}}}}}),
	}
	if err := p.printList(objs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "service/web") || !strings.Contains(lines[1], "10.96.0.10") ||
		lines[2] != "" || !strings.HasPrefix(lines[3], "NAME") || !strings.HasPrefix(lines[4], "endpoints/web") || !strings.Contains(lines[4], "10.244.0.2:8080") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

// -o yaml and json print an object asked for by name as itself, and any
// listing as a List, even of one object or none, as kubectl does; JSON
// indented by four spaces, as kubectl's.
func TestPrintListDocuments(t *testing.T) {
	cm := pb.Wrap(&pb.ConfigMap{Metadata: &pb.ObjectMeta{Name: "settings", Namespace: "default"}})
	for _, tc := range []struct {
		format string
		single bool
		objs   []*pb.Object
		want   string
	}{
		{"yaml", true, []*pb.Object{cm}, "kind: ConfigMap\n"},
		{"yaml", false, []*pb.Object{cm}, "kind: List\n"},
		{"yaml", false, nil, "items: []\nkind: List\n"},
		{"json", true, []*pb.Object{cm}, `"kind":"ConfigMap"`},
		{"json", false, []*pb.Object{cm}, `"kind":"List"`},
	} {
		var buf bytes.Buffer
		p := newPrinter(&buf, tc.format, false)
		p.single = tc.single
		if err := p.printList(tc.objs); err != nil {
			t.Fatal(err)
		}
		got := buf.String()
		if tc.format == "json" {
			if !strings.HasPrefix(got, "{\n    \"") {
				t.Errorf("-o json, by name %v: not indented as kubectl's:\n%s", tc.single, got)
			}
			got = strings.ReplaceAll(got, " ", "")
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("-o %s, by name %v, %d objects:\n%s\nwant it to contain %q", tc.format, tc.single, len(tc.objs), buf.String(), tc.want)
		}
	}
}
