package shim

import (
	"os"
	"runtime"
	"time"

	_ "github.com/opencontainers/cgroups/devices" // device cgroup rules; without it they fail
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // C half of "init": joins namespaces before Go starts
	"golang.org/x/sys/unix"
)

// ContainerTimerSlack is the timer slack (how late the kernel may end a
// timed sleep) a container's processes start with: the kernel's default,
// which containers get from runc and Docker too. A worker runs with a
// larger one (skiff worker --timer-slack), and its shims and the
// containers' inits inherit it, so that Go's monitor thread wakes them less
// often while they set a container up; the program they start must not.
const ContainerTimerSlack = 50 * time.Microsecond

// Init runs libcontainer's container init when the process was started as
// "<binary> init" (libcontainer re-executes the binary that way, through
// /proc/self/exe, to set up every container process and every exec). In
// that case it never returns. Otherwise it returns at once.
//
// Call it first thing in main (and in TestMain of tests that run
// containers), before anything starts goroutines that matter.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// libcontainer's init locks this thread too and execs the
		// container's program from it: the program keeps its slack. The
		// init's other threads keep the one they inherited.
		runtime.LockOSThread()
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ContainerTimerSlack.Nanoseconds()), 0, 0, 0)
		libcontainer.Init()
	}
}
