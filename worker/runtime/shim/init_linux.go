package shim

import (
	"os"

	_ "github.com/opencontainers/cgroups/devices" // device cgroup rules; without it they fail
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // C half of "init": joins namespaces before Go starts
)

// Init runs libcontainer's container init when the process was started as
// "<binary> init" (libcontainer re-executes the binary that way, through
// /proc/self/exe, to set up every container process and every exec). In
// that case it never returns. Otherwise it returns at once.
//
// Call it first thing in main (and in TestMain of tests that run
// containers), before anything starts goroutines that matter.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}
