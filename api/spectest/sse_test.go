package spectest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/spectest"
)

// event is one Server-Sent Event: its name and the value its data line carries as JSON.
type event struct {
	name string
	data any
}

// sse is what the daemon streams for the events: "event: <name>\ndata: <JSON>\n\n" each.
func sse(t *testing.T, events ...event) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, e := range events {
		data, ok := e.data.(string) // a string is sent as it is, to send broken data
		if !ok {
			raw, err := json.Marshal(e.data)
			if err != nil {
				t.Fatal(err)
			}
			data = string(raw)
		}
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", e.name, data)
	}
	return b.Bytes()
}

func start(sid string) event {
	return event{api.EventStart, api.ExecEvent{Type: api.EventStart, SessionID: sid}}
}

func output(stream, data string) event {
	return event{stream, api.OutputEvent(stream, []byte(data))}
}

// exit is the exit event as the agent sends it: the result without output.
func exit(sid string, f func(r *api.ExecResult)) event {
	r := &api.ExecResult{StdoutEncoding: api.EncodingUTF8, StderrEncoding: api.EncodingUTF8, DurationMs: 3, SessionID: sid}
	if f != nil {
		f(r)
	}
	return event{api.EventExit, api.ExecEvent{Type: api.EventExit, SessionID: sid, Result: r}}
}

func streamError() event {
	return event{"error", api.ErrorBody{Error: api.Errorf(api.CodeUnavailable, "the sandbox's agent stopped answering mid-command: EOF")}}
}

// mutated is the event with its data changed by f.
func mutated(t *testing.T, e event, f func(m map[string]any)) event {
	t.Helper()
	return event{e.name, string(mutate(t, e.data, f))}
}

func TestValidSSE(t *testing.T) {
	spec := load(t)
	const exec, sessionExec = "/v1/sandboxes/{id}/exec", "/v1/sandboxes/{id}/sessions/{sid}/exec"
	cases := []struct {
		path string
		body []byte
	}{
		{exec, sse(t, start("default"), output("stdout", "one\n"), output("stderr", "two\n"), output("stdout", "\xff\x00"), exit("default", nil))},
		{exec, sse(t, start("default"), exit("default", func(r *api.ExecResult) { r.ExitCode, r.TimedOut, r.SessionReset = 124, true, true }))},
		{sessionExec, sse(t, start("build"), exit("build", func(r *api.ExecResult) { r.ExitCode, r.SessionEnded = 3, true }))},
		{sessionExec, sse(t, start("build"), output("stdout", "partial"), streamError())},
		{sessionExec, sse(t, streamError())},
		{"/v1/sandboxes/web-1/sessions/build/exec", sse(t, start("build"), exit("build", func(r *api.ExecResult) { r.ExitCode, r.Canceled = 130, true }))},
		// What SSE allows besides: CRLF line ends, comments, data over several lines, a spare blank line.
		{exec, bytes.ReplaceAll(sse(t, start("default"), exit("default", nil)), []byte("\n"), []byte("\r\n"))},
		{exec, []byte(": keep-alive\n\nevent: start\ndata: {\"type\":\ndata:\"start\"}\n\n\nevent:exit\n" + string(sse(t, exit("default", nil))[len("event: exit\n"):]))},
	}
	for _, c := range cases {
		if err := spec.ValidateSSE("POST", c.path, 200, c.body); err != nil {
			t.Errorf("%s %q: %v", c.path, c.body, err)
		}
	}
}

func TestRejectsSSE(t *testing.T) {
	spec := load(t)
	const exec = "/v1/sandboxes/{id}/exec"
	_, conflict := wireError(api.CodeConflict)
	cases := []struct {
		name, method, path string
		status             int
		body               []byte
		want               string // in the error
	}{
		{"event name differs from type", "POST", exec, 200, sse(t, start("s"), event{"stdout", api.OutputEvent("stderr", []byte("x"))}, exit("s", nil)), `$.type is "stderr", but the event is named "stdout"`},
		{"undocumented event", "POST", exec, 200, sse(t, start("s"), event{"output", api.ExecEvent{Type: "output"}}, exit("s", nil)), `event "output" is not documented`},
		{"unnamed event", "POST", exec, 200, []byte("data: {\"type\":\"start\"}\n\n"), `event "message" is not documented`},
		{"bad JSON", "POST", exec, 200, sse(t, start("s"), event{"stdout", `{"type":"stdout","data":"x"`}, exit("s", nil)), "event 2 (stdout): data is not JSON"},
		{"two JSON values", "POST", exec, 200, sse(t, event{"start", `{"type":"start"} {}`}, exit("s", nil)), "after the JSON value"},
		{"unknown property", "POST", exec, 200, sse(t, mutated(t, start("s"), func(m map[string]any) { m["pid"] = 4 }), exit("s", nil)), `unknown property "pid"`},
		{"bad type", "POST", exec, 200, sse(t, event{"begin", api.ExecEvent{Type: "begin"}}), `event "begin" is not documented`},
		{"bad encoding", "POST", exec, 200, sse(t, start("s"), mutated(t, output("stdout", "x"), func(m map[string]any) { m["encoding"] = "latin1" }), exit("s", nil)), "event 2 (stdout): $.encoding"},
		{"result without a field", "POST", exec, 200, sse(t, start("s"), mutated(t, exit("s", nil), func(m map[string]any) { delete(m["result"].(map[string]any), "sessionReset") })), `$.result: required property "sessionReset"`},
		{"error event with another code", "POST", exec, 200, sse(t, start("s"), event{"error", json.RawMessage(conflict)}), "event 2 (error): $.error.code"},
		{"event after exit", "POST", exec, 200, sse(t, start("s"), exit("s", nil), output("stdout", "late")), `comes after the final "exit" event`},
		{"no final event", "POST", exec, 200, sse(t, start("s"), output("stdout", "x")), "without a final event"},
		{"empty stream", "POST", exec, 200, nil, "after 0 events without a final event"},
		{"cut inside an event", "POST", exec, 200, bytes.TrimSuffix(sse(t, start("s"), exit("s", nil)), []byte("\n")), "ends inside an event"},
		{"event without data", "POST", exec, 200, []byte("event: start\n\n"), "no data"},
		{"id field", "POST", exec, 200, append([]byte("id: 1\n"), sse(t, start("s"), exit("s", nil))...), `field "id"`},
		{"not a stream", "GET", "/v1/version", 200, sse(t, start("s")), "not documented as an event stream"},
		{"error status", "POST", exec, 409, sse(t, start("s")), "not documented as an event stream"},
		{"undocumented status", "POST", exec, 201, sse(t, start("s")), "status 201 is not documented"},
		{"unknown operation", "GET", exec, 200, sse(t, start("s")), "no such operation"},
	}
	for _, c := range cases {
		err := spec.ValidateSSE(c.method, c.path, c.status, c.body)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// TestSSEStream feeds streams in pieces, as a test that reads a live stream would.
func TestSSEStream(t *testing.T) {
	spec := load(t)
	body := sse(t, start("s"), output("stdout", strings.Repeat("x", 100)), exit("s", nil))
	for _, size := range []int{1, 2, 7, 64, len(body)} {
		stream, err := spec.NewSSEStream("POST", "/v1/sandboxes/box/sessions/s/exec", 200)
		if err != nil {
			t.Fatal(err)
		}
		for rest := body; len(rest) > 0; rest = rest[min(size, len(rest)):] {
			if n, err := stream.Write(rest[:min(size, len(rest))]); err != nil || n != min(size, len(rest)) {
				t.Fatalf("pieces of %d: Write = %d, %v", size, n, err)
			}
		}
		if err := stream.Close(); err != nil {
			t.Errorf("pieces of %d: Close: %v", size, err)
		}
	}

	// A bad event is reported by the Write that completes it, and again by every later call.
	stream, err := spec.NewSSEStream("POST", "/v1/sandboxes/{id}/exec", 200)
	if err != nil {
		t.Fatal(err)
	}
	bad := sse(t, start("s"), event{"stdout", api.ExecEvent{Type: "exit"}})
	if _, err := stream.Write(bad[:len(bad)-1]); err != nil {
		t.Fatalf("Write before the bad event is complete: %v", err)
	}
	if _, err := stream.Write(bad[len(bad)-1:]); err == nil || !strings.Contains(err.Error(), "event 2 (stdout)") {
		t.Errorf("Write completing a bad event: err = %v, want one naming event 2", err)
	}
	if _, err := stream.Write(sse(t, exit("s", nil))); err == nil {
		t.Error("Write after a bad event succeeded")
	}
	if err := stream.Close(); err == nil || !strings.Contains(err.Error(), "event 2 (stdout)") {
		t.Errorf("Close after a bad event: err = %v, want the same error", err)
	}

	// A stream its reader abandons after some events is checked as far as it was read.
	stream, err = spec.NewSSEStream("POST", "/v1/sandboxes/{id}/exec", 200)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Write(sse(t, start("s"), output("stderr", "x"))); err != nil {
		t.Errorf("the start of a stream: %v", err)
	}

	if _, err := spec.NewSSEStream("DELETE", "/v1/sandboxes/{id}", 204); err == nil {
		t.Error("NewSSEStream for an answer without a stream succeeded")
	}
	var _ interface{ Write([]byte) (int, error) } = (*spectest.SSEStream)(nil)
}
