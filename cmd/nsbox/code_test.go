package main

import (
	"context"
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
	if res := run(py.ID, "{'rows': [1, 2]}", 0); len(res.Results) != 1 || res.Results[0]["application/json"] == nil {
		t.Errorf("a JSON result: %+v", res.Results)
	}
	if res := run(py.ID, "count / 0", 0); res.Error == nil || res.Error.Name != "ZeroDivisionError" || !strings.Contains(res.Error.Traceback, "count / 0") {
		t.Errorf("an exception: %+v", res.Error)
	}
	if res := run(py.ID, "while True: count += 1", 300); !res.TimedOut || res.Restarted || res.Error.Name != "KeyboardInterrupt" {
		t.Errorf("a timeout: %+v", res)
	}

	// Streamed: output, the result, then the end.
	var events []string
	end, err := d.client.RunCodeStream(ctx, "code", py.ID, api.RunCodeRequest{Code: "print('a'); display('b'); 'c'"}, func(ev api.CodeEvent) { events = append(events, ev.Type) })
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
	if list, err := d.client.ListCodeContexts(ctx, "code"); err != nil || len(list) != 2 {
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
