// Package worker is skiff's node agent: what `skiff worker` runs on every
// machine that runs pods, as the kubelet does for Kubernetes.
//
// An Agent joins the masters' memberlist pool with role "worker" and learns
// the masters' API addresses from their gossip metadata; the leader
// registers it as a Node by asking its NodeAgent service (Info), and the
// agent keeps the Node's Ready condition fresh with heartbeats. It follows
// the pods bound to its node (list, then watch, relisting when the watch
// expires) and gives each pod UID its own goroutine, a pod worker, which
// drives the pod's containers towards the spec level-triggered: sandbox,
// volumes, init and app containers, restarts with CrashLoopBackOff,
// probes, graceful deletion confirmed to the API, and the pod's status.
// Containers run through the Runtime interface, implemented by package
// runtime (libcontainer) and by HollowRuntime (no containers, for scale
// tests). Pod records live in bbolt so a restarted agent re-adopts the
// containers that still run. The NodeAgent gRPC service (Server) serves
// registration, logs and exec; operators reach it only through the
// masters, which relay.
//
// Files: agent.go (Agent), config.go, gossip.go and masters.go
// (membership, API client), heartbeat.go and nodeinfo.go (the Node),
// podmanager.go and podworker.go (the sync loop), status.go (pod status,
// restart policy and backoff: no I/O), probes.go and netns_linux.go,
// env.go and volumes.go, state.go (bbolt), logs.go and nodeserver.go
// (NodeAgent), hollow.go, network.go (the pod network: package podnet's
// bridge, IPs and host-gw routes, and each pod's /etc/hosts and
// /etc/resolv.conf), security.go (seccomp choice of a container).
package worker
