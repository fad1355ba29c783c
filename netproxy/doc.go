// Package netproxy makes Services reachable on a worker, as kube-proxy and
// the cluster DNS do for Kubernetes.
//
// A Cache follows the Services and Endpoints of the cluster (list, then
// watch, relisting when the watch expires). The Proxy turns the cache into
// a RuleSet with Translate, a pure function, and hands the whole RuleSet to a
// backend on every change, no more often than Config.MinSyncInterval:
//
//   - nftables (the default, like kube-proxy's nftables mode): one table of
//     family ip, rebuilt as a whole in a single netlink batch, so packets
//     never see a half-written rule set and a restarted worker replaces
//     whatever an earlier process left on its first sync;
//   - userspace (hosts without nftables): ClusterIPs are added to a link of
//     their own and a Go listener per service port forwards connections.
//
// The DNS server answers NAME.NAMESPACE.svc.DOMAIN from the same kind of
// cache, so a worker can run both from one list+watch (Config.Cache,
// DNSConfig.Cache).
//
// Files: config.go (configuration), cache.go (list+watch), ruleset.go
// (Translate: no I/O), proxy.go (the sync loop), backend_linux.go,
// nftables_linux.go and userspace_linux.go (backends), backend_other.go
// (the stub elsewhere), dns.go. Tests that touch the network re-run the
// test binary in a network namespace of its own (netns_linux_test.go).
package netproxy
