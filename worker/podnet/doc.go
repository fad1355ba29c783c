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
