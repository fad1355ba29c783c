package worker

import (
	"fmt"
	"maps"
	"reflect"
	"sort"
	"strings"
	"time"

	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/api/resource"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// This file turns what a pod worker knows about its pod's containers into
// the pod's status. It does no I/O.

// Waiting reasons, as the kubelet reports them.
const (
	reasonContainerCreating     = "ContainerCreating"
	reasonPodInitializing       = "PodInitializing"
	reasonCrashLoopBackOff      = "CrashLoopBackOff"
	reasonErrImagePull          = "ErrImagePull"
	reasonImagePullBackOff      = "ImagePullBackOff"
	reasonErrImageNeverPull     = "ErrImageNeverPull"
	reasonCreateConfigError     = "CreateContainerConfigError"
	reasonCreateContainerErr    = "CreateContainerError"
	reasonRunContainerError     = "RunContainerError"
	reasonContainersNotReady    = "ContainersNotReady"
	reasonContainersNotInit     = "ContainersNotInitialized"
	reasonPodCompleted          = "PodCompleted"
	containerIDPrefix           = "libcontainer://"
	conditionPodScheduled       = "PodScheduled"
	conditionInitialized        = "Initialized"
	conditionContainersReady    = "ContainersReady"
	conditionReady              = "Ready"
	restartAlways               = "Always"
	restartOnFailure            = "OnFailure"
	restartNever                = "Never"
	phasePending, phaseRunning  = "Pending", "Running"
	phaseSucceeded, phaseFailed = "Succeeded", "Failed"
)

// ctrView is one container as the status sees it.
type ctrView struct {
	name         string
	image        string
	restartCount int32
	// cur is the latest instance (nil before the first start), prev the
	// one before it; they point at curSt and prevSt.
	cur, prev       *wrt.ContainerStatus
	curSt, prevSt   wrt.ContainerStatus
	hasCur, hasPrev bool
	curID, prevID   string
	// waitReason is set when the next instance cannot start yet (crash
	// loop backoff, image pull failure, bad config), with waitMessage.
	waitReason, waitMessage string
	ready, started          bool
}

// sameView reports whether a and b give the same container status.
func sameView(a, b ctrView) bool {
	return a.name == b.name && a.image == b.image && a.restartCount == b.restartCount &&
		a.curID == b.curID && a.prevID == b.prevID && a.waitReason == b.waitReason && a.waitMessage == b.waitMessage &&
		a.ready == b.ready && a.started == b.started &&
		(a.cur == nil) == (b.cur == nil) && (a.prev == nil) == (b.prev == nil) &&
		(a.cur == nil || sameRuntimeStatus(a.cur, b.cur)) && (a.prev == nil || sameRuntimeStatus(a.prev, b.prev))
}

// sameRuntimeStatus compares every field (TestSameRuntimeStatusFields
// checks that none is left out).
func sameRuntimeStatus(a, b *wrt.ContainerStatus) bool {
	return a.ID == b.ID && a.PodUID == b.PodUID && a.Name == b.Name && sameLabels(a.Labels, b.Labels) &&
		a.Image == b.Image && a.ImageID == b.ImageID && a.State == b.State && a.Pid == b.Pid &&
		a.ExitCode == b.ExitCode && a.Signal == b.Signal && a.OOMKilled == b.OOMKilled &&
		a.Reason == b.Reason && a.Message == b.Message && a.CreatedAt.Equal(b.CreatedAt) &&
		a.StartedAt.Equal(b.StartedAt) && a.FinishedAt.Equal(b.FinishedAt) && a.LogPath == b.LogPath
}

// sameLabels is maps.Equal with a shortcut for the usual case: the same map
// (the runtime's copy of the container's labels, read again).
func sameLabels(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() || maps.Equal(a, b)
}

// statusInput is everything the pod's status is computed from.
type statusInput struct {
	pod       *pb.Pod
	init, app []ctrView
	// initDone: every init container succeeded.
	initDone bool
	// initFailed: an init container failed and will not be restarted.
	initFailed bool
	hostIP     string
	// podIP is the pod's address on the pod network ("" for none).
	podIP     string
	startTime time.Time
	now       time.Time
	// prev is the status last written (or read from the API), whose
	// conditions' transition times are kept when their status holds.
	prev *pb.PodStatus
}

// buildPodStatus computes a pod's status the way the kubelet does.
func buildPodStatus(in statusInput) *pb.PodStatus {
	spec := in.pod.GetSpec()
	st := &pb.PodStatus{HostIp: in.hostIP, QosClass: qosClass(spec)}
	switch {
	case in.hostIP != "" && spec.GetHostNetwork():
		st.PodIp = in.hostIP
		st.PodIps = []*pb.PodIP{{Ip: in.hostIP}}
	case in.podIP != "" && !spec.GetHostNetwork():
		st.PodIp = in.podIP
		st.PodIps = []*pb.PodIP{{Ip: in.podIP}}
	}
	if !in.startTime.IsZero() {
		st.StartTime = timestamppb.New(in.startTime.Truncate(time.Second))
	}
	for i := range in.init {
		st.InitContainerStatuses = append(st.InitContainerStatuses, containerStatus(&in.init[i], reasonPodInitializing, true))
	}
	defaultWait := reasonPodInitializing
	if in.initDone {
		defaultWait = reasonContainerCreating
	}
	for i := range in.app {
		st.ContainerStatuses = append(st.ContainerStatuses, containerStatus(&in.app[i], defaultWait, false))
	}
	if len(in.init) == 0 {
		// No init containers: "waiting" means being created.
		for _, cs := range st.ContainerStatuses {
			if w := cs.GetState().GetWaiting(); w != nil && w.Reason == reasonPodInitializing {
				w.Reason = reasonContainerCreating
			}
		}
	}
	st.Phase = podPhase(spec, st.ContainerStatuses, !in.initDone, in.initFailed)

	ts := timestamppb.New(in.now.Truncate(time.Second))
	cond := func(typ, status, reason, msg string) *pb.PodCondition {
		c := &pb.PodCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: ts}
		if old := podCondition(in.prev, typ); old != nil && old.GetStatus() == status && old.GetLastTransitionTime() != nil {
			c.LastTransitionTime = old.GetLastTransitionTime()
		}
		return c
	}
	terminal := st.Phase == phaseSucceeded || st.Phase == phaseFailed
	var initC *pb.PodCondition
	switch {
	case in.initDone || len(in.init) == 0:
		initC = cond(conditionInitialized, "True", "", "")
	default:
		var pending []string
		for _, c := range in.init {
			if c.cur == nil || c.cur.State != wrt.StateExited || c.cur.ExitCode != 0 {
				pending = append(pending, c.name)
			}
		}
		initC = cond(conditionInitialized, "False", reasonContainersNotInit,
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(pending, " ")))
	}
	var notReady []string
	for _, c := range in.app {
		if !c.ready {
			notReady = append(notReady, c.name)
		}
	}
	var ready, crReady *pb.PodCondition
	switch {
	case terminal:
		crReady = cond(conditionContainersReady, "False", reasonPodCompleted, "")
		ready = cond(conditionReady, "False", reasonPodCompleted, "")
	case len(notReady) > 0:
		msg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
		crReady = cond(conditionContainersReady, "False", reasonContainersNotReady, msg)
		ready = cond(conditionReady, "False", reasonContainersNotReady, msg)
	default:
		crReady = cond(conditionContainersReady, "True", "", "")
		ready = cond(conditionReady, "True", "", "")
	}
	scheduled := cond(conditionPodScheduled, "True", "", "")
	st.Conditions = []*pb.PodCondition{initC, ready, crReady, scheduled}
	// Conditions other parts of the system own (set by someone else) are
	// kept as they are.
	for _, c := range in.pod.GetStatus().GetConditions() {
		switch c.GetType() {
		case conditionPodScheduled, conditionInitialized, conditionContainersReady, conditionReady:
		default:
			st.Conditions = append(st.Conditions, gproto.Clone(c).(*pb.PodCondition))
		}
	}
	return st
}

func podCondition(st *pb.PodStatus, typ string) *pb.PodCondition {
	for _, c := range st.GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// containerStatus renders one container. defaultWait is the waiting
// reason of a container that has never started.
func containerStatus(c *ctrView, defaultWait string, init bool) *pb.ContainerStatus {
	cs := &pb.ContainerStatus{Name: c.name, Image: c.image, RestartCount: c.restartCount, Ready: c.ready}
	started := c.started
	if !init {
		cs.Started = &started
	}
	if c.cur != nil {
		cs.ContainerId = containerIDPrefix + c.curID
		cs.ImageId = c.cur.ImageID
		if c.cur.Image != "" {
			cs.Image = c.cur.Image
		}
	}
	last := func(s *wrt.ContainerStatus, id string) *pb.ContainerState {
		if s == nil || s.State != wrt.StateExited {
			return &pb.ContainerState{}
		}
		return &pb.ContainerState{Terminated: terminated(s, id)}
	}
	switch {
	case c.cur == nil:
		reason, msg := defaultWait, ""
		if c.waitReason != "" {
			reason, msg = c.waitReason, c.waitMessage
		}
		cs.State = &pb.ContainerState{Waiting: &pb.ContainerStateWaiting{Reason: reason, Message: msg}}
		cs.LastState = last(c.prev, c.prevID)
	case c.cur.State == wrt.StateExited && c.waitReason != "":
		cs.State = &pb.ContainerState{Waiting: &pb.ContainerStateWaiting{Reason: c.waitReason, Message: c.waitMessage}}
		cs.LastState = last(c.cur, c.curID)
	case c.cur.State == wrt.StateExited:
		cs.State = &pb.ContainerState{Terminated: terminated(c.cur, c.curID)}
		cs.LastState = last(c.prev, c.prevID)
	case c.cur.State == wrt.StateRunning:
		cs.State = &pb.ContainerState{Running: &pb.ContainerStateRunning{StartedAt: stamp(c.cur.StartedAt)}}
		cs.LastState = last(c.prev, c.prevID)
	default: // created, not yet running
		cs.State = &pb.ContainerState{Waiting: &pb.ContainerStateWaiting{Reason: reasonContainerCreating}}
		cs.LastState = last(c.prev, c.prevID)
	}
	return cs
}

func terminated(s *wrt.ContainerStatus, id string) *pb.ContainerStateTerminated {
	return &pb.ContainerStateTerminated{
		ExitCode:    int32(s.ExitCode),
		Signal:      int32(s.Signal),
		Reason:      s.Reason,
		Message:     s.Message,
		StartedAt:   stamp(s.StartedAt),
		FinishedAt:  stamp(s.FinishedAt),
		ContainerId: containerIDPrefix + id,
	}
}

func stamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t.Truncate(time.Second))
}

// podPhase is the kubelet's getPhase.
func podPhase(spec *pb.PodSpec, statuses []*pb.ContainerStatus, initializing, initFailed bool) string {
	if initFailed {
		return phaseFailed
	}
	if initializing {
		return phasePending
	}
	var running, waiting, stopped, succeeded int
	for _, cs := range statuses {
		s := cs.GetState()
		switch {
		case s.GetRunning() != nil:
			running++
		case s.GetTerminated() != nil:
			stopped++
			if s.GetTerminated().GetExitCode() == 0 {
				succeeded++
			}
		case s.GetWaiting() != nil:
			if cs.GetLastState().GetTerminated() != nil {
				stopped++
			} else {
				waiting++
			}
		}
	}
	switch {
	case waiting > 0:
		return phasePending
	case running > 0:
		return phaseRunning
	case stopped > 0:
		switch spec.GetRestartPolicy() {
		case restartNever:
			if stopped == succeeded {
				return phaseSucceeded
			}
			return phaseFailed
		case restartOnFailure:
			if stopped == succeeded {
				return phaseSucceeded
			}
			return phaseRunning
		default:
			return phaseRunning
		}
	}
	return phasePending
}

// qosClass is Kubernetes' QoS class of a pod spec: Guaranteed when every
// container sets cpu and memory limits equal to its requests (requests
// default to limits), BestEffort when none sets any, else Burstable.
func qosClass(spec *pb.PodSpec) string {
	any, all := false, true
	for _, c := range append(append([]*pb.Container{}, spec.GetInitContainers()...), spec.GetContainers()...) {
		r := c.GetResources()
		for _, res := range []string{"cpu", "memory"} {
			lim, hasLim := r.GetLimits()[res]
			req, hasReq := r.GetRequests()[res]
			if hasLim || hasReq {
				any = true
			}
			if !hasLim {
				all = false
				continue
			}
			if hasReq && !sameQuantity(req, lim) {
				all = false
			}
		}
	}
	switch {
	case !any:
		return "BestEffort"
	case all:
		return "Guaranteed"
	}
	return "Burstable"
}

func sameQuantity(a, b string) bool {
	qa, err1 := resource.ParseQuantity(a)
	qb, err2 := resource.ParseQuantity(b)
	return err1 == nil && err2 == nil && qa.Cmp(qb) == 0
}

// shouldRestart says whether an exited container is restarted under the
// pod's restart policy. Init containers are restarted until they succeed
// unless the policy is Never.
func shouldRestart(policy string, exitCode int, init bool) bool {
	if init {
		return exitCode != 0 && policy != restartNever
	}
	switch policy {
	case restartNever:
		return false
	case restartOnFailure:
		return exitCode != 0
	}
	return true
}

// backoffPolicy is CrashLoopBackOff: the first restart is immediate, then
// each waits base, doubling up to max; a container that ran for reset
// starts over.
type backoffPolicy struct{ base, max, reset time.Duration }

// restartAt decides about a container that finished at finishedAt after
// running since startedAt, with cur the backoff used for its last restart
// (0: none). It returns when it may start (at or before now: at once) and
// the backoff to record when it does.
func (b backoffPolicy) restartAt(cur time.Duration, startedAt, finishedAt, now time.Time) (at time.Time, next time.Duration) {
	if !startedAt.IsZero() && finishedAt.Sub(startedAt) >= b.reset {
		cur = 0
	}
	if cur > 0 && now.Before(finishedAt.Add(cur)) {
		return finishedAt.Add(cur), cur
	}
	if cur == 0 {
		return now, b.base
	}
	return now, min(2*cur, b.max)
}

// next is the backoff after cur for repeated start failures.
func (b backoffPolicy) next(cur time.Duration) time.Duration {
	if cur == 0 {
		return b.base
	}
	return min(2*cur, b.max)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
