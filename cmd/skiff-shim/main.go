// Command skiff-shim is a container's shim and libcontainer's init, nothing
// else: the worker (skiff worker) starts it for every container when it is
// installed beside the skiff binary from the same build. It links only
// package shim and libcontainer, so each of the two processes a container
// start runs begins in a fraction of the CPU the whole skiff binary takes
// (docs/performance.md); without it the worker runs skiff itself in both
// roles. It is not run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

func main() {
	shim.Init() // libcontainer's init: does not return in that case
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case shim.Subcommand:
			os.Exit(shim.Main(os.Args[2:]))
		case shim.VersionArg:
			fmt.Println(shim.Build())
			return
		}
	}
	fmt.Fprintf(os.Stderr, "skiff-shim runs containers for skiff worker, which starts it; it is not run by hand.\n"+
		"Install it beside the skiff binary (make build puts both in bin/).\n")
	os.Exit(2)
}
