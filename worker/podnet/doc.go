// Package podnet is a worker's pod network, the bridge plugin of skiff:
// every non-hostNetwork pod gets one end of a veth pair as eth0 in its
// network namespace, with an address from the node's pod CIDR and a default
// route via the bridge's gateway address; the other end is a port of the
// node's bridge. Pods of one node talk over the bridge; pods of other nodes
// are reached through host-gw routes (another node's pod CIDR via its
// address) that SetRoutes keeps; traffic leaving the cluster CIDR is
// masqueraded by an nftables table the package owns and rebuilds as a
// whole.
//
// The pod network is IPv4 only, and so are the bridge and the veths: IPv6
// is turned off on the bridge and on both ends of every veth
// (net.ipv6.conf.<link>.disable_ipv6, before the pod's eth0 goes up), as
// Docker does on an IPv4-only network, so no link-local
// address, duplicate-address probe or multicast is flooded over the bridge
// and pods have no fe80:: path around the IPv4 rules. IPv6 on the pod's lo
// stays: [::1] and dual-stack listeners work inside a pod.
//
// IP addresses are allocated by an Allocator that persists every
// allocation in bbolt before the address is used, so a restarted worker
// gives a pod the address it had and never hands out one twice. The
// allocator is plain Go (it runs anywhere, and hollow nodes use it in
// memory); the network itself (network_linux.go) needs Linux, root,
// netlink and nftables.
//
// Everything the package does to the host happens in one network
// namespace: the process's own, or Config.NetNS. Tests run it inside
// namespaces they create, so they never touch the machine's network.
package podnet
