package spectest_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/api/spectest"
	"github.com/nsbox/nsbox/auth"
	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/nsbox"
)

const specPath = "../openapi.json"

func load(t *testing.T) *spectest.Spec {
	t.Helper()
	spec, err := spectest.Load(specPath)
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	return spec
}

func TestLoad(t *testing.T) {
	if len(load(t).Operations()) == 0 {
		t.Fatal("the spec has no operations")
	}
	if _, err := spectest.Load("no-such-file.json"); err == nil {
		t.Error("Load of a missing file succeeded")
	}
	// A keyword the validator does not check must fail loudly, not be skipped.
	path := filepath.Join(t.TempDir(), "spec.json")
	doc := `{"openapi":"3.1.0","paths":{},"components":{"schemas":{"X":{"oneOf":[{"type":"string"}]}}}}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := spectest.Load(path); err == nil || !strings.Contains(err.Error(), "oneOf") {
		t.Errorf("Load of a spec using oneOf: err = %v, want an error naming oneOf", err)
	}
	// So must an event stream whose events are not described, or described with a typo.
	for _, c := range []struct{ media, want string }{
		{`{"schema":{"type":"string"}}`, "without x-sse"},
		{`{"x-sse":{"events":{"a":{}},"endsWith":["a"],"final":["a"]}}`, `"final"`},
		{`{"x-sse":{"events":{"a":{}},"endsWith":["b"]}}`, `"b"`},
		{`{"x-sse":{"events":{}}}`, "no events"},
		{`{"x-sse":{"events":{"a":{"oneOf":[]}}}}`, "oneOf"},
	} {
		doc := `{"openapi":"3.1.0","paths":{"/x":{"get":{"responses":{"200":{"description":"","content":{"text/event-stream":` + c.media + `}}}}}}}`
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := spectest.Load(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load of a spec with an event stream %s: err = %v, want an error containing %q", c.media, err, c.want)
		}
	}
}

func TestOperationsMatchRoutes(t *testing.T) {
	var want []string
	for _, r := range nsbox.Routes {
		want = append(want, r.Method+" "+r.Pattern)
	}
	for _, e := range auth.NewService(nil, nil, nil, nil).Endpoints() {
		want = append(want, e.Method+" "+e.Pattern)
	}
	slices.Sort(want)
	if got := load(t).Operations(); !slices.Equal(got, want) {
		t.Errorf("spec operations and nsbox.Routes differ:\nspec:   %q\nroutes: %q", got, want)
	}
}

func fileInfo() api.FileInfo {
	return api.FileInfo{Name: "a", Path: "/workspace/a", Type: sandboxfs.TypeFile, Size: 3, Mode: "4755", UID: 1000, GID: 1000,
		Owner: "dev", Group: "dev", MTime: time.Now()}
}

func symlinkInfo() api.FileInfo {
	return api.FileInfo{Name: "l", Path: "/workspace/l", Type: sandboxfs.TypeSymlink, Size: 11, Mode: "0777", MTime: time.Now(), LinkTarget: "/etc/shadow"}
}

func sandbox(id, status string) api.Sandbox {
	return api.Sandbox{
		ID: id, Image: "host", Status: status, Cwd: "/workspace",
		Limits:    api.Limits{CPUs: 1.5, MemoryMB: 512, Pids: 1024},
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
		Network:   api.SandboxNetwork{Mode: api.NetworkEgress, IP: "10.89.0.2"},
	}
}

func allowSandbox() api.Sandbox {
	sb := sandbox("allow-1", api.StatusRunning)
	sb.Network = api.SandboxNetwork{Mode: api.NetworkAllow, IP: "10.89.0.3", Allow: []string{"192.0.2.0/24"}}
	return sb
}

func fullSandbox() api.Sandbox {
	sb := sandbox("web-1", api.StatusRunning)
	sb.Env, sb.Labels, sb.PID = map[string]string{"FOO": "bar"}, map[string]string{"team": "a"}, 4242
	return sb
}

// storageSandbox has a workspace, mounts and a disk limit.
func storageSandbox() api.Sandbox {
	sb := sandbox("ws", api.StatusRunning)
	sb.Limits.DiskMB = 64
	sb.Workspace = &api.Workspace{HostPath: "/home/me/project", Mode: api.WorkspaceCOW}
	sb.Mounts = []api.Mount{{Source: "/data", Target: "/data", ReadOnly: true}, {Source: "/cache", Target: "/root/.cache"}}
	return sb
}

func failedSandbox() api.Sandbox {
	sb := sandbox("old", api.StatusFailed)
	sb.Error = "its container is gone"
	return sb
}

// wire is what the daemon sends for v: the body httpapi.WriteJSON writes.
func wire(t *testing.T, v any) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	httpapi.WriteJSON(rec, http.StatusOK, v)
	return rec.Body.Bytes()
}

// wireError is what the daemon sends for an error with the code, and its status.
func wireError(code string) (int, []byte) {
	rec := httptest.NewRecorder()
	httpapi.WriteError(rec, api.Errorf(code, "something about %s", code))
	return rec.Code, rec.Body.Bytes()
}

func session(id, status string) api.Session {
	s := api.Session{ID: id, Shell: "bash", User: "root", Cwd: "/workspace", Status: status, PID: 7,
		CreatedAt: time.Now().UTC(), Permission: api.PermissionWrite}
	if status == api.SessionEnded {
		s.Shell, s.User, s.Cwd, s.PID, s.ExitCode = "sh", "1000", "", 0, 3
	}
	return s
}

// result is an exec result as the daemon answers it: every command runs in a session.
func result(exitCode int, stdout, stderr []byte) api.ExecResult {
	r := api.NewExecResult(exitCode, stdout, stderr)
	r.SessionID = "default"
	return r
}

// sessionResult is an exec result as a session answers it.
func sessionResult(sid string, f func(r *api.ExecResult)) api.ExecResult {
	r := api.NewExecResult(0, []byte("/tmp\n"), nil)
	r.SessionID, r.DurationMs = sid, 12
	if f != nil {
		f(&r)
	}
	return r
}

func TestValidResponses(t *testing.T) {
	spec := load(t)
	timedOut := result(124, []byte("partial"), nil)
	timedOut.TimedOut, timedOut.DurationMs = true, 1000
	truncated := result(0, []byte{0xff, 0, 'x'}, []byte("ok"))
	truncated.StdoutTruncated, truncated.Truncated = true, true
	reset := sessionResult("build", func(r *api.ExecResult) { r.ExitCode, r.TimedOut, r.SessionReset = 124, true, true })
	ended := sessionResult("default", func(r *api.ExecResult) { r.ExitCode, r.SessionEnded = 3, true })
	canceled := sessionResult("s-101112.131415", func(r *api.ExecResult) { r.ExitCode, r.Canceled = 130, true })
	cases := []struct {
		method, path string
		status       int
		body         []byte
	}{
		{"GET", "/v1/version", 200, wire(t, api.Version{Version: "v1.0.0-3-gabc"})},
		{"GET", "/v1/images", 200, wire(t, []api.Image{{Name: "host", Description: "the host's system"}})},
		{"GET", "/v1/images", 200, wire(t, []api.Image{})},
		{"POST", "/v1/sandboxes", 201, wire(t, fullSandbox())},
		{"GET", "/v1/sandboxes", 200, wire(t, []api.Sandbox{fullSandbox(), failedSandbox(), sandbox("c", api.StatusCreating)})},
		{"GET", "/v1/sandboxes", 200, wire(t, []api.Sandbox{})},
		{"GET", "/v1/sandboxes/{id}", 200, wire(t, failedSandbox())},
		{"DELETE", "/v1/sandboxes/{id}", 204, nil},
		{"POST", "/v1/sandboxes/{id}/exec", 200, wire(t, result(0, []byte("hi\n\x00\x1b"), nil))},
		{"POST", "/v1/sandboxes/{id}/exec", 200, wire(t, result(127, nil, []byte("bash: nope: command not found\n")))},
		{"POST", "/v1/sandboxes/{id}/exec", 200, wire(t, timedOut)},
		{"POST", "/v1/sandboxes/{id}/exec", 200, wire(t, truncated)},
		{"POST", "/v1/sandboxes/{id}/exec", 200, wire(t, sessionResult("default", nil))},
		{"POST", "/v1/sandboxes/{id}/exec", 200, wire(t, ended)},
		{"POST", "/v1/sandboxes/{id}/sessions", 201, wire(t, session("build", api.SessionIdle))},
		{"GET", "/v1/sandboxes/{id}/sessions", 200, wire(t, []api.Session{session("a", api.SessionBusy), session("b", api.SessionEnded), session("default", api.SessionIdle)})},
		{"GET", "/v1/sandboxes/{id}/sessions", 200, wire(t, []api.Session{})},
		{"GET", "/v1/sandboxes/{id}/sessions/{sid}", 200, wire(t, session("a", api.SessionEnded))},
		{"DELETE", "/v1/sandboxes/{id}/sessions/{sid}", 204, nil},
		{"POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", 200, wire(t, reset)},
		{"POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", 200, wire(t, canceled)},
		{"POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", 204, nil},
		// Concrete request paths are matched against the templates.
		{"GET", "/v1/sandboxes/web-1", 200, wire(t, fullSandbox())},
		{"delete", "/v1/sandboxes/web-1?force=true", 204, nil},
		{"POST", "/v1/sandboxes/web-1/exec", 200, wire(t, result(1, nil, nil))},
		{"GET", "/v1/sandboxes/web-1/sessions/build", 200, wire(t, session("build", api.SessionBusy))},
		{"POST", "/v1/sandboxes/web-1/sessions/build/exec", 200, wire(t, sessionResult("build", nil))},
		{"POST", "/v1/sandboxes/web-1/sessions/build/cancel", 204, nil},
		// The file operations; raw content is not JSON and is not checked.
		{"GET", "/v1/sandboxes/web-1/files?path=/etc/hosts", 200, []byte("127.0.0.1 localhost\n")},
		{"PUT", "/v1/sandboxes/web-1/files?path=a", 201, wire(t, fileInfo())},
		{"GET", "/v1/sandboxes/web-1/files/stat?path=l", 200, wire(t, symlinkInfo())},
		{"GET", "/v1/sandboxes/web-1/files/list?path=/", 200, wire(t, []api.FileInfo{fileInfo(), symlinkInfo()})},
		{"GET", "/v1/sandboxes/web-1/files/list?path=/", 200, wire(t, []api.FileInfo{})},
		{"POST", "/v1/sandboxes/web-1/files/mkdir", 201, wire(t, api.FileInfo{Name: "d", Path: "/d", Type: sandboxfs.TypeDir, Mode: "0755", MTime: time.Now()})},
		{"POST", "/v1/sandboxes/web-1/files/move", 200, wire(t, fileInfo())},
		{"DELETE", "/v1/sandboxes/web-1/files?path=a&recursive=true", 204, nil},
		// Workspaces and mounts.
		{"GET", "/v1/sandboxes/web-1", 200, wire(t, storageSandbox())},
		{"GET", "/v1/sandboxes/web-1/workspace/diff", 200, wire(t, []api.WorkspaceChange{
			{Path: "a", Kind: api.ChangeDeleted, Type: "dir"}, {Path: "b/c", Kind: api.ChangeAdded, Type: "file", Size: 3},
			{Path: "d", Kind: api.ChangeModified, Type: "symlink", Size: 5}})},
		{"GET", "/v1/sandboxes/web-1/workspace/diff", 200, wire(t, []api.WorkspaceChange{})},
		{"GET", "/v1/sandboxes/web-1/workspace/export", 200, []byte("tar bytes")},
		// Network and ports.
		{"PATCH", "/v1/sandboxes/web-1/network", 200, wire(t, allowSandbox())},
		{"POST", "/v1/sandboxes/web-1/ports", 201, wire(t, api.ExposedPort{Port: 8080, Protocol: "tcp", HostPort: 20000, HostIP: "0.0.0.0",
			URL: "http://8080-web-1-0123456789abcdef0123456789abcdef.example.test", Token: "0123456789abcdef0123456789abcdef"})},
		{"GET", "/v1/sandboxes/web-1/ports", 200, wire(t, []api.ExposedPort{{Port: 53, Protocol: "udp", HostPort: 20001, HostIP: "127.0.0.1", URL: "udp://127.0.0.1:20001"}})},
		{"GET", "/v1/sandboxes/web-1/ports", 200, wire(t, []api.ExposedPort{})},
		{"DELETE", "/v1/sandboxes/web-1/ports/53?protocol=udp", 204, nil},
	}
	for _, c := range cases {
		if err := spec.ValidateResponse(c.method, c.path, c.status, c.body); err != nil {
			t.Errorf("%s %s %d %s: %v", c.method, c.path, c.status, c.body, err)
		}
	}
}

// TestErrorResponses validates the daemon's real error envelopes for every error each
// endpoint can answer, which also checks that each code goes with its documented status.
func TestErrorResponses(t *testing.T) {
	spec := load(t)
	errs := map[string][]string{
		"GET /v1/sandboxes":            {api.CodeInternal},
		"POST /v1/sandboxes":           {api.CodeInvalidArgument, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal},
		"GET /v1/sandboxes/{id}":       {api.CodeNotFound, api.CodeInternal},
		"DELETE /v1/sandboxes/{id}":    {api.CodeInvalidArgument, api.CodeNotFound, api.CodeConflict, api.CodeInternal},
		"POST /v1/sandboxes/{id}/exec": {api.CodeInvalidArgument, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable},
		"GET /v1/version":              nil,
		"GET /v1/images":               nil,

		"POST /v1/sandboxes/{id}/sessions":              {api.CodeInvalidArgument, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable},
		"GET /v1/sandboxes/{id}/sessions":               {api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},
		"GET /v1/sandboxes/{id}/sessions/{sid}":         {api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},
		"DELETE /v1/sandboxes/{id}/sessions/{sid}":      {api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},
		"POST /v1/sandboxes/{id}/sessions/{sid}/exec":   {api.CodeInvalidArgument, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable},
		"POST /v1/sandboxes/{id}/sessions/{sid}/cancel": {api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},

		"GET /v1/sandboxes/{id}/files":        {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},
		"PUT /v1/sandboxes/{id}/files":        {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable, api.CodeInsufficientStorage},
		"DELETE /v1/sandboxes/{id}/files":     {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},
		"GET /v1/sandboxes/{id}/files/stat":   {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},
		"GET /v1/sandboxes/{id}/files/list":   {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable},
		"POST /v1/sandboxes/{id}/files/mkdir": {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable, api.CodeInsufficientStorage},
		"POST /v1/sandboxes/{id}/files/move":  {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeTooLarge, api.CodeInternal, api.CodeUnavailable, api.CodeInsufficientStorage},
		"GET /v1/sandboxes/{id}/files/watch":  {api.CodeInvalidArgument, api.CodePermissionDenied, api.CodeNotFound, api.CodeConflict, api.CodeInternal, api.CodeUnavailable},

		"GET /v1/sandboxes/{id}/workspace/diff":   {api.CodeNotFound, api.CodeConflict, api.CodeInternal},
		"GET /v1/sandboxes/{id}/workspace/export": {api.CodeNotFound, api.CodeConflict, api.CodeInternal},
	}
	for op, codes := range errs {
		method, path, _ := strings.Cut(op, " ")
		for _, code := range codes {
			status, body := wireError(code)
			if err := spec.ValidateResponse(method, path, status, body); err != nil {
				t.Errorf("%s: %v", code, err)
			}
		}
	}
	// Every code, those no operation answers yet included, has an envelope schema.
	for code, schema := range map[string]string{
		api.CodeInvalidArgument: "InvalidArgumentError", api.CodePermissionDenied: "PermissionDeniedError",
		api.CodeNotFound: "NotFoundError", api.CodeConflict: "ConflictError", api.CodeTooLarge: "PayloadTooLargeError",
		api.CodeInternal: "InternalError", api.CodeUnavailable: "UnavailableError", api.CodeInsufficientStorage: "InsufficientStorageError",
	} {
		if _, body := wireError(code); spec.ValidateSchema(schema, body) != nil {
			t.Errorf("%s: %v", code, spec.ValidateSchema(schema, body))
		}
	}
	// A code sent with another code's status is wrong.
	_, conflict := wireError(api.CodeConflict)
	if err := spec.ValidateResponse("GET", "/v1/sandboxes/{id}", http.StatusNotFound, conflict); err == nil ||
		!strings.Contains(err.Error(), "$.error.code") {
		t.Errorf("a conflict envelope with status 404: err = %v, want one naming $.error.code", err)
	}
}

// mutate returns v's JSON after f has changed it.
func mutate(t *testing.T, v any, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(wire(t, v), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRejects(t *testing.T) {
	spec := load(t)
	sb, res := fullSandbox(), result(0, []byte("out"), nil)
	_, notFound := wireError(api.CodeNotFound)
	cases := []struct {
		name, method, path string
		status             int
		body               []byte
		want               string // in the error
	}{
		{"missing required", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { delete(m, "status") }), `$: required property "status"`},
		{"bad status enum", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["status"] = "stopped" }), "$.status"},
		{"unknown property", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["cgroupPath"] = "/nsbox/x" }), `unknown property "cgroupPath"`},
		{"bad date-time", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["createdAt"] = "yesterday" }), "$.createdAt"},
		{"nested wrong type", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["limits"].(map[string]any)["pids"] = "16" }), "$.limits.pids"},
		{"nested missing", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { delete(m["limits"].(map[string]any), "cpus") }), "$.limits"},
		{"below minimum", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["limits"].(map[string]any)["cpus"] = 0 }), "$.limits.cpus"},
		{"fractional integer", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["pid"] = 1.5 }), "$.pid"},
		{"map value type", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["env"].(map[string]any)["FOO"] = 1 }), "$.env.FOO"},
		{"pattern", "GET", "/v1/sandboxes/{id}", 200, mutate(t, sb, func(m map[string]any) { m["id"] = "Bad_ID" }), "$.id"},
		{"array item", "GET", "/v1/sandboxes", 200, []byte(`[` + string(wire(t, sb)) + `, 7]`), "$[1]"},
		{"object for array", "GET", "/v1/sandboxes", 200, wire(t, sb), "want array"},
		{"null", "GET", "/v1/sandboxes/{id}", 200, []byte("null"), "want object"},
		{"bad encoding enum", "POST", "/v1/sandboxes/{id}/exec", 200, mutate(t, res, func(m map[string]any) { m["stderrEncoding"] = "latin1" }), "$.stderrEncoding"},
		{"wrong boolean", "POST", "/v1/sandboxes/{id}/exec", 200, mutate(t, res, func(m map[string]any) { m["timedOut"] = "false" }), "$.timedOut"},
		{"missing stdout", "POST", "/v1/sandboxes/{id}/exec", 200, mutate(t, res, func(m map[string]any) { delete(m, "stdout") }), `"stdout"`},
		{"missing sessionReset", "POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", 200, mutate(t, res, func(m map[string]any) { delete(m, "sessionReset") }), `"sessionReset"`},
		{"bad result session id", "POST", "/v1/sandboxes/{id}/exec", 200, mutate(t, res, func(m map[string]any) { m["sessionId"] = "a/b" }), "$.sessionId"},
		{"bad session status", "GET", "/v1/sandboxes/{id}/sessions/{sid}", 200, mutate(t, session("a", api.SessionIdle), func(m map[string]any) { m["status"] = "running" }), "$.status"},
		{"bad session shell", "POST", "/v1/sandboxes/{id}/sessions", 201, mutate(t, session("a", api.SessionIdle), func(m map[string]any) { m["shell"] = "zsh" }), "$.shell"},
		{"session without pid", "GET", "/v1/sandboxes/{id}/sessions", 200, []byte(`[` + string(mutate(t, session("a", api.SessionIdle), func(m map[string]any) { delete(m, "pid") })) + `]`), `$[0]: required property "pid"`},
		{"body on cancel", "POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", 204, []byte(`{}`), "without a body"},
		{"session as a sandbox", "GET", "/v1/sandboxes/{id}/sessions/{sid}", 200, wire(t, sb), `required property "shell"`},
		{"error without message", "GET", "/v1/sandboxes/{id}", 404, mutate(t, json.RawMessage(notFound), func(m map[string]any) { delete(m["error"].(map[string]any), "message") }), "$.error"},
		{"undocumented status", "GET", "/v1/version", 500, notFound, "status 500 is not documented"},
		{"unknown operation", "PUT", "/v1/version", 200, wire(t, api.Version{}), "no such operation"},
		{"unknown path", "GET", "/v1/sandboxes/", 200, wire(t, sb), "no such operation"},
		{"body on 204", "DELETE", "/v1/sandboxes/{id}", 204, []byte("{}"), "without a body"},
		{"not JSON", "GET", "/v1/version", 200, []byte("version 1"), "not JSON"},
		{"trailing data", "GET", "/v1/version", 200, []byte(`{"version":"1"} {}`), "after the JSON value"},
	}
	for _, c := range cases {
		err := spec.ValidateResponse(c.method, c.path, c.status, c.body)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

func TestValidateSchema(t *testing.T) {
	spec := load(t)
	full := api.CreateSandboxRequest{ID: "a-1", Image: "host", Env: map[string]string{"A": "b"}, Cwd: "/w",
		Limits: api.Limits{CPUs: 0.5, MemoryMB: 64, Pids: 64}, Labels: map[string]string{"k": "v"}}
	valid := []struct {
		schema string
		v      any
	}{
		{"CreateSandboxRequest", api.CreateSandboxRequest{}},
		{"CreateSandboxRequest", full},
		{"CreateSandboxRequest", api.CreateSandboxRequest{Limits: api.Limits{DiskMB: 512}, Workspace: &api.Workspace{HostPath: "/src", Mode: api.WorkspaceRW},
			Mounts: []api.Mount{{Source: "/data", Target: "/data", ReadOnly: true}}}},
		{"ExecRequest", api.ExecRequest{Argv: []string{"ls", "-l"}, Env: map[string]string{"X": "1"}, Cwd: "/tmp"}},
		{"ExecRequest", api.ExecRequest{Command: "cat", Stdin: "aGk=", StdinEncoding: api.EncodingBase64, TimeoutMs: 500, MaxOutputBytes: 1 << 20}},
		{"ExecRequest", api.ExecRequest{Command: "cd /tmp", SessionID: "build.1_x-y", KillOnDisconnect: true}},
		{"CreateSessionRequest", api.CreateSessionRequest{}},
		{"CreateSessionRequest", api.CreateSessionRequest{ID: "Build.1", Shell: "/bin/sh", User: "1000", Cwd: "/tmp", Env: map[string]string{"_A1": "x"}}},
		{"ExecEvent", api.OutputEvent(api.EventStdout, []byte{0xff})},
	}
	for _, c := range valid {
		if err := spec.ValidateSchema(c.schema, wire(t, c.v)); err != nil {
			t.Errorf("%s %s: %v", c.schema, wire(t, c.v), err)
		}
	}
	if err := spec.ValidateSchema("ExecRequest", []byte(`{"command":"true","timeout":5}`)); err == nil || !strings.Contains(err.Error(), `"timeout"`) {
		t.Errorf("an exec request with an unknown field: err = %v, want one naming it", err)
	}
	if err := spec.ValidateSchema("ExecRequest", []byte(`{"command":"true","stdinEncoding":"hex"}`)); err == nil || !strings.Contains(err.Error(), "$.stdinEncoding") {
		t.Errorf("an exec request with a bad stdinEncoding: err = %v, want one naming $.stdinEncoding", err)
	}
	if err := spec.ValidateSchema("CreateSessionRequest", []byte(`{"id":"-x"}`)); err == nil || !strings.Contains(err.Error(), "$.id") {
		t.Errorf("a session request with a bad id: err = %v, want one naming $.id", err)
	}
	if err := spec.ValidateSchema("CreateSessionRequest", []byte(`{"shell":"bash","term":"xterm"}`)); err == nil || !strings.Contains(err.Error(), `"term"`) {
		t.Errorf("a session request with an unknown field: err = %v, want one naming it", err)
	}
	if err := spec.ValidateSchema("CreateSandboxRequest", []byte(`{"workspace":{"hostPath":"/x","mode":"copy"}}`)); err == nil || !strings.Contains(err.Error(), "$.workspace.mode") {
		t.Errorf("a create request with a bad workspace mode: err = %v, want one naming $.workspace.mode", err)
	}
	if err := spec.ValidateSchema("NoSuchSchema", []byte(`{}`)); err == nil {
		t.Error("validating against a missing schema succeeded")
	}
}

// TestSchemasMatchGoTypes checks that each schema has exactly the JSON fields of its Go type,
// and that a response schema requires exactly the fields Go always sends.
func TestSchemasMatchGoTypes(t *testing.T) {
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		schema   string
		goType   any
		response bool // responses require the fields Go never omits; requests require none
	}{
		{"Version", api.Version{}, true},
		{"Image", api.Image{}, true},
		{"Sandbox", api.Sandbox{}, true},
		{"Limits", api.Limits{}, true},
		{"ExecResult", api.ExecResult{}, true},
		{"ExecEvent", api.ExecEvent{}, true},
		{"Session", api.Session{}, true},
		{"CreateSessionRequest", api.CreateSessionRequest{}, false},
		{"CreateSandboxRequest", api.CreateSandboxRequest{}, false},
		{"LimitsRequest", api.Limits{}, false},
		{"ExecRequest", api.ExecRequest{}, false},
		{"FileInfo", api.FileInfo{}, true},
		{"FileEvent", api.FileEvent{}, true},
		{"Workspace", api.Workspace{}, true}, // also in answers, where hostPath is always set
		{"Mount", api.Mount{}, true},
		{"WorkspaceChange", api.WorkspaceChange{}, true},
		{"PatchEnvRequest", api.PatchEnvRequest{}, false},
		{"StartProcessRequest", api.StartProcessRequest{}, false},
		{"Process", api.Process{}, true},
		{"KillProcessRequest", api.KillProcessRequest{}, false},
		{"ProcessEvent", api.ProcessEvent{}, true},
		{"ProcessLogs", api.ProcessLogs{}, true},
		{"WaitProcessRequest", api.WaitProcessRequest{}, false},
		{"WaitProcessResult", api.WaitProcessResult{}, true},
		{"CreateTokenRequest", api.CreateTokenRequest{}, false},
		{"CreateSessionTokenRequest", api.CreateSessionTokenRequest{}, false},
		{"Token", api.Token{}, true},
	}
	for _, c := range cases {
		sc, ok := doc.Components.Schemas[c.schema]
		if !ok {
			t.Errorf("schema %s is missing", c.schema)
			continue
		}
		var fields, always []string
		typ := reflect.TypeOf(c.goType)
		for i := range typ.NumField() {
			name, opts, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			fields = append(fields, name)
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				always = append(always, name)
			}
		}
		slices.Sort(fields)
		if props := slices.Sorted(maps.Keys(sc.Properties)); !slices.Equal(props, fields) {
			t.Errorf("schema %s has properties %q, Go type %s has fields %q", c.schema, props, typ, fields)
		}
		required := slices.Sorted(slices.Values(sc.Required))
		if c.schema == "Limits" {
			// Go omits zero limits, but a sandbox's limits are always filled in, except diskMB
			// (0: no disk limit).
			always = slices.DeleteFunc(fields, func(f string) bool { return f == "diskMB" })
		}
		switch {
		case c.response && !slices.Equal(required, slices.Sorted(slices.Values(always))):
			t.Errorf("schema %s requires %q, Go always sends %q", c.schema, required, slices.Sorted(slices.Values(always)))
		case !c.response && len(required) > 0:
			t.Errorf("request schema %s requires %q; the daemon requires none", c.schema, required)
		}
	}
}
