package worker

import (
	"context"
	"reflect"
	"testing"
	"time"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

func running() *wrt.ContainerStatus {
	return &wrt.ContainerStatus{State: wrt.StateRunning, StartedAt: time.Unix(1000, 0)}
}

func exited(code int, reason string) *wrt.ContainerStatus {
	return &wrt.ContainerStatus{State: wrt.StateExited, ExitCode: code, Reason: reason, StartedAt: time.Unix(1000, 0), FinishedAt: time.Unix(1010, 0)}
}

func TestPodPhaseAndConditions(t *testing.T) {
	now := time.Unix(2000, 0)
	spec := func(policy string, names ...string) *pb.Pod {
		p := &pb.Pod{Metadata: &pb.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &pb.PodSpec{RestartPolicy: policy}}
		for _, n := range names {
			p.Spec.Containers = append(p.Spec.Containers, &pb.Container{Name: n, Image: "img"})
		}
		return p
	}
	for _, tt := range []struct {
		name      string
		pod       *pb.Pod
		app       []ctrView
		initDone  bool
		phase     string
		ready     string
		waitingAs string // first container's waiting reason
	}{
		{"not started", spec("Always", "a"), []ctrView{{name: "a"}}, true, "Pending", "False", "ContainerCreating"},
		{"running, ready", spec("Always", "a"), []ctrView{{name: "a", cur: running(), ready: true, started: true}}, true, "Running", "True", ""},
		{"running, not ready", spec("Always", "a"), []ctrView{{name: "a", cur: running(), started: true}}, true, "Running", "False", ""},
		{"one of two not started", spec("Always", "a", "b"), []ctrView{{name: "a", cur: running(), ready: true}, {name: "b"}}, true, "Pending", "False", ""},
		{"never, succeeded", spec("Never", "a"), []ctrView{{name: "a", cur: exited(0, "Completed")}}, true, "Succeeded", "False", ""},
		{"never, failed", spec("Never", "a", "b"), []ctrView{{name: "a", cur: exited(0, "Completed")}, {name: "b", cur: exited(2, "Error")}}, true, "Failed", "False", ""},
		{"onfailure, restarting", spec("OnFailure", "a"), []ctrView{{name: "a", cur: exited(1, "Error"), waitReason: "CrashLoopBackOff"}}, true, "Running", "False", "CrashLoopBackOff"},
		{"onfailure, succeeded", spec("OnFailure", "a"), []ctrView{{name: "a", cur: exited(0, "Completed")}}, true, "Succeeded", "False", ""},
		{"always, exited between restarts", spec("Always", "a"), []ctrView{{name: "a", cur: exited(0, "Completed")}}, true, "Running", "False", ""},
		{"initializing", spec("Always", "a"), []ctrView{{name: "a"}}, false, "Pending", "False", "PodInitializing"},
		{"image pull failing", spec("Always", "a"), []ctrView{{name: "a", waitReason: "ErrImagePull", waitMessage: "no"}}, true, "Pending", "False", "ErrImagePull"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := statusInput{pod: tt.pod, app: tt.app, initDone: tt.initDone, hostIP: "10.0.0.1", now: now, startTime: now}
			if !tt.initDone {
				tt.pod.Spec.InitContainers = []*pb.Container{{Name: "init", Image: "img"}}
				in.init = []ctrView{{name: "init", cur: running()}}
			}
			st := buildPodStatus(in)
			if st.GetPhase() != tt.phase {
				t.Errorf("phase %s, want %s", st.GetPhase(), tt.phase)
			}
			if c := podCondition(st, "Ready"); c.GetStatus() != tt.ready {
				t.Errorf("Ready %v, want %s", c, tt.ready)
			}
			if c := podCondition(st, "PodScheduled"); c.GetStatus() != "True" {
				t.Errorf("PodScheduled %v", c)
			}
			wantInit := "True"
			if !tt.initDone {
				wantInit = "False"
			}
			if c := podCondition(st, "Initialized"); c.GetStatus() != wantInit {
				t.Errorf("Initialized %v, want %s", c, wantInit)
			}
			cs := st.GetContainerStatuses()[0]
			if got := cs.GetState().GetWaiting().GetReason(); got != tt.waitingAs {
				t.Errorf("waiting reason %q, want %q", got, tt.waitingAs)
			}
			if st.GetHostIp() != "10.0.0.1" || st.GetPodIp() != "" || st.GetStartTime() == nil {
				t.Errorf("status %v", st)
			}
		})
	}
}

func TestStatusKeepsTransitionTimes(t *testing.T) {
	pod := &pb.Pod{Metadata: &pb.ObjectMeta{Name: "p"}, Spec: &pb.PodSpec{HostNetwork: true, Containers: []*pb.Container{{Name: "a"}}},
		Status: &pb.PodStatus{Conditions: []*pb.PodCondition{{Type: "DisruptionTarget", Status: "True"}}}}
	app := []ctrView{{name: "a", cur: running(), ready: true, started: true, curID: "abc",
		prev: exited(1, "Error"), prevID: "old", restartCount: 1}}
	t0 := time.Unix(5000, 0)
	first := buildPodStatus(statusInput{pod: pod, app: app, initDone: true, hostIP: "10.0.0.2", now: t0})
	second := buildPodStatus(statusInput{pod: pod, app: app, initDone: true, hostIP: "10.0.0.2", now: t0.Add(time.Hour), prev: first})
	for _, c := range second.GetConditions() {
		if c.GetType() == "DisruptionTarget" {
			continue
		}
		if !c.GetLastTransitionTime().AsTime().Equal(t0) {
			t.Errorf("%s moved to %v", c.GetType(), c.GetLastTransitionTime().AsTime())
		}
	}
	if podCondition(second, "DisruptionTarget") == nil {
		t.Errorf("a condition the worker does not own was dropped")
	}
	if second.GetPodIp() != "10.0.0.2" || len(second.GetPodIps()) != 1 {
		t.Errorf("hostNetwork pod IP = %q", second.GetPodIp())
	}
	cs := second.GetContainerStatuses()[0]
	if cs.GetContainerId() != "libcontainer://abc" || cs.GetRestartCount() != 1 || cs.GetLastState().GetTerminated().GetContainerId() != "libcontainer://old" ||
		!cs.GetState().GetRunning().GetStartedAt().AsTime().Equal(time.Unix(1000, 0)) || !cs.GetStarted() {
		t.Errorf("container status %v", cs)
	}
}

func TestQOSClass(t *testing.T) {
	c := func(req, lim map[string]string) *pb.Container {
		return &pb.Container{Resources: &pb.ResourceRequirements{Requests: req, Limits: lim}}
	}
	for _, tt := range []struct {
		name string
		cs   []*pb.Container
		want string
	}{
		{"none", []*pb.Container{{}}, "BestEffort"},
		{"limits only", []*pb.Container{c(nil, map[string]string{"cpu": "1", "memory": "1Gi"})}, "Guaranteed"},
		{"equal", []*pb.Container{c(map[string]string{"cpu": "1000m", "memory": "1Gi"}, map[string]string{"cpu": "1", "memory": "1Gi"})}, "Guaranteed"},
		{"request below limit", []*pb.Container{c(map[string]string{"cpu": "500m"}, map[string]string{"cpu": "1", "memory": "1Gi"})}, "Burstable"},
		{"one without", []*pb.Container{c(nil, map[string]string{"cpu": "1", "memory": "1Gi"}), {}}, "Burstable"},
	} {
		if got := qosClass(&pb.PodSpec{Containers: tt.cs}); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestShouldRestart(t *testing.T) {
	for _, tt := range []struct {
		policy string
		code   int
		init   bool
		want   bool
	}{
		{"Always", 0, false, true}, {"Always", 1, false, true},
		{"OnFailure", 0, false, false}, {"OnFailure", 2, false, true},
		{"Never", 0, false, false}, {"Never", 1, false, false},
		{"Always", 0, true, false}, {"Always", 1, true, true}, {"Never", 1, true, false}, {"OnFailure", 1, true, true},
	} {
		if got := shouldRestart(tt.policy, tt.code, tt.init); got != tt.want {
			t.Errorf("shouldRestart(%s, %d, init=%v) = %v", tt.policy, tt.code, tt.init, got)
		}
	}
}

func TestCrashLoopBackoff(t *testing.T) {
	b := backoffPolicy{base: 10 * time.Second, max: 5 * time.Minute, reset: 10 * time.Minute}
	t0 := time.Unix(10000, 0)
	// A container that keeps failing after a second: the first restart is
	// immediate, then 10s, 20s, 40s, ... up to 5m.
	cur := time.Duration(0)
	now := t0
	var waits []time.Duration
	for range 8 {
		started := now
		finished := started.Add(time.Second)
		at, next := b.restartAt(cur, started, finished, finished)
		waits = append(waits, at.Sub(finished))
		// Once the wait is over, the restart records the next backoff.
		if at.After(finished) {
			at2, next2 := b.restartAt(cur, started, finished, at)
			if !at2.Equal(at) {
				t.Fatalf("at the end of the backoff: restart at %v, want %v", at2, at)
			}
			next = next2
		}
		cur = next
		now = at
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("restart %d waited %v, want %v (all %v)", i, waits[i], want[i], waits)
		}
	}
	// Ten minutes of running resets it.
	at, next := b.restartAt(5*time.Minute, t0, t0.Add(10*time.Minute), t0.Add(10*time.Minute))
	if !at.Equal(t0.Add(10*time.Minute)) || next != 10*time.Second {
		t.Errorf("after 10 minutes running: at %v next %v", at, next)
	}
}

func TestPodConditionHelper(t *testing.T) {
	st := &pb.PodStatus{Conditions: []*pb.PodCondition{{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.Now()}}}
	if podCondition(st, "Ready") == nil || podCondition(st, "Initialized") != nil || podCondition(nil, "Ready") != nil {
		t.Error("podCondition")
	}
}

// TestSameRuntimeStatusFields fails when a field is added to the runtime's
// ContainerStatus that the status memo would not notice changing.
func TestSameRuntimeStatusFields(t *testing.T) {
	now := time.Now()
	base := wrt.ContainerStatus{
		ID: "c1", PodUID: "u1", Name: "app", Labels: map[string]string{"a": "1"}, Image: "img", ImageID: "sha",
		State: wrt.StateRunning, Pid: 10, ExitCode: 1, Signal: 2, Reason: "r", Message: "m",
		CreatedAt: now, StartedAt: now, FinishedAt: now, LogPath: "/l",
	}
	if cp := base; !sameRuntimeStatus(&base, &cp) {
		t.Fatal("a copy differs")
	}
	if cp := base; func() bool { cp.Labels = map[string]string{"a": "1"}; return !sameRuntimeStatus(&base, &cp) }() {
		t.Fatal("equal labels in another map differ")
	}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		cp := base
		v := reflect.ValueOf(&cp).Elem().Field(i)
		switch f.Type.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Map:
			v.Set(reflect.ValueOf(map[string]string{"a": "2"}))
		default:
			if f.Type != reflect.TypeOf(time.Time{}) {
				t.Fatalf("field %s of type %s: teach this test (and sameRuntimeStatus) about it", f.Name, f.Type)
			}
			v.Set(reflect.ValueOf(now.Add(time.Second)))
		}
		if sameRuntimeStatus(&base, &cp) {
			t.Errorf("a change of %s goes unnoticed", f.Name)
		}
	}
}

// TestStatusMemo: a sync that finds nothing changed reuses the status it
// computed last; anything the status is computed from makes a new one.
func TestStatusMemo(t *testing.T) {
	w, _ := runningPodWorker(t)
	ctx := context.Background()
	w.sync(ctx)
	pod, _ := w.snapshot()
	first := w.lastWritten
	w.sync(ctx)
	if w.lastWritten != first {
		t.Fatal("an unchanged pod's status was computed again")
	}
	w.mu.Lock()
	w.ctrs["app"].restartCount = 5
	w.mu.Unlock()
	st := w.status(pod, true, false, time.Now())
	if st == first || st.GetContainerStatuses()[0].GetRestartCount() != 5 {
		t.Fatalf("after a restart count change: status %v, want a new one with 5 restarts", st.GetContainerStatuses()[0])
	}
	w.lastWritten = st
	if again := w.status(pod, true, false, time.Now()); again != st {
		t.Fatal("the same input gave a new status")
	}
	// A status written by someone else is what the next one starts from.
	w.lastWritten = gproto.Clone(st).(*pb.PodStatus)
	if again := w.status(pod, true, false, time.Now()); again == st {
		t.Fatal("a status computed from another previous status was reused")
	}
	// So is the pod.
	w.lastWritten = w.memo.out
	newPod := gproto.Clone(pod).(*pb.Pod)
	newPod.Status.HostIp = "x"
	if again := w.status(newPod, true, false, time.Now()); again == w.lastWritten {
		t.Fatal("a status computed from another pod was reused")
	}
}
