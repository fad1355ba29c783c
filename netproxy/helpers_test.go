package netproxy

import (
	"net/netip"
	"strconv"
	"strings"

	pb "github.com/skiff-sh/skiff/proto"
)

// svcPort is "name:port/proto->target[:nodePort]" shorthand, e.g.
// "http:80/TCP->web:30080", "53/UDP->53", ":80->8080".
func svcPort(s string) *pb.ServicePort {
	p := &pb.ServicePort{}
	head, target, _ := strings.Cut(s, "->")
	if t, np, ok := strings.Cut(target, ":"); ok {
		target = t
		n, _ := strconv.Atoi(np)
		p.NodePort = int32(n)
	}
	p.TargetPort = target
	if name, rest, ok := strings.Cut(head, ":"); ok {
		p.Name, head = name, rest
	}
	if port, proto, ok := strings.Cut(head, "/"); ok {
		head, p.Protocol = port, proto
	}
	n, _ := strconv.Atoi(head)
	p.Port = int32(n)
	return p
}

func testService(ns, name, clusterIP, typ string, ports ...string) *pb.Service {
	s := &pb.Service{
		Metadata: &pb.ObjectMeta{Namespace: ns, Name: name},
		Spec:     &pb.ServiceSpec{ClusterIp: clusterIP, Type: typ},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, svcPort(p))
	}
	return s
}

// testSubset builds a subset: ready and notReady are IP lists, ports are
// "name:port/proto" ("8080" for an unnamed TCP port).
func testSubset(ready, notReady []string, ports ...string) *pb.EndpointSubset {
	ss := &pb.EndpointSubset{}
	for _, ip := range ready {
		ss.Addresses = append(ss.Addresses, &pb.EndpointAddress{Ip: ip})
	}
	for _, ip := range notReady {
		ss.NotReadyAddresses = append(ss.NotReadyAddresses, &pb.EndpointAddress{Ip: ip})
	}
	for _, s := range ports {
		p := &pb.EndpointPort{}
		if name, rest, ok := strings.Cut(s, ":"); ok {
			p.Name, s = name, rest
		}
		if port, proto, ok := strings.Cut(s, "/"); ok {
			s, p.Protocol = port, proto
		}
		n, _ := strconv.Atoi(s)
		p.Port = int32(n)
		ss.Ports = append(ss.Ports, p)
	}
	return ss
}

func testEndpoints(ns, name string, subsets ...*pb.EndpointSubset) *pb.Endpoints {
	return &pb.Endpoints{Metadata: &pb.ObjectMeta{Namespace: ns, Name: name}, Subsets: subsets}
}

func ips(s ...string) []string { return s }

func netip4(s string) netip.Addr { return netip.MustParseAddr(s) }
