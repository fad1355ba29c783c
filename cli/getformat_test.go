package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func formatPods() []*pb.Object {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pod := func(name, node, ip string, restarts int32, labels map[string]string, ago time.Duration) *pb.Object {
		return pb.Wrap(&pb.Pod{
			ApiVersion: "v1", Kind: "Pod",
			Metadata: &pb.ObjectMeta{Name: name, Namespace: "default", Labels: labels, CreationTimestamp: timestamppb.New(created.Add(-ago))},
			Spec:     &pb.PodSpec{NodeName: node, Containers: []*pb.Container{{Name: "app", Image: "web:1"}}},
			Status: &pb.PodStatus{Phase: "Running", PodIp: ip,
				ContainerStatuses: []*pb.ContainerStatus{{Name: "app", RestartCount: restarts}}},
		})
	}
	return []*pb.Object{
		pod("web-b", "w2", "10.0.0.2", 10, map[string]string{"app": "web", "tier": "front"}, time.Minute),
		pod("web-a", "w1", "10.0.0.1", 2, map[string]string{"app": "web"}, time.Hour),
		pod("lone", "", "", 9, nil, time.Second),
	}
}

func printed(t *testing.T, p *printer, objs []*pb.Object) string {
	t.Helper()
	var buf bytes.Buffer
	p.out = &buf
	if err := p.printList(objs); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func formatted(t *testing.T, output string) *printer {
	t.Helper()
	f, err := parseOutput(output)
	if err != nil {
		t.Fatal(err)
	}
	p := newPrinter(nil, f.name, false)
	p.template = f
	return p
}

func TestOutputJSONPath(t *testing.T) {
	p := formatted(t, "jsonpath={.items[*].metadata.name}")
	if got := printed(t, p, formatPods()); got != "web-b web-a lone" {
		t.Errorf("list: %q", got)
	}
	// One object asked for by name: the template sees the object itself.
	p = formatted(t, `jsonpath={.status.podIP} {.status.containerStatuses[0].restartCount}`)
	p.single = true
	if got := printed(t, p, formatPods()[:1]); got != "10.0.0.2 10" {
		t.Errorf("single: %q", got)
	}
	p = formatted(t, `jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}{"\n"}{end}`)
	if got := printed(t, p, formatPods()); got != "web-b=w2\nweb-a=w1\nlone=\n" {
		t.Errorf("range: %q", got)
	}
}

func TestOutputCustomColumns(t *testing.T) {
	p := formatted(t, "custom-columns=NAME:.metadata.name,NODE:spec.nodeName,TIER:{.metadata.labels.tier}")
	got := printed(t, p, formatPods())
	want := "NAME    NODE     TIER\nweb-b   w2       front\nweb-a   w1       <none>\nlone    <none>   <none>\n"
	if got != want {
		t.Errorf("custom columns:\n%s\nwant\n%s", got, want)
	}
	p = formatted(t, "custom-columns=NAME:.metadata.name")
	p.noHeaders = true
	if got := printed(t, p, formatPods()); got != "web-b\nweb-a\nlone\n" {
		t.Errorf("--no-headers: %q", got)
	}
}

func TestParseOutputErrors(t *testing.T) {
	for in, want := range map[string]string{
		"yml":                        `--output "yml": use wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=`,
		"jsonpath=":                  "--output jsonpath= needs a template",
		"jsonpath={.items[*":         `--output "{.items[*": unterminated array`,
		"custom-columns=NAME":        `--output custom-columns: "NAME" is not HEADER:PATH`,
		"custom-columns=NAME:.a,:.b": `--output custom-columns: ":.b" is not HEADER:PATH`,
		"custom-columns=NAME:{.a[*}": `--output custom-columns NAME`,
	} {
		if _, err := parseOutput(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseOutput(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestSortBy(t *testing.T) {
	names := func(objs []*pb.Object) string {
		var out []string
		for _, o := range objs {
			out = append(out, o.Meta().GetName())
		}
		return strings.Join(out, ",")
	}
	for path, want := range map[string]string{
		".metadata.name": "lone,web-a,web-b",
		// Numbers by value: 2 < 9 < 10 (as text 10 < 2 < 9).
		"{.status.containerStatuses[0].restartCount}": "web-a,lone,web-b",
		// Timestamps in time order.
		"metadata.creationTimestamp": "web-a,web-b,lone",
		// Without the field first.
		".status.podIP": "lone,web-a,web-b",
	} {
		objs := formatPods()
		if err := sortObjects(objs, path); err != nil || names(objs) != want {
			t.Errorf("--sort-by %s: %s, %v; want %s", path, names(objs), err, want)
		}
	}
	if err := sortObjects(formatPods(), ".spec.containers[*].name"); err != nil {
		t.Errorf("one value each: %v", err)
	}
	two := formatPods()
	two[0].GetPod().Spec.Containers = append(two[0].GetPod().Spec.Containers, &pb.Container{Name: "sidecar"})
	if err := sortObjects(two, ".spec.containers[*].name"); err == nil || !strings.Contains(err.Error(), "more than one value in pod/web-b") {
		t.Errorf("several values: %v", err)
	}
}

func TestLabelColumns(t *testing.T) {
	p := newPrinter(nil, "", false)
	p.now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	p.labelColumns = []string{"app", "example.com/tier"}
	p.showLabels = true
	objs := formatPods()
	objs[0].Meta().Labels["example.com/tier"] = "gold"
	rows := strings.Split(strings.TrimSpace(printed(t, p, objs)), "\n")
	if h := strings.Fields(rows[0]); strings.Join(h[len(h)-3:], " ") != "APP TIER LABELS" {
		t.Errorf("header %q", rows[0])
	}
	if f := strings.Fields(rows[1]); strings.Join(f[len(f)-3:], " ") != "web gold app=web,example.com/tier=gold,tier=front" {
		t.Errorf("row %q", rows[1])
	}
	if f := strings.Fields(rows[3]); f[len(f)-1] != "<none>" {
		t.Errorf("a pod without labels: %q", rows[3])
	}
}
