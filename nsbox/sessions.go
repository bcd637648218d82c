package nsbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"time"
	"unicode/utf8"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Sessions live in the sandbox's agent (package agent, package session); the daemon checks
// requests and relays them through its typed agent client.

func (r *Runtime) handleCreateSession(w http.ResponseWriter, req *http.Request) error {
	var body api.CreateSessionRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	narrow, err := r.checkSessionPermissions(l, body.Permissions)
	if err != nil {
		return err
	}
	s, created, err := l.agent.createSession(req.Context(), body)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	if narrow != nil {
		if err := r.confineSession(req.Context(), l, s, created, body.Permissions); err != nil {
			return err
		}
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		r.ops.events.publish(api.EventSessionCreated, l.rec.ID, "session", s.ID, "user", s.User, "shell", s.Shell)
	}
	httpapi.WriteJSON(w, status, s)
	return nil
}

func (r *Runtime) handleListSessions(w http.ResponseWriter, req *http.Request) error {
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	list, err := l.agent.listSessions(req.Context())
	if err != nil {
		return l.failure(req.Context(), err)
	}
	httpapi.WriteJSON(w, http.StatusOK, list)
	return nil
}

func (r *Runtime) handleGetSession(w http.ResponseWriter, req *http.Request) error {
	s, err := r.Session(req.Context(), req.PathValue("id"), req.PathValue("sid"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, s)
	return nil
}

// Session returns the session sid of the running sandbox id.
func (r *Runtime) Session(ctx context.Context, id, sid string) (*api.Session, error) {
	l, err := r.running(id)
	if err != nil {
		return nil, err
	}
	s, err := l.agent.getSession(ctx, sid)
	if err != nil {
		return nil, l.failure(ctx, err)
	}
	return s, nil
}

func (r *Runtime) handleDeleteSession(w http.ResponseWriter, req *http.Request) error {
	// Its session.ended event comes through the agent's watch stream (agentwatch.go).
	return r.sessionCall(w, req, func(a *agentClient, ctx context.Context, sid string) error {
		if err := a.deleteSession(ctx, sid); err != nil {
			return err
		}
		return r.forgetSession(req.PathValue("id"), sid)
	})
}

func (r *Runtime) handleCancelSession(w http.ResponseWriter, req *http.Request) error {
	return r.sessionCall(w, req, (*agentClient).cancelSession)
}

// sessionCall relays a call on one session that answers nothing (204).
func (r *Runtime) sessionCall(w http.ResponseWriter, req *http.Request, call func(*agentClient, context.Context, string) error) error {
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	if err := call(l.agent, req.Context(), req.PathValue("sid")); err != nil {
		return l.failure(req.Context(), err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleExec runs a command in a session: the one named in the path, in the body, or the
// sandbox's default session. With Accept: text/event-stream the events stream as SSE as the
// output is produced; with Accept: application/x-nsbox-frames the answer is the whole output
// as raw frames, then the result (answerFrames); otherwise the answer is one ExecResult when
// the command has finished, its output spooled until then (output.go).
func (r *Runtime) handleExec(w http.ResponseWriter, req *http.Request) error {
	var body api.ExecRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	sid := req.PathValue("sid")
	switch {
	case sid == "" && body.SessionID == "":
		sid = api.DefaultSessionID
	case sid == "":
		sid = body.SessionID
	case body.SessionID != "" && body.SessionID != sid:
		return api.Errorf(api.CodeInvalidArgument, "sessionId %q in the body does not match the path's session %q", body.SessionID, sid)
	}
	if body.TimeoutMs < 0 {
		return api.Errorf(api.CodeInvalidArgument, "timeoutMs must not be negative")
	}
	if _, err := body.StdinBytes(); err != nil {
		return err
	}
	// Frames are a stream too: the daemon holds none of the output.
	stream, frames := httpapi.WantsEventStream(req), httpapi.WantsFrames(req)
	if body.MaxOutputBytes < 0 {
		return api.Errorf(api.CodeInvalidArgument, "maxOutputBytes must not be negative")
	}
	if !stream && !frames {
		// The agent keeps to the cap too, so what would be dropped is not even sent.
		var err error
		if body.MaxOutputBytes, err = r.outputCap(body.MaxOutputBytes); err != nil {
			return err
		}
	}
	ctx := req.Context()
	if r.log.Enabled(ctx, slog.LevelDebug) {
		var tr *execTrace
		ctx, tr = traceExec(ctx)
		defer tr.log(r.log, req.PathValue("id"))
	}
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	defer observe(r.ops.metrics.exec, time.Now(), nil)
	events, err := l.agent.exec(ctx, sid, body)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	defer events.Close()
	if stream {
		relayExec(ctx, l, httpapi.NewSSEWriter(w), events)
		return nil
	}
	if frames {
		if err := answerFrames(ctx, l, w, events, body.MaxOutputBytes); err != nil {
			return l.failure(req.Context(), err)
		}
		return nil
	}
	out := r.newOutput(body.MaxOutputBytes)
	defer out.close()
	res, err := collectResult(events, out)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	return r.writeAnswer(w, res, out, res.StdoutEncoding, res.StderrEncoding)
}

// streamError is the error of an agent's stream that ended before its last event: the agent's
// own error event, or its going away.
func streamError(err error) error {
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		return apiErr
	}
	return api.Errorf(api.CodeUnavailable, "the sandbox's agent stopped answering mid-stream: %v", err)
}

// streamEnd is the error frame or event that ends a stream relayed to a client when reading
// the agent's failed with err: the sandbox's removal or the daemon's stop, when that is why
// (ctx's cause), else streamError's.
func (l live) streamEnd(ctx context.Context, err error) error {
	if removed := l.removed(); removed != nil {
		return removed
	}
	return stopCause(ctx, streamError(err))
}

// collectResult gathers a whole exec from the agent's frames: its output into out, and its
// result, whose Stdout and Stderr stay empty (they are written from out).
func collectResult(events *eventStream, out *output) (*api.ExecResult, error) {
	for {
		name, data, err := events.Next()
		if err != nil {
			return nil, streamError(err)
		}
		switch name {
		case api.EventStdout, api.EventStderr:
			if err := out.write(name, data); err != nil {
				return nil, err
			}
		case api.EventExit:
			res, err := execResult(data, &out.stdout.streamCheck, &out.stderr.streamCheck)
			if err != nil {
				return nil, err
			}
			res.StdoutEncoding, res.StderrEncoding = out.stdout.encoding(), out.stderr.encoding()
			return res, nil
		}
	}
}

// execResult is the result an exit event carries, with empty Stdout and Stderr (the client
// gets them apart) and what the daemon's checks of the streams saw: their truncation. The
// caller sets the encodings.
func execResult(exit []byte, stdout, stderr *streamCheck) (*api.ExecResult, error) {
	var ev api.ExecEvent
	if err := json.Unmarshal(exit, &ev); err != nil || ev.Result == nil {
		return nil, fmt.Errorf("exit event without a result: %q", exit)
	}
	res := *ev.Result
	res.Stdout, res.Stderr = "", ""
	res.StdoutTruncated = res.StdoutTruncated || stdout.limit.Truncated
	res.StderrTruncated = res.StderrTruncated || stderr.limit.Truncated
	res.Truncated = res.StdoutTruncated || res.StderrTruncated
	return &res, nil
}

// startRelayFlush is how long answerFrames holds an exec's start frame for the next frame
// (which the agent sent with it, when the command was short) to flush both in one write.
const startRelayFlush = time.Millisecond

// answerFrames answers an exec as frames (api.EventFrames) as its events come: the output's
// chunks as raw bytes, each stream within its cap (max; 0: no bound), and the exit event, whose result
// says which stream was truncated and which is text ("utf-8") or not ("raw"). Nothing is
// spooled and nothing is encoded. An error before the first frame is returned (the caller
// answers it); one after it ends the frames with an error frame.
func answerFrames(ctx context.Context, l live, w http.ResponseWriter, events *eventStream, max int64) error {
	out := httpapi.NewFrameWriter(w)
	defer out.End()
	checks := map[string]*streamCheck{api.EventStdout: {limit: api.OutputLimit{Max: max}}, api.EventStderr: {limit: api.OutputLimit{Max: max}}}
	sent := false
	for {
		name, data, err := events.Next()
		if err != nil {
			if !sent {
				return streamError(err)
			}
			_ = out.SendError(l.streamEnd(ctx, err))
			return nil
		}
		switch name {
		case api.EventStdout, api.EventStderr:
			if data = checks[name].keep(data); len(data) == 0 {
				continue
			}
		case api.EventExit:
			stdout, stderr := checks[api.EventStdout], checks[api.EventStderr]
			res, err := execResult(data, stdout, stderr)
			if err != nil {
				_ = out.SendError(streamError(err))
				return nil
			}
			res.StdoutEncoding, res.StderrEncoding = stdout.rawEncoding(), stderr.rawEncoding()
			if data, err = json.Marshal(api.ExecEvent{Type: api.EventExit, Result: res}); err != nil {
				_ = out.SendError(streamError(fmt.Errorf("encode exit event: %w", err)))
				return nil
			}
		}
		sent = true
		switch name {
		case api.EventExit:
			_ = out.SendLast(name, data)
			return nil
		case api.EventStart:
			// The agent sends the start with what follows it when that comes soon: it is
			// then in the reader's buffer already, and the client gets both in one write.
			err = out.SendSoon(name, data, startRelayFlush)
		default:
			err = out.Send(name, data)
		}
		if err != nil {
			return nil
		}
	}
}

// sseOutput bounds the output one Server-Sent Event carries. The agent's frames carry up to
// 1 MiB; clients that read events as lines (browsers' EventSource, the TypeScript SDK) handle
// events of this size much better (in Node, 1 MiB events halved the rate).
const sseOutput = 64 << 10

// relayExec streams an exec's frames to the client as Server-Sent Events as they come: output
// chunks encoded as ExecEvents of at most sseOutput bytes each, every other event as it is (see
// relayEvents).
func relayExec(ctx context.Context, l live, out *api.SSEWriter, events *eventStream) {
	var buf []byte
	for {
		name, data, err := events.Next()
		if err != nil {
			_ = out.SendError(l.streamEnd(ctx, err))
			return
		}
		if name != api.EventStdout && name != api.EventStderr {
			if out.SendRaw(name, data) != nil || name == api.EventExit {
				return
			}
			continue
		}
		for len(data) > 0 {
			n := outputPiece(data, sseOutput)
			buf = api.AppendOutputEvent(buf[:0], name, data[:n])
			if out.SendRaw(name, buf) != nil {
				return
			}
			data = data[n:]
		}
	}
}

// outputPiece is how many of b's first bytes, at most max, make one piece of output: cut
// before a character that max would split (text stays text in each piece), unless none
// starts within a character's length (binary output).
func outputPiece(b []byte, max int) int {
	if len(b) <= max {
		return len(b)
	}
	for n := max; n > max-utf8.UTFMax; n-- {
		if utf8.RuneStart(b[n]) {
			return n
		}
	}
	return max
}

// relayStream opens one of the agent's event streams for the running sandbox a request names
// and relays it to the client as it comes (200 at once), until the event named last.
func (r *Runtime) relayStream(w http.ResponseWriter, req *http.Request, last string, open func(*agentClient) (*eventStream, error)) error {
	l, err := r.running(req.PathValue("id"))
	if err != nil {
		return err
	}
	events, err := open(l.agent)
	if err != nil {
		return l.failure(req.Context(), err)
	}
	defer events.Close()
	out := httpapi.NewSSEWriter(w)
	if out.Start() != nil {
		return nil
	}
	relayEvents(req.Context(), l, out, events, last)
	return nil
}

// relayEvents streams an agent's events to the client as they come, as they are (the agent
// names each event by its type, as the API does), until the event named last or until the
// client goes away (the agent decides what happens to the command then). A stream that
// fails, or that the daemon's stop ends (ctx's cause), is ended with an error event.
func relayEvents(ctx context.Context, l live, out *api.SSEWriter, events *eventStream, last string) {
	for {
		name, data, err := events.Next()
		if err != nil {
			_ = out.SendError(l.streamEnd(ctx, err))
			return
		}
		if out.SendRaw(name, data) != nil || name == last {
			return
		}
	}
}

// execTrace times an exec's way to the agent, for the debug log.
type execTrace struct {
	began, conn, wrote, first time.Time
	info                      httptrace.GotConnInfo
}

func traceExec(ctx context.Context) (context.Context, *execTrace) {
	t := &execTrace{began: time.Now()}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn:              func(info httptrace.GotConnInfo) { t.conn, t.info = time.Now(), info },
		WroteRequest:         func(httptrace.WroteRequestInfo) { t.wrote = time.Now() },
		GotFirstResponseByte: func() { t.first = time.Now() },
	}), t
}

func (t *execTrace) log(log *slog.Logger, id string) {
	since := func(at time.Time) time.Duration {
		if at.IsZero() {
			return 0
		}
		return at.Sub(t.began)
	}
	log.Debug("exec timed", "sandbox", id, "conn", since(t.conn), "reused", t.info.Reused, "idle", t.info.IdleTime,
		"wrote", since(t.wrote), "firstByte", since(t.first), "total", time.Since(t.began))
}
