package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
)

func TestPickPod(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pod := func(name, phase string, ready bool, age time.Duration) *pb.Object {
		st := &pb.PodStatus{Phase: phase}
		if ready {
			st.Conditions = []*pb.PodCondition{{Type: "Ready", Status: "True"}}
		}
		return pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: name, CreationTimestamp: timestamppb.New(t0.Add(-age))}, Status: st})
	}
	for _, tc := range []struct {
		pods []*pb.Object
		want string
	}{
		{[]*pb.Object{pod("pending", "Pending", false, time.Hour), pod("running", "Running", false, time.Minute), pod("ready", "Running", true, time.Second)}, "ready"},
		{[]*pb.Object{pod("pending", "Pending", false, time.Hour), pod("running", "Running", false, time.Minute)}, "running"},
		{[]*pb.Object{pod("young", "Running", true, time.Second), pod("old", "Running", true, time.Hour)}, "old"},
		{[]*pb.Object{pod("failed", "Failed", false, time.Hour), pod("pending", "Pending", false, time.Second)}, "pending"},
	} {
		if got := pickPod(tc.pods).Meta().GetName(); got != tc.want {
			t.Errorf("picked %s, want %s", got, tc.want)
		}
	}
}

func TestLogContainers(t *testing.T) {
	pod := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "web"}, Spec: &pb.PodSpec{
		InitContainers: []*pb.Container{{Name: "migrate"}},
		Containers:     []*pb.Container{{Name: "app"}, {Name: "proxy"}},
	}})
	var errOut bytes.Buffer
	got, err := logContainers(&errOut, pod, &logsOptions{})
	if err != nil || strings.Join(got, ",") != "app" || errOut.String() != "Defaulted container \"app\" out of: migrate, app, proxy\n" {
		t.Errorf("default: %v %v %q", got, err, errOut.String())
	}
	pod.Meta().Annotations = map[string]string{defaultContainerAnnotation: "proxy"}
	if got, _ := logContainers(&errOut, pod, &logsOptions{}); strings.Join(got, ",") != "proxy" {
		t.Errorf("annotated default: %v", got)
	}
	if got, _ := logContainers(&errOut, pod, &logsOptions{allContainers: true}); strings.Join(got, ",") != "migrate,app,proxy" {
		t.Errorf("--all-containers: %v", got)
	}
	if got, _ := logContainers(&errOut, pod, &logsOptions{container: "proxy"}); strings.Join(got, ",") != "proxy" {
		t.Errorf("-c: %v", got)
	}
	errOut.Reset()
	single := pb.Wrap(&pb.Pod{Metadata: &pb.ObjectMeta{Name: "one"}, Spec: &pb.PodSpec{Containers: []*pb.Container{{Name: "app"}}}})
	if got, _ := logContainers(&errOut, single, &logsOptions{}); strings.Join(got, ",") != "app" || errOut.Len() != 0 {
		t.Errorf("one container: %v, notice %q", got, errOut.String())
	}
}

func TestLineWriterPrefixesWholeLines(t *testing.T) {
	var out bytes.Buffer
	lw := &lockedWriter{w: &out}
	w := &lineWriter{out: lw, prefix: "[pod/web/app] "}
	for _, chunk := range []string{"hel", "lo\nwor", "ld\n\nlast"} {
		w.Write([]byte(chunk))
	}
	other := &lineWriter{out: lw, prefix: "[pod/db/app] "}
	other.Write([]byte("db line\n"))
	w.flush()
	want := "[pod/web/app] hello\n[pod/web/app] world\n[pod/web/app] \n[pod/db/app] db line\n[pod/web/app] last"
	if out.String() != want {
		t.Errorf("got\n%q\nwant\n%q", out.String(), want)
	}
}
