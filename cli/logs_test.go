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

func TestLogsLimitFlags(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	parse := func(args ...string) (*logsOptions, error) {
		l := &logsOptions{}
		cmd := newLogsCommand(&Options{})
		if err := cmd.ParseFlags(args); err != nil {
			return nil, err
		}
		// newLogsCommand binds its own options: read them back through the flags.
		f := cmd.Flags()
		l.since, _ = f.GetDuration("since")
		l.sinceTime, _ = f.GetString("since-time")
		l.limitBytes, _ = f.GetInt64("limit-bytes")
		return l, l.checkLimits(f.Changed, now)
	}
	for _, tc := range []struct {
		args  []string
		since time.Time // zero: no --since nor --since-time
	}{
		{nil, time.Time{}},
		{[]string{"--since=2m"}, now.Add(-2 * time.Minute)},
		{[]string{"--since", "3h"}, now.Add(-3 * time.Hour)},
		{[]string{"--since-time=2026-01-02T15:00:00Z"}, time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)},
		{[]string{"--since-time=2026-01-02T16:00:00.5+01:00"}, time.Date(2026, 1, 2, 15, 0, 0, 5e8, time.UTC)},
		{[]string{"--limit-bytes=5"}, time.Time{}},
	} {
		l, err := parse(tc.args...)
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		switch {
		case tc.since.IsZero() && l.sinceUnixNano != nil:
			t.Errorf("%v: since %v, want none", tc.args, time.Unix(0, *l.sinceUnixNano).UTC())
		case !tc.since.IsZero() && (l.sinceUnixNano == nil || *l.sinceUnixNano != tc.since.UnixNano()):
			t.Errorf("%v: since %v, want %v", tc.args, l.sinceUnixNano, tc.since)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since=5s", "--since-time=2026-01-02T15:00:00Z"}, "at most one of --since and --since-time may be used"},
		{[]string{"--since=0s"}, "--since=0s: must be greater than 0"},
		{[]string{"--since=-1m"}, "--since=-1m0s: must be greater than 0"},
		{[]string{"--since-time=yesterday"}, `--since-time="yesterday": not an RFC3339 time: use the form 2006-01-02T15:04:05Z`},
		{[]string{"--since-time=2026-01-02 15:00:00"}, "--since-time="},
		{[]string{"--limit-bytes=0"}, "--limit-bytes=0: must be greater than 0"},
		{[]string{"--limit-bytes=-3"}, "--limit-bytes=-3: must be greater than 0"},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	// Through the command: refused before it connects.
	refusedBeforeConnecting(t, "at most one of --since and --since-time may be used", "logs", "web", "--since=1h", "--since-time=2026-01-02T15:00:00Z")
	refusedBeforeConnecting(t, "--limit-bytes=0: must be greater than 0", "logs", "-l", "app=web", "--limit-bytes=0")
	refusedBeforeConnecting(t, "--since-time=\"noon\": not an RFC3339 time", "logs", "web", "--all-containers", "--since-time=noon")
}
