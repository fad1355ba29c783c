package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// These tests run the node agent against in-process masters and a fake
// runtime: registration, heartbeats, the pod sync loop (restart policies,
// backoff, probes, deletion) and re-adoption, without real containers.

func TestNodeRegistrationAndLifecycle(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{grace: 1500 * time.Millisecond})
	rt := newFakeRuntime()
	w1 := tc.startAgent(t, "w1", withFakes(rt, newFakeProber()), func(c *Config) {
		c.Labels = map[string]string{"zone": "a", "disk": "ssd"}
		c.CapacityCPU, c.CapacityMemory, c.MaxPods = "3", "2Gi", 20
	})
	n := tc.waitNodeReady(t, "w1", "True", 20*time.Second)
	if l := n.GetMetadata().GetLabels(); l["zone"] != "a" || l["disk"] != "ssd" || l["kubernetes.io/hostname"] != "w1" || l["kubernetes.io/os"] != "linux" {
		t.Errorf("labels = %v", l)
	}
	st := n.GetStatus()
	if st.GetCapacity()["cpu"] != "3" || st.GetCapacity()["memory"] != "2Gi" || st.GetCapacity()["pods"] != "20" || st.GetAllocatable()["cpu"] != "3" {
		t.Errorf("capacity %v allocatable %v", st.GetCapacity(), st.GetAllocatable())
	}
	if port := st.GetDaemonEndpoints().GetKubeletEndpoint().GetPort(); fmt.Sprintf("127.0.0.1:%d", port) != w1.AgentAddr() {
		t.Errorf("daemon endpoint port %d, agent at %s", port, w1.AgentAddr())
	}
	if len(st.GetAddresses()) == 0 || st.GetAddresses()[0].GetType() != "InternalIP" || st.GetAddresses()[0].GetAddress() != "127.0.0.1" {
		t.Errorf("addresses %v", st.GetAddresses())
	}
	if st.GetNodeInfo().GetKernelVersion() == "" || st.GetNodeInfo().GetArchitecture() == "" {
		t.Errorf("nodeInfo %v", st.GetNodeInfo())
	}

	// Heartbeats renew the node's Lease, owned by the Node; the Node itself
	// is not written again while its status stays the same.
	var l *pb.Lease
	eventually(t, 10*time.Second, "the node's lease", func() (err error) {
		l, err = tc.lease(t, "w1")
		return err
	})
	if s := l.GetSpec(); s.GetHolderIdentity() != "w1" || s.GetLeaseDurationSeconds() != 2 || s.GetRenewTime() == nil {
		t.Errorf("lease spec %v, want holder w1, duration 2s (4 heartbeats of 500ms), a renew time", s)
	}
	if refs := l.GetMetadata().GetOwnerReferences(); len(refs) != 1 || refs[0].GetKind() != "Node" || refs[0].GetUid() != n.GetMetadata().GetUid() {
		t.Errorf("lease owners %v, want the Node (uid %s)", refs, n.GetMetadata().GetUid())
	}
	// The first heartbeat posted the status (the worker's first); from the
	// next renewal on, nothing changes.
	renewals := 0
	last := l.GetSpec().GetRenewTime().AsTime()
	var nodeRV uint64
	eventually(t, 10*time.Second, "four lease renewals", func() error {
		l, err := tc.lease(t, "w1")
		if err != nil {
			return err
		}
		if rt := l.GetSpec().GetRenewTime().AsTime(); rt.After(last) {
			renewals, last = renewals+1, rt
			if renewals == 1 {
				n, err := tc.node(t, "w1")
				if err != nil {
					return err
				}
				nodeRV = n.GetMetadata().GetResourceVersion()
			}
		}
		if renewals < 4 {
			return fmt.Errorf("%d renewals", renewals)
		}
		return nil
	})
	if n, err := tc.node(t, "w1"); err != nil || n.GetMetadata().GetResourceVersion() != nodeRV {
		t.Errorf("the Node was written during three unchanged heartbeats: resourceVersion %d -> %d (%v)", nodeRV, n.GetMetadata().GetResourceVersion(), err)
	}

	// A graceful stop marks the node at once, well inside the grace period.
	stopped := time.Now()
	w1.stop(t)
	n = tc.waitNodeReady(t, "w1", "False", 10*time.Second)
	if c := readyCondition(n); c.GetReason() != "Left" {
		t.Errorf("after leaving: %v", c)
	}
	t.Logf("graceful leave marked NotReady %v after stop began", time.Since(stopped).Round(10*time.Millisecond))

	// A crashed worker (gossip silent, no heartbeats) turns Unknown after
	// the grace period.
	w2 := tc.startAgent(t, "w2", withFakes(newFakeRuntime(), newFakeProber()))
	tc.waitNodeReady(t, "w2", "True", 20*time.Second)
	crashed := time.Now()
	w2.crash(t)
	n = tc.waitNodeReady(t, "w2", "Unknown", 30*time.Second)
	took := time.Since(crashed)
	if c := readyCondition(n); c.GetReason() != "NodeStatusUnknown" || !strings.Contains(c.GetMessage(), "stopped renewing its lease") {
		t.Errorf("after crash: %v", c)
	}
	if took < time.Second {
		t.Errorf("marked Unknown %v after the crash, before the 1.5s grace period", took)
	}
	t.Logf("crashed worker marked Unknown after %v (grace 1.5s)", took.Round(10*time.Millisecond))

	// It comes back Ready when it returns: the masters' status (Unknown)
	// is not the worker's, so it posts its own. And it posts its status
	// every NodeStatusReportFrequency even when nothing changed.
	tc.startAgent(t, "w2", withFakes(newFakeRuntime(), newFakeProber()), func(c *Config) { c.NodeStatusReportFrequency = time.Second })
	n = tc.waitNodeReady(t, "w2", "True", 30*time.Second)
	first := readyCondition(n).GetLastHeartbeatTime().AsTime()
	eventually(t, 10*time.Second, "a status report after a second", func() error {
		n, err := tc.node(t, "w2")
		if err != nil {
			return err
		}
		if hb := readyCondition(n).GetLastHeartbeatTime().AsTime(); !hb.After(first) {
			return fmt.Errorf("lastHeartbeatTime still %s", hb)
		}
		return nil
	})
}

func ctr(name string, cmd ...string) *pb.Container {
	return &pb.Container{Name: name, Image: "example.com/app:v1", Command: cmd}
}

func TestRunToCompletion(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	tc.startAgent(t, "w1", withFakes(rt, newFakeProber()))

	for _, tt := range []struct {
		name, policy string
		code         int32
		phase        string
		reason       string
	}{
		{"ok-never", "Never", 0, "Succeeded", "Completed"},
		{"fail-never", "Never", 3, "Failed", "Error"},
		{"ok-onfailure", "OnFailure", 0, "Succeeded", "Completed"},
	} {
		obj := testPod(tt.name, "w1", ctr("main", "exit", fmt.Sprint(tt.code), "after", "200ms"))
		obj.GetPod().Spec.RestartPolicy = tt.policy
		tc.create(t, obj)
		p := tc.waitPod(t, tt.name, 20*time.Second, tt.phase, phaseIs(tt.phase))
		cs := containerStatusOf(p, "main")
		term := cs.GetState().GetTerminated()
		if term.GetExitCode() != tt.code || term.GetReason() != tt.reason || cs.GetRestartCount() != 0 || cs.GetReady() {
			t.Errorf("%s: container status %v", tt.name, cs)
		}
		if c := podCondition(p.GetStatus(), "Ready"); c.GetStatus() != "False" || c.GetReason() != "PodCompleted" {
			t.Errorf("%s: Ready condition %v", tt.name, c)
		}
		if p.GetStatus().GetStartTime() == nil || p.GetStatus().GetHostIp() != "127.0.0.1" {
			t.Errorf("%s: status %v", tt.name, p.GetStatus())
		}
	}
	if n := rt.startsOf("main"); n != 3 {
		t.Errorf("%d starts, want 3 (no restarts)", n)
	}
}

func TestRestartWithBackoff(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	tc.startAgent(t, "w1", withFakes(rt, newFakeProber()), func(c *Config) {
		c.BackoffBase, c.BackoffMax = 300*time.Millisecond, 1200*time.Millisecond
	})
	obj := testPod("crash", "w1", ctr("main", "exit", "1"))
	obj.GetPod().Spec.RestartPolicy = "OnFailure"
	tc.create(t, obj)

	sawBackoff := false
	p := tc.waitPod(t, "crash", 30*time.Second, "5 restarts", func(p *pb.Pod) error {
		cs := containerStatusOf(p, "main")
		if w := cs.GetState().GetWaiting(); w.GetReason() == "CrashLoopBackOff" && strings.Contains(w.GetMessage(), "back-off") {
			sawBackoff = true
		}
		if cs.GetRestartCount() < 5 {
			return fmt.Errorf("restartCount %d", cs.GetRestartCount())
		}
		return nil
	})
	cs := containerStatusOf(p, "main")
	if lt := cs.GetLastState().GetTerminated(); lt.GetExitCode() != 1 || lt.GetReason() != "Error" {
		t.Errorf("lastState %v", cs.GetLastState())
	}
	if p.GetStatus().GetPhase() != "Running" {
		t.Errorf("phase %s, want Running while restarting", p.GetStatus().GetPhase())
	}
	if !sawBackoff {
		t.Errorf("never saw CrashLoopBackOff")
	}
	// Start times: the first restart is immediate, then 300ms, 600ms,
	// 1200ms, 1200ms (capped).
	starts := rt.startTimes()
	var gaps []time.Duration
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, starts[i].Sub(starts[i-1]).Round(10*time.Millisecond))
	}
	t.Logf("gaps between starts: %v", gaps)
	want := []time.Duration{0, 300 * time.Millisecond, 600 * time.Millisecond, 1200 * time.Millisecond, 1200 * time.Millisecond}
	for i, w := range want {
		if i >= len(gaps) {
			break
		}
		if gaps[i] < w || gaps[i] > w+700*time.Millisecond {
			t.Errorf("gap %d = %v, want about %v", i, gaps[i], w)
		}
	}

	// Always restarts a container that succeeded, too.
	tc.create(t, testPod("again", "w1", ctr("main", "exit", "0", "after", "100ms")))
	tc.waitPod(t, "again", 20*time.Second, "a restart", func(p *pb.Pod) error {
		if n := containerStatusOf(p, "main").GetRestartCount(); n < 1 {
			return fmt.Errorf("restartCount %d", n)
		}
		return nil
	})
}

func TestProbes(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	pr := newFakeProber()
	tc.startAgent(t, "w1", withFakes(rt, pr))
	probe := func() *pb.Probe {
		return &pb.Probe{TcpSocket: &pb.TCPSocketAction{Port: "8080"}, PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1}
	}

	// Readiness drives the Ready condition.
	pr.set("web", probeReadiness, false)
	c := ctr("web", "run")
	c.ReadinessProbe = probe()
	tc.create(t, testPod("ready", "w1", c))
	tc.waitPod(t, "ready", 20*time.Second, "running but not ready", func(p *pb.Pod) error {
		if err := phaseIs("Running")(p); err != nil {
			return err
		}
		if err := readyIs("False")(p); err != nil {
			return err
		}
		if containerStatusOf(p, "web").GetReady() {
			return fmt.Errorf("container ready")
		}
		return nil
	})
	pr.set("web", probeReadiness, true)
	tc.waitPod(t, "ready", 20*time.Second, "ready", readyIs("True"))
	pr.set("web", probeReadiness, false)
	tc.waitPod(t, "ready", 20*time.Second, "not ready again", readyIs("False"))

	// A failing liveness probe gets the container killed and restarted.
	c = ctr("live", "run")
	c.LivenessProbe = probe()
	c.LivenessProbe.TerminationGracePeriodSeconds = gproto.Int64(1)
	tc.create(t, testPod("live", "w1", c))
	tc.waitPod(t, "live", 20*time.Second, "running", phaseIs("Running"))
	pr.set("live", probeLiveness, false)
	p := tc.waitPod(t, "live", 20*time.Second, "restarted", func(p *pb.Pod) error {
		if n := containerStatusOf(p, "live").GetRestartCount(); n < 1 {
			return fmt.Errorf("restartCount %d", n)
		}
		return nil
	})
	if lt := containerStatusOf(p, "live").GetLastState().GetTerminated(); lt == nil {
		t.Errorf("no lastState after the liveness kill: %v", containerStatusOf(p, "live"))
	}
	found := false
	for _, s := range rt.stopCalls() {
		if s.grace == time.Second {
			found = true
		}
	}
	if !found {
		t.Errorf("liveness kill did not use the probe's grace period: %v", rt.stopCalls())
	}

	// A startup probe holds back liveness and readiness.
	pr.set("slow", probeStartup, false)
	c = ctr("slow", "run")
	c.StartupProbe = probe()
	c.StartupProbe.FailureThreshold = 1000
	c.LivenessProbe, c.ReadinessProbe = probe(), probe()
	tc.create(t, testPod("slow", "w1", c))
	tc.waitPod(t, "slow", 20*time.Second, "running, not started", func(p *pb.Pod) error {
		if err := phaseIs("Running")(p); err != nil {
			return err
		}
		if cs := containerStatusOf(p, "slow"); cs.GetStarted() || cs.GetReady() {
			return fmt.Errorf("started=%v ready=%v", cs.GetStarted(), cs.GetReady())
		}
		return nil
	})
	eventually(t, 10*time.Second, "startup probed", func() error {
		if pr.callsOf("slow", probeStartup) < 2 {
			return fmt.Errorf("startup probe not repeated yet")
		}
		return nil
	})
	if n := pr.callsOf("slow", probeLiveness) + pr.callsOf("slow", probeReadiness); n != 0 {
		t.Errorf("liveness/readiness ran %d times before startup succeeded", n)
	}
	pr.set("slow", probeStartup, true)
	tc.waitPod(t, "slow", 20*time.Second, "started and ready", func(p *pb.Pod) error {
		if cs := containerStatusOf(p, "slow"); !cs.GetStarted() || !cs.GetReady() {
			return fmt.Errorf("started=%v ready=%v", cs.GetStarted(), cs.GetReady())
		}
		return nil
	})
}

func TestGracefulDeletion(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	tc.startAgent(t, "w1", withFakes(rt, newFakeProber()))

	obj := testPod("slow-stop", "w1", ctr("main", "ignore-term"))
	obj.GetPod().Spec.TerminationGracePeriodSeconds = gproto.Int64(1)
	tc.create(t, obj)
	tc.waitPod(t, "slow-stop", 20*time.Second, "running", phaseIs("Running"))
	start := time.Now()
	tc.deletePod(t, "slow-stop", nil)
	// The object stays (Terminating) until the worker confirms.
	if p, err := tc.pod(t, "slow-stop"); err != nil || p.GetMetadata().GetDeletionTimestamp() == nil {
		t.Fatalf("right after delete: %v, %v", p, err)
	}
	tc.waitPodGone(t, "slow-stop", 20*time.Second)
	took := time.Since(start)
	stops := rt.stopCalls()
	if len(stops) != 1 || stops[0].grace > time.Second || stops[0].grace < 900*time.Millisecond || stops[0].took < 900*time.Millisecond {
		t.Errorf("stops = %+v, want one with a 1s grace period that waited for it", stops)
	}
	if took < time.Second || took > 10*time.Second {
		t.Errorf("deletion took %v, want the 1s grace period and a little", took)
	}
	t.Logf("graceful deletion with a 1s grace period took %v", took.Round(10*time.Millisecond))
	if sbs, _ := rt.ListSandboxes(); len(sbs) != 0 {
		t.Errorf("sandboxes left: %v", sbs)
	}

	// A second delete with a shorter grace period cuts the wait short.
	obj = testPod("cut-short", "w1", ctr("main", "ignore-term"))
	obj.GetPod().Spec.TerminationGracePeriodSeconds = gproto.Int64(60)
	tc.create(t, obj)
	tc.waitPod(t, "cut-short", 20*time.Second, "running", phaseIs("Running"))
	start = time.Now()
	tc.deletePod(t, "cut-short", nil)
	tc.waitPod(t, "cut-short", 10*time.Second, "terminating", func(p *pb.Pod) error {
		if p.GetMetadata().GetDeletionTimestamp() == nil {
			return fmt.Errorf("no deletionTimestamp")
		}
		return nil
	})
	eventually(t, 10*time.Second, "the worker stopping the container", func() error {
		if rt.stopsBegun() == 0 {
			return fmt.Errorf("no stop yet")
		}
		return nil
	})
	tc.deletePod(t, "cut-short", gproto.Int64(1))
	tc.waitPodGone(t, "cut-short", 20*time.Second)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("force delete took %v", took)
	}
	eventually(t, 10*time.Second, "containers removed", func() error {
		cs, _ := rt.List()
		if len(cs) != 0 {
			return fmt.Errorf("%d containers left", len(cs))
		}
		return nil
	})
}

func TestStartFailuresAndConfig(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	tc.startAgent(t, "w1", withFakes(rt, newFakeProber()))

	c := ctr("main", "run")
	c.Image = "example.com/missing:v1"
	// ErrImagePull lasts only until the pod worker's next sync, so a poll
	// can miss it on a loaded machine: record every status the pod goes
	// through with a watch.
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	watch, err := tc.api.Watch(wctx, "Pod", client.WatchOptions{Namespace: "default", FieldSelector: "metadata.name=nopull"})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	var mu sync.Mutex
	reasons := map[string]bool{}
	go func() {
		for {
			ev, err := watch.Next(wctx)
			if err != nil {
				return
			}
			mu.Lock()
			reasons[containerStatusOf(ev.GetObject().GetPod(), "main").GetState().GetWaiting().GetReason()] = true
			mu.Unlock()
		}
	}()
	tc.create(t, testPod("nopull", "w1", c))
	tc.waitPod(t, "nopull", 20*time.Second, "ImagePullBackOff", func(p *pb.Pod) error {
		mu.Lock()
		defer mu.Unlock()
		if !reasons["ErrImagePull"] || !reasons["ImagePullBackOff"] {
			return fmt.Errorf("waiting reasons seen %v", reasons)
		}
		if p.GetStatus().GetPhase() != "Pending" {
			return fmt.Errorf("phase %s", p.GetStatus().GetPhase())
		}
		return nil
	})

	c = ctr("main", "run")
	c.Image = "example.com/fail-start:v1"
	tc.create(t, testPod("nostart", "w1", c))
	tc.waitPod(t, "nostart", 20*time.Second, "CreateContainerError", func(p *pb.Pod) error {
		if w := containerStatusOf(p, "main").GetState().GetWaiting(); w.GetReason() != "CreateContainerError" || !strings.Contains(w.GetMessage(), "no such binary") {
			return fmt.Errorf("waiting %v", w)
		}
		return nil
	})

	// Env from a ConfigMap that does not exist yet waits; once it exists
	// the container starts with the values resolved.
	c = ctr("main", "run")
	c.EnvFrom = []*pb.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &pb.ConfigMapEnvSource{Name: "settings"}}}
	c.Env = []*pb.EnvVar{
		{Name: "LITERAL", Value: "x"},
		{Name: "FROM_KEY", ValueFrom: &pb.EnvVarSource{ConfigMapKeyRef: &pb.ConfigMapKeySelector{Name: "settings", Key: "color"}}},
		{Name: "SECRET", ValueFrom: &pb.EnvVarSource{SecretKeyRef: &pb.SecretKeySelector{Name: "creds", Key: "password"}}},
		{Name: "POD_NAME", ValueFrom: &pb.EnvVarSource{FieldRef: &pb.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "NODE", ValueFrom: &pb.EnvVarSource{FieldRef: &pb.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "MEM", ValueFrom: &pb.EnvVarSource{ResourceFieldRef: &pb.ResourceFieldSelector{Resource: "limits.memory", Divisor: "1Mi"}}},
		{Name: "OPTIONAL", ValueFrom: &pb.EnvVarSource{ConfigMapKeyRef: &pb.ConfigMapKeySelector{Name: "nope", Key: "k", Optional: gproto.Bool(true)}}},
	}
	c.Resources = &pb.ResourceRequirements{Limits: map[string]string{"memory": "64Mi"}}
	tc.create(t, testPod("config", "w1", c))
	tc.waitPod(t, "config", 20*time.Second, "CreateContainerConfigError", func(p *pb.Pod) error {
		if w := containerStatusOf(p, "main").GetState().GetWaiting(); w.GetReason() != "CreateContainerConfigError" {
			return fmt.Errorf("waiting %v", w)
		}
		return nil
	})
	tc.create(t, pb.Wrap(&pb.ConfigMap{ApiVersion: "v1", Kind: "ConfigMap", Metadata: &pb.ObjectMeta{Name: "settings", Namespace: "default"},
		Data: map[string]string{"color": "blue", "size": "$(NOT_EXPANDED)"}}))
	tc.create(t, pb.Wrap(&pb.Secret{ApiVersion: "v1", Kind: "Secret", Metadata: &pb.ObjectMeta{Name: "creds", Namespace: "default"},
		Data: map[string][]byte{"password": []byte("s3cret")}}))
	tc.waitPod(t, "config", 30*time.Second, "running", phaseIs("Running"))
	got := rt.lastEnv()
	for k, v := range map[string]string{
		"CM_color": "blue", "CM_size": "$$(NOT_EXPANDED)", "LITERAL": "x", "FROM_KEY": "blue", "SECRET": "s3cret",
		"POD_NAME": "config", "NODE": "w1", "MEM": "64",
	} {
		if got[k] != v {
			t.Errorf("env %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if _, ok := got["OPTIONAL"]; ok {
		t.Errorf("optional missing key set: %v", got)
	}
}

// TestReadoptionFake restarts the agent over the same runtime and data dir:
// the running container is adopted (no new start), and a pod deleted while
// the agent was down is stopped and removed.
func TestReadoptionFake(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, clusterOptions{})
	rt := newFakeRuntime()
	dir := t.TempDir()
	opts := []agentOptions{withFakes(rt, newFakeProber()), func(c *Config) { c.DataDir = dir }}
	a := tc.startAgent(t, "w1", opts...)
	tc.create(t, testPod("keep", "w1", ctr("main", "run")))
	tc.create(t, testPod("drop", "w1", ctr("main", "run")))
	tc.waitPod(t, "keep", 20*time.Second, "running", phaseIs("Running"))
	tc.waitPod(t, "drop", 20*time.Second, "running", phaseIs("Running"))
	before := containerStatusOf(must(tc.pod(t, "keep")), "main").GetContainerId()
	a.stop(t)

	// While the worker is down, "drop" is force-deleted.
	tc.deletePod(t, "drop", gproto.Int64(0))
	tc.waitPodGone(t, "drop", 10*time.Second)

	tc.startAgent(t, "w1", opts...)
	tc.waitNodeReady(t, "w1", "True", 20*time.Second)
	eventually(t, 20*time.Second, "orphan removed", func() error {
		cs, _ := rt.List()
		for _, c := range cs {
			if c.Labels[labelPodName] == "drop" {
				return fmt.Errorf("container of deleted pod still there (%s)", c.State)
			}
		}
		if sbs, _ := rt.ListSandboxes(); len(sbs) != 1 {
			return fmt.Errorf("%d sandboxes", len(sbs))
		}
		return nil
	})
	p := must(tc.pod(t, "keep"))
	cs := containerStatusOf(p, "main")
	if cs.GetContainerId() != before || cs.GetRestartCount() != 0 || cs.GetState().GetRunning() == nil {
		t.Errorf("after restart: %v (was %s)", cs, before)
	}
	if n := rt.startsOf("main"); n != 2 {
		t.Errorf("%d starts, want 2: the restarted worker started a duplicate", n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
