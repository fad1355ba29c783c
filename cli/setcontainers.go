package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// What set env and set resources share: the kinds with a pod spec, which
// of them Kubernetes lets change, and picking containers by name.

// podSpecKinds are the kinds whose objects carry a pod spec: a workload's
// pod template, or a pod's own.
var podSpecKinds = []string{"Deployment", "DaemonSet", "ReplicaSet", "Job", "Pod"}

// podSpecOf returns the pod spec obj carries, nil for a kind without one.
func podSpecOf(obj *pb.Object) *pb.PodSpec {
	switch {
	case obj.GetDeployment() != nil:
		return obj.GetDeployment().GetSpec().GetTemplate().GetSpec()
	case obj.GetDaemonSet() != nil:
		return obj.GetDaemonSet().GetSpec().GetTemplate().GetSpec()
	case obj.GetReplicaSet() != nil:
		return obj.GetReplicaSet().GetSpec().GetTemplate().GetSpec()
	case obj.GetJob() != nil:
		return obj.GetJob().GetSpec().GetTemplate().GetSpec()
	case obj.GetPod() != nil:
		return obj.GetPod().GetSpec()
	}
	return nil
}

// frozenContainers says why Kubernetes refuses a change to the containers'
// what (environment, resource requirements) of objects of kind, "" when it
// allows it. A pod's containers change only in their image, and a Job's
// pod template not at all: the masters would store the change, but the
// running pods would never see it, so the CLI refuses as Kubernetes'
// API server does.
func frozenContainers(kind, what string) string {
	switch kind {
	case "Pod":
		return fmt.Sprintf("a pod's %s can not be changed once the pod exists (Kubernetes allows only the image to change): "+
			"change the Deployment, DaemonSet or ReplicaSet that makes the pod, or delete the pod and create it again", what)
	case "Job":
		return fmt.Sprintf("a Job's pod template can not be changed once the Job exists (spec.template is immutable, as in Kubernetes): "+
			"delete the Job and create it again with the new %s", what)
	}
	return ""
}

// planPodSpecs checks the arguments naming the objects of set env or set
// resources before anything is read: every kind has a pod spec and, when
// the command writes, one Kubernetes lets change.
func planPodSpecs(sel *selection, objects []string, verb, what string, writing bool) error {
	named, kinds, err := sel.plan(objects, verb)
	if err != nil {
		return err
	}
	for _, k := range named {
		kinds = append(kinds, k.kind)
	}
	for _, k := range kinds {
		if !slices.Contains(podSpecKinds, k.Kind) {
			return fmt.Errorf("%s have no containers: skiff %s works on %s", k.Plural, verb, strings.Join(lower(podSpecKinds), ", "))
		}
		if why := frozenContainers(k.Kind, what); writing && why != "" {
			return errors.New(why)
		}
	}
	return nil
}

// selectContainers returns spec's containers whose names match pattern (a
// shell pattern, as path.Match and kubectl's --containers take it): the app
// containers, then the init containers, as kubectl 1.32's set env and set
// resources take them. None matching is an error worded as kubectl's, with
// the names there are.
func selectContainers(spec *pb.PodSpec, pattern string) ([]*pb.Container, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("--containers %q: %v", pattern, err)
	}
	var out []*pb.Container
	var names []string
	for _, list := range [][]*pb.Container{spec.GetContainers(), spec.GetInitContainers()} {
		for _, c := range list {
			names = append(names, c.GetName())
			if ok, _ := path.Match(pattern, c.GetName()); ok {
				out = append(out, c)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("unable to find container named %q (containers: %s)", pattern, strings.Join(names, ", "))
	}
	return out, nil
}

// eachObject reads each object in turn and hands it to fn, which prints
// what it has to say about it; as changeEach, one object's error is
// returned as is, and with several each failure is printed and the rest go
// on.
func eachObject(ctx context.Context, o *Options, c *client.Client, keys []objectKey, fn func(w io.Writer, obj *pb.Object) error) error {
	failed := 0
	for _, k := range keys {
		obj, err := c.Get(ctx, k.kind.Kind, k.namespace, k.name, client.ReadOptions{})
		if err == nil {
			err = fn(o.Out, obj)
		}
		if err == nil {
			continue
		}
		if len(keys) == 1 {
			return apiError(k.notFound(err))
		}
		failed++
		msg := errMessage(err)
		if status.Code(err) == codes.NotFound {
			msg = "not found" + k.where()
		}
		fmt.Fprintf(o.ErrOut, "error: %s/%s: %s\n", strings.ToLower(k.kind.Kind), k.name, msg)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d objects could not be listed", failed, len(keys))
	}
	return nil
}
