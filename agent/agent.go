// Package agent is the nsbox agent: PID 1 of every sandbox, started by libcontainer from the
// same nsbox binary (bind-mounted read-only). It reaps orphaned processes and serves the
// daemon over a unix socket whose listener it inherits as a file descriptor; the socket's
// path exists only on the host, so nothing inside the sandbox can reach this control channel.
//
// It acts on no signal but SIGCHLD: every other catchable signal is caught and dropped, so
// sandbox root cannot end PID 1 (and with it the sandbox) with kill(1, SIGTERM). A signal
// from the host cannot be told apart from one sent inside (Go does not expose si_pid), so
// the daemon stops a sandbox over the control channel instead: POST /v1/shutdown.
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
	// shutdown asks Run to end the sandbox (POST /v1/shutdown).
	shutdown chan struct{}
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
	a := &Agent{version: version, procs: newProcTable(), env: session.NewSandboxEnv(os.Environ()), log: slog.Default(),
		shutdown: make(chan struct{}, 1)}
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if a.sessions, err = session.NewManager(sessionDir, cwd, a.procs.start, a.env); err != nil {
		return err
	}
	a.processes = process.NewManager(a.procs.start, a.sandboxDefaults, a.sessionState)

	// A handler for every signal: one PID 1 has no handler for is dropped by the kernel, but
	// Go's default handlers end the process. SIGCHLD has a channel of its own, so a flood of
	// other signals cannot crowd it out.
	children := make(chan os.Signal, 1)
	signal.Notify(children, unix.SIGCHLD)
	ignored := make(chan os.Signal, 16)
	signal.Notify(ignored)
	go func() {
		for sig := range ignored {
			if sig != unix.SIGCHLD {
				a.log.Debug("ignored a signal", "signal", sig)
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- http.Serve(ln, a.routes()) }()

	for {
		select {
		case err := <-done:
			return fmt.Errorf("serve: %w", err)
		case <-children:
			a.procs.reap()
		case <-a.shutdown:
			a.log.Info("shutting down: SIGTERM to every process in the sandbox")
			// kill(-1) from PID 1 reaches every other process in the sandbox's pid namespace.
			if err := unix.Kill(-1, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
				a.log.Warn("send SIGTERM to the sandbox's processes", "err", err)
			}
			a.sessions.KillShells()
			a.procs.waitAll()
			return nil
		}
	}
}

// handleShutdown ends the sandbox: its processes get SIGTERM, its shells SIGKILL, and the
// agent exits once they all have (the daemon waits for that, and kills what is left after
// its grace period). It answers 202 at once.
func (a *Agent) handleShutdown(w http.ResponseWriter, r *http.Request) {
	select {
	case a.shutdown <- struct{}{}:
	default: // already shutting down
	}
	w.WriteHeader(http.StatusAccepted)
}

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.Health{PID: os.Getpid(), Version: a.version})
	})
	mux.HandleFunc("PUT /v1/config", a.handleConfig)
	mux.HandleFunc("POST /v1/shutdown", a.handleShutdown)
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
