package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/fsm"
	pb "github.com/skiff-sh/skiff/proto"
)

// Service clusterIP and node port allocation, as kube-apiserver does it.
//
// The leader picks free values from its own store (current for everything
// committed) before proposing, at random so that concurrent creates rarely
// pick the same one. The store decides uniqueness when it applies the
// entry (fsm.ErrAllocated); a value the leader picked that lost such a race
// is picked again, a value the user chose is the user's error. Nothing is
// held besides the Services themselves, so deleting one frees its values.

// Kubernetes' defaults for Config.ServiceCIDR and ServiceNodePortRange.
const (
	DefaultServiceCIDR          = "10.96.0.0/16"
	DefaultServiceNodePortRange = "30000-32767"
)

// maxServiceHostBits bounds the service CIDR as kube-apiserver does: at
// most a /12 of IPv4 (or a /108 of IPv6), 2^20 addresses.
const maxServiceHostBits = 20

// maxAllocAttempts is how many times a Service write is proposed when the
// store finds a value the leader picked already taken by a write that
// committed in between.
const maxAllocAttempts = 8

// randomProbes is how many random candidates are tried before a scan: in a
// mostly free range the first one almost always is free; a scan finds the
// last free values of a nearly full one and tells a full one for sure.
const randomProbes = 16

// serviceCIDR is a parsed Config.ServiceCIDR.
type serviceCIDR struct {
	prefix netip.Prefix
	size   uint64 // addresses in the prefix
}

func parseServiceCIDR(s string) (serviceCIDR, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return serviceCIDR{}, fmt.Errorf("%q is not a CIDR such as %s: %v", s, DefaultServiceCIDR, err)
	}
	if p.Addr().Is4In6() {
		return serviceCIDR{}, fmt.Errorf("%q is an IPv4-mapped IPv6 range: write it as IPv4", s)
	}
	if p.Masked() != p {
		return serviceCIDR{}, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
	}
	host := p.Addr().BitLen() - p.Bits()
	switch {
	case host > maxServiceHostBits:
		return serviceCIDR{}, fmt.Errorf("%q is too large: at most %d addresses (a /%d for IPv4)", s, 1<<maxServiceHostBits, 32-maxServiceHostBits)
	case host < 2:
		return serviceCIDR{}, fmt.Errorf("%q is too small: it leaves no address for Services (use at least a /%d)", s, p.Addr().BitLen()-2)
	}
	return serviceCIDR{prefix: p, size: 1 << host}, nil
}

// lastHost is the offset of the last address a Service may hold: IPv4
// leaves out the broadcast address.
func (c serviceCIDR) lastHost() uint64 {
	if c.prefix.Addr().Is4() {
		return c.size - 2
	}
	return c.size - 1
}

// addr returns the address at offset off from the network address.
func (c serviceCIDR) addr(off uint64) netip.Addr {
	b := c.prefix.Addr().As16()
	low := binary.BigEndian.Uint64(b[8:]) + off // no carry: at most 20 host bits
	binary.BigEndian.PutUint64(b[8:], low)
	a := netip.AddrFrom16(b)
	if c.prefix.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// offset returns a's offset from the network address, if a is inside.
func (c serviceCIDR) offset(a netip.Addr) (uint64, bool) {
	if !c.prefix.Contains(a) {
		return 0, false
	}
	x, y := a.As16(), c.prefix.Addr().As16()
	return binary.BigEndian.Uint64(x[8:]) - binary.BigEndian.Uint64(y[8:]), true
}

// pick returns a free address for a new Service. The network address, the
// first host (kept for the "kubernetes" Service, as Kubernetes does) and
// the IPv4 broadcast address are never picked.
func (c serviceCIDR) pick(free func(string) bool) (string, bool) {
	off, ok := pickFree(2, c.lastHost(), func(o uint64) bool { return free(c.addr(o).String()) })
	if !ok {
		return "", false
	}
	return c.addr(off).String(), true
}

// portRange is a parsed Config.ServiceNodePortRange.
type portRange struct{ min, max int32 }

func parseNodePortRange(s string) (portRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return portRange{}, fmt.Errorf("%q is not a range min-max such as %s", s, DefaultServiceNodePortRange)
	}
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	switch {
	case err1 != nil || err2 != nil:
		return portRange{}, fmt.Errorf("%q is not a range min-max of port numbers such as %s", s, DefaultServiceNodePortRange)
	case a < 1 || a > b:
		return portRange{}, fmt.Errorf("%q: need 1 <= min <= max <= 65535", s)
	}
	return portRange{min: int32(a), max: int32(b)}, nil
}

func (r portRange) contains(p int32) bool { return p >= r.min && p <= r.max }

func (r portRange) String() string { return fmt.Sprintf("%d-%d", r.min, r.max) }

func (r portRange) pick(free func(int32) bool) (int32, bool) {
	off, ok := pickFree(0, uint64(r.max-r.min), func(o uint64) bool { return free(r.min + int32(o)) })
	return r.min + int32(off), ok
}

// pickFree returns a value in [lo, hi] for which free is true: a few random
// probes, then a scan from a random start, so every free value is found.
func pickFree(lo, hi uint64, free func(uint64) bool) (uint64, bool) {
	if hi < lo {
		return 0, false
	}
	n := hi - lo + 1
	for range min(randomProbes, n) {
		if v := lo + mrand.Uint64N(n); free(v) {
			return v, true
		}
	}
	start := mrand.Uint64N(n)
	for i := range n {
		if v := lo + (start+i)%n; free(v) {
			return v, true
		}
	}
	return 0, false
}

// serviceAlloc records which values the leader picked for one Service
// write, so that ErrAllocated on one of them means "pick again".
type serviceAlloc struct {
	ip    bool
	ports []int // indexes into spec.ports of the node ports picked
}

// repick reports whether err is the store refusing a value this write's
// leader picked (a concurrent write took it first).
func (a *serviceAlloc) repick(err error) bool {
	var ae *fsm.AllocationError
	if a == nil || !errors.As(err, &ae) {
		return false
	}
	if ae.Field == "spec.clusterIP" {
		return a.ip
	}
	for _, i := range a.ports {
		if ae.Field == fmt.Sprintf("spec.ports[%d].nodePort", i) {
			return true
		}
	}
	return false
}

// allocateService completes o, a prepared Service about to be proposed by
// op, the way kube-apiserver does: on an update or apply, omitted values
// keep the stored ones and clusterIP stays immutable (fsm.MergeServiceUpdate);
// a missing clusterIP and, for type NodePort, missing node ports are picked
// from the configured ranges; values the user chose are checked to be in
// range and free. Other objects and status writes pass unchanged (nil).
// Errors are gRPC statuses naming the field.
func (s *Server) allocateService(op writeOp, o *pb.Object) (*serviceAlloc, error) {
	svc := o.GetService()
	if svc == nil || op == opUpdateStatus {
		return nil, nil
	}
	cidr, err := parseServiceCIDR(s.cfg.ServiceCIDR)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "server config: ServiceCIDR: %v", err) // Validate checked it
	}
	nodePorts, err := parseNodePortRange(s.cfg.ServiceNodePortRange)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "server config: ServiceNodePortRange: %v", err)
	}
	if svc.Spec == nil {
		svc.Spec = &pb.ServiceSpec{}
	}
	spec, m := svc.Spec, svc.GetMetadata()
	self := m.Key()
	invalid := func(format string, args ...any) error {
		return status.Errorf(codes.InvalidArgument, "services %q: %s", self, fmt.Sprintf(format, args...))
	}

	var cur *pb.ServiceSpec
	if op != opCreate {
		if obj, err := s.fsm.Get("Service", m.GetNamespace(), m.GetName()); err == nil {
			cur = obj.GetService().GetSpec()
		}
	}
	if len(spec.GetClusterIps()) > 1 {
		return nil, invalid("spec.clusterIPs: Invalid value: %q: only one IP family is supported: give at most one IP", spec.GetClusterIps())
	}
	if err := fsm.MergeServiceUpdate(cur, spec); err != nil {
		return nil, invalid("%v", err)
	}

	alloc := &serviceAlloc{}
	view := s.fsm.ServiceAllocations()
	switch ip := spec.GetClusterIp(); {
	case ip == "None":
	case ip == "":
		picked, ok := cidr.pick(func(a string) bool { return view.ClusterIPHolder(a) == "" })
		if !ok {
			return nil, status.Errorf(codes.ResourceExhausted,
				"services %q: no free IP in service CIDR %s (all %d usable addresses are allocated): delete unused services or widen --service-cluster-ip-range",
				self, cidr.prefix, cidr.lastHost()-1)
		}
		spec.ClusterIp, spec.ClusterIps, alloc.ip = picked, []string{picked}, true
	case ip != cur.GetClusterIp():
		// Chosen by the user: in range and free. Validation checked it parses.
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			return nil, invalid("spec.clusterIP: Invalid value: %q: must be a valid IP address without a zone", ip)
		}
		a = a.Unmap()
		if off, ok := cidr.offset(a); !ok || off == 0 || off > cidr.lastHost() {
			return nil, invalid("spec.clusterIP: Invalid value: %q: provided IP is not in the valid range %s (--service-cluster-ip-range; its network and broadcast addresses are not usable)", ip, cidr.prefix)
		}
		if h := view.ClusterIPHolder(a.String()); h != "" && h != self {
			return nil, invalid("spec.clusterIP: Invalid value: %q: provided IP is already allocated", ip)
		}
		// One spelling per address, so output and netproxy see the same.
		spec.ClusterIp, spec.ClusterIps = a.String(), []string{a.String()}
	}

	if spec.GetType() != "NodePort" {
		return alloc, nil
	}
	var mine []int32 // node ports the stored Service holds already
	if cur.GetType() == "NodePort" {
		for _, p := range cur.GetPorts() {
			mine = append(mine, p.GetNodePort())
		}
	}
	var chosen []int32 // node ports this spec uses, picked or not
	for _, p := range spec.GetPorts() {
		if np := p.GetNodePort(); np != 0 {
			chosen = append(chosen, np)
		}
	}
	for i, p := range spec.GetPorts() {
		np := p.GetNodePort()
		field := fmt.Sprintf("spec.ports[%d].nodePort", i)
		switch {
		case np == 0:
			picked, ok := nodePorts.pick(func(n int32) bool {
				return !slices.Contains(chosen, n) && view.NodePortHolder(n) == ""
			})
			if !ok {
				return nil, status.Errorf(codes.ResourceExhausted,
					"services %q: %s: no free node port in range %s (all allocated): delete unused NodePort services or widen --service-node-port-range",
					self, field, nodePorts)
			}
			p.NodePort = picked
			chosen = append(chosen, picked)
			alloc.ports = append(alloc.ports, i)
		case slices.Contains(mine, np):
		case !nodePorts.contains(np):
			return nil, invalid("%s: Invalid value: %d: provided port is not in the valid range %s (--service-node-port-range)", field, np, nodePorts)
		default:
			if h := view.NodePortHolder(np); h != "" && h != self {
				return nil, invalid("%s: Invalid value: %d: provided port is already allocated", field, np)
			}
		}
	}
	return alloc, nil
}
