// Package shim is what runs in a container's own processes: the shim, the
// container's parent (it creates and starts the container with
// libcontainer, owns its stdout and stderr and writes them to a rotated
// log in the CRI format, waits for the exit, records it and destroys the
// container), and libcontainer's init, which the shim's binary re-executes
// to set up the container (Init).
//
// It imports nothing else of skiff, so cmd/skiff-shim, the binary the
// worker starts for every container when it is installed beside skiff,
// links libcontainer and little more: it starts in a fraction of the CPU
// the whole skiff binary takes (package initialisation, page faults), and
// a container start runs two such processes. Without skiff-shim the worker
// runs its own binary in both roles; main dispatches them first:
//
//	func main() {
//		shim.Init() // libcontainer's "init"; does not return in that case
//		if len(os.Args) > 1 && os.Args[1] == shim.Subcommand {
//			os.Exit(shim.Main(os.Args[2:]))
//		}
//		...
//	}
//
// The files it shares with the worker (the record, the shim's state, the
// exit record) are defined here. The binary must be built with cgo (the
// nsenter part of libcontainer is C).
package shim
