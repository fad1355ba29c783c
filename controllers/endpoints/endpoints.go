// Package endpoints keeps, for every Service with a selector, an Endpoints
// object of the same name listing the pods behind it, as Kubernetes'
// endpoints controller does. netproxy and the workers' DNS read these
// objects to route a Service's traffic, so they must list exactly the pods
// that can take it:
//
//   - pods whose labels match the selector, bound to a node, with a pod IP,
//     not being deleted and not finished (Succeeded or Failed);
//   - Ready pods under addresses, the others under notReadyAddresses
//     (everything under addresses when the Service sets
//     publishNotReadyAddresses, which also keeps terminating pods, as
//     Kubernetes does);
//   - each Service port's targetPort resolved per pod: a number as it is, a
//     name looked up in the pod's container ports of the same protocol (a
//     pod without it is left out for that port). Pods with the same
//     resolved ports share one subset.
//
// The result is sorted, and compared with what is stored before writing,
// so an unchanged Service costs no write. The Endpoints object is owned by
// its Service (the garbage collector deletes it after the Service) and is
// also deleted here when the Service is gone. Endpoints of Services without
// a selector belong to whoever manages them and are left alone.
package endpoints

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	gproto "google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-sh/skiff/controllers"
	pb "github.com/skiff-sh/skiff/proto"
)

// Name is the controller's registered name.
const Name = "endpoints"

// LabelHeadless marks the Endpoints of a headless Service (clusterIP None),
// as Kubernetes does.
const LabelHeadless = "service.kubernetes.io/headless"

// NewRegistration returns the controller's Registration.
func NewRegistration() controllers.Registration {
	return controllers.Registration{Name: Name, New: func(env controllers.Env) (controllers.Controller, error) {
		return New(env).Loop, nil
	}}
}

// Controller reconciles Services (keys are "namespace/name").
type Controller struct {
	*controllers.Loop
	env       controllers.Env
	services  *controllers.Informer
	pods      *controllers.Informer
	endpoints *controllers.Informer
	// written holds a reconcile back until the Endpoints cache shows this
	// controller's last write for the Service, so a stale cache does not
	// cause a second, conflicting write.
	written *controllers.WriteBarrier
}

// New builds the controller over env's informers.
func New(env controllers.Env) *Controller {
	c := &Controller{
		env:       env,
		services:  env.Informers.For("Service"),
		pods:      env.Informers.For("Pod"),
		endpoints: env.Informers.For("Endpoints"),
	}
	c.written = controllers.NewWriteBarrier(c.endpoints)
	c.Loop = controllers.NewLoop(env, c, controllers.LoopOptions{WaitFor: []*controllers.Informer{c.services, c.pods, c.endpoints}})
	c.services.AddHandler(controllers.EnqueueObject(c.Queue()))
	// An Endpoints object deleted or edited by hand is put right.
	c.endpoints.AddHandler(controllers.EnqueueObject(c.Queue()))
	enqueue := func(o *pb.Object) {
		for _, k := range c.servicesOf(o) {
			c.Queue().Add(k)
		}
	}
	c.pods.AddHandler(controllers.HandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, o *pb.Object) {
			if !relevantChange(old.GetPod(), o.GetPod()) {
				return
			}
			// Old labels too: a pod that stops matching must leave.
			enqueue(old)
			enqueue(o)
		},
		DeleteFunc: enqueue,
	})
	return c
}

// servicesOf returns the keys of the Services in the pod's namespace whose
// selector matches its labels.
func (c *Controller) servicesOf(o *pb.Object) []string {
	ns := o.Meta().GetNamespace()
	set := labels.Set(o.Meta().GetLabels())
	var out []string
	for _, s := range c.services.ByIndex(controllers.IndexNamespace, ns) {
		sel := s.GetService().GetSpec().GetSelector()
		if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(set) {
			out = append(out, controllers.KeyOf(s))
		}
	}
	return out
}

// relevantChange reports whether a pod update can change any Endpoints:
// status updates that touch nothing listed are frequent and are skipped.
func relevantChange(a, b *pb.Pod) bool {
	if a == b {
		return false // a resync; the Services' own resync covers it
	}
	am, bm := a.GetMetadata(), b.GetMetadata()
	as, bs := a.GetSpec(), b.GetSpec()
	switch {
	case !maps.Equal(am.GetLabels(), bm.GetLabels()),
		(am.GetDeletionTimestamp() == nil) != (bm.GetDeletionTimestamp() == nil),
		as.GetNodeName() != bs.GetNodeName(),
		as.GetHostname() != bs.GetHostname(),
		as.GetSubdomain() != bs.GetSubdomain(),
		a.GetStatus().GetPodIp() != b.GetStatus().GetPodIp(),
		a.GetStatus().GetPhase() != b.GetStatus().GetPhase(),
		controllers.IsPodReady(a) != controllers.IsPodReady(b):
		return true
	}
	return !slices.EqualFunc(as.GetContainers(), bs.GetContainers(), func(x, y *pb.Container) bool {
		return slices.EqualFunc(x.GetPorts(), y.GetPorts(), func(p, q *pb.ContainerPort) bool { return gproto.Equal(p, q) })
	})
}

// Reconcile implements controllers.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, key string) (controllers.Result, error) {
	ns, name := controllers.SplitKey(key)
	if !c.written.Ready(key) {
		// The event of our last write enqueues the key again; the requeue
		// is a safety net.
		return controllers.Result{RequeueAfter: time.Second}, nil
	}
	epObj, haveEp := c.endpoints.Get(key)
	svcObj, ok := c.services.Get(key)
	if !ok {
		c.written.Forget(key)
		if !haveEp || !ownedByService(epObj.Meta(), name) || epObj.Meta().GetDeletionTimestamp() != nil {
			return controllers.Result{}, nil
		}
		// The UID and resourceVersion preconditions keep a newer object
		// (a Service created again a moment ago) from going.
		err := c.env.Cluster.Delete(ctx, &pb.DeleteOp{Kind: "Endpoints", Namespace: ns, Name: name,
			Uid: epObj.Meta().GetUid(), ResourceVersion: epObj.Meta().GetResourceVersion()})
		if err != nil && !controllers.IsNotFound(err) {
			return controllers.Result{}, fmt.Errorf("delete endpoints %s of a deleted service: %w", key, err)
		}
		return controllers.Result{}, nil
	}
	svc := svcObj.GetService()
	sel := svc.GetSpec().GetSelector()
	if len(sel) == 0 || svc.GetSpec().GetType() == "ExternalName" {
		return controllers.Result{}, nil // someone else's Endpoints
	}
	if svc.GetMetadata().GetDeletionTimestamp() != nil {
		return controllers.Result{}, nil // the garbage collector takes both
	}

	var pods []*pb.Pod
	for _, o := range c.pods.Select(ns, labels.SelectorFromSet(sel)) {
		pods = append(pods, o.GetPod())
	}
	want := Desired(svc, pods)

	if !haveEp {
		stored, err := c.env.Cluster.Create(ctx, pb.Wrap(want))
		if err != nil {
			return controllers.Result{}, fmt.Errorf("create endpoints %s: %w", key, err)
		}
		c.written.Wrote(key, stored)
		return controllers.Result{}, nil
	}
	cur := epObj.GetEndpoints()
	if cur.GetMetadata().GetDeletionTimestamp() != nil {
		return controllers.Result{}, nil // its deletion enqueues us again
	}
	next, changed := merge(cur, want)
	if !changed {
		return controllers.Result{}, nil
	}
	stored, err := c.env.Cluster.Update(ctx, pb.Wrap(next)) // cached resourceVersion: a precondition
	if err != nil {
		return controllers.Result{}, fmt.Errorf("update endpoints %s: %w", key, err)
	}
	c.written.Wrote(key, stored)
	return controllers.Result{}, nil
}

// ownedByService reports whether m names a Service called name among its
// owners.
func ownedByService(m *pb.ObjectMeta, name string) bool {
	return slices.ContainsFunc(m.GetOwnerReferences(), func(r *pb.OwnerReference) bool {
		return r.GetKind() == "Service" && r.GetName() == name
	})
}

// merge returns cur changed to carry want's labels, Service owner and
// subsets (other owners, annotations and the rest of metadata are kept),
// and whether anything changed.
func merge(cur, want *pb.Endpoints) (*pb.Endpoints, bool) {
	wm, cm := want.GetMetadata(), cur.GetMetadata()
	owners := slices.DeleteFunc(slices.Clone(cm.GetOwnerReferences()), func(r *pb.OwnerReference) bool { return r.GetKind() == "Service" })
	owners = append(owners, wm.GetOwnerReferences()...)
	if maps.Equal(cm.GetLabels(), wm.GetLabels()) &&
		slices.EqualFunc(cm.GetOwnerReferences(), owners, func(a, b *pb.OwnerReference) bool { return gproto.Equal(a, b) }) &&
		slices.EqualFunc(cur.GetSubsets(), want.GetSubsets(), func(a, b *pb.EndpointSubset) bool { return gproto.Equal(a, b) }) {
		return cur, false
	}
	next := gproto.Clone(cur).(*pb.Endpoints)
	next.Metadata.Labels = maps.Clone(wm.GetLabels())
	next.Metadata.OwnerReferences = owners
	next.Subsets = want.GetSubsets()
	return next, true
}

// Desired returns the Endpoints object svc should have, given the pods its
// selector matches (in any order). It does no I/O.
func Desired(svc *pb.Service, pods []*pb.Pod) *pb.Endpoints {
	m := svc.GetMetadata()
	lbls := maps.Clone(m.GetLabels())
	if lbls == nil {
		lbls = map[string]string{}
	}
	delete(lbls, LabelHeadless)
	if svc.GetSpec().GetClusterIp() == "None" {
		lbls[LabelHeadless] = ""
	}
	if len(lbls) == 0 {
		lbls = nil
	}
	return &pb.Endpoints{
		ApiVersion: "v1", Kind: "Endpoints",
		Metadata: &pb.ObjectMeta{
			Name: m.GetName(), Namespace: m.GetNamespace(), Labels: lbls,
			OwnerReferences: []*pb.OwnerReference{controllers.NewControllerRef(m, "v1", "Service")},
		},
		Subsets: Subsets(svc, pods),
	}
}

// Subsets returns the subsets of svc's Endpoints, sorted: pods with the
// same resolved ports share a subset, addresses are sorted by IP (then pod
// name), ports by name, subsets by their ports. It does no I/O.
func Subsets(svc *pb.Service, pods []*pb.Pod) []*pb.EndpointSubset {
	spec := svc.GetSpec()
	publishAll := spec.GetPublishNotReadyAddresses()
	headless := spec.GetClusterIp() == "None"
	groups := map[string]*pb.EndpointSubset{}
	for _, pod := range pods {
		if !include(pod, publishAll) {
			continue
		}
		var ports []*pb.EndpointPort
		for _, sp := range spec.GetPorts() {
			if num, ok := ResolvePort(pod, sp); ok {
				ports = append(ports, &pb.EndpointPort{Name: sp.GetName(), Port: num, Protocol: protocol(sp.GetProtocol())})
			}
		}
		// A Service with ports lists only pods serving one of them; a
		// headless one without ports lists its pods' addresses alone.
		if len(ports) == 0 && (len(spec.GetPorts()) > 0 || !headless) {
			continue
		}
		slices.SortFunc(ports, comparePorts)
		sig := portsKey(ports)
		ss := groups[sig]
		if ss == nil {
			ss = &pb.EndpointSubset{Ports: ports}
			groups[sig] = ss
		}
		addr := address(svc, pod)
		if publishAll || controllers.IsPodReady(pod) {
			ss.Addresses = append(ss.Addresses, addr)
		} else {
			ss.NotReadyAddresses = append(ss.NotReadyAddresses, addr)
		}
	}
	out := make([]*pb.EndpointSubset, 0, len(groups))
	for _, sig := range slices.Sorted(maps.Keys(groups)) {
		ss := groups[sig]
		slices.SortFunc(ss.Addresses, compareAddresses)
		slices.SortFunc(ss.NotReadyAddresses, compareAddresses)
		out = append(out, ss)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// include reports whether a pod belongs in Endpoints at all.
func include(pod *pb.Pod, publishAll bool) bool {
	switch {
	case pod.GetSpec().GetNodeName() == "", pod.GetStatus().GetPodIp() == "", controllers.IsPodTerminal(pod):
		return false
	case pod.GetMetadata().GetDeletionTimestamp() != nil:
		// Kubernetes keeps terminating pods only for Services that publish
		// not-ready addresses (peer discovery during shutdown).
		return publishAll
	}
	return true
}

func address(svc *pb.Service, pod *pb.Pod) *pb.EndpointAddress {
	m := pod.GetMetadata()
	node := pod.GetSpec().GetNodeName()
	a := &pb.EndpointAddress{
		Ip:        pod.GetStatus().GetPodIp(),
		NodeName:  &node,
		TargetRef: &pb.ObjectReference{Kind: "Pod", Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()},
	}
	// A pod naming this Service as its subdomain is reachable by
	// hostname.service (Kubernetes' rule for StatefulSet-style pods).
	if h := pod.GetSpec().GetHostname(); h != "" && pod.GetSpec().GetSubdomain() == svc.GetMetadata().GetName() &&
		m.GetNamespace() == svc.GetMetadata().GetNamespace() {
		a.Hostname = h
	}
	return a
}

// ResolvePort returns the pod port a Service port's traffic goes to: the
// targetPort number, the port itself when targetPort is empty, or the
// containerPort of the pod's container port of that name and protocol (ok
// is false when the pod has none).
func ResolvePort(pod *pb.Pod, sp *pb.ServicePort) (int32, bool) {
	tp := sp.GetTargetPort()
	if tp == "" {
		return sp.GetPort(), sp.GetPort() > 0
	}
	if n, err := strconv.ParseInt(tp, 10, 32); err == nil {
		return int32(n), n > 0
	}
	proto := protocol(sp.GetProtocol())
	for _, c := range pod.GetSpec().GetContainers() {
		for _, p := range c.GetPorts() {
			if p.GetName() == tp && protocol(p.GetProtocol()) == proto {
				return p.GetContainerPort(), true
			}
		}
	}
	return 0, false
}

func protocol(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

func comparePorts(a, b *pb.EndpointPort) int {
	return cmp.Or(strings.Compare(a.GetName(), b.GetName()), cmp.Compare(a.GetPort(), b.GetPort()),
		strings.Compare(a.GetProtocol(), b.GetProtocol()))
}

func portsKey(ports []*pb.EndpointPort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprintf("%s/%05d/%s", p.GetName(), p.GetPort(), p.GetProtocol())
	}
	return strings.Join(parts, ",")
}

func compareAddresses(a, b *pb.EndpointAddress) int {
	return cmp.Or(compareIPs(a.GetIp(), b.GetIp()), strings.Compare(a.GetTargetRef().GetName(), b.GetTargetRef().GetName()))
}

// compareIPs orders addresses numerically when both parse (10.0.0.9 before
// 10.0.0.10), as text otherwise.
func compareIPs(a, b string) int {
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return x.Compare(y)
	}
	return strings.Compare(a, b)
}
