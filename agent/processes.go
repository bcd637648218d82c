package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/agent/process"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

const (
	// sessionStateTimeout bounds the wait for a busy session's turn when a process inherits its state.
	sessionStateTimeout = 10 * time.Second
	defaultLogRead      = 4 << 20
	maxLogRead          = 64 << 20
)

// stateCommand prints a session's directory and a NUL, then its exported environment
// (NUL-separated). `\command` keeps the session's aliases and functions out of it.
const stateCommand = `\command printf '%s\0' "$PWD"; \command cat /proc/self/environ`

// sessionState is what a process started with a session id inherits: the shell's current
// directory and exported environment (read by a hidden command in the session, so it waits
// for the session's turn) and its user.
func (a *Agent) sessionState(ctx context.Context, sid string) (process.SessionState, error) {
	var st process.SessionState
	s, err := a.writableSession(sid)
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, sessionStateTimeout)
	defer cancel()
	var out bytes.Buffer
	res, err := s.Exec(ctx, session.ExecRequest{Command: stateCommand}, func(kind string, b []byte) {
		if kind == api.EventStdout {
			out.Write(b)
		}
	})
	switch {
	case err != nil:
		return st, sessionError(err)
	case res.Canceled:
		return st, api.Errorf(api.CodeConflict, "session %q is busy running a command; its environment could not be read within %s", sid, sessionStateTimeout)
	case res.SessionEnded || res.ExitCode != 0:
		return st, api.Errorf(api.CodeConflict, "could not read session %q's environment (exit code %d)", sid, res.ExitCode)
	}
	info := s.Info()
	if info.Status == session.StateEnded {
		return st, api.Errorf(api.CodeConflict, "session %q has ended", sid)
	}
	cwd, env, _ := strings.Cut(out.String(), "\x00")
	for _, kv := range strings.Split(env, "\x00") {
		// The session's marker would make the process die with the session; "_" is cat's path.
		if kv == "" || strings.HasPrefix(kv, "NSBOX_SESSION=") || strings.HasPrefix(kv, "_=") {
			continue
		}
		st.Env = append(st.Env, kv)
	}
	// The shell's own view: the agent may not read /proc/<pid>/cwd of another user's shell.
	// Its ids, not its name: "uid:gid" resolves to the very user and group the shell has.
	st.Cwd, st.User = cwd, strconv.Itoa(info.UID)+":"+strconv.Itoa(info.GID)
	st.Private, st.PrivateDir = s.Private(), info.PrivateDir
	return st, nil
}

// process finds the process the path names.
func (a *Agent) process(r *httpd.Request) (*process.Process, error) {
	p, err := a.processes.Get(r.PathValue("pid"))
	if err != nil {
		return nil, fmt.Errorf("process %q: %w", r.PathValue("pid"), err)
	}
	return p, nil
}

func (a *Agent) handleStartProcess(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.StartProcessRequest
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	p, err := a.processes.Start(r.Context(), req)
	if err != nil {
		return fmt.Errorf("start process: %w", err)
	}
	api.WriteJSON(w, httpd.StatusCreated, p.Info())
	return nil
}

var processStatuses = []string{api.ProcessRunning, api.ProcessExited, api.ProcessKilled, api.ProcessFailed}

func (a *Agent) handleListProcesses(w *httpd.ResponseWriter, r *httpd.Request) error {
	status := r.Query().Get("status")
	valid := status == ""
	for _, s := range processStatuses {
		valid = valid || s == status
	}
	if !valid {
		return api.Errorf(api.CodeInvalidArgument, "status must be one of %s, not %q", strings.Join(processStatuses, ", "), status)
	}
	api.WriteJSON(w, httpd.StatusOK, a.processes.List(status, r.Query().Get("sessionId")))
	return nil
}

func (a *Agent) handleGetProcess(w *httpd.ResponseWriter, r *httpd.Request) error {
	p, err := a.process(r)
	if err != nil {
		return err
	}
	api.WriteJSON(w, httpd.StatusOK, p.Info())
	return nil
}

func (a *Agent) handleRemoveProcess(w *httpd.ResponseWriter, r *httpd.Request) error {
	if err := a.processes.Remove(r.PathValue("pid")); err != nil {
		return fmt.Errorf("remove process %q: %w", r.PathValue("pid"), err)
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

func (a *Agent) handleRemoveFinished(w *httpd.ResponseWriter, _ *httpd.Request) error {
	api.WriteJSON(w, httpd.StatusOK, a.processes.RemoveFinished())
	return nil
}

// killRequest reads a kill request, whose body may be empty: the signal, and the grace
// before SIGKILL.
func killRequest(w *httpd.ResponseWriter, r *httpd.Request) (unix.Signal, time.Duration, error) {
	var req api.KillProcessRequest
	if err := api.DecodeBody(r.Body, &req, true); err != nil {
		return 0, 0, err
	}
	sig, err := process.ParseSignal(req.Signal)
	if err != nil {
		return 0, 0, err
	}
	grace, err := process.Grace(req.GraceMs)
	return sig, grace, err
}

func (a *Agent) handleKillProcess(w *httpd.ResponseWriter, r *httpd.Request) error {
	sig, grace, err := killRequest(w, r)
	if err != nil {
		return err
	}
	p, err := a.process(r)
	if err != nil {
		return err
	}
	if err := p.Kill(r.Context(), sig, grace); err != nil {
		return fmt.Errorf("kill process %q: %w", r.PathValue("pid"), err)
	}
	api.WriteJSON(w, httpd.StatusOK, p.Info())
	return nil
}

// handleKillAll signals every running process at once, and every other process of the sandbox
// but the agent and the sessions' shells with what they run (see process.Sweep), and answers
// the processes it signaled.
func (a *Agent) handleKillAll(w *httpd.ResponseWriter, r *httpd.Request) error {
	sig, grace, err := killRequest(w, r)
	if err != nil {
		return err
	}
	running := a.processes.Running()
	groups := map[int]bool{}
	for _, p := range running {
		groups[p.Info().PID] = true
	}
	errs := make([]error, len(running)+1)
	var wg sync.WaitGroup
	for i, p := range running {
		wg.Go(func() { errs[i] = p.Kill(r.Context(), sig, grace) })
	}
	wg.Go(func() {
		errs[len(running)] = process.Sweep(r.Context(), sig, grace, groups, a.sessions.ShellTrees)
	})
	wg.Wait()
	out := []api.Process{}
	for i, err := range errs {
		if err != nil && !api.IsCode(err, api.CodeConflict) { // conflict: it ended meanwhile
			return fmt.Errorf("kill all processes: %w", err)
		}
		if i < len(running) {
			out = append(out, running[i].Info())
		}
	}
	api.WriteJSON(w, httpd.StatusOK, out)
	return nil
}

// handleProcessLogs answers the log after ?cursor= (default 0) as one ProcessLogs, at most
// ?limit= bytes, or with ?follow=1 streams it as Server-Sent Events (the event name is the
// ProcessEvent's type, its data the whole ProcessEvent) until the process has ended; the 200
// goes out at once, before there is any output.
func (a *Agent) handleProcessLogs(w *httpd.ResponseWriter, r *httpd.Request) error {
	q := r.Query()
	var cursor int64
	if v := q.Get("cursor"); v != "" {
		var err error
		if cursor, err = strconv.ParseInt(v, 10, 64); err != nil || cursor < 0 {
			return api.Errorf(api.CodeInvalidArgument, "cursor must be a byte offset ≥ 0, not %q", v)
		}
	}
	limit := defaultLogRead
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLogRead {
			return api.Errorf(api.CodeInvalidArgument, "limit must be 1-%d bytes, not %q", maxLogRead, v)
		}
		limit = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		var err error
		if follow, err = strconv.ParseBool(v); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "follow must be 1/true or 0/false, not %q", v)
		}
	}
	p, err := a.process(r)
	if err != nil {
		return err
	}
	if !follow {
		api.WriteJSON(w, httpd.StatusOK, p.Logs(cursor, limit))
		return nil
	}
	events := openEventStream(w)
	p.Follow(r.Context(), cursor, func(ev api.ProcessEvent) bool { return events.Send(ev.Type, ev) == nil })
	return nil
}

// handleProcessStdin appends the raw body to the process's stdin (POST; ?close=true closes it
// after), or closes it (DELETE).
func (a *Agent) handleProcessStdin(w *httpd.ResponseWriter, r *httpd.Request) error {
	closeAfter := r.Method == httpd.MethodDelete
	if v := r.Query().Get("close"); v != "" && !closeAfter {
		var err error
		if closeAfter, err = strconv.ParseBool(v); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "close must be true or false, not %q", v)
		}
	}
	p, err := a.process(r)
	if err != nil {
		return err
	}
	body := io.Reader(r.Body)
	if r.Method == httpd.MethodDelete {
		body = bytes.NewReader(nil)
	}
	if err := p.WriteStdin(r.Context(), body, closeAfter); err != nil {
		return fmt.Errorf("write to process %q's stdin: %w", r.PathValue("pid"), err)
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

func (a *Agent) handleWaitProcess(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.WaitProcessRequest
	if err := api.DecodeBody(r.Body, &req, true); err != nil {
		return err
	}
	p, err := a.process(r)
	if err != nil {
		return err
	}
	res, err := p.Wait(r.Context(), req)
	if err != nil {
		return fmt.Errorf("wait for process %q: %w", r.PathValue("pid"), err)
	}
	api.WriteJSON(w, httpd.StatusOK, res)
	return nil
}

// sandboxDefaults is what a process that names no session starts from: the sandbox's
// environment as it is now (PATCH …/env included), its working directory and its user.
func (a *Agent) sandboxDefaults() ([]string, string, string) {
	env := a.env.Effective()
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	cwd, user := a.sessions.Defaults()
	return out, cwd, user
}
