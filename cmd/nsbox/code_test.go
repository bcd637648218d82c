package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

func TestCodeContexts(t *testing.T) {
	for _, prog := range []string{"python3", "node"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("the host image needs %s", prog)
		}
	}
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "code"})
	py, err := d.client.CreateCodeContext(ctx, "code", api.CreateCodeContextRequest{Language: api.LanguagePython, Cwd: "/tmp"})
	if err != nil || py.Cwd != "/tmp" || py.User != "root" {
		t.Fatalf("create a python context: %+v %v", py, err)
	}
	run := func(cid, code string, timeoutMs int64) *api.RunCodeResult {
		t.Helper()
		res, err := d.client.RunCode(ctx, "code", cid, api.RunCodeRequest{Code: code, TimeoutMs: timeoutMs})
		if err != nil {
			t.Fatalf("run %q: %v", code, err)
		}
		return res
	}
	run(py.ID, "import os\ncount = 41\nos.chdir('/workspace')", 0)
	res := run(py.ID, "print('in', os.getcwd()); import sys; print('oops', file=sys.stderr)\ncount + 1", 0)
	if res.Stdout != "in /workspace\n" || res.Stderr != "oops\n" || len(res.Results) != 1 || res.Results[0]["text/plain"] != "42" {
		t.Errorf("state, output and the last expression: %+v", res)
	}
	// Each stream in its own encoding: stdout text, stderr bytes that are not UTF-8.
	res = run(py.ID, "import sys; print('text é'); sys.stdout.flush(); sys.stderr.buffer.write(b'\\xff\\x00x'); sys.stderr.flush()", 0)
	if stdout, stderr, err := res.Output(); err != nil || res.StdoutEncoding != api.EncodingUTF8 || res.StderrEncoding != api.EncodingBase64 ||
		res.Stdout != "text é\n" || string(stdout) != "text é\n" || string(stderr) != "\xff\x00x" {
		t.Errorf("per-stream encodings: %q (%s) %q (%s), %q %q %v", res.Stdout, res.StdoutEncoding, res.Stderr, res.StderrEncoding, stdout, stderr, err)
	}
	if res := run(py.ID, "{'rows': [1, 2]}", 0); len(res.Results) != 1 || res.Results[0]["application/json"] == nil {
		t.Errorf("a JSON result: %+v", res.Results)
	}
	if res := run(py.ID, "count / 0", 0); res.Error == nil || res.Error.Name != "ZeroDivisionError" || !strings.Contains(res.Error.Traceback, "count / 0") {
		t.Errorf("an exception: %+v", res.Error)
	}
	if res := run(py.ID, "while True: count += 1", 300); !res.TimedOut || res.Restarted || res.Error.Name != "KeyboardInterrupt" {
		t.Errorf("a timeout: %+v", res)
	}

	// Rich results: what a value's _repr_*_ methods give (as pandas and matplotlib objects do).
	res = run(py.ID, "class Table:\n    def _repr_html_(self): return '<table></table>'\n    def _repr_png_(self): return b'\\x89PNG'\nTable()", 0)
	if len(res.Results) != 1 || res.Results[0]["text/html"] != "<table></table>" || res.Results[0]["image/png"] != "iVBORw==" {
		t.Errorf("rich results: %+v", res.Results)
	}
	// A context of a session: its user and working directory.
	d.createSession("code", "analyst", api.CreateSessionRequest{ID: "analyst", User: "nobody", Cwd: "/tmp"})
	if cc, err := d.client.CreateCodeContext(ctx, "code", api.CreateCodeContextRequest{Language: api.LanguagePython, SessionID: "analyst"}); err != nil || cc.User != "nobody" || cc.Cwd != "/tmp" {
		t.Errorf("a session's context: %+v %v", cc, err)
	} else if res := run(cc.ID, "import os; os.getuid() != 0", 0); len(res.Results) != 1 || res.Results[0]["text/plain"] != "True" {
		t.Errorf("a session's context runs as its user: %+v", res)
	}

	// Streamed: output, the result, then the end.
	var events []string
	end, err := d.client.RunCodeStream(ctx, "code", py.ID, api.RunCodeRequest{Code: "print('a'); display('b'); 'c'"}, func(ev api.CodeEvent) error { events = append(events, ev.Type); return nil })
	if err != nil || end.Error != nil || strings.Join(events, ",") != "stdout,result,result" {
		t.Errorf("streamed run: %v %+v %v", events, end, err)
	}

	js, err := d.client.CreateCodeContext(ctx, "code", api.CreateCodeContextRequest{Language: api.LanguageJavaScript})
	if err != nil {
		t.Fatal(err)
	}
	run(js.ID, "const seen = []; seen.push(1)", 0)
	if res := run(js.ID, "console.log('log'); seen.push(2); seen", 0); res.Stdout != "log\n" || len(res.Results) != 1 || res.Results[0]["text/plain"] != "[ 1, 2 ]" {
		t.Errorf("a javascript context: %+v", res)
	}

	// Contexts live in the agent: a daemon kill -9 keeps them and their state.
	d.kill9()
	d.start()
	if res := run(py.ID, "count > 41", 0); len(res.Results) != 1 || res.Results[0]["text/plain"] != "True" {
		t.Errorf("after a daemon restart: %+v", res)
	}
	if list, err := d.client.ListCodeContexts(ctx, "code"); err != nil || len(list) != 3 {
		t.Errorf("list: %+v %v", list, err)
	}
	out, errOut, code := d.cli("", "run-code", "code", "print(6 * 7)")
	if code != 0 || out != "42\n" {
		t.Errorf("nsbox run-code: %d %q %q", code, out, errOut)
	}
	if _, _, code := d.cli("", "run-code", "--lang", "javascript", "code", "throw new Error('no')"); code != 1 {
		t.Errorf("nsbox run-code with an exception: exit %d", code)
	}
	if err := d.client.DeleteCodeContext(ctx, "code", js.ID); err != nil {
		t.Fatal(err)
	}
	d.expectError(http.MethodPost, "/v1/sandboxes/code/contexts/"+js.ID+"/run", api.RunCodeRequest{Code: "1"}, http.StatusNotFound, api.CodeNotFound)
	d.expectError(http.MethodPost, "/v1/sandboxes/code/contexts", api.CreateCodeContextRequest{Language: "cobol"}, http.StatusBadRequest, api.CodeInvalidArgument)
	d.create(api.CreateSandboxRequest{ID: "bare", Image: "busybox"})
	if e := d.expectError(http.MethodPost, "/v1/sandboxes/bare/contexts", api.CreateCodeContextRequest{Language: api.LanguagePython}, http.StatusBadRequest, api.CodeInvalidArgument); !strings.Contains(e.Message, "no python3") {
		t.Errorf("an image without python3: %q", e.Message)
	}
}

func TestGitCheckout(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("the host image needs git")
	}
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "git"})
	// A repository inside the sandbox, with a main branch of two commits and a feature branch.
	d.sh("git", `(set -e; export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
git init -q -b main /tmp/src && cd /tmp/src && echo one > f && git add f && git commit -qm one && echo two > f && git commit -qam two
git checkout -q -b feature && echo feat > g && git add g && git commit -qm feat && git checkout -q main)`)
	res, err := d.client.GitCheckout(ctx, "git", api.GitCheckoutRequest{URL: "file:///tmp/src", TargetDir: "repo", Depth: 1, Token: "SECRET-TOKEN-4711"})
	if err != nil || !res.Cloned || res.Dir != "/workspace/repo" || res.Branch != "main" || len(res.Commit) != 40 {
		t.Fatalf("clone: %+v %v", res, err)
	}
	if got := d.sh("git", "cat /workspace/repo/f; git -C /workspace/repo rev-list --count HEAD"); got != "two\n1\n" {
		t.Errorf("a shallow clone of main: %q", got)
	}
	res, err = d.client.GitCheckout(ctx, "git", api.GitCheckoutRequest{URL: "file:///tmp/src", TargetDir: "/workspace/repo", Branch: "feature"})
	if err != nil || res.Cloned || res.Branch != "feature" {
		t.Fatalf("fetch and check out a branch in the clone: %+v %v", res, err)
	}
	if got := d.sh("git", "cat /workspace/repo/g"); got != "feat\n" {
		t.Errorf("the feature branch: %q", got)
	}
	// The token is nowhere in the sandbox.
	if got := d.sh("git", "grep -rlE 'SECRET-TOKEN-47[1]1' /workspace /tmp /root /proc/*/environ /proc/*/cmdline 2>/dev/null; true"); got != "" {
		t.Errorf("the token was left in: %q", got)
	}
	d.sh("git", "mkdir -p /workspace/full && touch /workspace/full/x")
	for _, tc := range []struct {
		req    api.GitCheckoutRequest
		status int
		code   string
	}{
		{api.GitCheckoutRequest{URL: "file:///tmp/nope", TargetDir: "a"}, http.StatusNotFound, api.CodeNotFound},
		{api.GitCheckoutRequest{URL: "file:///tmp/src", TargetDir: "b", Branch: "nope"}, http.StatusNotFound, api.CodeNotFound},
		{api.GitCheckoutRequest{URL: "file:///tmp/src", TargetDir: "full"}, http.StatusConflict, api.CodeConflict},
		{api.GitCheckoutRequest{URL: "file:///tmp/src"}, http.StatusBadRequest, api.CodeInvalidArgument},
	} {
		if e := d.expectError(http.MethodPost, "/v1/sandboxes/git/git/checkout", tc.req, tc.status, tc.code); e.Message == "" {
			t.Errorf("%+v: no message", tc.req)
		}
	}
	// Streamed: progress events, then done with the result.
	body, _ := json.Marshal(api.GitCheckoutRequest{URL: "file:///tmp/src", TargetDir: "/tmp/streamed"})
	req, _ := http.NewRequest(http.MethodPost, "http://nsbox/v1/sandboxes/git/git/checkout", bytes.NewReader(body))
	req.Header.Set("Accept", api.EventStream)
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sse, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(sse), "event: progress\n") || !strings.Contains(string(sse), "event: done\n") || !strings.Contains(string(sse), `"cloned":true`) {
		t.Errorf("a streamed checkout: %s", sse)
	}
	out, errOut, code := d.cli("", "git", "checkout", "--branch", "feature", "git", "file:///tmp/src", "/tmp/cli")
	if code != 0 || !strings.HasPrefix(out, "/tmp/cli feature ") {
		t.Errorf("nsbox git checkout: %d %q %q", code, out, errOut)
	}
}
