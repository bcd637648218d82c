// Command nsbox is the single nsbox binary: the root daemon, the CLI that talks to it, the
// in-sandbox agent and libcontainer's init entrypoint.
package main

import (
	"os"
	"runtime"

	_ "github.com/nsbox/nsbox/internal/runcinit"            // libcontainer's init, before the other packages initialise
	_ "github.com/opencontainers/cgroups/devices"           // device rules for the cgroup managers
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // namespace entry, runs before the Go runtime
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func init() {
	// The main goroutine keeps the main thread for good. Goroutines that change their thread's
	// namespaces or credentials (runc's mount-source thread, the id-mapped overlays, the file
	// API's writes in a user namespace, the agent's cwd reads) lock it and end locked, so that
	// the thread ends with them; but Go cannot end the main thread and keeps it, parked with
	// its mount namespace (a copy of the host's mounts, sandbox disks included) forever.
	runtime.LockOSThread()
}

func main() {
	app := &cli.App{
		Name:     "nsbox",
		Usage:    "Linux sandboxes with stateful sessions, built from namespaces, cgroups and overlayfs",
		Version:  version,
		Flags:    hostFlags(),
		Before:   dialDaemon,
		Commands: append(append(clientCommands(), codeCommands()...), daemonCommand(), agentCommand(), permfsCommand()),
		// Errors end nsbox in main, with the exit code of their kind (manners.go).
		ExitErrHandler: func(*cli.Context, error) {},
	}
	app.Commands = append(app.Commands, completionCommand())
	setManners(app)
	args, err := reorderArgs(app, os.Args)
	if err != nil {
		exitWith(err)
	}
	if err := app.Run(args); err != nil {
		exitWith(err)
	}
}
