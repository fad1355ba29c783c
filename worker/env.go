package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	pb "github.com/skiff-sh/skiff/proto"
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

// resolveEnv turns c's envFrom and env into plain name=value pairs, in
// Kubernetes' order: envFrom sources first, then env, later names winning.
// Values read from ConfigMaps, Secrets and fields are escaped so that the
// runtime's $(VAR) expansion, which applies to literal values only in
// Kubernetes, leaves them as they are.
func resolveEnv(ctx context.Context, get getObject, pod *pb.Pod, c *pb.Container, hostIP string, nodeAlloc map[string]string) ([]*pb.EnvVar, error) {
	src := &envSource{get: get, namespace: pod.GetMetadata().GetNamespace(), configMaps: map[string]*pb.ConfigMap{}, secrets: map[string]*pb.Secret{}}
	var out []*pb.EnvVar
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			out[i].Value = value
			return
		}
		index[name] = len(out)
		out = append(out, &pb.EnvVar{Name: name, Value: value})
	}
	escape := func(v string) string { return strings.ReplaceAll(v, "$", "$$") }

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
			set(name, escape(data[k]))
		}
	}

	for _, e := range c.GetEnv() {
		vf := e.GetValueFrom()
		if vf == nil {
			set(e.GetName(), e.GetValue())
			continue
		}
		switch {
		case vf.GetFieldRef() != nil:
			v, err := fieldValue(pod, vf.GetFieldRef().GetFieldPath(), hostIP)
			if err != nil {
				return nil, err
			}
			set(e.GetName(), escape(v))
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
				set(e.GetName(), escape(v))
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
				set(e.GetName(), escape(string(v)))
			case ref.GetOptional():
			case sec == nil:
				return nil, configErr("secret %q not found", ref.GetName())
			default:
				return nil, configErr("couldn't find key %s in Secret %s/%s", ref.GetKey(), src.namespace, ref.GetName())
			}
		}
	}
	return out, nil
}

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
