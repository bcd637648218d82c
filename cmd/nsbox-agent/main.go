// Command nsbox-agent is the agent alone: a sandbox's PID 1, without the daemon, the CLI and
// libcontainer, so that every sandbox runs a small binary (the daemon embeds it; see
// cmd/nsbox/agentbin.go).
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/nsbox/nsbox/agent"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// Invoked as the daemon starts it: nsbox-agent agent --listen-fd N.
	fd := 3
	for i, arg := range os.Args {
		if arg == "--listen-fd" && i+1 < len(os.Args) {
			n, err := strconv.Atoi(os.Args[i+1])
			if err != nil {
				fmt.Fprintln(os.Stderr, "nsbox-agent: --listen-fd:", err)
				os.Exit(2)
			}
			fd = n
		}
	}
	if err := agent.Run(fd, version); err != nil {
		fmt.Fprintln(os.Stderr, "nsbox-agent:", err)
		os.Exit(1)
	}
}
