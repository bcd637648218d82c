package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
)

// testAgent serves a new agent's routes over HTTP; its sessions keep their files in a
// temporary directory.
func testAgent(t *testing.T) (*Agent, *testServer) {
	t.Helper()
	return testAgentIn(t, t.TempDir())
}

// testAgentIn is testAgent whose sessions keep their files in dir/sessions.
func testAgentIn(t *testing.T, dir string) (*Agent, *testServer) {
	t.Helper()
	a, err := newAgent("test", filepath.Join(dir, "sessions"), dir)
	if err != nil {
		t.Fatal(err)
	}
	return a, serveAgent(t, a)
}

// testServer is an agent's routes served by package httpd on a loopback port of the test's
// own, for a net/http client: the daemon's.
type testServer struct {
	URL    string
	client *http.Client
}

func (s *testServer) Client() *http.Client { return s.client }

func serveAgent(t *testing.T, a *Agent) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = httpd.Serve(ln, a.serve, a.log) }()
	srv := &testServer{URL: "http://" + ln.Addr().String(), client: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(func() {
		ln.Close()
		srv.client.CloseIdleConnections()
	})
	return srv
}

// rootAgent is testAgent for tests that start processes or session shells, which start with
// a credential and so need root. The test process does the PID 1 agent's reaping: its only
// children are the agent's processes.
func rootAgent(t *testing.T) (*Agent, *testServer) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("processes and session shells start with a credential, which needs root")
	}
	a, srv := testAgent(t)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-sigs:
				a.procs.reap()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		a.sessions.KillShells()
		signal.Stop(sigs)
		close(stop)
	})
	return a, srv
}

func call(t *testing.T, srv *testServer, method, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// callJSON makes a call, checks its status and decodes its JSON answer into out (if not nil).
func callJSON(t *testing.T, srv *testServer, method, path, body string, status int, out any) {
	t.Helper()
	resp := call(t, srv, method, path, body)
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
}

// openStream makes a call that must start an event stream, and returns its reader.
func openStream(t *testing.T, srv *testServer, method, path, body string) *api.SSEReader {
	t.Helper()
	resp := call(t, srv, method, path, body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.EventStream {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: status %d, content type %q: %s", method, path, resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	return api.NewSSEReader(resp.Body)
}

// wantError makes a call that must fail with a JSON error of the given code.
func wantError(t *testing.T, srv *testServer, method, path, body, code string) {
	t.Helper()
	var eb api.ErrorBody
	callJSON(t, srv, method, path, body, (&api.Error{Code: code}).HTTPStatus(), &eb)
	if eb.Error == nil || eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("%s %s: error %+v, want code %s with a message", method, path, eb.Error, code)
	}
}

// TestHealth: the agent answers how it is, and holds the sessions' reserve once it has
// answered (not before: a container's start waits for that first answer).
func TestHealth(t *testing.T) {
	dir := t.TempDir()
	_, srv := testAgentIn(t, dir)
	reserve := filepath.Join(dir, "sessions", ".reserve")
	if _, err := os.Stat(reserve); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the reserve before the first health answer: %v", err)
	}
	var h api.Health
	callJSON(t, srv, http.MethodGet, "/v1/health", "", http.StatusOK, &h)
	if h.PID != os.Getpid() || h.Version != "test" {
		t.Fatalf("health %+v", h)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if fi, err := os.Stat(reserve); err == nil && fi.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reserve is not held after the first health answer")
		}
	}
}

func TestConfigValidation(t *testing.T) {
	_, srv := testAgent(t)
	for name, body := range map[string]string{
		"relative cwd":  `{"hostname":"h","cwd":"work","env":{}}`,
		"empty body":    ``,
		"unknown field": `{"hostname":"h","cwd":"/tmp","env":{},"extra":1}`,
		"trailing data": `{"hostname":"h","cwd":"/tmp","env":{}} {}`,
		"invalid env":   `{"hostname":"h","cwd":"/tmp","env":{"A=B":"c"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, srv, http.MethodPut, "/v1/config", body, api.CodeInvalidArgument)
		})
	}
}

// An agent started with its sandbox's configuration takes it before it answers, and its health
// says whether it could, with the error PUT /v1/config would have answered.
func TestBootConfig(t *testing.T) {
	wd, err := os.Getwd() // configure enters the cwd: the test's own keeps the test where it was
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		config string
		code   string // "": configured
	}{
		"taken":         {config: `{"hostname":"box","cwd":"` + wd + `","env":{"A":"1"}}`},
		"relative cwd":  {config: `{"hostname":"box","cwd":"work","env":{}}`, code: api.CodeInvalidArgument},
		"unknown user":  {config: `{"hostname":"box","cwd":"/tmp","env":{},"user":"nosuch-user"}`, code: api.CodeInvalidArgument},
		"not JSON":      {config: `{"hostname":`, code: api.CodeInternal},
		"unknown field": {config: `{"hostname":"box","cwd":"/tmp","env":{},"extra":1}`, code: api.CodeInternal},
	} {
		t.Run(name, func(t *testing.T) {
			a, srv := testAgent(t)
			a.bootConfig(strings.NewReader(tc.config))
			var h api.Health
			callJSON(t, srv, http.MethodGet, "/v1/health", "", http.StatusOK, &h)
			switch {
			case tc.code == "" && (!h.Configured || h.ConfigError != nil):
				t.Fatalf("health %+v, want configured", h)
			case tc.code != "" && (h.Configured || h.ConfigError == nil || h.ConfigError.Code != tc.code || h.ConfigError.Message == ""):
				t.Fatalf("health %+v, want a %s error", h, tc.code)
			}
			if tc.code == "" {
				var env api.SandboxEnv
				callJSON(t, srv, http.MethodGet, "/v1/env", "", http.StatusOK, &env)
				if env.Env["A"] != "1" {
					t.Errorf("env after the boot config: %+v", env)
				}
				// The configuration started making the default session in the background, in
				// the test's temp dir: the dir's removal raced its files. Default waits for it.
				if _, err := a.sessions.Default(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestEnv(t *testing.T) {
	_, srv := testAgent(t)
	wantError(t, srv, http.MethodPut, "/v1/env", `{"env":{"A":"1"},"unknown":true}`, api.CodeInvalidArgument)
	callJSON(t, srv, http.MethodPut, "/v1/env", `{"env":{"NSBOX_TEST_VAR":"1"}}`, http.StatusNoContent, nil)
	var env api.SandboxEnv
	callJSON(t, srv, http.MethodGet, "/v1/env", "", http.StatusOK, &env)
	if env.Env["NSBOX_TEST_VAR"] != "1" {
		t.Fatalf("env %v lacks NSBOX_TEST_VAR=1", env.Env)
	}
}

func TestProcessErrorsBeforeAStreamArePlainJSON(t *testing.T) {
	_, srv := testAgent(t)
	wantError(t, srv, http.MethodGet, "/v1/processes/nope/logs?follow=1", "", api.CodeNotFound)
	wantError(t, srv, http.MethodGet, "/v1/processes/nope/logs?follow=maybe", "", api.CodeInvalidArgument)
	wantError(t, srv, http.MethodPost, "/v1/processes/nope/kill", "", api.CodeNotFound)
	wantError(t, srv, http.MethodPost, "/v1/processes/kill", `{"signal":"SIGTERM","nope":1}`, api.CodeInvalidArgument)
	wantError(t, srv, http.MethodPost, "/v1/processes", `{"argv":["true"]`, api.CodeInvalidArgument)
}

func TestFollowedLogsAreServerSentEvents(t *testing.T) {
	_, srv := rootAgent(t)
	var p api.Process
	callJSON(t, srv, http.MethodPost, "/v1/processes", `{"id":"cat","argv":["cat"],"stdin":"pipe"}`, http.StatusCreated, &p)

	// The stream's 200 comes at once, while the process has written nothing yet.
	events := openStream(t, srv, http.MethodGet, "/v1/processes/cat/logs?follow=1", "")
	callJSON(t, srv, http.MethodPost, "/v1/processes/cat/stdin?close=true", "hello", http.StatusNoContent, nil)

	var out bytes.Buffer
	for {
		var ev api.ProcessEvent
		name, err := events.NextJSON(&ev)
		if err != nil {
			t.Fatalf("read event after %q: %v", out.String(), err)
		}
		if name != ev.Type {
			t.Fatalf("event %q carries a %q event", name, ev.Type)
		}
		if name == api.EventExit {
			if ev.Process == nil || ev.Process.Status != api.ProcessExited || out.String() != "hello" {
				t.Fatalf("exit %+v after output %q", ev.Process, out.String())
			}
			break
		}
		if name != api.EventStdout {
			t.Fatalf("unexpected %q event %+v", name, ev)
		}
		out.WriteString(ev.Data)
	}
	if _, _, err := events.Next(); err != io.EOF {
		t.Fatalf("after exit: %v, want the end of the stream", err)
	}

	// A wait's and a kill's bodies may be empty.
	var res api.WaitProcessResult
	callJSON(t, srv, http.MethodPost, "/v1/processes/cat/wait", "", http.StatusOK, &res)
	wantError(t, srv, http.MethodPost, "/v1/processes/cat/kill", "", api.CodeConflict)
}

func TestExecIsFrames(t *testing.T) {
	_, srv := rootAgent(t)
	wantError(t, srv, http.MethodPost, "/v1/sessions/default/exec", `{}`, api.CodeInvalidArgument)
	wantError(t, srv, http.MethodPost, "/v1/sessions/nope/exec", `{"command":"true"}`, api.CodeNotFound)
	wantError(t, srv, http.MethodPost, "/v1/sessions/default/exec", `{"command":"true","maxOutputBytes":-1}`, api.CodeInvalidArgument)

	// Output events carry raw bytes (not text here: no encoding on the way), capped per stream.
	resp := call(t, srv, http.MethodPost, "/v1/sessions/default/exec", `{"command":"echo out; printf 'err\\377 and more' >&2; exit 3","maxOutputBytes":4}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.EventFrames {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("exec: status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	events := api.NewFrameReader(resp.Body)
	var names []string
	output := map[string]string{}
	var result *api.ExecResult
	for {
		name, data, err := events.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read event after %v: %v", names, err)
		}
		if len(names) == 0 || names[len(names)-1] != name {
			names = append(names, name)
		}
		switch name {
		case api.EventStdout, api.EventStderr:
			output[name] += string(data)
		case api.EventStart, api.EventExit:
			var ev api.ExecEvent
			if err := json.Unmarshal(data, &ev); err != nil || ev.Type != name {
				t.Fatalf("%s event %q: %v", name, data, err)
			}
			result = ev.Result
		}
	}
	if names[0] != api.EventStart || names[len(names)-1] != api.EventExit || output[api.EventStdout] != "out\n" || output[api.EventStderr] != "err\xff" {
		t.Fatalf("events %v, output %q", names, output)
	}
	if result == nil || result.ExitCode != 3 || result.SessionID != "default" || result.StdoutTruncated || !result.StderrTruncated || !result.Truncated {
		t.Fatalf("exit event %+v", result)
	}
}

// A session whose cwd does not exist, or is not a directory, is the request's mistake (400),
// said of the cwd, not of the shell, and no session is left.
func TestCreateSessionBadCwd(t *testing.T) {
	_, srv := rootAgent(t)
	for cwd, want := range map[string]string{"/no/such/dir": `cwd "/no/such/dir" does not exist`, "/etc/passwd": `cwd "/etc/passwd" is not a directory`} {
		var eb api.ErrorBody
		callJSON(t, srv, http.MethodPost, "/v1/sessions", `{"id":"z","cwd":"`+cwd+`"}`, http.StatusBadRequest, &eb)
		if eb.Error == nil || eb.Error.Code != api.CodeInvalidArgument || !strings.Contains(eb.Error.Message, want) {
			t.Errorf("cwd %s: %+v, want invalid_argument %q", cwd, eb.Error, want)
		}
	}
	wantError(t, srv, http.MethodGet, "/v1/sessions/z", "", api.CodeNotFound)
}

func TestTerminalIsServerSentEvents(t *testing.T) {
	_, srv := rootAgent(t)
	wantError(t, srv, http.MethodPost, "/v1/sessions", `{"id":"term","shell":"bash","bogus":1}`, api.CodeInvalidArgument)
	callJSON(t, srv, http.MethodPost, "/v1/sessions", `{"id":"term","shell":"bash"}`, http.StatusCreated, nil)
	wantError(t, srv, http.MethodGet, "/v1/sessions/term/terminal?cursor=-1", "", api.CodeInvalidArgument)

	// Past the end of the scrollback: nothing to send yet, and the 200 comes all the same.
	events := openStream(t, srv, http.MethodGet, "/v1/sessions/term/terminal?cursor=1000000", "")
	callJSON(t, srv, http.MethodPost, "/v1/sessions/term/terminal/resize", `{"type":"resize","cols":100,"rows":30}`, http.StatusNoContent, nil)
	callJSON(t, srv, http.MethodPost, "/v1/sessions/term/terminal/input", "echo mark-$((6*7))\n", http.StatusNoContent, nil)
	var out strings.Builder
	for !strings.Contains(out.String(), "mark-42") {
		var ev api.TerminalEvent
		name, err := events.NextJSON(&ev)
		if err != nil {
			t.Fatalf("read event after %q: %v", out.String(), err)
		}
		if name == api.TerminalLive && ev.Type == name && out.Len() == 0 { // the (empty) replay is over
			continue
		}
		if name != api.TerminalOutput || ev.Type != name {
			t.Fatalf("event %q: %+v", name, ev)
		}
		out.WriteString(ev.Data)
	}
	callJSON(t, srv, http.MethodDelete, "/v1/sessions/term", "", http.StatusNoContent, nil)
	for {
		var ev api.TerminalEvent
		name, err := events.NextJSON(&ev)
		if err != nil {
			t.Fatalf("read event before the end: %v", err)
		}
		if name == api.TerminalEnded {
			break
		}
	}
}
