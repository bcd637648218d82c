// Command nsbox-agent is the agent alone: a sandbox's PID 1, without the daemon, the CLI and
// libcontainer, so that every sandbox runs a small binary (the daemon embeds it; see
// cmd/nsbox/agentbin.go).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/nsbox/nsbox/agent"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// The agent runs on the main thread, which nothing else runs on: the threads that fork the
// sandbox's processes move into their pids cgroup for a moment (agent/procs.go), and the
// main thread's cgroups are what /proc/<pid>/cgroup shows for the agent.
func init() { runtime.LockOSThread() }

func main() {
	// Invoked as the daemon starts it: nsbox-agent agent --listen-fd N [--seccomp-fd S]
	// [--config-fd M] [--pids-cgroup-fds P] [--private-fd Q].
	fds := agent.Inherited{Listen: 3, Seccomp: -1, Config: -1, PidsCgroup: -1, Private: -1}
	for i, arg := range os.Args {
		var fd *int
		switch arg {
		case "--listen-fd":
			fd = &fds.Listen
		case "--seccomp-fd":
			fd = &fds.Seccomp
		case "--config-fd":
			fd = &fds.Config
		case "--pids-cgroup-fds":
			fd = &fds.PidsCgroup
		case "--private-fd":
			fd = &fds.Private
		}
		if fd != nil && i+1 < len(os.Args) {
			n, err := strconv.Atoi(os.Args[i+1])
			if err != nil {
				fmt.Fprintf(os.Stderr, "nsbox-agent: %s: %v\n", arg, err)
				os.Exit(2)
			}
			*fd = n
		}
	}
	if err := agent.Run(fds, version); err != nil {
		fmt.Fprintln(os.Stderr, "nsbox-agent:", err)
		os.Exit(1)
	}
}
