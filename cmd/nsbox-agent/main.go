// Command nsbox-agent is the agent alone: a sandbox's PID 1, without the daemon, the CLI and
// libcontainer, so that every sandbox runs a small binary (the daemon embeds it; see
// cmd/nsbox/agentbin.go).
//
// Its GOMAXPROCS is set once, at its start: a sandbox's CPUs and quota do not change while it
// runs (nsbox/libcontainer/cpuset.go), and Go's periodic update (updatemaxprocs) would read
// them again from sysmon at most once a second while the agent works — on the first request
// after every idle spell, a cold exec's: an affinity query and two cgroup reads on the
// sandbox's CPU (docs/benchmarks.md, "Session 17").
//
//go:debug updatemaxprocs=0
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
	// [--config-fd M] [--pids-cgroup-fds P] [--private-fd Q]. Anything else is refused: an
	// agent that skipped a descriptor it does not know (the seccomp filter's) would run
	// without what it holds.
	fds := agent.Inherited{Listen: 3, Seccomp: -1, Config: -1, PidsCgroup: -1, Private: -1}
	if len(os.Args) < 2 || os.Args[1] != "agent" {
		usage("the daemon starts it as: nsbox-agent agent --listen-fd N …")
	}
	for i := 2; i < len(os.Args); i += 2 {
		var fd *int
		switch os.Args[i] {
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
		default:
			usage(fmt.Sprintf("unknown argument %q", os.Args[i]))
		}
		if i+1 == len(os.Args) {
			usage(os.Args[i] + " needs a descriptor")
		}
		n, err := strconv.Atoi(os.Args[i+1])
		if err != nil {
			usage(fmt.Sprintf("%s: %v", os.Args[i], err))
		}
		*fd = n
	}
	if err := agent.Run(fds, version); err != nil {
		fmt.Fprintln(os.Stderr, "nsbox-agent:", err)
		os.Exit(1)
	}
}

func usage(problem string) {
	fmt.Fprintln(os.Stderr, "nsbox-agent:", problem)
	os.Exit(2)
}
