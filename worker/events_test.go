package worker

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
)

// fakeRecorder keeps the events the worker records.
type fakeRecorder struct {
	mu     sync.Mutex
	events []recordedEvent
}

type recordedEvent struct {
	pod, eventType, reason, message string
}

func (f *fakeRecorder) Eventf(obj *pb.Object, eventType, reason, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, recordedEvent{obj.Meta().GetName(), eventType, reason, fmt.Sprintf(format, args...)})
}

// of returns pod's events as "Type Reason: message" lines, in order.
func (f *fakeRecorder) of(pod string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		if e.pod == pod {
			out = append(out, e.eventType+" "+e.reason+": "+e.message)
		}
	}
	return out
}

// waitFor waits until pod has an event of each line in want (each a prefix
// of "Type Reason: message"), in that order, and returns pod's events.
func (f *fakeRecorder) waitFor(t *testing.T, pod string, want ...string) []string {
	t.Helper()
	var got []string
	eventually(t, 20*time.Second, fmt.Sprintf("events of %s: %q", pod, want), func() error {
		got = f.of(pod)
		i := 0
		for _, line := range got {
			if i < len(want) && strings.HasPrefix(line, want[i]) {
				i++
			}
		}
		if i < len(want) {
			return fmt.Errorf("have %q", got)
		}
		return nil
	})
	return got
}

// remoteRuntime is the fake runtime with images to pull: those named
// "remote" are not present until pulled.
type remoteRuntime struct{ *fakeRuntime }

func (r remoteRuntime) Get(ref string) (*image.Image, error) {
	if strings.Contains(ref, "remote") || strings.Contains(ref, "missing") {
		return nil, image.ErrNotFound
	}
	return r.fakeRuntime.Get(ref)
}

// TestPodEvents: the worker records the kubelet's events for what it does
// with a pod and for what goes wrong.
func TestPodEvents(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt, pr, rec := newFakeRuntime(), newFakeProber(), &fakeRecorder{}
	tc.startAgent(t, "w1", withFakes(rt, pr), func(c *Config) {
		c.Images = remoteRuntime{rt}
		c.Events = rec
		c.BackoffBase, c.BackoffMax = 200*time.Millisecond, 400*time.Millisecond
	})

	// A container started from an image already present.
	tc.create(t, testPod("web", "w1", ctr("web", "run")))
	rec.waitFor(t, "web",
		`Normal Pulled: Container image "example.com/app:v1" already present on machine`,
		"Normal Created: Created container web", "Normal Started: Started container web")

	// One whose image is pulled.
	c := ctr("pulled", "run")
	c.Image = "example.com/remote:v1"
	tc.create(t, testPod("pulled", "w1", c))
	rec.waitFor(t, "pulled", `Normal Pulling: Pulling image "example.com/remote:v1"`,
		`Normal Pulled: Successfully pulled image "example.com/remote:v1" in `, "Normal Started: Started container pulled")

	// An image that cannot be pulled: Failed, then BackOff, and again.
	c = ctr("nopull", "run")
	c.Image = "example.com/missing:v1"
	tc.create(t, testPod("nopull", "w1", c))
	rec.waitFor(t, "nopull", `Normal Pulling: Pulling image "example.com/missing:v1"`,
		`Warning Failed: Failed to pull image "example.com/missing:v1": pull example.com/missing:v1: manifest unknown`,
		`Normal BackOff: Back-off pulling image "example.com/missing:v1"`,
		`Warning Failed: Failed to pull image`, `Normal BackOff: Back-off pulling image`)

	// A container that cannot be configured.
	c = ctr("config", "run")
	c.Env = []*pb.EnvVar{{Name: "X", ValueFrom: &pb.EnvVarSource{ConfigMapKeyRef: &pb.ConfigMapKeySelector{Name: "absent", Key: "k"}}}}
	tc.create(t, testPod("config", "w1", c))
	rec.waitFor(t, "config", `Warning Failed: Error: container configuration: configmap "absent" not found`)

	// A crash loop.
	crash := testPod("crash", "w1", ctr("crash", "exit", "1"))
	tc.create(t, crash)
	rec.waitFor(t, "crash", "Normal Started: Started container crash",
		"Warning BackOff: Back-off restarting failed container crash in pod crash_default(",
		"Normal Started: Started container crash", "Warning BackOff: Back-off restarting failed container crash")

	// A failing liveness probe: Unhealthy, then the kill.
	probe := &pb.Probe{TcpSocket: &pb.TCPSocketAction{Port: "8080"}, PeriodSeconds: 1, FailureThreshold: 2, TimeoutSeconds: 1,
		TerminationGracePeriodSeconds: gproto.Int64(1)}
	c = ctr("live", "run")
	c.LivenessProbe = probe
	tc.create(t, testPod("live", "w1", c))
	rec.waitFor(t, "live", "Normal Started: Started container live")
	pr.set("live", probeLiveness, false)
	rec.waitFor(t, "live", "Warning Unhealthy: Liveness probe failed: fake probe failure",
		"Warning Unhealthy: Liveness probe failed: fake probe failure",
		"Normal Killing: Container live failed liveness probe, will be restarted", "Normal Started: Started container live")

	// Readiness failures of a container not yet ready are recorded only at
	// the probe's period, not at the quicker retries before it.
	pr.set("slow", probeReadiness, false)
	c = ctr("slow", "run")
	c.ReadinessProbe = &pb.Probe{TcpSocket: &pb.TCPSocketAction{Port: "8080"}, PeriodSeconds: 1, TimeoutSeconds: 1}
	tc.create(t, testPod("slow", "w1", c))
	got := rec.waitFor(t, "slow", "Warning Unhealthy: Readiness probe failed: fake probe failure")
	calls, unhealthy := pr.callsOf("slow", probeReadiness), 0
	for _, line := range rec.of("slow") {
		if strings.Contains(line, "Unhealthy") {
			unhealthy++
		}
	}
	// Probed at once, after 250 ms, 500 ms, then every second.
	if calls < 4 || unhealthy > calls-3 {
		t.Errorf("%d readiness probes, %d Unhealthy events: the first three (at start, after 250 and 500 ms) should not count; events %q", calls, unhealthy, got)
	}

	// Deletion stops the containers.
	tc.deletePod(t, "web", gproto.Int64(1))
	rec.waitFor(t, "web", "Normal Started: Started container web", "Normal Killing: Stopping container web")
}
