// Command nsbox-init is libcontainer's init alone ("runc init": the process that sets a new
// container up from inside and then executes its agent), without the daemon, the CLI and the
// agent: a Go runtime that starts in a third of the time of nsbox's, whose ~190 packages
// initialise before any of their code runs. The daemon embeds it (cmd/nsbox/agentbin.go)
// and nsbox's init hands over to it (cmd/nsbox/runcinit.go).
package main

import (
	"fmt"
	"os"

	_ "github.com/opencontainers/runc/libcontainer/nsenter" // namespace entry, runs before the Go runtime

	_ "github.com/nsbox/nsbox/internal/runcinit" // the init itself, run while packages initialise
)

func main() {
	fmt.Fprintln(os.Stderr, "nsbox-init is started by the nsbox daemon only, as a container's init")
	os.Exit(2)
}
