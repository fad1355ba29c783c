// Package runtime runs the containers of pods on a Linux worker with runc's
// libcontainer.
//
// A pod gets a Sandbox: network, IPC and UTS namespaces created once and
// pinned by bind mounts under the state directory (as `ip netns` and CNI do),
// a /dev/shm tmpfs shared by its containers, and a pod cgroup. Each
// container joins the sandbox's namespaces by path, gets its own mount and
// PID namespaces, a cgroup below the pod's, and an overlayfs rootfs of its
// image layers plus a private upper directory.
//
// Every container has a monitor process, the "shim" (package shim): the
// command in Config.ShimCommand, skiff-shim when it is installed beside the
// worker's binary, else the worker binary re-executed with shim.Subcommand.
// The shim creates and starts the container (so the container's init is
// the shim's child), owns its stdout/stderr and writes them to a rotated
// log file in the CRI format, waits for the exit, records the exit status
// (code, signal, OOMKilled, finishedAt) on disk, destroys the container and
// exits. The shim runs in its own session, so containers, their logs and
// their exit codes survive a worker restart; a new Runtime over the same
// directories re-adopts them through List/Status.
//
// Binaries that use this package must let package shim handle its two
// re-exec entry points before doing anything else (see its documentation);
// tests do the same in TestMain. The binary must be built with cgo (the
// nsenter part of libcontainer is C).
package runtime
