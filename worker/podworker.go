package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// A pod worker is the one goroutine that acts for one pod (by UID), as in
// the kubelet. It is level-triggered: every sync looks at the latest pod
// from the API and at what actually runs, and does the next step (create
// the sandbox, start or restart a container, kill one whose liveness probe
// failed, stop everything when the pod is deleted), then writes the pod's
// status if it changed. It wakes on pod updates, on probe results, when the
// node's relist finds a container's state changed (podManager.relist), at
// the end of a backoff, and every ResyncInterval.

// ctrInstance is one run of a container.
type ctrInstance struct {
	id      string
	attempt int32
	st      wrt.ContainerStatus
}

// ctrState is a container of the pod across its restarts.
type ctrState struct {
	name string
	init bool
	// cur is the latest instance (running or exited), prev the one before
	// it (kept for `logs --previous`); older ones are removed.
	cur, prev    *ctrInstance
	restartCount int32
	// backoff is the crash-loop delay used for the last restart; retryAt
	// is when the next start may happen, waitReason why it waits.
	backoff                 time.Duration
	retryAt                 time.Time
	waitReason, waitMessage string
	probes                  *containerProbes
}

type podWorker struct {
	a   *Agent
	uid string
	log *slog.Logger

	wake chan struct{}
	done chan struct{}

	mu      sync.Mutex
	pod     *pb.Pod // latest known
	deleted bool    // gone from the API
	ctrs    map[string]*ctrState
	sandbox *wrt.Sandbox

	// Owned by the worker's goroutine.
	rec  *podRecord
	vols map[string]volume
	// podIP is the pod's address on the pod network (nil before it is
	// attached, and for hostNetwork pods).
	podIP net.IP
	// setup is how long the pod's sandbox, network, /etc files and volumes
	// took to set up, as logged with its containers' starts.
	setup time.Duration
	// etc is the pod's /etc files (hosts, resolv.conf) by the path they
	// are mounted on; nil until written.
	etc map[string]string
	// lastWritten is the status last handed to sw (written, or being
	// written), or found in the API.
	lastWritten *pb.PodStatus
	// memo is the input and result of the last status computed: most
	// syncs (every echo of our own write, every ResyncInterval) find nothing
	// changed, and on a node with many pods computing it again is most of
	// the agent's CPU.
	memo statusMemo
	sw   statusWriter
	// saved is a copy of the record as last saved (nil: not saved by this
	// process yet).
	saved        *podRecord
	strayChecked bool // removeExtra ran
	terminal     bool // the pod reached Succeeded or Failed
	stopped      bool // containers stopped for deletion
	cleaned      bool // containers, sandbox and volumes removed
}

func newPodWorker(a *Agent, uid string) *podWorker {
	w := &podWorker{
		a: a, uid: uid, log: a.log.With("pod_uid", uid),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		ctrs: map[string]*ctrState{},
		// Stray instances can only be left by an earlier worker process,
		// whose containers come through adopt: a pod first seen by this
		// process has none to look for (and looking means reading every
		// container of the node).
		strayChecked: true,
	}
	w.sw.w = w
	return w
}

func (w *podWorker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// update gives the worker the latest pod; deleted means it is gone from the
// API (pod is then its last known state, or nil).
func (w *podWorker) update(pod *pb.Pod, deleted bool) {
	w.mu.Lock()
	if pod != nil {
		w.pod = pod
	}
	if deleted {
		w.deleted = true
	}
	w.mu.Unlock()
	w.notify()
}

func (w *podWorker) snapshot() (*pb.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.deleted
}

// run syncs until the pod is gone and cleaned up, or ctx ends.
func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	defer w.sw.drop()
	defer func() {
		for _, cs := range w.ctrs {
			cs.probes.stop()
		}
	}()
	// One timer for the worker's life: a new timer per sync was most of
	// what a steady pod's syncs allocated. (Since Go 1.23 Reset needs no
	// Stop or drain first.)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next, finished := w.sync(ctx)
		if finished || ctx.Err() != nil {
			return
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

func (w *podWorker) sync(ctx context.Context) (time.Duration, bool) {
	pod, deleted := w.snapshot()
	if deleted || pod == nil || pod.GetMetadata().GetDeletionTimestamp() != nil {
		return w.terminate(ctx)
	}
	return w.syncRunning(ctx, pod)
}

func (w *podWorker) ctr(name string, init bool) *ctrState {
	w.mu.Lock()
	defer w.mu.Unlock()
	cs := w.ctrs[name]
	if cs == nil {
		cs = &ctrState{name: name, init: init}
		w.ctrs[name] = cs
	}
	cs.init = init
	return cs
}

// changed reports whether the runtime holds a container instance of the
// pod in another state than the last refresh saw, or cannot tell.
func (w *podWorker) changed() bool {
	changed := false
	w.eachLive(func(_ *ctrState, in *ctrInstance) bool {
		st, err := w.a.rt.Status(in.id)
		changed = err != nil || st.State != in.st.State
		return !changed
	})
	return changed
}

// refresh reads the state of every container instance from the runtime.
func (w *podWorker) refresh() {
	w.eachLive(func(cs *ctrState, in *ctrInstance) bool {
		st, err := w.a.rt.Status(in.id)
		switch {
		case errors.Is(err, wrt.ErrNotFound):
			// Removed behind our back: report it as gone.
			in.st.State, in.st.ExitCode, in.st.Reason = wrt.StateExited, 137, wrt.ReasonUnknown
			in.st.Message = "the container disappeared"
			in.st.FinishedAt = time.Now()
		case err != nil:
			w.log.Warn("container status", "container", cs.name, "id", in.id, "err", err)
		default:
			in.st = st
		}
		return true
	})
}

// eachLive calls fn, under w.mu, for every container instance not known to
// have exited, until fn returns false.
func (w *podWorker) eachLive(fn func(cs *ctrState, in *ctrInstance) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, cs := range w.ctrs {
		for _, in := range [...]*ctrInstance{cs.cur, cs.prev} {
			if in != nil && in.st.State != wrt.StateExited && !fn(cs, in) {
				return
			}
		}
	}
}

func (w *podWorker) syncRunning(ctx context.Context, pod *pb.Pod) (time.Duration, bool) {
	a := w.a
	now := time.Now()
	spec := pod.GetSpec()
	if w.rec == nil {
		w.rec = &podRecord{UID: w.uid, Containers: map[string]*containerRecord{}, StartTime: now}
		if st := pod.GetStatus().GetStartTime(); st != nil {
			w.rec.StartTime = st.AsTime()
		}
	}
	w.rec.Namespace, w.rec.Name = pod.GetMetadata().GetNamespace(), pod.GetMetadata().GetName()
	w.rec.Grace = terminationGrace(pod)
	w.persist()

	if w.terminal {
		w.writeStatus(ctx, pod, w.status(pod, true, false, now))
		return time.Minute, false
	}

	needNet := a.needsNetwork(pod)
	netw := a.network()
	if needNet && w.podIP == nil && netw == nil {
		// As the kubelet: no sandbox and no container before the network
		// is ready. An adopted pod keeps running meanwhile and its status
		// is left alone.
		if w.sandbox == nil {
			w.waitAll(pod, reasonContainerCreating, netNotReady)
			w.writeStatus(ctx, pod, w.status(pod, false, false, now))
		}
		return 200 * time.Millisecond, false
	}

	// How long the pod's sandbox, network, /etc files and volumes take,
	// for the "started container" lines.
	setupStart, fresh := time.Now(), w.sandbox == nil || w.etc == nil || w.vols == nil
	if w.sandbox == nil {
		sb, err := a.rt.GetSandbox(w.uid)
		if errors.Is(err, wrt.ErrSandboxNotFound) {
			hostname := spec.GetHostname()
			if hostname == "" {
				hostname = pod.GetMetadata().GetName()
			}
			if len(hostname) > 63 {
				hostname = hostname[:63]
			}
			sb, err = a.rt.CreateSandbox(ctx, w.uid, wrt.SandboxOptions{HostNetwork: spec.GetHostNetwork(), Hostname: hostname})
		}
		if err != nil {
			w.log.Warn("create pod sandbox", "err", err)
			w.event(pod, eventWarning, eventFailedSandbox, "Failed to create pod sandbox: %v", err)
			w.waitAll(pod, reasonContainerCreating, fmt.Sprintf("create pod sandbox: %v", err))
			w.writeStatus(ctx, pod, w.status(pod, false, false, now))
			return 2 * time.Second, false
		}
		w.mu.Lock()
		w.sandbox = sb
		w.mu.Unlock()
	}
	if needNet && w.podIP == nil {
		ip, err := netw.Attach(ctx, w.uid, w.sandbox.NetNSPath)
		if err != nil {
			w.log.Warn("attach the pod to the pod network", "err", err)
			w.event(pod, eventWarning, eventFailedSandbox, "Failed to create pod sandbox: set up the pod's network: %v", err)
			w.waitAll(pod, reasonContainerCreating, fmt.Sprintf("set up the pod's network: %v", err))
			w.writeStatus(ctx, pod, w.status(pod, false, false, now))
			return 2 * time.Second, false
		}
		w.podIP = ip
	}
	if a.cfg.Hollow && a.podNetworkOn() && !spec.GetHostNetwork() && w.podIP == nil {
		w.podIP = a.hollowIP(w.uid)
	}
	if w.etc == nil && !a.cfg.Hollow {
		var gw net.IP
		if netw != nil {
			gw = netw.Gateway()
		}
		files, err := a.writePodEtc(pod, w.sandbox.Hostname, w.podIP, gw)
		if err != nil {
			w.log.Warn("write the pod's /etc files", "err", err)
			w.event(pod, eventWarning, eventFailedSandbox, "Failed to create pod sandbox: %v", err)
			w.waitAll(pod, reasonContainerCreating, err.Error())
			w.writeStatus(ctx, pod, w.status(pod, false, false, now))
			return 2 * time.Second, false
		}
		if files == nil {
			files = map[string]string{}
		}
		w.etc = files
	}
	if w.vols == nil {
		if a.cfg.Hollow {
			w.vols = map[string]volume{}
		} else {
			vols, err := a.setupVolumes(ctx, pod)
			if err != nil {
				w.log.Warn("set up volumes", "err", err)
				w.event(pod, eventWarning, eventFailedMount, "Unable to set up volumes: %v", err)
				w.waitAll(pod, reasonContainerCreating, fmt.Sprintf("set up volumes: %v", err))
				w.writeStatus(ctx, pod, w.status(pod, false, false, now))
				return 2 * time.Second, false
			}
			w.vols = vols
		}
	}
	if fresh {
		w.setup += time.Since(setupStart)
	}

	w.refresh()
	if !w.strayChecked {
		w.removeExtra(ctx)
		w.strayChecked = true
	}
	if !w.lastWrittenOrAPI(pod) {
		// First status of the pod: show it accepted (Pending,
		// ContainerCreating) before a possibly long image pull, unless
		// its containers start within acceptedDelay.
		st := w.status(pod, false, false, now)
		w.lastWritten = st
		w.sw.submit(ctx, pod, st, acceptedDelay)
	}

	initDone, initFailed := true, false
initLoop:
	for _, c := range spec.GetInitContainers() {
		cs := w.ctr(c.GetName(), true)
		if cs.cur != nil && cs.cur.st.State == wrt.StateExited && cs.cur.st.ExitCode == 0 {
			continue
		}
		initDone = false
		switch {
		case cs.cur == nil:
			w.start(ctx, pod, c, cs)
		case cs.cur.st.State != wrt.StateExited:
			// Running: wait for it.
		case !shouldRestart(spec.GetRestartPolicy(), cs.cur.st.ExitCode, true):
			initFailed = true
		default:
			w.restart(ctx, pod, c, cs)
		}
		break initLoop
	}
	if initDone {
		for _, c := range spec.GetContainers() {
			cs := w.ctr(c.GetName(), false)
			if cs.cur != nil && cs.cur.st.State == wrt.StateRunning {
				if cs.probes == nil {
					cs.probes = startProbes(w.probeTarget(pod, c, cs.cur.id), a.prober, w.notify, w.probeFailed(pod))
				}
				if _, _, kill := cs.probes.results(); kill != nil {
					w.kill(ctx, pod, c, cs, kill)
				}
			}
			switch {
			case cs.cur == nil:
				w.start(ctx, pod, c, cs)
			case cs.cur.st.State != wrt.StateExited:
			case shouldRestart(spec.GetRestartPolicy(), cs.cur.st.ExitCode, false):
				w.restart(ctx, pod, c, cs)
			default:
				w.setWait(cs, "", "")
			}
		}
	}

	st := w.status(pod, initDone, initFailed, time.Now())
	if st.GetPhase() == phaseSucceeded || st.GetPhase() == phaseFailed {
		w.terminal = true
		for _, cs := range w.ctrs {
			cs.probes.stop()
			cs.probes = nil
		}
		w.log.Info("pod finished", "pod", podKey(pod), "phase", st.GetPhase())
	}
	w.writeStatus(ctx, pod, st)
	return w.nextSync(), false
}

// acceptedDelay is how long a pod's first status (Pending,
// ContainerCreating) waits to be replaced by a newer one before it is
// written: a pod whose containers start at once is written once, Running.
const acceptedDelay = 250 * time.Millisecond

// nextSync is when the worker must look again without being woken: at the
// end of a backoff, and every ResyncInterval.
func (w *podWorker) nextSync() time.Duration {
	next := w.a.cfg.ResyncInterval
	if w.terminal {
		return time.Minute
	}
	now := time.Now()
	for _, cs := range w.ctrs {
		if !cs.retryAt.IsZero() && cs.retryAt.After(now) {
			next = min(next, cs.retryAt.Sub(now))
		}
	}
	return max(next, 10*time.Millisecond)
}

// waitAll marks every container that has no instance as waiting.
func (w *podWorker) waitAll(pod *pb.Pod, reason, msg string) {
	for _, c := range allContainers(pod) {
		cs := w.ctr(c.GetName(), isInit(pod, c.GetName()))
		if cs.cur == nil {
			w.setWait(cs, reason, msg)
		}
	}
}

// setWait records why cs's next instance waits ("" when it does not).
// Other goroutines (logs, exec) read it under w.mu.
func (w *podWorker) setWait(cs *ctrState, reason, msg string) {
	w.mu.Lock()
	cs.waitReason, cs.waitMessage = reason, msg
	w.mu.Unlock()
}

// restart starts a new instance of an exited container, or, inside its
// crash-loop backoff, schedules it.
func (w *podWorker) restart(ctx context.Context, pod *pb.Pod, c *pb.Container, cs *ctrState) {
	now := time.Now()
	if !cs.retryAt.IsZero() && now.Before(cs.retryAt) {
		w.imagePullBackOff(pod, c, cs)
		return
	}
	at, next := w.a.backoff.restartAt(cs.backoff, cs.cur.st.StartedAt, cs.cur.st.FinishedAt, now)
	if at.After(now) {
		cs.retryAt = at
		w.setWait(cs, reasonCrashLoopBackOff, fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
			cs.backoff, c.GetName(), pod.GetMetadata().GetName(), pod.GetMetadata().GetNamespace(), w.uid))
		w.event(pod, eventWarning, eventBackOff, "Back-off restarting failed container %s in pod %s_%s(%s)",
			c.GetName(), pod.GetMetadata().GetName(), pod.GetMetadata().GetNamespace(), w.uid)
		return
	}
	cs.backoff = next
	cs.retryAt = time.Time{}
	w.start(ctx, pod, c, cs)
}

// start creates and starts the next instance of c.
func (w *podWorker) start(ctx context.Context, pod *pb.Pod, c *pb.Container, cs *ctrState) {
	a := w.a
	now := time.Now()
	if !cs.retryAt.IsZero() && now.Before(cs.retryAt) {
		w.imagePullBackOff(pod, c, cs)
		return
	}
	fail := func(reason string, err error) {
		cs.backoff = a.backoff.next(cs.backoff)
		cs.retryAt = time.Now().Add(cs.backoff)
		w.setWait(cs, reason, err.Error())
		w.log.Warn("start container", "pod", podKey(pod), "container", c.GetName(), "reason", reason, "err", err, "retry_in", cs.backoff)
		w.persist()
		switch reason {
		case reasonErrImagePull:
			w.event(pod, eventWarning, eventFailed, "Failed to pull image %q: %v", c.GetImage(), err)
		case reasonErrImageNeverPull:
			w.event(pod, eventWarning, reasonErrImageNeverPull, "Container image %q is not present with pull policy of Never", c.GetImage())
		default:
			w.event(pod, eventWarning, eventFailed, "Error: %v", err)
		}
	}
	spec := gproto.Clone(c).(*pb.Container)
	if !a.cfg.Hollow {
		env, err := resolveContainerEnv(ctx, a.getObject, a.listServices, pod, c, a.desc.hostIP(), a.desc.capacity)
		if err != nil {
			fail(configReason(err), err)
			return
		}
		spec.Env = env
		spec.EnvFrom = nil
	}
	present, pullStart := w.imagePresent(c), time.Now()
	if !present {
		w.event(pod, eventNormal, eventPulling, "Pulling image %q", c.GetImage())
	}
	img, err := a.images.Ensure(ctx, c.GetImage(), c.GetImagePullPolicy())
	switch {
	case err != nil:
	case present:
		w.event(pod, eventNormal, eventPulled, "Container image %q already present on machine", c.GetImage())
	default:
		w.event(pod, eventNormal, eventPulled, "Successfully pulled image %q in %s", c.GetImage(), time.Since(pullStart).Round(time.Millisecond))
	}
	if err != nil {
		reason := reasonErrImagePull
		if errors.Is(err, image.ErrImageNeverPull) {
			reason = reasonErrImageNeverPull
		}
		fail(reason, err)
		return
	}
	mounts, err := containerMounts(c, w.vols)
	if err != nil {
		fail(configReason(err), err)
		return
	}
	mounts = append(mounts, etcMounts(c, w.etc)...)
	attempt := int32(0)
	if cs.cur != nil {
		attempt = cs.cur.attempt + 1
	}
	labels := map[string]string{
		labelPodNamespace: pod.GetMetadata().GetNamespace(),
		labelPodName:      pod.GetMetadata().GetName(),
		labelContainer:    c.GetName(),
		labelAttempt:      strconv.Itoa(int(attempt)),
	}
	if cs.init {
		labels[labelInit] = "true"
	}
	sec, err := containerSecurity(pod, c)
	if err != nil {
		fail(configReason(err), err)
		return
	}
	queued := time.Now()
	release, err := a.startSlot(ctx)
	if err != nil {
		return // stopping
	}
	startedAt := time.Now()
	id, err := a.rt.StartContainer(ctx, w.sandbox, wrt.ContainerSpec{
		Container: spec, Image: img, PodSecurityContext: pod.GetSpec().GetSecurityContext(), Security: sec, Mounts: mounts, Labels: labels,
	})
	release()
	if err != nil {
		reason := reasonRunContainerError
		switch {
		case errors.Is(err, wrt.ErrRunAsNonRoot):
			reason = reasonCreateConfigError
		case errors.Is(err, wrt.ErrInvalidSpec):
			reason = reasonCreateContainerErr
		}
		fail(reason, err)
		return
	}
	st, err := a.rt.Status(id)
	if err != nil {
		st = wrt.ContainerStatus{ID: id, State: wrt.StateRunning, StartedAt: startedAt}
	}
	w.log.Info("started container", "pod", podKey(pod), "container", c.GetName(), "id", shortID(id), "attempt", attempt,
		"took", time.Since(startedAt).Round(time.Millisecond), "queued", startedAt.Sub(queued).Round(time.Millisecond),
		"setup", w.setup.Round(time.Millisecond))
	old := cs.prev
	w.mu.Lock()
	cs.prev, cs.cur = cs.cur, &ctrInstance{id: id, attempt: attempt, st: st}
	cs.restartCount = attempt
	cs.retryAt = time.Time{}
	cs.waitReason, cs.waitMessage = "", ""
	w.mu.Unlock()
	w.event(pod, eventNormal, eventCreated, "Created container %s", c.GetName())
	w.event(pod, eventNormal, eventStarted, "Started container %s", c.GetName())
	cs.probes.stop()
	cs.probes = nil
	if !cs.init {
		cs.probes = startProbes(w.probeTarget(pod, c, id), a.prober, w.notify, w.probeFailed(pod))
	}
	w.persist()
	if old != nil {
		if err := a.rt.Remove(ctx, old.id); err != nil {
			w.log.Warn("remove old container", "id", shortID(old.id), "err", err)
		}
	}
}

// kill stops a running container whose liveness or startup probe failed.
func (w *podWorker) kill(ctx context.Context, pod *pb.Pod, c *pb.Container, cs *ctrState, why *probeKill) {
	grace := time.Duration(terminationGrace(pod)) * time.Second
	for _, p := range []*pb.Probe{c.GetLivenessProbe(), c.GetStartupProbe()} {
		if p != nil && p.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(p.GetTerminationGracePeriodSeconds()) * time.Second
		}
	}
	w.log.Info("killing container", "pod", podKey(pod), "container", c.GetName(), "reason", why.reason, "grace", grace)
	w.event(pod, eventNormal, eventKilling, "Container %s failed %s probe, will be restarted", c.GetName(), why.kind)
	cs.probes.stop()
	cs.probes = nil
	if err := w.a.rt.Stop(ctx, cs.cur.id, grace); err != nil {
		w.log.Warn("stop container", "id", shortID(cs.cur.id), "err", err)
	}
	w.refresh()
}

func (w *podWorker) probeTarget(pod *pb.Pod, c *pb.Container, id string) probeTarget {
	t := probeTarget{containerID: id, container: c, host: "127.0.0.1"}
	if pod.GetSpec().GetHostNetwork() {
		t.host = w.a.desc.hostIP()
	} else if w.sandbox != nil {
		t.netNS = w.sandbox.NetNSPath
	}
	return t
}

// removeExtra removes instances beyond the current and previous of each
// container (left by a crash between a start and the removal of the oldest
// instance).
func (w *podWorker) removeExtra(ctx context.Context) {
	all, err := w.a.rt.ListPod(w.uid)
	if err != nil {
		return
	}
	keep := map[string]bool{}
	w.mu.Lock()
	for _, cs := range w.ctrs {
		for _, in := range []*ctrInstance{cs.cur, cs.prev} {
			if in != nil {
				keep[in.id] = true
			}
		}
	}
	w.mu.Unlock()
	for _, c := range all {
		if !keep[c.ID] {
			w.log.Info("removing stray container", "id", shortID(c.ID), "container", c.Name)
			if err := w.a.rt.Remove(ctx, c.ID); err != nil {
				w.log.Warn("remove stray container", "id", shortID(c.ID), "err", err)
			}
		}
	}
}

// status computes the pod's status from the containers' state. The result
// is shared (the memo, lastWritten, the status writer): nobody changes it.
func (w *podWorker) status(pod *pb.Pod, initDone, initFailed bool, now time.Time) *pb.PodStatus {
	in := statusInput{
		pod: pod, initDone: initDone, initFailed: initFailed, hostIP: w.a.desc.hostIP(), now: now,
		prev: w.lastWritten,
	}
	if in.prev == nil {
		in.prev = pod.GetStatus()
	}
	if w.rec != nil {
		in.startTime = w.rec.StartTime
	}
	if w.terminal {
		// A finished pod keeps its phase; recompute only the containers.
		in.initDone = true
	}
	m := &w.memo
	w.mu.Lock()
	m.init = w.views(m.init[:0], pod.GetSpec().GetInitContainers(), true)
	m.app = w.views(m.app[:0], pod.GetSpec().GetContainers(), false)
	w.mu.Unlock()
	// The same input gives the same status, except that a condition that
	// changed takes now as its transition time: none changes when the
	// previous status is the one computed last.
	if m.out != nil && in.prev == m.out && m.same(&in, w.podIP, w.terminal) {
		m.init, m.lastInit = m.lastInit, m.init
		m.app, m.lastApp = m.lastApp, m.app
		return m.out
	}
	if w.podIP != nil {
		in.podIP = w.podIP.String()
	}
	in.init, in.app = m.init, m.app
	st := buildPodStatus(in)
	if w.terminal && w.lastWritten != nil {
		st.Phase = w.lastWritten.GetPhase()
	}
	m.pod, m.podIP, m.hostIP, m.startTime = pod, w.podIP, in.hostIP, in.startTime
	m.initDone, m.initFailed, m.terminal = in.initDone, initFailed, w.terminal
	m.out = st
	// Keep this input's views; the next call fills the other buffers.
	m.init, m.lastInit = m.lastInit, m.init
	m.app, m.lastApp = m.lastApp, m.app
	return st
}

// views appends what status needs of each of cs's containers to dst.
// w.mu is held.
func (w *podWorker) views(dst []ctrView, cs []*pb.Container, init bool) []ctrView {
	for _, c := range cs {
		v := ctrView{name: c.GetName(), image: c.GetImage()}
		if s := w.ctrs[c.GetName()]; s != nil {
			v.restartCount = s.restartCount
			v.waitReason, v.waitMessage = s.waitReason, s.waitMessage
			if s.cur != nil {
				v.curSt, v.curID = s.cur.st, s.cur.id
				v.hasCur = true
				if s.cur.st.State == wrt.StateRunning {
					started, ready, _ := s.probes.results()
					v.started, v.ready = started, ready
					if init {
						v.started, v.ready = false, false
					}
				}
				if init && s.cur.st.State == wrt.StateExited && s.cur.st.ExitCode == 0 {
					v.ready = true
				}
			}
			if s.prev != nil {
				v.prevSt, v.prevID = s.prev.st, s.prev.id
				v.hasPrev = true
			}
		}
		dst = append(dst, v)
	}
	// cur and prev point into dst, now that it has stopped moving.
	for i := range dst {
		if dst[i].hasCur {
			dst[i].cur = &dst[i].curSt
		}
		if dst[i].hasPrev {
			dst[i].prev = &dst[i].prevSt
		}
	}
	return dst
}

// statusMemo is the last status a pod worker computed and what from.
type statusMemo struct {
	out                            *pb.PodStatus
	pod                            *pb.Pod
	podIP                          net.IP
	hostIP                         string
	startTime                      time.Time
	initDone, initFailed, terminal bool
	// lastInit and lastApp are out's container views; init and app are
	// buffers for the next input's.
	lastInit, lastApp, init, app []ctrView
}

// same reports whether in (with the views in m.init and m.app) is the
// input m.out was computed from.
func (m *statusMemo) same(in *statusInput, podIP net.IP, terminal bool) bool {
	return in.pod == m.pod && podIP.Equal(m.podIP) && in.hostIP == m.hostIP && in.startTime.Equal(m.startTime) &&
		in.initDone == m.initDone && in.initFailed == m.initFailed && terminal == m.terminal &&
		slices.EqualFunc(m.init, m.lastInit, sameView) && slices.EqualFunc(m.app, m.lastApp, sameView)
}

// lastWrittenOrAPI reports whether the pod already has a status from this
// worker (written now or by an earlier worker process).
func (w *podWorker) lastWrittenOrAPI(pod *pb.Pod) bool {
	return w.lastWritten != nil || len(pod.GetStatus().GetContainerStatuses()) > 0
}

// writeStatus has st written if it differs from what the API has (see
// statusWriter.submit). It does not wait for the write.
func (w *podWorker) writeStatus(ctx context.Context, pod *pb.Pod, st *pb.PodStatus) {
	w.lastWritten = st
	w.sw.submit(ctx, pod, st, 0)
}

// persist saves the pod's record when it differs from what was last saved.
// A failed save leaves saved as it was, so the next sync tries again.
func (w *podWorker) persist() {
	if w.rec == nil {
		return
	}
	w.mu.Lock()
	for name, cs := range w.ctrs {
		cr := w.rec.Containers[name]
		if cr == nil {
			cr = &containerRecord{}
			w.rec.Containers[name] = cr
		}
		cr.RestartCount, cr.Backoff = cs.restartCount, cs.backoff
	}
	w.mu.Unlock()
	// Saving means an fsync: only when something changed. Deciding that
	// runs on every sync of every pod, so it compares fields rather than
	// marshalling the record.
	if w.saved != nil && sameRecord(w.rec, w.saved) {
		return
	}
	if err := w.a.state.put(w.rec); err != nil {
		w.log.Warn("save pod state", "err", err)
		return
	}
	w.saved = copyRecord(w.rec)
}

// copyRecord copies r deeply enough that changes to r's fields and
// container records do not show in the copy.
func copyRecord(r *podRecord) *podRecord {
	c := *r
	c.Containers = make(map[string]*containerRecord, len(r.Containers))
	for name, cr := range r.Containers {
		if cr != nil {
			v := *cr
			cr = &v
		}
		c.Containers[name] = cr
	}
	return &c
}

// sameRecord reports whether a and b would be saved alike.
// TestSameRecordComparesEveryField fails when podRecord or
// containerRecord gains a field this does not compare.
func sameRecord(a, b *podRecord) bool {
	if a.UID != b.UID || a.Namespace != b.Namespace || a.Name != b.Name || a.Grace != b.Grace ||
		!a.StartTime.Equal(b.StartTime) || len(a.Containers) != len(b.Containers) {
		return false
	}
	for name, ca := range a.Containers {
		cb, ok := b.Containers[name]
		if !ok || (ca == nil) != (cb == nil) || (ca != nil && *ca != *cb) {
			return false
		}
	}
	return true
}

// terminate stops the pod's containers (SIGTERM, the grace period, then
// SIGKILL), removes everything of it, and confirms the deletion to the API
// by deleting the pod object with grace period 0.
func (w *podWorker) terminate(ctx context.Context) (time.Duration, bool) {
	a := w.a
	// A running pod's status is old news now.
	w.sw.discard()
	for _, cs := range w.ctrs {
		cs.probes.stop()
		cs.probes = nil
	}
	if !w.stopped {
		if !w.stopAll(ctx) {
			return time.Second, false
		}
		w.stopped = true
	}
	pod, deleted := w.snapshot()
	if !w.cleaned {
		// The pod leaves the network before its sandbox goes, so an
		// address held by a pod without a sandbox is known to be leaked
		// (see releaseLeaked).
		if n := a.network(); n != nil {
			nsPath := ""
			if w.sandbox != nil {
				nsPath = w.sandbox.NetNSPath
			}
			if err := n.Detach(w.uid, nsPath); err != nil {
				w.log.Warn("detach the pod from the pod network; retrying", "err", err)
				return 2 * time.Second, false
			}
		}
		if a.cfg.Hollow {
			a.releaseHollowIP(w.uid)
		}
		w.podIP = nil
		var errs []error
		if err := a.rt.RemoveSandbox(ctx, w.uid); err != nil {
			errs = append(errs, err)
		}
		// Containers without a sandbox (a crash between the two removals).
		if all, err := a.rt.ListPod(w.uid); err == nil {
			for _, c := range all {
				errs = append(errs, a.rt.Remove(ctx, c.ID))
			}
		}
		errs = append(errs, a.removePodDir(w.uid))
		if err := errors.Join(errs...); err != nil {
			w.log.Warn("clean up pod; retrying", "err", err)
			return 2 * time.Second, false
		}
		if err := a.state.remove(w.uid); err != nil {
			w.log.Warn("forget pod state", "err", err)
		}
		w.mu.Lock()
		w.ctrs = map[string]*ctrState{}
		w.sandbox = nil
		w.mu.Unlock()
		w.cleaned = true
		w.log.Info("pod stopped and cleaned up", "pod", podKey(pod))
	}
	if deleted || pod == nil {
		return 0, true
	}
	c, err := a.api.get(ctx)
	if err != nil {
		return time.Second, false
	}
	m := pod.GetMetadata()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = c.Delete(dctx, &pb.DeleteOp{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), GracePeriodSeconds: gproto.Int64(0)})
	switch status.Code(err) {
	case codes.OK, codes.NotFound, codes.Aborted:
		return 0, true
	}
	if ctx.Err() == nil {
		w.log.Warn("confirm pod deletion; retrying", "pod", podKey(pod), "err", err)
	}
	return time.Second, false
}

// stopAll stops every running container of the pod within the pod's
// deletion grace period. A later, shorter grace period (a second delete, or
// a force delete) cuts the wait short. It reports whether all stopped.
func (w *podWorker) stopAll(ctx context.Context) bool {
	a := w.a
	var ids, names []string
	if all, err := a.rt.ListPod(w.uid); err == nil {
		for _, c := range all {
			if c.State != wrt.StateExited {
				ids, names = append(ids, c.ID), append(names, c.Name)
			}
		}
	} else {
		w.log.Warn("list containers", "err", err)
		return false
	}
	if len(ids) == 0 {
		return true
	}
	if pod, _ := w.snapshot(); pod != nil {
		for _, name := range names {
			w.event(pod, eventNormal, eventKilling, "Stopping container %s", name)
		}
	}
	graceOf := func() time.Duration {
		pod, _ := w.snapshot()
		if pod == nil {
			if w.rec != nil {
				return time.Duration(w.rec.Grace) * time.Second
			}
			return 0
		}
		if g := pod.GetMetadata().DeletionGracePeriodSeconds; g != nil {
			return time.Duration(*g) * time.Second
		}
		return time.Duration(terminationGrace(pod)) * time.Second
	}
	grace := graceOf()
	deadline := time.Now().Add(grace)
	w.log.Info("stopping pod", "containers", len(ids), "grace", grace)
	for {
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		until := deadline // the stoppers read this round's deadline only
		go func() {
			var wg sync.WaitGroup
			errs := make([]error, len(ids))
			for i, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = a.rt.Stop(sctx, id, time.Until(until))
				}()
			}
			wg.Wait()
			done <- errors.Join(errs...)
		}()
	wait:
		for {
			select {
			case err := <-done:
				cancel()
				if err != nil && ctx.Err() == nil {
					w.log.Warn("stop containers", "err", err)
					return false
				}
				return ctx.Err() == nil
			case <-w.wake:
				if g := graceOf(); time.Now().Add(g).Before(deadline) {
					deadline = time.Now().Add(g)
					w.log.Info("grace period shortened", "grace", g)
					cancel()
					<-done
					break wait
				}
			case <-ctx.Done():
				cancel()
				<-done
				return false
			}
		}
	}
}

// terminationGrace is the pod's terminationGracePeriodSeconds (30 by
// default).
func terminationGrace(pod *pb.Pod) int64 {
	if g := pod.GetSpec().TerminationGracePeriodSeconds; g != nil {
		return max(*g, 0)
	}
	return 30
}

func configReason(err error) string {
	if errors.Is(err, errConfig) {
		return reasonCreateConfigError
	}
	return reasonCreateContainerErr
}

func allContainers(pod *pb.Pod) []*pb.Container {
	return append(append([]*pb.Container{}, pod.GetSpec().GetInitContainers()...), pod.GetSpec().GetContainers()...)
}

func isInit(pod *pb.Pod, name string) bool {
	for _, c := range pod.GetSpec().GetInitContainers() {
		if c.GetName() == name {
			return true
		}
	}
	return false
}

func podKey(pod *pb.Pod) string {
	if pod == nil {
		return ""
	}
	return pod.GetMetadata().GetNamespace() + "/" + pod.GetMetadata().GetName()
}

func shortID(id string) string { return id[:min(12, len(id))] }

func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// adopt fills the worker's state from containers an earlier worker process
// started (grouped by their labels) and its saved record.
func (w *podWorker) adopt(rec *podRecord, containers []wrt.ContainerStatus, sb *wrt.Sandbox) {
	w.strayChecked = false
	w.rec = rec
	if w.rec != nil && w.rec.Containers == nil {
		w.rec.Containers = map[string]*containerRecord{}
	}
	w.sandbox = sb
	byName := map[string][]*ctrInstance{}
	for _, c := range containers {
		name := c.Labels[labelContainer]
		if name == "" {
			name = c.Name
		}
		attempt, _ := strconv.Atoi(c.Labels[labelAttempt])
		byName[name] = append(byName[name], &ctrInstance{id: c.ID, attempt: int32(attempt), st: c})
	}
	for name, ins := range byName {
		sort.Slice(ins, func(i, j int) bool { return ins[i].attempt > ins[j].attempt })
		cs := &ctrState{name: name, init: ins[0].st.Labels[labelInit] == "true", cur: ins[0], restartCount: ins[0].attempt}
		if len(ins) > 1 {
			cs.prev = ins[1]
		}
		if rec != nil {
			if cr := rec.Containers[name]; cr != nil {
				cs.backoff = cr.Backoff
				cs.restartCount = max(cs.restartCount, cr.RestartCount)
			}
		}
		w.ctrs[name] = cs
	}
}
