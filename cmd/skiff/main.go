// Command skiff is the single skiff binary: master (`skiff server`), worker,
// local dev cluster (`skiff dev`) and the operator command line.
package main

import (
	"os"

	"github.com/skiff-sh/skiff/cli"
	"github.com/skiff-sh/skiff/worker/runtime/shim"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Re-executions of this binary come first: libcontainer's container init
	// (never returns) and the per-container shim.
	shim.Init()
	if len(os.Args) > 1 && os.Args[1] == shim.Subcommand {
		os.Exit(shim.Main(os.Args[2:]))
	}
	root := cli.NewRootCommand(version)
	root.AddCommand(newServerCommand(), newWorkerCommand(), newDevCommand(), newTokenCommand())
	os.Exit(cli.Execute(root))
}
