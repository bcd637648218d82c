// Package client is the Go SDK of the nsbox daemon's HTTP API; the CLI is built on it.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"unsafe"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/nsbox/nsbox.sock"

// ErrUnreachable is wrapped by every error of a call that could not reach the daemon at all
// (no socket, connection refused, a TLS or network failure): errors.Is(err, ErrUnreachable).
var ErrUnreachable = errors.New("cannot reach the nsbox daemon")

// Client talks to one nsbox daemon.
type Client struct {
	http  *http.Client
	base  string                                  // the API's base URL
	token string                                  // sent as a bearer token, over TCP
	dial  func(context.Context) (net.Conn, error) // a raw connection to the daemon, for WebSockets
	// fileSession is the session file calls are made for (see InSession).
	fileSession string
}

// Options are how Dial reaches a daemon over TCP.
type Options struct {
	Token string // bearer token (admin or scoped)
	// TLS is the client's TLS configuration for https:// hosts (its RootCAs to trust the
	// daemon's certificate, its Certificates for mutual TLS); nil: the system's roots.
	TLS *tls.Config
}

// Dial returns a client for the daemon at host: unix:///PATH (the socket: full access, no
// token needed), https://HOST:PORT, or http://HOST:PORT on a loopback address only (a token
// must not cross a network in clear).
func Dial(host string, opts Options) (*Client, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("host %q: %w", host, err)
	}
	var tlsCfg *tls.Config
	switch u.Scheme {
	case "unix":
		if u.Path == "" || u.Host != "" {
			return nil, fmt.Errorf("host %q: write a socket as unix:///PATH", host)
		}
		c := New(u.Path)
		c.token = opts.Token
		return c, nil
	case "https":
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		if opts.TLS != nil {
			tlsCfg = opts.TLS.Clone()
		}
		if tlsCfg.ServerName == "" {
			tlsCfg.ServerName = u.Hostname()
		}
	case "http":
		if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("host %q: plain http only to a loopback address; use https://", host)
		}
	default:
		return nil, fmt.Errorf("host %q: use unix:///PATH, https://HOST:PORT or http://127.0.0.1:PORT", host)
	}
	if u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("host %q: give HOST:PORT and no path", host)
	}
	addr := u.Host
	dial := func(ctx context.Context) (net.Conn, error) {
		if tlsCfg != nil {
			d := tls.Dialer{Config: tlsCfg}
			return d.DialContext(ctx, "tcp", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	c := NewWithHTTPClient(&http.Client{Transport: &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DialTLSContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableCompression: true,
	}})
	c.base, c.dial, c.token = u.Scheme+"://"+addr, dial, opts.Token
	return c, nil
}

// New returns a client for the daemon listening on the unix socket at path.
func New(socket string) *Client {
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	c := NewWithHTTPClient(&http.Client{Transport: &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableCompression: true,
	}})
	c.dial = dial
	return c
}

// NewWithHTTPClient returns a client that sends its requests through hc, which must reach the
// daemon (for example over a unix socket, or through a transport that adds headers).
func NewWithHTTPClient(hc *http.Client) *Client {
	return &Client{base: "http://nsbox", http: hc}
}

// Version returns the daemon's version.
func (c *Client) Version(ctx context.Context) (*api.Version, error) {
	var v api.Version
	return &v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}

// Images lists the images sandboxes can be made from.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	return list[api.Image](ctx, c, http.MethodGet, "/v1/images", nil)
}

// CreateSandbox creates a sandbox and returns it once it runs.
func (c *Client) CreateSandbox(ctx context.Context, req api.CreateSandboxRequest) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPost, "/v1/sandboxes", req, &sb)
}

// ListSandboxes lists every sandbox.
func (c *Client) ListSandboxes(ctx context.Context) ([]api.Sandbox, error) {
	return list[api.Sandbox](ctx, c, http.MethodGet, "/v1/sandboxes", nil)
}

// GetSandbox returns one sandbox.
func (c *Client) GetSandbox(ctx context.Context, id string) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id), nil, &sb)
}

// RemoveOptions are how a sandbox is removed.
type RemoveOptions struct {
	Force bool // kill its processes at once, without the grace period of a graceful stop
}

// RemoveSandbox stops and removes a sandbox.
func (c *Client) RemoveSandbox(ctx context.Context, id string, opts RemoveOptions) error {
	path := "/v1/sandboxes/" + url.PathEscape(id)
	if opts.Force {
		path += "?force=true"
	}
	return c.do(ctx, http.MethodDelete, path, nil, nil)
}

// PauseSandbox freezes every process of a running sandbox.
func (c *Client) PauseSandbox(ctx context.Context, id string) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/pause", nil, &sb)
}

// HibernateSandbox stops every process of a running or paused sandbox and frees its memory,
// keeping its files, network and sessions' state; ResumeSandbox (or any request that needs it
// running) starts it again.
func (c *Client) HibernateSandbox(ctx context.Context, id string, req api.HibernateRequest) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/hibernate", req, &sb)
}

// ResumeSandbox lets a paused sandbox run again, or starts a hibernated one again.
func (c *Client) ResumeSandbox(ctx context.Context, id string) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/resume", nil, &sb)
}

// Exec runs a command in a sandbox and returns its result.
//
// When ctx ends before the command has (canceled, or its deadline passed), the call returns
// ctx's error and the command is killed (the request's KillOnDisconnect is set), so the
// session's next command does not wait behind it; the session keeps its state. A ctx made by
// KeepRunning lets the command run to its end instead (its result is dropped).
//
// Each stream keeps at most req.MaxOutputBytes (0: api.DefaultMaxOutputBytes; the result says
// what was truncated). The output comes as raw frames (api.EventFrames), not JSON: Stdout and
// Stderr hold its bytes as they are, named "utf-8" when they are text and "raw" when not
// (Output returns them as bytes).
func (c *Client) Exec(ctx context.Context, id string, req api.ExecRequest) (*api.ExecResult, error) {
	if req.MaxOutputBytes == 0 {
		req.MaxOutputBytes = api.DefaultMaxOutputBytes
	}
	var stdout, stderr []byte
	res, whole, err := c.execFrames(ctx, id, req, func(frames *api.FrameReader) (string, []byte, error) {
		return frames.NextOutput(&stdout, &stderr)
	})
	if err != nil || whole {
		return res, err
	}
	// The buffers are not written again: their bytes become the strings without a copy.
	res.Stdout = unsafe.String(unsafe.SliceData(stdout), len(stdout))
	res.Stderr = unsafe.String(unsafe.SliceData(stderr), len(stderr))
	return res, nil
}

// ExecTo runs a command like Exec but writes its output to stdout and stderr as it comes, and
// returns its result with empty Stdout and Stderr (and encodings that say whether each stream
// was text). No output is kept unless req.MaxOutputBytes asks for a bound, as for ExecStream;
// the bytes come as raw frames, so this is the fast way to move a large output. An error from
// a writer ends the call with that error (and, unless ctx says KeepRunning, the command).
func (c *Client) ExecTo(ctx context.Context, id string, req api.ExecRequest, stdout, stderr io.Writer) (*api.ExecResult, error) {
	res, whole, err := c.execFrames(ctx, id, req, func(frames *api.FrameReader) (string, []byte, error) {
		event, data, err := frames.Next()
		w := stdout
		switch {
		case err != nil:
			return event, data, err
		case event == api.EventStderr:
			w = stderr
		case event != api.EventStdout:
			return event, data, nil
		}
		if _, err := w.Write(data); err != nil {
			return event, data, fmt.Errorf("write %s: %w", event, err)
		}
		return event, data, nil
	})
	if err != nil || !whole {
		return res, err
	}
	out, errOut, err := res.Output()
	if err != nil {
		return nil, fmt.Errorf("exec answer: %w", err)
	}
	for _, w := range []struct {
		name string
		to   io.Writer
		data []byte
	}{{api.EventStdout, stdout, out}, {api.EventStderr, stderr, errOut}} {
		if _, err := w.to.Write(w.data); err != nil {
			return nil, fmt.Errorf("write %s: %w", w.name, err)
		}
	}
	res.Stdout, res.Stderr = "", ""
	return res, nil
}

// execFrames runs an exec answered as frames, reading them with next, and returns the result
// of its exit frame (with empty Stdout and Stderr). A daemon from before frames answers one
// JSON document instead: then the result is that whole answer, output included (whole). It
// kills the command when ctx ends first, unless ctx says KeepRunning.
func (c *Client) execFrames(ctx context.Context, id string, req api.ExecRequest, next func(*api.FrameReader) (string, []byte, error)) (res *api.ExecResult, whole bool, err error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/exec", execRequest(ctx, req), api.EventFrames)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return nil, false, fmt.Errorf("decode exec answer: %w", err)
		}
		return res, true, nil
	}
	frames := api.NewFrameReader(resp.Body)
	for {
		event, data, err := next(frames)
		if err == io.EOF {
			return nil, false, errors.New("exec answer ended before the command did")
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, fmt.Errorf("exec: %w", ctx.Err())
			}
			return nil, false, err
		}
		if event == api.EventExit {
			var ev api.ExecEvent
			if err := json.Unmarshal(data, &ev); err != nil || ev.Result == nil {
				return nil, false, fmt.Errorf("exit frame without a result: %q", data)
			}
			// The rest (the chunked body's end) is read, so the connection is reused: closed
			// before its end, it would be dropped and the next call would dial again.
			_, _ = io.Copy(io.Discard, resp.Body)
			return ev.Result, false, nil
		}
	}
}

// keepRunningKey marks a context made by KeepRunning.
type keepRunningKey struct{}

// KeepRunning returns a context for Exec and ExecStream whose end does not kill the command:
// the command runs to its end in its session (which stays busy until then) and its result is
// dropped, as with the HTTP API's default (killOnDisconnect false).
func KeepRunning(ctx context.Context) context.Context {
	return context.WithValue(ctx, keepRunningKey{}, true)
}

// execRequest is req as Exec sends it: killed when the call's context ends, unless the
// context says KeepRunning.
func execRequest(ctx context.Context, req api.ExecRequest) api.ExecRequest {
	if ctx.Value(keepRunningKey{}) == nil {
		req.KillOnDisconnect = true
	}
	return req
}

// ExecStream runs a command like Exec but delivers its output as it is produced: onEvent gets
// every event (start, stdout, stderr, exit); an error it returns ends the call with that
// error (and, unless ctx says KeepRunning, the command). The returned result has empty Stdout
// and Stderr. Like Exec, it kills the command when ctx ends first, unless ctx says KeepRunning.
func (c *Client) ExecStream(ctx context.Context, id string, req api.ExecRequest, onEvent func(api.ExecEvent) error) (*api.ExecResult, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/exec", execRequest(ctx, req), "text/event-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var result *api.ExecResult
	err = readSSE(resp.Body, func(event string, data []byte) (bool, error) {
		var ev api.ExecEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return false, fmt.Errorf("decode %s event: %w", event, err)
		}
		if err := onEvent(ev); err != nil {
			return false, err
		}
		result = ev.Result
		return ev.Type == api.EventExit && ev.Result != nil, nil
	})
	if err != nil {
		return nil, err
	}
	if result == nil {
		return nil, errors.New("exec stream ended before the command did")
	}
	return result, nil
}

// readSSE calls handle with each Server-Sent Event of a stream until handle reports the last
// one (then the rest is read, so the connection is reused) or the stream ends. An "error"
// event comes back as its *api.Error.
func readSSE(body io.Reader, handle func(event string, data []byte) (last bool, err error)) error {
	events := api.NewSSEReader(body)
	for {
		event, data, err := events.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		last, err := handle(event, data)
		if err != nil || last {
			_, _ = io.Copy(io.Discard, body)
			return err
		}
	}
}

// CreateSession starts a session in a sandbox.
func (c *Client) CreateSession(ctx context.Context, id string, req api.CreateSessionRequest) (*api.Session, error) {
	var s api.Session
	return &s, c.do(ctx, http.MethodPost, sessionsPath(id, ""), req, &s)
}

// ListSessions lists a sandbox's sessions.
func (c *Client) ListSessions(ctx context.Context, id string) ([]api.Session, error) {
	return list[api.Session](ctx, c, http.MethodGet, sessionsPath(id, ""), nil)
}

// GetSession returns one session.
func (c *Client) GetSession(ctx context.Context, id, sid string) (*api.Session, error) {
	var s api.Session
	return &s, c.do(ctx, http.MethodGet, sessionsPath(id, sid), nil, &s)
}

// DeleteSession ends a session and kills everything it started.
func (c *Client) DeleteSession(ctx context.Context, id, sid string) error {
	return c.do(ctx, http.MethodDelete, sessionsPath(id, sid), nil, nil)
}

// CancelSession stops the command a session is running, as a timeout would.
func (c *Client) CancelSession(ctx context.Context, id, sid string) error {
	return c.do(ctx, http.MethodPost, sessionsPath(id, sid)+"/cancel", nil, nil)
}

// authorize adds the client's token to a request's headers.
func (c *Client) authorize(h http.Header) {
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
}

func sessionsPath(id, sid string) string {
	p := "/v1/sandboxes/" + url.PathEscape(id) + "/sessions"
	if sid != "" {
		p += "/" + url.PathEscape(sid)
	}
	return p
}

// do sends a request with an optional JSON body and decodes a JSON answer into out. Non-2xx
// answers come back as *api.Error.
// list sends one request and decodes its JSON array answer.
func list[T any](ctx context.Context, c *Client, method, path string, in any) ([]T, error) {
	var out []T
	if err := c.do(ctx, method, path, in, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	// Read whole, then decoded: a json.Decoder holds the whole value all the same, and takes
	// about twice as long for a large one (an exec's 100 MB of output).
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s %s answer: %w", method, path, err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s %s answer: %w", method, path, err)
	}
	return nil
}

// send sends a request and returns a 2xx response; anything else comes back as *api.Error.
func (c *Client) send(ctx context.Context, method, path string, in any, accept string) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	c.authorize(req.Header)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil { // the caller's context ended: that is what happened, not an unreachable daemon
			return nil, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (is `nsbox daemon` running, and are you root?): %w", ErrUnreachable, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, httpapi.ReadError(resp)
	}
	return resp, nil
}

// CreateToken mints a token for a sandbox or one of its sessions (an admin call).
func (c *Client) CreateToken(ctx context.Context, req api.CreateTokenRequest) (*api.NewToken, error) {
	var t api.NewToken
	return &t, c.do(ctx, http.MethodPost, "/v1/tokens", req, &t)
}

// ListTokens lists the scoped tokens that have not expired (without their secrets).
func (c *Client) ListTokens(ctx context.Context) ([]api.Token, error) {
	return list[api.Token](ctx, c, http.MethodGet, "/v1/tokens", nil)
}

// RevokeToken revokes a token: its requests, streams and terminals are cut at once.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
}

// CreateSessionToken mints a short-lived token for one session, with the URLs a browser needs.
func (c *Client) CreateSessionToken(ctx context.Context, id, sid string, req api.CreateSessionTokenRequest) (*api.SessionToken, error) {
	var t api.SessionToken
	return &t, c.do(ctx, http.MethodPost, sessionsPath(id, sid)+"/tokens", req, &t)
}
