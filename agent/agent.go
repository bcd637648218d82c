// Package agent is the nsbox agent: PID 1 of every sandbox, started by libcontainer from the
// same nsbox binary (bind-mounted read-only). It reaps orphaned processes, forwards
// termination signals to everything in the sandbox, and serves the daemon over a unix socket
// whose listener it inherits as a file descriptor; the socket's path exists only on the host,
// so nothing inside the sandbox can reach this control channel.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/process"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// Agent serves one sandbox from inside it.
type Agent struct {
	version  string
	procs    *procTable
	sessions *session.Manager
	env      *session.SandboxEnv
	log      *slog.Logger

	// processes are the sandbox's long-running processes (see package process).
	processes *process.Manager
}

// Run runs the agent until it is told to stop. listenFD is the inherited listening socket.
func Run(listenFD int, version string) error {
	// Nothing in the sandbox may ptrace the agent or read its memory and file descriptors.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("mark agent non-dumpable: %w", err)
	}
	// The agent is idle nearly all the time: keep its heap small.
	debug.SetGCPercent(50)

	f := os.NewFile(uintptr(listenFD), "agent-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("use inherited listener fd %d: %w", listenFD, err)
	}
	a := &Agent{version: version, procs: newProcTable(), env: session.NewSandboxEnv(os.Environ()), log: slog.Default()}
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if a.sessions, err = session.NewManager(sessionDir, cwd, a.procs.start, a.env); err != nil {
		return err
	}
	a.processes = process.NewManager(a.procs.start, a.sandboxDefaults, a.sessionState)

	signals := make(chan os.Signal, 16)
	signal.Notify(signals, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	done := make(chan error, 1)
	go func() { done <- http.Serve(ln, a.routes()) }()

	for {
		select {
		case err := <-done:
			return fmt.Errorf("serve: %w", err)
		case sig := <-signals:
			if sig == unix.SIGCHLD {
				a.procs.reap()
				continue
			}
			a.log.Info("forwarding signal to every process in the sandbox", "signal", sig)
			// kill(-1) from PID 1 reaches every other process in the sandbox's pid namespace.
			if err := unix.Kill(-1, sig.(unix.Signal)); err != nil && !errors.Is(err, unix.ESRCH) {
				a.log.Warn("forward signal", "signal", sig, "err", err)
			}
			if sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT {
				a.sessions.KillShells()
				a.procs.waitAll()
				return nil
			}
		}
	}
}

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.Health{PID: os.Getpid(), Version: a.version})
	})
	mux.HandleFunc("PUT /v1/config", a.handleConfig)
	mux.HandleFunc("POST /v1/sessions", a.handleCreateSession)
	mux.HandleFunc("GET /v1/sessions", a.handleListSessions)
	mux.HandleFunc("GET /v1/sessions/{sid}", a.handleGetSession)
	mux.HandleFunc("DELETE /v1/sessions/{sid}", a.handleDeleteSession)
	mux.HandleFunc("POST /v1/sessions/{sid}/exec", a.handleExec)
	mux.HandleFunc("POST /v1/sessions/{sid}/cancel", a.handleCancel)
	mux.HandleFunc("GET /v1/sessions/{sid}/terminal", a.handleTerminalOutput)
	mux.HandleFunc("POST /v1/sessions/{sid}/terminal/input", a.handleTerminalInput)
	mux.HandleFunc("POST /v1/sessions/{sid}/terminal/resize", a.handleTerminalResize)
	mux.HandleFunc("PUT /v1/env", a.handlePutEnv)
	mux.HandleFunc("GET /v1/env", a.handleGetEnv)
	a.processRoutes(mux)
	return mux
}
