package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/cgroup"
	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// agentRunDir is the agent's tmpfs inside the sandbox; sessionDir in it is where sessions keep
// their FIFOs and scripts.
const (
	agentRunDir = "/run/nsbox"
	sessionDir  = agentRunDir + "/sessions"
)

func sessionInfo(i session.Info) api.Session {
	perm := api.PermissionWrite
	if i.ReadOnly {
		perm = api.PermissionRead
	}
	return api.Session{ID: i.ID, Shell: i.Shell, User: i.User, UID: i.UID, GID: i.GID, Cwd: i.Cwd, Status: i.Status, ExitCode: i.ExitCode, PID: i.PID, CreatedAt: i.CreatedAt, Permission: perm,
		PrivateDir: i.PrivateDir}
}

// sessionError maps the session package's errors to API errors.
func sessionError(err error) error {
	switch {
	case errors.Is(err, session.ErrNotFound):
		return api.Errorf(api.CodeNotFound, "%v", err)
	case errors.Is(err, session.ErrBusy):
		return api.Errorf(api.CodeTerminalBusy, "%v", err)
	case errors.Is(err, session.ErrExists), errors.Is(err, session.ErrEnded):
		return api.Errorf(api.CodeConflict, "%v", err)
	case errors.Is(err, session.ErrInvalid):
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return api.Errorf(api.CodeInsufficientStorage, "%s in the sandbox (the agent's tmpfs for session control files and the stdin of commands) is full: %v; free space there (something in the sandbox filled it) and retry, the session is unchanged", agentRunDir, err)
	}
	return err
}

func (a *Agent) handleCreateSession(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.CreateSessionRequest
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if req.ID == "" {
		req.ID = "s-" + time.Now().UTC().Format("150405.000000")
	}
	if !api.ValidAgentID(req.ID) {
		return api.Errorf(api.CodeInvalidArgument, "invalid session id %q: use 1-63 letters, digits, '_', '.' and '-', starting with a letter or digit", req.ID)
	}
	if err := api.CheckEnv(req.Env); err != nil {
		return err
	}
	if req.Permission != "" && req.Permission != api.PermissionRead && req.Permission != api.PermissionWrite {
		return api.Errorf(api.CodeInvalidArgument, "permission must be %q or %q, not %q", api.PermissionRead, api.PermissionWrite, req.Permission)
	}
	opts := session.Options{ID: req.ID, Shell: req.Shell, User: req.User, Cwd: req.Cwd, Env: req.Env, ReadOnly: req.Permission == api.PermissionRead}
	s, err := a.sessions.Create(opts)
	if errors.Is(err, session.ErrExists) {
		// Creating a session that runs answers it as it is (its permission included).
		if s, gerr := a.sessions.Get(req.ID); gerr == nil && !s.Ended() {
			api.WriteJSON(w, httpd.StatusOK, sessionInfo(s.Info()))
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("create session %q: %w", req.ID, sessionError(err))
	}
	api.WriteJSON(w, httpd.StatusCreated, sessionInfo(s.Info()))
	return nil
}

// writableSession finds a session that may be driven: a read-only session is refused with
// 403, for every caller.
func (a *Agent) writableSession(sid string) (*session.Session, error) {
	s, err := a.session(sid)
	if err != nil {
		return nil, err
	}
	if s.ReadOnly() {
		return nil, api.Errorf(api.CodePermissionDenied, "session %q is read-only: it can be watched (terminal output, files, processes, logs) but runs no command, takes no input and changes no file", sid)
	}
	return s, nil
}

// session finds a session by id; the default session is started when it does not run, so it
// exists whenever anyone asks for it. Its errors are API errors (see sessionError).
func (a *Agent) session(sid string) (*session.Session, error) {
	var s *session.Session
	var err error
	if sid == session.DefaultID {
		s, err = a.sessions.Default()
	} else {
		s, err = a.sessions.Get(sid)
	}
	if err != nil {
		return nil, fmt.Errorf("session %q: %w", sid, sessionError(err))
	}
	return s, nil
}

func (a *Agent) handleListSessions(w *httpd.ResponseWriter, _ *httpd.Request) error {
	if _, err := a.sessions.Default(); err != nil {
		a.log.Warn("start default session", "err", err)
	}
	out := []api.Session{}
	for _, i := range a.sessions.List() {
		out = append(out, sessionInfo(i))
	}
	api.WriteJSON(w, httpd.StatusOK, out)
	return nil
}

func (a *Agent) handleGetSession(w *httpd.ResponseWriter, r *httpd.Request) error {
	s, err := a.session(r.PathValue("sid"))
	if err != nil {
		return err
	}
	api.WriteJSON(w, httpd.StatusOK, sessionInfo(s.Info()))
	return nil
}

func (a *Agent) handleDeleteSession(w *httpd.ResponseWriter, r *httpd.Request) error {
	if err := a.sessions.Delete(r.PathValue("sid")); err != nil {
		return fmt.Errorf("delete session %q: %w", r.PathValue("sid"), sessionError(err))
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

func (a *Agent) handleCancel(w *httpd.ResponseWriter, r *httpd.Request) error {
	s, err := a.session(r.PathValue("sid"))
	if err != nil {
		return err
	}
	if !s.Cancel() {
		return api.Errorf(api.CodeConflict, "session %q is not running a command", r.PathValue("sid"))
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

// startFlush is how long an exec's start frame may wait for the command's first output or
// its end, to go out with it in one write (most commands sent through the API are short).
const startFlush = 5 * time.Millisecond

// handleExec runs a command in a session and streams its events as frames (api.FrameWriter):
// start, then stdout/stderr chunks as they are produced (their raw bytes), then exit with the
// result. The stream (and the 200) starts when the command does; errors before that are plain
// error answers.
func (a *Agent) handleExec(w *httpd.ResponseWriter, r *httpd.Request) error {
	// ReadBody reads the body to its end: only then does the server notice, and cancel
	// r.Context(), when the daemon's connection goes away (which killOnDisconnect relies on).
	// The request and the events are coded without encoding/json: fewer pages for an exec to
	// touch in an agent that idled (api/execjson.go).
	body, err := api.ReadBody(r.Body, false)
	if err != nil {
		return err
	}
	var req api.ExecRequest
	if err := api.DecodeExecRequest(body, &req); err != nil {
		return err
	}
	sreq, err := sessionRequest(&req)
	if err != nil {
		return err
	}
	s, err := a.writableSession(r.PathValue("sid"))
	if err != nil {
		return err
	}
	// By default the command outlives its client; it is killed only if the client asked.
	ctx := context.WithoutCancel(r.Context())
	if req.KillOnDisconnect {
		ctx = r.Context()
	}
	events := api.NewFrameWriter(w)
	defer events.End()
	sid := s.ID()
	started := false
	// What is beyond a stream's cap is read (the command does not block) and dropped. Each
	// stream's chunks come from one goroutine at a time.
	stdout, stderr := &api.OutputLimit{Max: req.MaxOutputBytes}, &api.OutputLimit{Max: req.MaxOutputBytes}
	oomKills := cgroup.OOMKills()
	res, err := s.Exec(ctx, sreq, func(kind string, data []byte) {
		limit := stdout
		switch kind {
		case session.Started:
			started = true
			// Sends fail once the client went away; the command goes on all the same.
			start := api.AppendExecEvent(nil, &api.ExecEvent{Type: api.EventStart, SessionID: sid})
			_ = events.SendSoon(api.EventStart, start, startFlush)
			return
		case api.EventStderr:
			limit = stderr
		}
		if data = limit.Keep(data); len(data) > 0 {
			_ = events.Send(kind, data)
		}
	})
	if err != nil {
		err = fmt.Errorf("exec in session %q: %w", sid, sessionError(err))
		if !started {
			return err
		}
		a.log.Warn("exec failed after it started", "session", sid, "err", err)
		_ = events.SendError(err)
		return nil
	}
	result := api.NewExecResult(res.ExitCode, nil, nil)
	result.TimedOut, result.Canceled, result.DurationMs = res.TimedOut, res.Canceled, res.Duration.Milliseconds()
	result.SessionID, result.SessionEnded, result.SessionReset = sid, res.SessionEnded, res.Reset
	result.StdoutTruncated, result.StderrTruncated = stdout.Truncated, stderr.Truncated
	result.Truncated = stdout.Truncated || stderr.Truncated
	result.OOMKilled = !res.TimedOut && !res.Canceled && cgroup.OOMKilled(res.ExitCode, oomKills)
	_ = events.SendLast(api.EventExit, api.AppendExecEvent(nil, &api.ExecEvent{Type: api.EventExit, SessionID: sid, Result: &result}))
	return nil
}

func sessionRequest(req *api.ExecRequest) (session.ExecRequest, error) {
	var out session.ExecRequest
	switch {
	case len(req.Argv) > 0 && req.Command != "":
		return out, api.Errorf(api.CodeInvalidArgument, "give either argv or command, not both")
	case len(req.Argv) > 0:
		out.Command = session.QuoteArgv(req.Argv)
	case req.Command != "":
		out.Command = req.Command
	default:
		return out, api.Errorf(api.CodeInvalidArgument, "argv or command is required")
	}
	if err := api.CheckEnv(req.Env); err != nil {
		return out, err
	}
	if req.MaxOutputBytes < 0 {
		return out, api.Errorf(api.CodeInvalidArgument, "maxOutputBytes must not be negative")
	}
	if req.Stdin != "" {
		stdin, err := req.StdinBytes()
		if err != nil {
			return out, err
		}
		out.Stdin = stdin
	}
	out.Env, out.Cwd, out.Timeout = req.Env, req.Cwd, time.Duration(req.TimeoutMs)*time.Millisecond
	return out, nil
}
