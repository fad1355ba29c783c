package worker

import (
	"strings"

	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// The seccomp annotations Kubernetes used before
// securityContext.seccompProfile existed, still honoured when no
// seccompProfile field is set. The container's annotation wins over the
// pod's.
const (
	annotationSeccompPod             = "seccomp.security.alpha.kubernetes.io/pod"
	annotationSeccompContainerPrefix = "container.seccomp.security.alpha.kubernetes.io/"
)

// containerSecurity returns the runtime's security settings for container c
// of pod: what its securityContext cannot express. (The runtime reads the
// pod's and the container's securityContext itself, from the ContainerSpec,
// container-level fields over pod-level ones.) The error is a configuration
// error: Kubernetes' CreateContainerConfigError.
func containerSecurity(pod *pb.Pod, c *pb.Container) (*wrt.Security, error) {
	// securityContext.seccompProfile: the container's over the pod's, both
	// over the annotations.
	for _, f := range []struct {
		path string
		sp   *pb.SeccompProfile
	}{
		{"containers[" + c.GetName() + "].securityContext.seccompProfile", c.GetSecurityContext().GetSeccompProfile()},
		{"securityContext.seccompProfile", pod.GetSpec().GetSecurityContext().GetSeccompProfile()},
	} {
		switch t := f.sp.GetType(); t {
		case "":
			continue
		case "RuntimeDefault":
			return &wrt.Security{Seccomp: wrt.SeccompRuntimeDefault}, nil
		case "Unconfined":
			return &wrt.Security{Seccomp: wrt.SeccompUnconfined}, nil
		default:
			return nil, configErr("%s: type %q is not supported by skiff's workers; use RuntimeDefault or Unconfined", f.path, t)
		}
	}
	ann := pod.GetMetadata().GetAnnotations()
	key, v := annotationSeccompContainerPrefix+c.GetName(), ""
	if cv, ok := ann[key]; ok {
		v = cv
	} else if pv, ok := ann[annotationSeccompPod]; ok {
		key, v = annotationSeccompPod, pv
	}
	sec := &wrt.Security{Seccomp: wrt.SeccompRuntimeDefault}
	switch {
	case v == "":
		return sec, nil
	case v == "runtime/default" || v == "docker/default":
		return sec, nil
	case v == "unconfined":
		sec.Seccomp = wrt.SeccompUnconfined
		return sec, nil
	case strings.HasPrefix(v, "localhost/"):
		return nil, configErr("annotation %s: %q: localhost seccomp profiles are not supported; use runtime/default or unconfined", key, v)
	default:
		return nil, configErr("annotation %s: unknown seccomp profile %q; use runtime/default or unconfined", key, v)
	}
}
