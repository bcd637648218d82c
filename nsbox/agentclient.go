package nsbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// agentClient is the daemon's typed client of one container's agent (package agent), over the
// agent's host-only socket. Streams (exec, followed logs, terminal output) come as
// Server-Sent Events, which the daemon relays to its own clients as they are.
type agentClient struct {
	http *http.Client
	dial func(ctx context.Context) (net.Conn, error)
}

// agentConnBuffer is the size of each buffer a connection to an agent keeps for its life, one
// for reading and one for writing (net/http's default is 4 KiB each). Every running sandbox
// keeps its watch stream open, and one idle connection for the next request once it had one,
// so these are per-sandbox memory. Requests and answers' heads are a few hundred bytes; bodies
// larger than the buffer (files, the 16 KiB reads of an exec's frames) go past it to the
// socket anyway.
const agentConnBuffer = 1 << 10

// newAgentClient returns a client of the instance's agent.
func newAgentClient(inst backend.Instance) *agentClient {
	return &agentClient{dial: inst.DialAgent, http: &http.Client{Transport: &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return inst.DialAgent(ctx) },
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		ReadBufferSize:      agentConnBuffer,
		WriteBufferSize:     agentConnBuffer,
	}}}
}

// forgetAgent drops the idle connections to a sandbox's agent once its container is gone.
// sb.mu must be held.
func (r *Runtime) forgetAgent(sb *sandbox) {
	r.forgetContainerAgent(sb.agent)
	sb.agent = nil
}

// forgetContainerAgent drops the idle connections of an agent client.
func (r *Runtime) forgetContainerAgent(c *agentClient) {
	if c != nil {
		c.http.CloseIdleConnections()
	}
}

// health asks the agent how it is. It is a container's first request, and its connection is
// kept for the next: the sandbox's first command, which nearly always comes at once (a dial,
// ~0.45 ms, and the agent's accept on the sandbox's CPU, while the default shell starts).
func (c *agentClient) health(ctx context.Context) (*api.Health, error) {
	req, err := agentRequest(ctx, http.MethodGet, "/v1/health", nil, "application/json")
	if err != nil {
		return nil, err
	}
	var h api.Health
	_, err = c.sendRequest(req, &h)
	return &h, err
}

// configure gives the agent its sandbox's hostname, environment and working directory.
func (c *agentClient) configure(ctx context.Context, cfg api.AgentConfig) error {
	return c.call(ctx, http.MethodPut, "/v1/config", cfg, nil)
}

// saveState has the agent save its sessions' state and its processes (hibernate.go).
func (c *agentClient) saveState(ctx context.Context, req api.SaveStateRequest) (*api.SandboxState, error) {
	var st api.SandboxState
	return &st, c.call(ctx, http.MethodPost, "/v1/state/save", req, &st)
}

// continueProcesses lets the processes a save with Stop stopped run again.
func (c *agentClient) continueProcesses(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/state/continue", nil, nil)
}

// restoreState gives a new container's agent the state an earlier one saved.
func (c *agentClient) restoreState(ctx context.Context, st api.SandboxState) error {
	return c.call(ctx, http.MethodPost, "/v1/state/restore", st, nil)
}

// shutdown asks the agent to end everything in the sandbox and exit. stopped: it answered
// once every other process in the sandbox had exited (204); an agent from before that
// answers at once (202), and only its exit says so.
func (c *agentClient) shutdown(ctx context.Context) (stopped bool, err error) {
	status, err := c.send(ctx, http.MethodPost, "/v1/shutdown", nil, nil)
	return status == http.StatusNoContent, err
}

// pushEnv gives the agent the sandbox's complete environment.
func (c *agentClient) pushEnv(ctx context.Context, env map[string]string) error {
	if env == nil {
		env = map[string]string{}
	}
	return c.call(ctx, http.MethodPut, "/v1/env", api.SandboxEnv{Env: env}, nil)
}

// watch opens the agent's stream of notices: its counts after every change, and what ended
// (agentwatch.go). Every running sandbox keeps it open, so it has a connection of its own,
// read by the caller alone: through the client's transport it would also hold a reading and a
// writing goroutine for the sandbox's life. ctx bounds the opening only.
func (c *agentClient) watch(ctx context.Context) (*eventStream, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "sandbox agent unreachable: %v", err)
	}
	resp, err := openStream(ctx, conn, "/v1/watch")
	if err != nil {
		conn.Close()
		return nil, err
	}
	// Its buffer starts small: the notices are a few dozen bytes.
	return &eventStream{events: api.NewSSEReaderSize(resp.Body, 1<<10), body: connBody{resp.Body, conn}}, nil
}

// openStream asks for the stream at path on conn and returns the agent's answer when it is a
// success; an error answer becomes its *api.Error, a broken connection an unavailable one. The
// caller closes conn, also when it fails.
func openStream(ctx context.Context, conn net.Conn, path string) (*http.Response, error) {
	req, err := agentRequest(ctx, http.MethodGet, path, nil, api.EventStream)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(conn); err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "sandbox agent unreachable: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, agentConnBuffer), req)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "sandbox agent unreachable: %v", err)
	}
	if !stop() { // the caller closes conn
		return nil, api.Errorf(api.CodeUnavailable, "sandbox agent unreachable: %v", ctx.Err())
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, httpapi.ReadError(resp)
	}
	return resp, nil
}

// connBody is an answer's body read from a connection of its own: closing it closes the
// connection, not the body, whose Close would first read a stream that is still open to its
// end.
type connBody struct {
	io.Reader
	conn net.Conn
}

func (b connBody) Close() error { return b.conn.Close() }

func sessionPath(sid string, rest ...string) string {
	p := "/v1/sessions/" + url.PathEscape(sid)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// createSession starts a session; created is false when one with the id ran already (the
// agent answers it as it is).
func (c *agentClient) createSession(ctx context.Context, req api.CreateSessionRequest) (s *api.Session, created bool, err error) {
	s = &api.Session{}
	status, err := c.send(ctx, http.MethodPost, "/v1/sessions", jsonBody(req), s)
	return s, status == http.StatusCreated, err
}

func (c *agentClient) listSessions(ctx context.Context) ([]api.Session, error) {
	return callSlice[api.Session](ctx, c, http.MethodGet, "/v1/sessions", nil)
}

func (c *agentClient) getSession(ctx context.Context, sid string) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, http.MethodGet, sessionPath(sid), nil, &s)
}

func (c *agentClient) deleteSession(ctx context.Context, sid string) error {
	return c.call(ctx, http.MethodDelete, sessionPath(sid), nil, nil)
}

func (c *agentClient) cancelSession(ctx context.Context, sid string) error {
	return c.call(ctx, http.MethodPost, sessionPath(sid, "cancel"), nil, nil)
}

// exec runs a command in a session; its events stream until the exit event, as frames (the
// output events' data is the output's bytes).
func (c *agentClient) exec(ctx context.Context, sid string, req api.ExecRequest) (*eventStream, error) {
	resp, err := c.do(ctx, http.MethodPost, sessionPath(sid, "exec"), jsonBody(req), api.EventFrames)
	if err != nil {
		return nil, err
	}
	return &eventStream{events: api.NewFrameReader(resp.Body), body: resp.Body, last: api.EventExit}, nil
}

// terminalOutput streams a session's terminal from cursor ("": its recent scrollback).
func (c *agentClient) terminalOutput(ctx context.Context, sid, cursor string) (*eventStream, error) {
	p := sessionPath(sid, "terminal")
	if cursor != "" {
		p += "?cursor=" + url.QueryEscape(cursor)
	}
	return c.stream(ctx, http.MethodGet, p, nil)
}

// terminalInput types data into a session's terminal.
func (c *agentClient) terminalInput(ctx context.Context, sid string, data []byte) error {
	return c.callRaw(ctx, http.MethodPost, sessionPath(sid, "terminal", "input"), bytes.NewReader(data), nil)
}

// terminalResize resizes a session's terminal.
func (c *agentClient) terminalResize(ctx context.Context, sid string, size api.TerminalControl) error {
	return c.call(ctx, http.MethodPost, sessionPath(sid, "terminal", "resize"), size, nil)
}

func processPath(pid string, rest ...string) string {
	p := "/v1/processes"
	if pid != "" {
		p += "/" + url.PathEscape(pid)
	}
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

func withQuery(p string, q url.Values) string {
	if len(q) == 0 {
		return p
	}
	return p + "?" + q.Encode()
}

func (c *agentClient) startProcess(ctx context.Context, req api.StartProcessRequest) (*api.Process, error) {
	var p api.Process
	return &p, c.call(ctx, http.MethodPost, processPath(""), req, &p)
}

func (c *agentClient) listProcesses(ctx context.Context, q url.Values) ([]api.Process, error) {
	return callSlice[api.Process](ctx, c, http.MethodGet, withQuery(processPath(""), q), nil)
}

func (c *agentClient) getProcess(ctx context.Context, pid string) (*api.Process, error) {
	var p api.Process
	return &p, c.call(ctx, http.MethodGet, processPath(pid), nil, &p)
}

func (c *agentClient) removeProcess(ctx context.Context, pid string) error {
	return c.call(ctx, http.MethodDelete, processPath(pid), nil, nil)
}

// removeFinished removes every process that has ended and returns them.
func (c *agentClient) removeFinished(ctx context.Context) ([]api.Process, error) {
	return callSlice[api.Process](ctx, c, http.MethodDelete, processPath(""), nil)
}

func (c *agentClient) killProcess(ctx context.Context, pid string, req api.KillProcessRequest) (*api.Process, error) {
	var p api.Process
	return &p, c.call(ctx, http.MethodPost, processPath(pid, "kill"), req, &p)
}

// killAll signals every process and returns them.
func (c *agentClient) killAll(ctx context.Context, req api.KillProcessRequest) ([]api.Process, error) {
	return callSlice[api.Process](ctx, c, http.MethodPost, processPath("", "kill"), req)
}

func (c *agentClient) processLogs(ctx context.Context, pid string, q url.Values) (*api.ProcessLogs, error) {
	var logs api.ProcessLogs
	return &logs, c.call(ctx, http.MethodGet, withQuery(processPath(pid, "logs"), q), nil, &logs)
}

// followLogs streams a process's output until it ends (q has follow set).
func (c *agentClient) followLogs(ctx context.Context, pid string, q url.Values) (*eventStream, error) {
	return c.stream(ctx, http.MethodGet, withQuery(processPath(pid, "logs"), q), nil)
}

// writeStdin copies body to a process's stdin (q: close=true closes it after).
func (c *agentClient) writeStdin(ctx context.Context, pid string, body io.Reader, q url.Values) error {
	return c.callRaw(ctx, http.MethodPost, withQuery(processPath(pid, "stdin"), q), body, nil)
}

// closeStdin closes a process's stdin.
func (c *agentClient) closeStdin(ctx context.Context, pid string) error {
	return c.call(ctx, http.MethodDelete, processPath(pid, "stdin"), nil, nil)
}

func (c *agentClient) waitProcess(ctx context.Context, pid string, req api.WaitProcessRequest) (*api.WaitProcessResult, error) {
	var res api.WaitProcessResult
	return &res, c.call(ctx, http.MethodPost, processPath(pid, "wait"), req, &res)
}

// callSlice sends one request and decodes its JSON array answer (never nil).
func callSlice[T any](ctx context.Context, c *agentClient, method, path string, in any) ([]T, error) {
	out := []T{}
	if err := c.call(ctx, method, path, in, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// call sends one request with an optional JSON body and decodes the JSON answer into out.
func (c *agentClient) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		body = jsonBody(in)
	}
	return c.callRaw(ctx, method, path, body, out)
}

// callRaw sends one request with a raw body and decodes the JSON answer into out (nil: the
// answer has no body).
func (c *agentClient) callRaw(ctx context.Context, method, path string, body io.Reader, out any) error {
	_, err := c.send(ctx, method, path, body, out)
	return err
}

// send is callRaw that also returns the answer's (2xx) status.
func (c *agentClient) send(ctx context.Context, method, path string, body io.Reader, out any) (int, error) {
	req, err := agentRequest(ctx, method, path, body, "application/json")
	if err != nil {
		return 0, err
	}
	return c.sendRequest(req, out)
}

// sendRequest is send of a request made already.
func (c *agentClient) sendRequest(req *http.Request, out any) (int, error) {
	resp, err := c.roundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out == nil {
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return 0, api.Errorf(api.CodeUnavailable, "the sandbox's agent answered %s %s with what is not JSON: %v", req.Method, req.URL.Path, err)
	}
	return resp.StatusCode, nil
}

// stream sends one request whose answer is a stream of events.
func (c *agentClient) stream(ctx context.Context, method, path string, body io.Reader) (*eventStream, error) {
	resp, err := c.do(ctx, method, path, body, api.EventStream)
	if err != nil {
		return nil, err
	}
	return &eventStream{events: api.NewSSEReader(resp.Body), body: resp.Body}, nil
}

// do sends one request (asking for the media type accept) and returns the agent's answer when
// it is a success; an error answer becomes its *api.Error, an unreachable agent an
// unavailable one.
func (c *agentClient) do(ctx context.Context, method, path string, body io.Reader, accept string) (*http.Response, error) {
	req, err := agentRequest(ctx, method, path, body, accept)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(req)
}

// agentRequest is a request to the agent asking for the media type accept.
func agentRequest(ctx context.Context, method, path string, body io.Reader, accept string) (*http.Request, error) {
	if body == nil {
		body = http.NoBody
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return nil, fmt.Errorf("agent request: %w", err)
	}
	req.Header.Set("Accept", accept)
	return req, nil
}

// roundTrip is do of a request made already.
func (c *agentClient) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "sandbox agent unreachable: %v", err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, httpapi.ReadError(resp)
	}
	return resp, nil
}

func jsonBody(v any) io.Reader {
	data, _ := json.Marshal(v) // request types always marshal
	return bytes.NewReader(data)
}

// eventStream is a stream of events from the agent: Server-Sent Events, or frames for an exec.
type eventStream struct {
	events interface {
		Next() (event string, data []byte, err error)
		NextJSON(v any) (event string, err error)
	}
	body io.ReadCloser
	// last is the event after which the agent ends the stream ("": it ends with the
	// connection's end only), ended whether it or an error event was read.
	last  string
	ended bool
}

// Next returns the next event's name and data (an "error" event as its *api.Error).
func (s *eventStream) Next() (string, []byte, error) {
	event, data, err := s.events.Next()
	s.saw(event, err)
	return event, data, err
}

// NextJSON reads the next event and decodes its data into v.
func (s *eventStream) NextJSON(v any) (string, error) {
	event, err := s.events.NextJSON(v)
	s.saw(event, err)
	return event, err
}

func (s *eventStream) saw(event string, err error) {
	var apiErr *api.Error
	if (err == nil && event == s.last && s.last != "") || errors.As(err, &apiErr) {
		s.ended = true
	}
}

// Close ends the stream. After its last event it first reads what is left of the answer (the
// end of its chunked body, which the agent writes after the last event): only an answer read
// to its end lets the connection go back to the client's pool; otherwise it is closed and the
// next call dials the agent again (a new connection and goroutine in the agent, each time).
func (s *eventStream) Close() error {
	if s.ended {
		_, _ = io.Copy(io.Discard, io.LimitReader(s.body, maxStreamRest))
	}
	return s.body.Close()
}

// maxStreamRest bounds what Close reads of an ended stream: no more than its chunked end.
const maxStreamRest = 512
