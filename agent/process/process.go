// Package process runs a sandbox's long-running processes inside its agent: started directly
// (not through a session's shell), each in its own process group, with stdout and stderr
// always drained into a bounded ring addressed by byte cursors, an optional stdin pipe, and
// waits for exit, a log line or a listening port. Processes live as long as the agent (the
// sandbox), independent of the daemon and of any session.
package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/cgroup"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// Log ring sizes.
const (
	DefaultLogBytes = 4 << 20
	MaxLogBytes     = 256 << 20
)

const (
	defaultGrace = 5 * time.Second
	// drainGrace is how long output is awaited after a process ended: a child it left running
	// may hold its pipes open for ever.
	drainGrace = 250 * time.Millisecond
)

// SessionState is what a process started with a session id inherits from that session.
type SessionState struct {
	Cwd  string
	Env  []string // the shell's exported environment, KEY=VALUE
	User string
	// Private is the session's private folder (nil: none), which the process holds at
	// session.PrivateFD like the session's own processes; PrivateDir is where they see it.
	Private    *os.File
	PrivateDir string
}

// SessionLookup reports a session's current state; it answers an *api.Error when it cannot.
type SessionLookup func(ctx context.Context, sid string) (SessionState, error)

// SandboxDefaults reports what a process that names no session starts from: the sandbox's
// environment (KEY=VALUE), working directory and user (a session.LookupUser spec), as they
// are now.
type SandboxDefaults func() (env []string, cwd, user string)

// Manager holds the processes of one sandbox.
type Manager struct {
	start    session.StartFunc
	defaults SandboxDefaults
	session  SessionLookup

	changed func(ended *api.Process) // see OnChange
	logs    *logBudget               // the memory all the processes' logs may hold (see LogBudget)

	mu    sync.Mutex
	procs map[string]*Process
	seq   int
}

// OnChange has fn called each time a process starts (with nil) and each time one ends or
// fails to start (with it as it ended, from a goroutine of its own). Set it before the first
// process is started.
func (m *Manager) OnChange(fn func(ended *api.Process)) { m.changed = fn }

// NewManager returns a manager that starts processes with start, from the sandbox's defaults
// or a session's state.
func NewManager(start session.StartFunc, defaults SandboxDefaults, lookup SessionLookup) *Manager {
	return &Manager{start: start, defaults: defaults, session: lookup, procs: map[string]*Process{},
		logs: newLogBudget(sandboxLogBudget())}
}

// Process is one started (or failed) process.
type Process struct {
	req api.StartProcessRequest // as it was started (defaults filled), to start it again
	out *output
	// exited is closed when the process has ended: its leader has been reaped and no process
	// of its group is left (see awaitGroup).
	exited   chan struct{}
	finished chan struct{} // closed when it has ended and its output is drained
	recheck  chan struct{} // wakes awaitGroup to look at the group again

	mu          sync.Mutex
	info        api.Process
	leader      *unix.WaitStatus // how the leader ended, once it has been reaped
	killedBy    unix.Signal      // the last signal Kill sent after the leader was gone
	oomKills    uint64           // the sandbox's count of OOM kills when the process started
	stdin       *os.File         // the write end of a stdin pipe, set once started
	stdinClosed bool             // closed by a request, or because the process ended

	stdinMu sync.Mutex // one write at a time
}

// Info describes the process now.
func (p *Process) Info() api.Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.info
	info.Argv = slices.Clone(info.Argv)
	info.LogEnd = p.out.end()
	return info
}

// Finished is closed when the process has ended and its output has been drained.
func (p *Process) Finished() <-chan struct{} { return p.finished }

func badRequest(format string, args ...any) error {
	return api.Errorf(api.CodeInvalidArgument, format, args...)
}

// Start starts a process. Errors in the request (a cwd that does not exist or is not a
// directory among them) answer an *api.Error; a program that cannot be started (not found, not
// executable) gives a process with status failed.
func (m *Manager) Start(ctx context.Context, req api.StartProcessRequest) (*Process, error) {
	return m.startWith(ctx, req, nil, false)
}

// startWith is Start with a log that begins with earlier output. A restored process (one
// started again after a hibernation) whose cwd is gone is a failed process, as one whose
// program is, not an error.
func (m *Manager) startWith(ctx context.Context, req api.StartProcessRequest, earlier []api.ProcessEvent, restored bool) (*Process, error) {
	switch {
	case req.Command != "" && len(req.Argv) > 0:
		return nil, badRequest("give either command or argv, not both")
	case req.Command == "" && len(req.Argv) == 0:
		return nil, badRequest("command or argv is required")
	case len(req.Argv) > 0 && req.Argv[0] == "":
		return nil, badRequest("argv[0] (the program) must not be empty")
	case req.ID != "" && !api.ValidAgentID(req.ID):
		return nil, badRequest("invalid process id %q: use 1-63 letters, digits, '_', '.' and '-', starting with a letter or digit", req.ID)
	case req.LogBytes < 0 || req.LogBytes > MaxLogBytes:
		return nil, badRequest("logBytes must be between 1 and %d (256 MiB), not %d", MaxLogBytes, req.LogBytes)
	case req.Restart != "" && req.Restart != api.RestartOnResume:
		return nil, badRequest("restart must be %q or empty, not %q", api.RestartOnResume, req.Restart)
	}
	switch req.Stdin {
	case "":
		req.Stdin = api.StdinNull
	case api.StdinNull, api.StdinPipe:
	default:
		return nil, badRequest("stdin must be %q or %q, not %q", api.StdinNull, api.StdinPipe, req.Stdin)
	}
	for k, v := range req.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") {
			return nil, badRequest("invalid environment variable %q: names must be non-empty without '=' or NUL, values without NUL", k)
		}
	}
	if req.LogBytes == 0 {
		req.LogBytes = DefaultLogBytes
	}
	// A log is at most the whole budget: its info says the size it got. The request keeps what
	// was asked for, for a start again after a hibernation (in a sandbox that may be larger).
	logBytes := m.logs.size(req.LogBytes)

	// The environment and directory it starts from: the session's, or the sandbox's.
	base, cwd, user := m.defaults()
	var st SessionState
	if req.SessionID != "" {
		var err error
		if st, err = m.session(ctx, req.SessionID); err != nil {
			return nil, err
		}
		base, cwd, user = st.Env, st.Cwd, st.User
	}
	if req.User != "" {
		user = req.User
	}
	uid, gid, name, home, err := session.LookupUser(user)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if req.Cwd != "" {
		if filepath.IsAbs(req.Cwd) {
			cwd = filepath.Clean(req.Cwd)
		} else {
			cwd = filepath.Join(cwd, req.Cwd)
		}
	}
	env := environment(base, req.SessionID == "" || req.User != "", home, name, cwd, req.Env)
	badCwd := session.CheckCwd(cwd, st.PrivateDir, st.Private)
	if badCwd != nil && !restored {
		return nil, badRequest("%v", badCwd)
	}

	m.mu.Lock()
	if req.ID == "" {
		for req.ID == "" || m.procs[req.ID] != nil {
			m.seq++
			req.ID = "p-" + strconv.Itoa(m.seq)
		}
	}
	if _, taken := m.procs[req.ID]; taken {
		m.mu.Unlock()
		return nil, api.Errorf(api.CodeConflict, "process id %q is taken; remove that process first (DELETE …/processes/%s) or choose another id", req.ID, req.ID)
	}
	p := &Process{
		req: req, out: newOutput(m.logs, logBytes, earlier), exited: make(chan struct{}), finished: make(chan struct{}), recheck: make(chan struct{}, 1),
		info: api.Process{
			ID: req.ID, Command: req.Command, Argv: slices.Clone(req.Argv), SessionID: req.SessionID, User: name, Cwd: cwd,
			Stdin: req.Stdin, LogBytes: logBytes, StartedAt: time.Now().UTC(), Status: api.ProcessRunning,
		},
	}
	m.procs[req.ID] = p
	m.mu.Unlock()

	err = badCwd
	if err == nil {
		err = p.run(m.start, env, uid, gid, st)
	}
	if err != nil {
		p.mu.Lock()
		p.info.Status, p.info.Error, p.info.EndedAt = api.ProcessFailed, err.Error(), time.Now().UTC()
		p.mu.Unlock()
		// Its log is counted as ended before a Remove waiting for finished may forget it.
		m.logs.ended(p.out)
		close(p.exited)
		close(p.finished)
	}
	if m.changed != nil {
		m.changed(nil)
		go func() {
			<-p.exited
			info := p.Info()
			m.changed(&info)
		}()
	}
	return p, nil
}

// environment is a process's environment: the session's exported variables (or the
// sandbox's), the user's identity when it is not the session's, the directory, and the
// request's variables over all of them.
func environment(base []string, identity bool, home, name, cwd string, overlay map[string]string) []string {
	vars := map[string]string{}
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	if identity {
		vars["HOME"], vars["USER"], vars["LOGNAME"] = home, name, name
	}
	vars["PWD"] = cwd
	for k, v := range overlay {
		vars[k] = v
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// lookPath finds a program as execvp would, in the PATH of env.
func lookPath(prog, cwd string, env []string) (string, error) {
	check := func(path string) error {
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			return err
		case fi.IsDir():
			return fmt.Errorf("%s is a directory", path)
		case fi.Mode()&0o111 == 0:
			return fmt.Errorf("%s is not executable", path)
		}
		return nil
	}
	if strings.Contains(prog, "/") {
		path := prog
		if !filepath.IsAbs(path) {
			path = filepath.Join(cwd, path)
		}
		if err := check(path); err != nil {
			return "", fmt.Errorf("cannot run %q: %w", prog, err)
		}
		return path, nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		path := filepath.Join(dir, prog)
		if !filepath.IsAbs(path) {
			path = filepath.Join(cwd, path)
		}
		if check(path) == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH (%s)", prog, pathEnv)
}

// run starts the process with its pipes, and the private folder of the session st when it
// has one; an error means it could not be started.
func (p *Process) run(start session.StartFunc, env []string, uid, gid int, st SessionState) error {
	argv := p.info.Argv
	if p.info.Command != "" {
		argv = []string{"/bin/sh", "-c", p.info.Command}
	}
	path, err := lookPath(argv[0], p.info.Cwd, env)
	if err != nil && p.info.Command != "" {
		return fmt.Errorf("a command (shell source) needs /bin/sh, and this sandbox's image has none; give argv instead: %w", err)
	}
	if err != nil {
		return err
	}
	var stdin, stdinW *os.File
	if p.info.Stdin == api.StdinPipe {
		if stdin, stdinW, err = os.Pipe(); err != nil {
			return fmt.Errorf("make stdin pipe: %w", err)
		}
	} else if stdin, err = os.Open(os.DevNull); err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer stdin.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(stdinW)
		return fmt.Errorf("make stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(stdinW, outR, outW)
		return fmt.Errorf("make stderr pipe: %w", err)
	}
	oomKills := cgroup.OOMKills()
	pid, exited, err := start(path, argv, &os.ProcAttr{
		Dir: session.ChdirPath(p.info.Cwd, st.PrivateDir, st.Private), Env: env, Files: []*os.File{stdin, outW, errW},
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,
			Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true},
		},
	}, st.Private)
	closeAll(outW, errW)
	if err != nil {
		closeAll(stdinW, outR, errR)
		return fmt.Errorf("cannot start %q: %w", argv[0], err)
	}
	p.mu.Lock()
	p.info.PID, p.stdin, p.oomKills = pid, stdinW, oomKills
	p.mu.Unlock()

	var drained sync.WaitGroup
	drained.Add(2)
	go func() { p.out.drain(api.EventStdout, outR); drained.Done() }()
	go func() { p.out.drain(api.EventStderr, errR); drained.Done() }()
	go func() {
		ws := <-exited
		p.mu.Lock()
		p.leader = &ws
		p.mu.Unlock()
		p.awaitGroup(pid)
		p.ended()
		close(p.exited)
		done := make(chan struct{})
		go func() { drained.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(drainGrace):
		}
		// Its log is among the first to give up memory now; counted so before a Remove
		// waiting for finished may forget it.
		p.out.budget.ended(p.out)
		close(p.finished)
	}()
	return nil
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// Polling bounds for awaitGroup: quick at first (a group usually ends with its leader, or
// right after a kill), then rarely, for a group that lives on without its leader.
const (
	groupPollMin = 5 * time.Millisecond
	groupPollMax = time.Second
)

// awaitGroup returns once no process of the group pgid is left (zombies count until they are
// reaped). The group outlives its leader when the leader's children (a server's workers, the
// rest of a fork bomb) keep running: those are the process's descendants, and the process runs
// until they are gone. Its pgid cannot be handed to another process meanwhile: the kernel
// keeps a pid in use while any process has it as its group id.
func (p *Process) awaitGroup(pgid int) {
	wait := groupPollMin
	for groupAlive(pgid) {
		select {
		case <-time.After(wait):
			wait = min(2*wait, groupPollMax)
		case <-p.recheck:
			wait = groupPollMin
		}
	}
}

// ended records how the process ended and closes its stdin. The status is the leader's, unless
// a kill ended the group after the leader was gone: then it is that signal's.
func (p *Process) ended() {
	p.mu.Lock()
	ws := *p.leader
	p.info.EndedAt = time.Now().UTC()
	switch {
	case p.killedBy != 0:
		p.info.Status, p.info.ExitCode, p.info.Signal = api.ProcessKilled, 128+int(p.killedBy), unix.SignalName(p.killedBy)
	case ws.Signaled():
		p.info.Status, p.info.ExitCode, p.info.Signal = api.ProcessKilled, 128+int(ws.Signal()), unix.SignalName(ws.Signal())
	default:
		p.info.Status, p.info.ExitCode = api.ProcessExited, ws.ExitStatus()
	}
	// Killed by SIGKILL itself, or a shell (a command's /bin/sh -c) reporting its child was.
	p.info.OOMKilled = p.killedBy == 0 && cgroup.OOMKilled(p.info.ExitCode, p.oomKills)
	// Closing also ends a write that blocks on a pipe a left-over child keeps open.
	if p.stdin != nil && !p.stdinClosed {
		p.stdinClosed = true
		p.stdin.Close()
	}
	p.mu.Unlock()
}

// Get returns a process by id.
func (m *Manager) Get(id string) (*Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.procs[id]; ok {
		return p, nil
	}
	return nil, api.Errorf(api.CodeNotFound, "no process %q in this sandbox", id)
}

// List returns the processes with the status (any when "") started in the session (any when
// ""), in the order they were started.
func (m *Manager) List(status, sessionID string) []api.Process {
	m.mu.Lock()
	procs := make([]*Process, 0, len(m.procs))
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	m.mu.Unlock()
	out := []api.Process{}
	for _, p := range procs {
		if i := p.Info(); (status == "" || i.Status == status) && (sessionID == "" || i.SessionID == sessionID) {
			out = append(out, i)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Remove forgets a process that has ended. One that has ended but whose last output is still
// being drained (at most drainGrace) is waited for: a kill answers once the process has
// exited, and a remove right after it must not be refused.
func (m *Manager) Remove(id string) error {
	m.mu.Lock()
	p, ok := m.procs[id]
	m.mu.Unlock()
	if !ok {
		return api.Errorf(api.CodeNotFound, "no process %q in this sandbox", id)
	}
	select {
	case <-p.exited:
		<-p.finished
	default:
		return api.Errorf(api.CodeConflict, "process %q is still running; kill it first", id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.procs[id] != p {
		return api.Errorf(api.CodeNotFound, "no process %q in this sandbox", id)
	}
	delete(m.procs, id)
	m.logs.forget(p.out)
	return nil
}

// RemoveFinished forgets every process that has ended and returns them.
func (m *Manager) RemoveFinished() []api.Process {
	m.mu.Lock()
	var gone []*Process
	for id, p := range m.procs {
		select {
		case <-p.finished:
			gone = append(gone, p)
			delete(m.procs, id)
		default:
		}
	}
	m.mu.Unlock()
	out := []api.Process{}
	for _, p := range gone {
		out = append(out, p.Info())
		m.logs.forget(p.out)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Running returns the processes that have not ended.
func (m *Manager) Running() []*Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Process
	for _, p := range m.procs {
		select {
		case <-p.exited:
		default:
			out = append(out, p)
		}
	}
	return out
}
