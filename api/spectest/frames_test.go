package spectest_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// frames is what the daemon answers as frames for the events: output events' data as raw
// bytes (a string), every other event's as JSON.
func frames(t *testing.T, events ...event) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	fw := httpapi.NewFrameWriter(rec)
	for _, e := range events {
		data, ok := e.data.(string)
		if !ok {
			raw, err := json.Marshal(e.data)
			if err != nil {
				t.Fatal(err)
			}
			data = string(raw)
		}
		if err := fw.Send(e.name, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	return rec.Body.Bytes()
}

func raw(stream, data string) event { return event{stream, data} }

func TestValidateFrames(t *testing.T) {
	spec := load(t)
	const exec, sessionExec = "/v1/sandboxes/{id}/exec", "/v1/sandboxes/{id}/sessions/{sid}/exec"
	rawExit := exit("default", func(r *api.ExecResult) { r.StdoutEncoding = api.EncodingRaw })
	for _, body := range [][]byte{
		frames(t, start("default"), raw("stdout", "one\n"), raw("stderr", "\xff\x00 not text"), raw("stdout", ""), rawExit),
		frames(t, start("default"), raw("stdout", "partial"), streamError()),
		frames(t, streamError()),
	} {
		for _, path := range []string{exec, sessionExec} {
			if err := spec.ValidateFrames("POST", path, 200, body); err != nil {
				t.Errorf("%s %q: %v", path, body, err)
			}
		}
	}
	whole := frames(t, start("s"), exit("s", nil))
	for _, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"undocumented event", frames(t, start("s"), raw("output", "x"), exit("s", nil)), `event "output" is not documented`},
		{"bad exit JSON", frames(t, start("s"), event{"exit", `{"type":"exit"`}), "event 2 (exit): data is not JSON"},
		{"bad encoding", frames(t, start("s"), exit("s", func(r *api.ExecResult) { r.StdoutEncoding = "latin1" })), "$.result.stdoutEncoding"},
		{"event after exit", frames(t, start("s"), exit("s", nil), raw("stdout", "late")), `comes after the final "exit" event`},
		{"no final event", frames(t, start("s"), raw("stdout", "x")), "without a final event"},
		{"cut in a header", append(frames(t, start("s")), "\x04exit\x00"...), "ends inside its header"},
		{"cut in a payload", bytes.TrimSuffix(whole, []byte("}")), "ends inside its payload"},
	} {
		err := spec.ValidateFrames("POST", exec, 200, c.body)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if err := spec.ValidateFrames("GET", "/v1/version", 200, whole); err == nil || !strings.Contains(err.Error(), "not documented as frames") {
		t.Errorf("an operation without frames: %v", err)
	}
}
