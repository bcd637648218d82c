// Package agent is the nsbox agent: PID 1 of every sandbox, started by libcontainer from its
// own small binary (cmd/nsbox-agent, embedded in nsbox, bind-mounted read-only). It reaps
// orphaned processes and serves the daemon over a unix socket whose listener it inherits as a
// file descriptor; the socket's path exists only on the host, so nothing inside the sandbox
// can reach this control channel.
//
// It acts on no signal but SIGCHLD: every other signal is dropped (caught, when Go's handler
// would end the process; else by Go's handler or the kernel), so sandbox root cannot end
// PID 1 (and with it the sandbox) with kill(1, SIGTERM). A signal from the host cannot be told
// apart from one sent inside (Go does not expose si_pid), so the daemon stops a sandbox over
// the control channel instead: POST /v1/shutdown.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/code"
	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/agent/process"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// raiseOpenFileLimit sets the soft open-file limit to the hard one.
func raiseOpenFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open-file limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the open-file limit to %d: %w", lim.Max, err)
	}
	return nil
}

// Agent serves one sandbox from inside it.
type Agent struct {
	version  string
	procs    *procTable
	sessions *session.Manager
	env      *session.SandboxEnv
	log      *slog.Logger

	// processes are the sandbox's long-running processes (see package process).
	processes *process.Manager
	// contexts are the sandbox's code contexts (see package code).
	contexts *code.Manager
	// shutdown asks Run to end the sandbox (POST /v1/shutdown); Run closes stopped once every
	// other process in the sandbox has exited, and waits for shutdownAnswered (closed by the
	// first shutdown request once it has answered so) before it returns.
	shutdown                  chan struct{}
	stopped, shutdownAnswered chan struct{}
	shutdownAnswer            sync.Once
	// stopMu guards stoppedGroups, the process groups a hibernation's save stopped (at
	// stoppedAt), and stopWatch, which lets them run again if the agent still lives a while
	// after (state.go).
	stopMu        sync.Mutex
	stoppedGroups []process.StoppedGroup
	stoppedAt     time.Time
	stopWatch     *time.Timer
	// watchers are the daemon's watch streams (GET /v1/watch).
	watchers watchers
	// configured: the agent took the configuration it was started with (bootConfig);
	// configErr: why it could not. Both are set before it serves, and answered by health.
	configured bool
	configErr  *api.Error
	// answered: the first health check was answered (the sessions' reserve is held after it).
	answered sync.Once
}

// Inherited are the descriptors the daemon hands a new agent; each but Listen is -1 when it
// is not handed.
type Inherited struct {
	// Listen is the listening socket the agent serves.
	Listen int
	// Seccomp is a file holding the sandbox's seccomp filter, which the agent loads on all its
	// threads before anything else (loadSeccomp).
	Seccomp int
	// Config is a file holding the sandbox's api.AgentConfig, which the agent takes before it
	// answers (as if the daemon had sent it with PUT /v1/config).
	Config int
	// PidsCgroup is the first of two tasks files: the cgroup that holds the sandbox's pids
	// limit, into which the agent moves the thread that forks each process, and the
	// container's (procTable.work and home).
	PidsCgroup int
	// Private is a directory: the private store, the root of a mount no path leads to (confine).
	Private int
}

// Run runs the agent until it is told to stop.
func Run(fds Inherited, version string) error {
	if fds.Seccomp >= 0 {
		if err := loadSeccomp(fds.Seccomp); err != nil {
			return err
		}
	}
	// Nothing in the sandbox may ptrace the agent or read its memory and file descriptors.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("mark agent non-dumpable: %w", err)
	}
	// The sandbox's open-file limit is the hard one it inherits (the daemon's): the soft one is
	// raised to it for the agent and, set explicitly, for what it starts (Go would give those
	// the soft limit the agent started with). The daemon cannot set it from outside: the
	// sandbox's user namespace is not root's, and prlimit on a process in it takes
	// CAP_SYS_RESOURCE, which the host's root may lack.
	if err := raiseOpenFileLimit(); err != nil {
		return err
	}
	// The agent is idle nearly all the time: keep its heap small.
	debug.SetGCPercent(50)

	f := os.NewFile(uintptr(fds.Listen), "agent-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("use inherited listener fd %d: %w", fds.Listen, err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	// A signal PID 1 has no handler for (SIG_DFL) is dropped by the kernel, whoever sends it,
	// but Go's own handlers, installed for nearly every signal, end the process on these:
	// they are caught. To the others Go's handler does nothing, and those it leaves at
	// SIG_DFL (job control) the kernel drops (SIG_IGN instead would be inherited by everything
	// the agent starts). SIGCHLD has a channel of its own, so a flood of other signals cannot
	// crowd it out; the others are drained by the loop below, not by a goroutine of their own
	// (an idle agent's every goroutine is resident memory). Catching a signal costs a round
	// trip to the runtime's thread that unmasks it (catching all ~60 took 10-27 ms on a VM
	// where a thread switch is dear; these 6, 3-10 ms under load), so it is done while the
	// agent starts and answers; nothing the agent starts (procTable.start) runs before it is
	// done, so nothing in the sandbox can send them first.
	children := make(chan os.Signal, 1)
	ignored := make(chan os.Signal, 16)
	caught := make(chan struct{})
	go func() {
		signal.Notify(children, unix.SIGCHLD)
		signal.Notify(ignored, fatalSignals...)
		close(caught)
	}()
	a, err := newAgent(version, sessionDir, cwd)
	if err != nil {
		return err
	}
	a.procs.caught = caught
	if fds.PidsCgroup >= 0 {
		// Inherited descriptors are not closed on exec: nothing the agent starts may get these.
		unix.CloseOnExec(fds.PidsCgroup)
		unix.CloseOnExec(fds.PidsCgroup + 1)
		a.procs.work = os.NewFile(uintptr(fds.PidsCgroup), "pids-cgroup-tasks")
		a.procs.home = os.NewFile(uintptr(fds.PidsCgroup+1), "agent-pids-cgroup-tasks")
	}
	var store *os.File
	if fds.Private >= 0 {
		unix.CloseOnExec(fds.Private)
		store = os.NewFile(uintptr(fds.Private), "private-store")
	}
	a.confine(store)
	if fds.Config >= 0 {
		cfg := os.NewFile(uintptr(fds.Config), "agent-config")
		a.bootConfig(cfg)
		cfg.Close()
	}
	done := make(chan error, 1)
	go func() { done <- httpd.Serve(api.StreamListener(ln), a.serve, a.log) }()

	for {
		select {
		case err := <-done:
			return fmt.Errorf("serve: %w", err)
		case <-children:
			a.procs.reap()
		case sig := <-ignored:
			a.log.Debug("ignored a signal", "signal", sig)
		case <-a.shutdown:
			a.log.Info("shutting down: SIGTERM to every process in the sandbox")
			if err := terminateAll(); err != nil && !errors.Is(err, unix.ESRCH) {
				a.log.Warn("send SIGTERM to the sandbox's processes", "err", err)
			}
			a.sessions.KillShells()
			// A process forked just before the signal may take it in its parent's handler and
			// then exec, losing it: the signal goes again every half second until everything
			// has exited (the daemon kills what is left after its grace).
			exited := make(chan struct{})
			go func() {
				a.procs.waitAll()
				close(exited)
			}()
			again := time.NewTicker(500 * time.Millisecond)
			defer again.Stop()
			for {
				select {
				case <-exited:
					// The agent has no child left, so nothing else runs in its pid namespace.
					// The daemon, told so, kills the agent and answers its remove without
					// waiting for the agent's own exit, which as PID 1's is the container's
					// whole teardown (its mounts and namespaces); the agent exits by itself
					// too, once it has answered or after a second.
					close(a.stopped)
					select {
					case <-a.shutdownAnswered:
					case <-time.After(time.Second):
					}
					return nil
				case <-again.C:
					_ = terminateAll()
				}
			}
		}
	}
}

// terminateAll sends SIGTERM to every other process in the sandbox (kill(-1) from PID 1),
// then SIGCONT: a stopped process (a job stopped with ^Z, say) acts on SIGTERM only once
// continued.
func terminateAll() error {
	err := unix.Kill(-1, unix.SIGTERM)
	_ = unix.Kill(-1, unix.SIGCONT)
	return err
}

// fatalSignals are the signals that Go's handlers answer by ending the process, when sent by
// another process: SIGHUP, SIGINT and SIGTERM end it, the others crash it.
var fatalSignals = []os.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGQUIT, unix.SIGABRT, unix.SIGILL,
	unix.SIGTRAP, unix.SIGBUS, unix.SIGFPE, unix.SIGSEGV, unix.SIGSTKFLT, unix.SIGSYS}

// confine gives every process the agent starts a Landlock domain of its own and, with the
// daemon's private store (nil: none was handed over), every session a private folder. Without
// Landlock the sessions get no private folders: nothing would keep other sessions out of them.
func (a *Agent) confine(store *os.File) {
	if store == nil {
		a.log.Warn("sessions get no private folders: the daemon handed over no private store")
	}
	c, err := newConfinement()
	if err != nil {
		a.log.Warn("processes are not confined to Landlock domains, and sessions get no private folders", "err", err)
		if store != nil {
			store.Close()
		}
		return
	}
	a.procs.confine = c
	if store != nil {
		a.sessions.EnablePrivate(store)
	}
}

// newAgent returns an agent whose sessions keep their files under dir and start in cwd.
func newAgent(version, dir, cwd string) (*Agent, error) {
	a := &Agent{version: version, procs: newProcTable(), env: session.NewSandboxEnv(os.Environ()), log: slog.Default(),
		shutdown: make(chan struct{}, 1), stopped: make(chan struct{}), shutdownAnswered: make(chan struct{})}
	// HOSTNAME is the container's until a sandbox's is set: a shell started before (a warm
	// container's default session) then has the value the sandbox's replaces (see envUpdate),
	// whether it took it from its environment or, as shells do, from the hostname.
	if h, err := os.Hostname(); err == nil && os.Getenv("HOSTNAME") == "" {
		a.env.SetBase("HOSTNAME", h)
	}
	var err error
	if a.sessions, err = session.NewManager(dir, cwd, a.procs.start, a.env); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	a.processes = process.NewManager(a.procs.start, a.sandboxDefaults, a.sessionState)
	a.contexts = code.NewManager(a.procs.start)
	a.watchChanges()
	return a, nil
}

// handleShutdown ends the sandbox: its processes get SIGTERM, its shells SIGKILL, and the
// agent answers 204 once every other process in the sandbox has exited, then exits itself.
// A daemon that gives up first (its grace period) closes the request and kills what is left.
// (Agents before this answered 202 at once, and the daemon waited for the agent's exit.)
func (a *Agent) handleShutdown(w *httpd.ResponseWriter, r *httpd.Request) error {
	select {
	case a.shutdown <- struct{}{}:
	default: // already shutting down
	}
	select {
	case <-a.stopped:
	case <-r.Context().Done():
		return nil
	}
	w.WriteHeader(httpd.StatusNoContent) // bodyless: the flushed head is the whole answer
	err := w.Flush()
	a.shutdownAnswer.Do(func() { close(a.shutdownAnswered) })
	return err
}

// handleHealth answers how the agent is. The first answer is what a container's start waits
// for: the sessions' reserve is held after it, not before (session.Manager.HoldReserve).
func (a *Agent) handleHealth(w *httpd.ResponseWriter, _ *httpd.Request) error {
	api.WriteJSON(w, httpd.StatusOK, api.Health{PID: os.Getpid(), Version: a.version, Configured: a.configured, ConfigError: a.configErr})
	a.answered.Do(func() { go a.sessions.HoldReserve() })
	return nil
}

// openEventStream starts a Server-Sent Events answer at once: the 200 and its headers go out
// before the first event, so the daemon can answer its own client (or upgrade it to a
// WebSocket) while the stream has nothing to say yet.
func openEventStream(w *httpd.ResponseWriter) *api.SSEWriter {
	events := api.NewSSEWriter(w)
	_ = events.Start() // a client that went away fails the first Send too
	return events
}
