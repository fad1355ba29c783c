package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
	wrt "github.com/skiff-sh/skiff/worker/runtime"
)

// getObject reads one object from the API (ConfigMaps and Secrets for env
// and volumes).
type getObject func(ctx context.Context, kind, namespace, name string) (*pb.Object, error)

// errConfig marks a container whose configuration cannot be resolved yet (a
// missing ConfigMap, Secret or key): Kubernetes' CreateContainerConfigError.
var errConfig = errors.New("container configuration")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errConfig, fmt.Sprintf(format, args...))
}

// envSource caches the ConfigMaps and Secrets one container start reads.
type envSource struct {
	get        getObject
	namespace  string
	configMaps map[string]*pb.ConfigMap
	secrets    map[string]*pb.Secret
}

func (s *envSource) configMap(ctx context.Context, name string) (*pb.ConfigMap, error) {
	if cm, ok := s.configMaps[name]; ok {
		return cm, nil
	}
	obj, err := s.get(ctx, "ConfigMap", s.namespace, name)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			s.configMaps[name] = nil
			return nil, nil
		}
		return nil, err
	}
	s.configMaps[name] = obj.GetConfigMap()
	return obj.GetConfigMap(), nil
}

func (s *envSource) secret(ctx context.Context, name string) (*pb.Secret, error) {
	if sec, ok := s.secrets[name]; ok {
		return sec, nil
	}
	obj, err := s.get(ctx, "Secret", s.namespace, name)
	if err != nil {
		if status.Code(err) == codes.NotFound {
			s.secrets[name] = nil
			return nil, nil
		}
		return nil, err
	}
	s.secrets[name] = obj.GetSecret()
	return obj.GetSecret(), nil
}

// resolveContainerEnv turns c's environment into plain name=value pairs the
// way the kubelet does: the Service variables of the pod's namespace first
// (unless spec.enableServiceLinks is false), then envFrom sources, then env,
// later names winning. $(VAR) references in literal env values are expanded
// here, against the variables defined so far and the Service variables, so
// that a container may override a Service variable with a value that
// refers to another variable. Every value returned has its "$" doubled: the
// runtime's own $(VAR) pass then only turns "$$" back into "$" for values,
// and expands command and args against the final values. A nil
// listServices means no Service variables (hollow nodes).
func resolveContainerEnv(ctx context.Context, get getObject, list listServices, pod *pb.Pod, c *pb.Container, hostIP string, nodeAlloc map[string]string) ([]*pb.EnvVar, error) {
	src := &envSource{get: get, namespace: pod.GetMetadata().GetNamespace(), configMaps: map[string]*pb.ConfigMap{}, secrets: map[string]*pb.Secret{}}
	var names []string
	values := map[string]string{} // final, unescaped
	set := func(name, value string) {
		if _, ok := values[name]; !ok {
			names = append(names, name)
		}
		values[name] = value
	}

	// Service variables do not count as defined for $(VAR) lookups until
	// envFrom and env have had their say: a literal may refer to a Service
	// variable that a later env entry overrides (kubelet's
	// MappingFuncFor(tmpEnv, serviceEnv)).
	var svcNames []string
	svcValues := map[string]string{}
	if list != nil && serviceLinksEnabled(pod) {
		svcs, err := list(ctx, src.namespace)
		if err != nil {
			return nil, fmt.Errorf("%w: list services in namespace %q for the service environment variables (retried on the next sync; set enableServiceLinks: false to start without them): %w", errConfig, src.namespace, err)
		}
		for _, e := range serviceEnv(src.namespace, svcs) {
			if _, ok := svcValues[e.GetName()]; !ok {
				svcNames = append(svcNames, e.GetName())
			}
			svcValues[e.GetName()] = e.GetValue()
		}
	}
	lookup := func(name string) (string, bool) {
		if v, ok := values[name]; ok {
			return v, true
		}
		v, ok := svcValues[name]
		return v, ok
	}

	for _, from := range c.GetEnvFrom() {
		var data map[string]string
		switch {
		case from.GetConfigMapRef() != nil:
			ref := from.GetConfigMapRef()
			cm, err := src.configMap(ctx, ref.GetName())
			if err != nil {
				return nil, err
			}
			if cm == nil {
				if ref.GetOptional() {
					continue
				}
				return nil, configErr("configmap %q not found", ref.GetName())
			}
			data = cm.GetData()
		case from.GetSecretRef() != nil:
			ref := from.GetSecretRef()
			sec, err := src.secret(ctx, ref.GetName())
			if err != nil {
				return nil, err
			}
			if sec == nil {
				if ref.GetOptional() {
					continue
				}
				return nil, configErr("secret %q not found", ref.GetName())
			}
			data = map[string]string{}
			for k, v := range sec.GetData() {
				data[k] = string(v)
			}
		}
		for _, k := range sortedKeys(data) {
			name := from.GetPrefix() + k
			if len(validation.IsEnvVarName(name)) > 0 {
				continue // as Kubernetes: invalid names are skipped (and reported as an event)
			}
			set(name, data[k])
		}
	}

	for _, e := range c.GetEnv() {
		vf := e.GetValueFrom()
		if vf == nil {
			set(e.GetName(), expandRefs(e.GetValue(), lookup))
			continue
		}
		switch {
		case vf.GetFieldRef() != nil:
			v, err := fieldValue(pod, vf.GetFieldRef().GetFieldPath(), hostIP)
			if err != nil {
				return nil, err
			}
			set(e.GetName(), v)
		case vf.GetResourceFieldRef() != nil:
			v, err := resourceValue(pod, c, vf.GetResourceFieldRef(), nodeAlloc)
			if err != nil {
				return nil, err
			}
			set(e.GetName(), v)
		case vf.GetConfigMapKeyRef() != nil:
			ref := vf.GetConfigMapKeyRef()
			cm, err := src.configMap(ctx, ref.GetName())
			if err != nil {
				return nil, err
			}
			v, ok := cm.GetData()[ref.GetKey()]
			if !ok {
				if b, bok := cm.GetBinaryData()[ref.GetKey()]; bok {
					v, ok = string(b), true
				}
			}
			switch {
			case ok:
				set(e.GetName(), v)
			case ref.GetOptional():
			case cm == nil:
				return nil, configErr("configmap %q not found", ref.GetName())
			default:
				return nil, configErr("couldn't find key %s in ConfigMap %s/%s", ref.GetKey(), src.namespace, ref.GetName())
			}
		case vf.GetSecretKeyRef() != nil:
			ref := vf.GetSecretKeyRef()
			sec, err := src.secret(ctx, ref.GetName())
			if err != nil {
				return nil, err
			}
			v, ok := sec.GetData()[ref.GetKey()]
			switch {
			case ok:
				set(e.GetName(), string(v))
			case ref.GetOptional():
			case sec == nil:
				return nil, configErr("secret %q not found", ref.GetName())
			default:
				return nil, configErr("couldn't find key %s in Secret %s/%s", ref.GetKey(), src.namespace, ref.GetName())
			}
		}
	}

	escape := func(v string) string { return strings.ReplaceAll(v, "$", "$$") }
	out := make([]*pb.EnvVar, 0, len(svcNames)+len(names))
	for _, name := range svcNames {
		if _, overridden := values[name]; !overridden {
			out = append(out, &pb.EnvVar{Name: name, Value: escape(svcValues[name])})
		}
	}
	for _, name := range names {
		out = append(out, &pb.EnvVar{Name: name, Value: escape(values[name])})
	}
	return out, nil
}

// listServices lists the Services of one namespace. An error means the
// list is unknown, not empty: a container must not start without the
// variables it would have had.
type listServices func(ctx context.Context, namespace string) ([]*pb.Service, error)

// listServices reads the Services of a namespace from the API.
func (a *Agent) listServices(ctx context.Context, namespace string) ([]*pb.Service, error) {
	c, err := a.api.get(ctx)
	if err != nil {
		return nil, err
	}
	objs, _, err := c.List(ctx, "Service", client.ListOptions{Namespace: namespace})
	if err != nil {
		return nil, err
	}
	out := make([]*pb.Service, 0, len(objs))
	for _, o := range objs {
		if s := o.GetService(); s != nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// serviceLinksEnabled is pod.spec.enableServiceLinks, true when unset.
func serviceLinksEnabled(pod *pb.Pod) bool {
	return pod.GetSpec().EnableServiceLinks == nil || pod.GetSpec().GetEnableServiceLinks()
}

// serviceEnv is the kubelet's envvars.FromServices for the Services of one
// namespace: for each Service with a cluster IP (headless and ExternalName
// Services have none), {NAME}_SERVICE_HOST, {NAME}_SERVICE_PORT (the first
// port), {NAME}_SERVICE_PORT_{PORTNAME} for named ports, and Docker-link
// variables. Services are taken in name order so that the result does not
// depend on the list's order. Services of other namespaces are ignored.
func serviceEnv(namespace string, svcs []*pb.Service) []*pb.EnvVar {
	svcs = slices.Clone(svcs)
	slices.SortFunc(svcs, func(a, b *pb.Service) int {
		return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	var out []*pb.EnvVar
	add := func(name, value string) { out = append(out, &pb.EnvVar{Name: name, Value: value}) }
	for _, s := range svcs {
		ip := s.GetSpec().GetClusterIp()
		if s.GetMetadata().GetNamespace() != namespace || ip == "" || ip == "None" {
			continue
		}
		prefix := envVarName(s.GetMetadata().GetName())
		add(prefix+"_SERVICE_HOST", ip)
		ports := s.GetSpec().GetPorts()
		if len(ports) == 0 {
			continue // validation forbids it; the kubelet would crash here
		}
		add(prefix+"_SERVICE_PORT", strconv.Itoa(int(ports[0].GetPort())))
		for _, p := range ports {
			if p.GetName() != "" {
				add(prefix+"_SERVICE_PORT_"+envVarName(p.GetName()), strconv.Itoa(int(p.GetPort())))
			}
		}
		for i, p := range ports {
			proto := p.GetProtocol()
			if proto == "" {
				proto = "TCP"
			}
			lower := strings.ToLower(proto)
			port := strconv.Itoa(int(p.GetPort()))
			url := lower + "://" + net.JoinHostPort(ip, port)
			if i == 0 {
				add(prefix+"_PORT", url) // Docker special-cases the first port
			}
			pp := prefix + "_PORT_" + port + "_" + strings.ToUpper(proto)
			add(pp, url)
			add(pp+"_PROTO", lower)
			add(pp+"_PORT", port)
			add(pp+"_ADDR", ip)
		}
	}
	return out
}

// envVarName is the kubelet's makeEnvVariableName.
func envVarName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}

// expandRefs replaces $(VAR) in s the way Kubernetes does (and as the
// runtime does for command and args).
func expandRefs(s string, lookup func(string) (string, bool)) string { return wrt.Expand(s, lookup) }

// fieldValue is the downward API: the value of a pod field selected by an
// env var's fieldRef.
func fieldValue(pod *pb.Pod, path, hostIP string) (string, error) {
	m := pod.GetMetadata()
	podIP := ""
	if pod.GetSpec().GetHostNetwork() {
		podIP = hostIP
	}
	switch path {
	case "metadata.name":
		return m.GetName(), nil
	case "metadata.namespace":
		return m.GetNamespace(), nil
	case "metadata.uid":
		return m.GetUid(), nil
	case "spec.nodeName":
		return pod.GetSpec().GetNodeName(), nil
	case "spec.serviceAccountName":
		return pod.GetSpec().GetServiceAccountName(), nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	}
	for prefix, values := range map[string]map[string]string{"metadata.labels": m.GetLabels(), "metadata.annotations": m.GetAnnotations()} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return values[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", configErr("unsupported fieldRef fieldPath %q", path)
}

// resourceValue is the downward API for resources: a container's limit or
// request divided by the divisor and rounded up; an unset limit is the
// node's allocatable amount.
func resourceValue(pod *pb.Pod, c *pb.Container, ref *pb.ResourceFieldSelector, nodeAlloc map[string]string) (string, error) {
	target := c
	if ref.GetContainerName() != "" {
		target = nil
		for _, cc := range append(append([]*pb.Container{}, pod.GetSpec().GetInitContainers()...), pod.GetSpec().GetContainers()...) {
			if cc.GetName() == ref.GetContainerName() {
				target = cc
			}
		}
		if target == nil {
			return "", configErr("resourceFieldRef: no container %q", ref.GetContainerName())
		}
	}
	kind, res, ok := strings.Cut(ref.GetResource(), ".")
	if !ok || (kind != "limits" && kind != "requests") || (res != "cpu" && res != "memory") {
		return "", configErr("resourceFieldRef: unsupported resource %q", ref.GetResource())
	}
	values := target.GetResources().GetLimits()
	if kind == "requests" {
		values = target.GetResources().GetRequests()
	}
	s, ok := values[res]
	if !ok && kind == "requests" {
		s, ok = target.GetResources().GetLimits()[res]
	}
	if !ok {
		if kind == "requests" {
			s = "0"
		} else {
			s = nodeAlloc[res]
		}
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return "", configErr("resourceFieldRef %s: %v", ref.GetResource(), err)
	}
	divisor := resource.MustParse("1")
	if ref.GetDivisor() != "" {
		if divisor, err = resource.ParseQuantity(ref.GetDivisor()); err != nil || divisor.Sign() <= 0 {
			return "", configErr("resourceFieldRef divisor %q is not a positive quantity", ref.GetDivisor())
		}
	}
	v := math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
	return fmt.Sprintf("%d", int64(v)), nil
}
