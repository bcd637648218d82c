package main

import (
	"os"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/nsbox/nsbox/agent"
)

// As nsbox-agent's: the agent keeps the main thread to itself (cmd/nsbox-agent/main.go).
func init() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		runtime.LockOSThread()
	}
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:   "agent",
		Usage:  "run as a sandbox's PID 1 (started by the daemon, not by hand)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "listen-fd", Value: 3, Usage: "inherited listening socket"},
			&cli.IntFlag{Name: "seccomp-fd", Value: -1, Usage: "inherited file holding the sandbox's seccomp filter (BPF), loaded first"},
			&cli.IntFlag{Name: "config-fd", Value: -1, Usage: "inherited file holding the sandbox's configuration (JSON)"},
			&cli.IntFlag{Name: "pids-cgroup-fds", Value: -1, Usage: "the first of two inherited tasks files: the cgroup holding the sandbox's pids limit, then the container's"},
			&cli.IntFlag{Name: "private-fd", Value: -1, Usage: "inherited directory: the private store of the sessions' private folders"},
		},
		Action: func(c *cli.Context) error {
			return agent.Run(agent.Inherited{
				Listen: c.Int("listen-fd"), Seccomp: c.Int("seccomp-fd"), Config: c.Int("config-fd"),
				PidsCgroup: c.Int("pids-cgroup-fds"), Private: c.Int("private-fd"),
			}, version)
		},
	}
}
