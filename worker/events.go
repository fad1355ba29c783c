package worker

import (
	pb "github.com/skiff-sh/skiff/proto"
	"github.com/skiff-sh/skiff/worker/image"
)

// EventRecorder records Events about pods, as the kubelet does: what the
// worker did with a pod's images and containers (Pulling, Pulled, Created,
// Started, Killing) and what went wrong (Failed, BackOff, Unhealthy,
// FailedCreatePodSandBox, FailedMount), so that `skiff describe pod` tells
// why a pod is not running. Recording must not block and must fold repeats
// into a count and rate-limit them; the controllers' Recorder does all of
// that (cmd/skiff wires one per worker, writing through the worker's own
// connection to the masters). Nil in Config records nothing: hollow nodes,
// whose pods' events would only load the masters of a scale test.
type EventRecorder interface {
	Eventf(obj *pb.Object, eventType, reason, format string, args ...any)
}

// Event types and the kubelet's reasons.
const (
	eventNormal  = "Normal"
	eventWarning = "Warning"

	eventPulling       = "Pulling"
	eventPulled        = "Pulled"
	eventCreated       = "Created"
	eventStarted       = "Started"
	eventKilling       = "Killing"
	eventFailed        = "Failed"
	eventBackOff       = "BackOff"
	eventUnhealthy     = "Unhealthy"
	eventFailedSandbox = "FailedCreatePodSandBox"
	eventFailedMount   = "FailedMount"
)

// event records an Event about pod, if the worker records any.
func (w *podWorker) event(pod *pb.Pod, eventType, reason, format string, args ...any) {
	if w.a.cfg.Events == nil {
		return
	}
	w.a.cfg.Events.Eventf(pb.Wrap(pod), eventType, reason, format, args...)
}

// imagePresent reports whether Ensure would find c's image without
// pulling it, for the Pulling and Pulled events. It reads the image store
// only when events are recorded.
func (w *podWorker) imagePresent(c *pb.Container) bool {
	if w.a.cfg.Events == nil {
		return true
	}
	policy := c.GetImagePullPolicy()
	if policy == "" {
		policy = image.DefaultPullPolicy(c.GetImage())
	}
	if policy == image.PullAlways {
		return false
	}
	_, err := w.a.images.Get(c.GetImage())
	return err == nil
}

// probeFailed returns what a container's probes call on a failure: it
// records Unhealthy, as the kubelet words it.
func (w *podWorker) probeFailed(pod *pb.Pod) func(probeKind, string) {
	if w.a.cfg.Events == nil {
		return nil
	}
	return func(kind probeKind, msg string) {
		w.event(pod, eventWarning, eventUnhealthy, "%s probe failed: %s", [...]string{"Liveness", "Readiness", "Startup"}[kind], msg)
	}
}

// imagePullBackOff turns a failed pull into ImagePullBackOff while its
// backoff lasts, recording BackOff once per failed pull.
func (w *podWorker) imagePullBackOff(pod *pb.Pod, c *pb.Container, cs *ctrState) {
	if cs.waitReason != reasonErrImagePull {
		return
	}
	w.setWait(cs, reasonImagePullBackOff, cs.waitMessage)
	w.event(pod, eventNormal, eventBackOff, "Back-off pulling image %q", c.GetImage())
}
