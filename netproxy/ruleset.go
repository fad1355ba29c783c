package netproxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	pb "github.com/skiff-sh/skiff/proto"
)

// RuleSet is what the proxy wants the node to do: every service port it
// forwards, in a deterministic order. Backends program it as a whole.
type RuleSet struct {
	Ports []ServicePort
}

// ServicePort is one port of one Service and the ready endpoints behind it.
type ServicePort struct {
	Namespace string
	Name      string // the Service's name
	PortName  string // the port's name ("" for a single unnamed port)
	Protocol  string // TCP, UDP or SCTP
	ClusterIP netip.Addr
	Port      uint16
	NodePort  uint16 // 0 unless the Service is of type NodePort
	// Endpoints are the ready addresses with the resolved target port,
	// sorted and without duplicates. Empty means traffic is rejected.
	Endpoints []netip.AddrPort
}

// Key names the service port uniquely: namespace/name/protocol/portname.
func (p ServicePort) Key() string {
	return p.Namespace + "/" + p.Name + "/" + strings.ToLower(p.Protocol) + "/" + p.PortName
}

// String renders the rule set one service port a line, for logs and golden
// files.
func (r RuleSet) String() string {
	var b strings.Builder
	for _, p := range r.Ports {
		fmt.Fprintf(&b, "%s %s:%d", p.Key(), p.ClusterIP, p.Port)
		if p.NodePort != 0 {
			fmt.Fprintf(&b, " nodePort=%d", p.NodePort)
		}
		b.WriteString(" ->")
		if len(p.Endpoints) == 0 {
			b.WriteString(" reject")
		}
		for _, e := range p.Endpoints {
			b.WriteString(" " + e.String())
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Translate turns Services and their Endpoints into the rules to program.
// Only ready addresses become endpoints. Headless Services (clusterIP None),
// Services without an IPv4 ClusterIP and ports that do not parse are
// skipped: the proxy has nothing to forward for them. The result does not
// depend on the order of the inputs.
func Translate(services []*pb.Service, endpoints []*pb.Endpoints) RuleSet {
	eps := make(map[string]*pb.Endpoints, len(endpoints))
	for _, e := range endpoints {
		eps[e.GetMetadata().GetNamespace()+"/"+e.GetMetadata().GetName()] = e
	}
	var out RuleSet
	for _, svc := range services {
		spec := svc.GetSpec()
		cip, err := netip.ParseAddr(spec.GetClusterIp())
		if err != nil || !cip.Is4() {
			continue
		}
		meta := svc.GetMetadata()
		ep := eps[meta.GetNamespace()+"/"+meta.GetName()]
		for _, sp := range spec.GetPorts() {
			if sp.GetPort() <= 0 || sp.GetPort() > 65535 {
				continue
			}
			p := ServicePort{
				Namespace: meta.GetNamespace(),
				Name:      meta.GetName(),
				PortName:  sp.GetName(),
				Protocol:  protocol(sp.GetProtocol()),
				ClusterIP: cip,
				Port:      uint16(sp.GetPort()),
			}
			if spec.GetType() == "NodePort" && sp.GetNodePort() > 0 && sp.GetNodePort() <= 65535 {
				p.NodePort = uint16(sp.GetNodePort())
			}
			p.Endpoints = readyEndpoints(ep, p.PortName, p.Protocol)
			out.Ports = append(out.Ports, p)
		}
	}
	slices.SortFunc(out.Ports, func(a, b ServicePort) int {
		return cmp.Or(
			cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.PortName, b.PortName),
			cmp.Compare(a.Protocol, b.Protocol),
		)
	})
	return out
}

func protocol(s string) string {
	if s == "" {
		return "TCP"
	}
	return strings.ToUpper(s)
}

// readyEndpoints returns the ready addresses of ep with the port whose name
// and protocol match the service port's: the endpoints controller has
// already resolved targetPort, by number or by name, for each pod.
func readyEndpoints(ep *pb.Endpoints, portName, proto string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, ss := range ep.GetSubsets() {
		var port int32
		for _, p := range ss.GetPorts() {
			if p.GetName() == portName && protocol(p.GetProtocol()) == proto {
				port = p.GetPort()
				break
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, a := range ss.GetAddresses() {
			ip, err := netip.ParseAddr(a.GetIp())
			if err != nil || !ip.Is4() {
				continue
			}
			out = append(out, netip.AddrPortFrom(ip, uint16(port)))
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out)
}
