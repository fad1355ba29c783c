package controllers

import (
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	pb "github.com/skiff-sh/skiff/proto"
)

// KeyOf returns an object's queue and cache key: "namespace/name", or
// "name" for cluster-scoped kinds.
func KeyOf(obj *pb.Object) string { return obj.Meta().Key() }

// Key joins a namespace and a name into a key.
func Key(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// SplitKey splits a key made by Key.
func SplitKey(key string) (namespace, name string) {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

// Selector converts a LabelSelector with Kubernetes' rules: a nil selector
// selects nothing, an empty one selects everything.
func Selector(s *pb.LabelSelector) (labels.Selector, error) {
	return s.AsSelector()
}

// ControllerOf returns the owner reference with controller=true, or nil.
func ControllerOf(m *pb.ObjectMeta) *pb.OwnerReference {
	for _, r := range m.GetOwnerReferences() {
		if r.GetController() {
			return r
		}
	}
	return nil
}

// NewControllerRef returns an owner reference to owner with controller and
// blockOwnerDeletion set, as Kubernetes' workload controllers write it.
func NewControllerRef(owner *pb.ObjectMeta, apiVersion, kind string) *pb.OwnerReference {
	t := true
	return &pb.OwnerReference{
		ApiVersion: apiVersion, Kind: kind, Name: owner.GetName(), Uid: owner.GetUid(),
		Controller: &t, BlockOwnerDeletion: &t,
	}
}

// PodCondition returns the pod's condition of type typ, or nil.
func PodCondition(pod *pb.Pod, typ string) *pb.PodCondition {
	for _, c := range pod.GetStatus().GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// IsPodReady reports whether the pod's Ready condition is True.
func IsPodReady(pod *pb.Pod) bool {
	return PodCondition(pod, "Ready").GetStatus() == "True"
}

// IsPodTerminal reports whether the pod has finished (Succeeded or Failed).
func IsPodTerminal(pod *pb.Pod) bool {
	p := pod.GetStatus().GetPhase()
	return p == "Succeeded" || p == "Failed"
}

// IsPodActive reports whether the pod counts towards a workload's replicas:
// not finished and not being deleted.
func IsPodActive(pod *pb.Pod) bool {
	return !IsPodTerminal(pod) && pod.GetMetadata().GetDeletionTimestamp() == nil
}

// PodAvailableIn says whether a pod is available (ready for at least
// minReadySeconds at now) and, if it is ready but not yet available, how long
// until it will be.
func PodAvailableIn(pod *pb.Pod, minReadySeconds int32, now time.Time) (available bool, wait time.Duration) {
	c := PodCondition(pod, "Ready")
	if c.GetStatus() != "True" {
		return false, 0
	}
	if minReadySeconds <= 0 {
		return true, 0
	}
	since := c.GetLastTransitionTime()
	if since == nil {
		// No transition time: nothing tells for how long it has been ready.
		return true, 0
	}
	at := since.AsTime().Add(time.Duration(minReadySeconds) * time.Second)
	if !now.Before(at) {
		return true, 0
	}
	return false, at.Sub(now)
}
