package fsm

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	pb "github.com/skiff-sh/skiff/proto"
)

// Service allocations.
//
// A Service's clusterIP and nodePorts are allocated by being held: the
// store keeps no separate bitmap, so deleting a Service frees its values
// and a snapshot needs nothing extra (the indexes are rebuilt on Restore).
// The leader picks free values before it proposes (Apply has no
// randomness); Apply decides uniqueness, so two leaders' concurrent picks,
// or a pick racing an entry still in flight, cannot both win.

// ErrAllocated is matched by the error of a Service write whose clusterIP
// or a nodePort another Service already holds. Such errors are also
// ErrInvalid (a user-chosen value is the user's mistake); a leader that
// picked the value itself picks another and proposes again.
var ErrAllocated = errors.New("already allocated")

// AllocationError is the Result.Err of a Service write whose clusterIP or
// nodePort is already held. errors.Is matches ErrAllocated and ErrInvalid.
type AllocationError struct {
	Object string // the Service written, e.g. services "default/web"
	Field  string // spec.clusterIP or spec.ports[i].nodePort
	Value  string // the IP or port, as it appears in the message
}

func (e *AllocationError) Error() string {
	what := "IP"
	if e.Field != "spec.clusterIP" {
		what = "port"
	}
	return fmt.Sprintf("%s: %s: Invalid value: %s: provided %s is already allocated", e.Object, e.Field, e.Value, what)
}

// Is makes errors.Is(err, ErrAllocated) and errors.Is(err, ErrInvalid) true.
func (e *AllocationError) Is(target error) bool {
	return target == ErrAllocated || target == ErrInvalid
}

// fieldError is an invalid field of an object, worded as Kubernetes'
// field errors ("spec.clusterIP: Invalid value: ...") without naming the
// object, so each caller can; it matches ErrInvalid.
type fieldError struct{ msg string }

func (e *fieldError) Error() string        { return e.msg }
func (e *fieldError) Is(target error) bool { return target == ErrInvalid }

// ClusterIPKey returns the form a clusterIP is indexed under: the canonical
// text of the address (IPv4-mapped IPv6 unmapped), so that two spellings
// of one address collide. ok is false for values that hold no IP ("",
// "None"). Unparsable values are indexed as written; validation keeps
// them out, and the store only needs to be deterministic about them.
func ClusterIPKey(ip string) (key string, ok bool) {
	if ip == "" || ip == "None" {
		return "", false
	}
	if a, err := netip.ParseAddr(ip); err == nil {
		return a.Unmap().String(), true
	}
	return ip, true
}

// serviceAllocations returns what a stored object holds, for its record.
func serviceAllocations(obj *pb.Object) (clusterIP string, nodePorts []string) {
	svc := obj.GetService()
	if svc == nil {
		return "", nil
	}
	clusterIP, _ = ClusterIPKey(svc.GetSpec().GetClusterIp())
	for _, p := range svc.GetSpec().GetPorts() {
		if np := p.GetNodePort(); np != 0 {
			if s := strconv.Itoa(int(np)); !contains(nodePorts, s) {
				nodePorts = append(nodePorts, s)
			}
		}
	}
	return clusterIP, nodePorts
}

// MergeServiceUpdate applies Kubernetes' update rules for allocated values
// to next, the spec an update or apply writes over cur (nil for a create):
//
//   - clusterIP and clusterIPs agree: an omitted one is taken from the other;
//   - an omitted clusterIP/clusterIPs keeps cur's (re-applying the original
//     manifest keeps the allocated IP);
//   - clusterIP and clusterIPs are immutable once set;
//   - while both cur and next are NodePort, a port without nodePort keeps the
//     nodePort of cur's port with the same name (else the same port number
//     and protocol), unless next already uses it elsewhere. A NodePort ->
//     ClusterIP change keeps nothing, so the ports are freed.
//
// Apply enforces these rules; the leader calls it before allocating so it
// allocates only what is still missing. The error matches ErrInvalid and
// names the field, not the object.
func MergeServiceUpdate(cur, next *pb.ServiceSpec) error {
	if next.GetClusterIp() == "" && len(next.GetClusterIps()) > 0 {
		next.ClusterIp = next.ClusterIps[0]
	}
	if cur != nil && cur.GetClusterIp() != "" {
		if next.GetClusterIp() == "" {
			next.ClusterIp = cur.GetClusterIp()
			next.ClusterIps = slices.Clone(cur.GetClusterIps())
		}
		if next.GetClusterIp() != cur.GetClusterIp() {
			return &fieldError{fmt.Sprintf("spec.clusterIP: Invalid value: %q: field is immutable", next.GetClusterIp())}
		}
	}
	if next.GetClusterIp() != "" && len(next.GetClusterIps()) == 0 {
		next.ClusterIps = []string{next.GetClusterIp()}
	}
	if cur != nil && len(cur.GetClusterIps()) > 0 && !slices.Equal(cur.GetClusterIps(), next.GetClusterIps()) {
		return &fieldError{fmt.Sprintf("spec.clusterIPs: Invalid value: %q: field is immutable", next.GetClusterIps())}
	}
	if cur.GetType() != "NodePort" || next.GetType() != "NodePort" {
		return nil
	}
	var used []int32
	for _, p := range next.GetPorts() {
		if np := p.GetNodePort(); np != 0 {
			used = append(used, np)
		}
	}
	for _, p := range next.GetPorts() {
		if p == nil || p.GetNodePort() != 0 {
			continue
		}
		old := matchPort(cur.GetPorts(), p)
		if old == nil || old.GetNodePort() == 0 || slices.Contains(used, old.GetNodePort()) {
			continue
		}
		p.NodePort = old.GetNodePort()
		used = append(used, p.NodePort)
	}
	return nil
}

// matchPort finds p's counterpart among ports: by name as Kubernetes does,
// or, when no port has that name (a single unnamed port that got a name
// when a second port was added), by port number and protocol.
func matchPort(ports []*pb.ServicePort, p *pb.ServicePort) *pb.ServicePort {
	for _, o := range ports {
		if o.GetName() == p.GetName() {
			return o
		}
	}
	for _, o := range ports {
		if o.GetPort() == p.GetPort() && protocolOf(o) == protocolOf(p) {
			return o
		}
	}
	return nil
}

func protocolOf(p *pb.ServicePort) string {
	if p.GetProtocol() == "" {
		return "TCP"
	}
	return p.GetProtocol()
}

// checkService applies the allocation rules to svc, a Service about to be
// stored over cur (nil for a create), and refuses values another Service
// holds. self is the object's primary key: what it holds already is its own.
func (a *applier) checkService(km *kindMeta, svc *pb.Service, cur *pb.Service, self string) error {
	if svc.Spec == nil {
		svc.Spec = &pb.ServiceSpec{}
	}
	m := svc.GetMetadata()
	if err := MergeServiceUpdate(cur.GetSpec(), svc.Spec); err != nil {
		return errorf(ErrInvalid, "%s: %v", describe(km, m.GetNamespace(), m.GetName()), err)
	}
	view := ServiceAllocations{t: a.txn}
	if key, ok := ClusterIPKey(svc.Spec.GetClusterIp()); ok {
		if holder := view.holder(indexClusterIP, key, self); holder != "" {
			return &AllocationError{Object: describe(km, m.GetNamespace(), m.GetName()), Field: "spec.clusterIP", Value: strconv.Quote(svc.Spec.GetClusterIp())}
		}
	}
	for i, p := range svc.Spec.GetPorts() {
		if np := p.GetNodePort(); np != 0 {
			if holder := view.holder(indexNodePort, strconv.Itoa(int(np)), self); holder != "" {
				return &AllocationError{Object: describe(km, m.GetNamespace(), m.GetName()), Field: fmt.Sprintf("spec.ports[%d].nodePort", i), Value: strconv.Itoa(int(np))}
			}
		}
	}
	return nil
}

// ServiceAllocations is a consistent read-only view of the clusterIPs and
// nodePorts that stored Services hold, for the leader's allocator: each
// lookup is one index probe.
type ServiceAllocations struct {
	t *tables
}

// ServiceAllocations returns a view of the store as of now.
func (f *FSM) ServiceAllocations() ServiceAllocations {
	t, _ := f.read()
	return ServiceAllocations{t: t}
}

// ClusterIPHolder returns "namespace/name" of a Service holding ip, or "".
func (v ServiceAllocations) ClusterIPHolder(ip string) string {
	key, ok := ClusterIPKey(ip)
	if !ok {
		return ""
	}
	return v.holder(indexClusterIP, key, "")
}

// NodePortHolder returns "namespace/name" of a Service holding port, or "".
func (v ServiceAllocations) NodePortHolder(port int32) string {
	return v.holder(indexNodePort, strconv.Itoa(int(port)), "")
}

// holder returns "namespace/name" of the first record other than self
// indexed under value. The indexes are not unique on purpose: a store
// restored from before these rules may hold duplicates, which must stay
// readable and deletable.
func (v ServiceAllocations) holder(index indexName, value, self string) string {
	if v.t == nil {
		return ""
	}
	holder := ""
	v.t.ascendIndex(index, value, func(r *record) bool {
		if r.key != self {
			holder = displayKey(r.namespace, r.name)
		}
		return holder == ""
	})
	return holder
}
