package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// sessionEnv runs env in a session and returns the variables named, sorted, as one line.
func (d *testDaemon) sessionEnv(id, sid string, names ...string) string {
	d.t.Helper()
	res := d.exec(id, api.ExecRequest{SessionID: sid, Command: "env | grep -E '^(" + strings.Join(names, "|") + ")=' | sort"})
	stdout, stderr, _ := res.Output()
	if res.ExitCode > 1 { // grep: 1 is "nothing matched"
		d.t.Fatalf("env in %s/%s: exit %d, stderr %q", id, sid, res.ExitCode, stderr)
	}
	return strings.Join(strings.Fields(string(stdout)), " ")
}

func (d *testDaemon) patchEnv(id string, set map[string]string, unset ...string) *api.Sandbox {
	d.t.Helper()
	sb, err := d.client.PatchEnv(context.Background(), id, set, unset)
	if err != nil {
		d.t.Fatalf("patch env of %s: %v", id, err)
	}
	return sb
}

func (d *testDaemon) createSession(id, sid string, req api.CreateSessionRequest) *api.Session {
	d.t.Helper()
	req.ID = sid
	s, err := d.client.CreateSession(context.Background(), id, req)
	if err != nil {
		d.t.Fatalf("create session %s in %s: %v", sid, id, err)
	}
	return s
}

// TestSandboxEnvPatch: a change reaches new sessions at once and existing sessions at their
// next command, where a session's own settings win; in bash (host) and busybox sh sessions.
func TestSandboxEnvPatch(t *testing.T) {
	d := startDaemon(t)
	for _, image := range []string{"host", "busybox"} {
		t.Run(image, func(t *testing.T) {
			d.t = t
			id := "env-" + image
			d.create(api.CreateSandboxRequest{ID: id, Image: image, Env: map[string]string{"A": "1", "KEEP": "k", "MINE": "m0"}})
			old := d.createSession(id, "old", api.CreateSessionRequest{Env: map[string]string{"OWN": "session"}})
			if want := map[string]string{"host": "bash", "busybox": "sh"}[image]; old.Shell != want {
				t.Fatalf("shell %q, want %q", old.Shell, want)
			}
			names := []string{"A", "B", "KEEP", "MINE", "OWN", "GONE"}
			if got := d.sessionEnv(id, "old", names...); got != "A=1 KEEP=k MINE=m0 OWN=session" {
				t.Fatalf("at create: %q", got)
			}
			// The session changes MINE itself, and removes KEEP.
			d.sh(id, "true") // the default session exists before the patch
			if res := d.exec(id, api.ExecRequest{SessionID: "old", Command: "export MINE=mine; unset KEEP"}); res.ExitCode != 0 {
				t.Fatalf("export: %+v", res)
			}

			sb := d.patchEnv(id, map[string]string{"A": "2", "B": "it's \"b\" $HOME\nx", "MINE": "m1", "OWN": "sandbox", "KEEP": "k1"})
			if len(sb.Env) != 5 || sb.Env["A"] != "2" || sb.Env["KEEP"] != "k1" {
				t.Fatalf("patched sandbox: %+v", sb.Env)
			}
			b := "B=it's \"b\" $HOME" // the line after the newline is not a match of grep
			if got := d.sessionEnv(id, "old", names...); got != "A=2 "+b+" MINE=mine OWN=session" {
				t.Fatalf("existing session after the patch: %q", got)
			}
			if got := d.sessionEnv(id, "default", names...); got != "A=2 "+b+" KEEP=k1 MINE=m1 OWN=sandbox" {
				t.Fatalf("default session after the patch: %q", got)
			}
			d.createSession(id, "new", api.CreateSessionRequest{})
			if got := d.sessionEnv(id, "new", names...); got != "A=2 "+b+" KEEP=k1 MINE=m1 OWN=sandbox" {
				t.Fatalf("new session: %q", got)
			}
			for _, sid := range []string{"old", "new"} { // byte-exact, newline and quotes included
				res := d.exec(id, api.ExecRequest{SessionID: sid, Command: `printf %s "$B"`})
				if out, _, _ := res.Output(); string(out) != "it's \"b\" $HOME\nx" {
					t.Fatalf("B in %s: %q", sid, out)
				}
			}
			// A session's export wins over a later patch too; unset reaches who did not touch it.
			d.exec(id, api.ExecRequest{SessionID: "old", Command: "export A=mine"})
			d.patchEnv(id, map[string]string{"A": "3"}, "B", "GONE")
			if got := d.sessionEnv(id, "old", "A", "B"); got != "A=mine" {
				t.Fatalf("old after the second patch: %q", got)
			}
			if got := d.sessionEnv(id, "new", "A", "B"); got != "A=3" {
				t.Fatalf("new after the second patch: %q", got)
			}
			// A request's env is for its command only, over everything.
			res := d.exec(id, api.ExecRequest{SessionID: "new", Command: "echo $A", Env: map[string]string{"A": "req"}})
			if out, _, _ := res.Output(); string(out) != "req\n" {
				t.Fatalf("request env: %q", out)
			}
			// Processes started after the change inherit it (here: a background job of a session).
			d.patchEnv(id, map[string]string{"C": "bg"})
			d.sh(id, "(sleep 0.1; env | grep '^C=' > /tmp/bg) & wait")
			if out := d.sh(id, "cat /tmp/bg"); out != "C=bg\n" {
				t.Fatalf("background process: %q", out)
			}
			// Unsetting a variable the defaults also set brings the default back.
			d.patchEnv(id, map[string]string{"PATH": "/opt/none:/usr/bin:/bin"})
			if out := d.sh(id, "echo $PATH"); out != "/opt/none:/usr/bin:/bin\n" {
				t.Fatalf("PATH set: %q", out)
			}
			d.patchEnv(id, nil, "PATH")
			if out := d.sh(id, "echo $PATH"); out != "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" {
				t.Fatalf("PATH unset: %q", out)
			}
			if got, _ := d.client.GetSandbox(context.Background(), id); len(got.Env) != 5 || got.Env["C"] != "bg" || got.Env["A"] != "3" {
				t.Fatalf("recorded env: %+v", got.Env)
			}
		})
	}
}

// agentEnv calls a sandbox's agent's env endpoint directly, as the daemon does: PUT with a
// body, GET without, and returns what a GET answers.
func (d *testDaemon) agentEnv(id, method string, env map[string]string) map[string]string {
	d.t.Helper()
	return d.agentEnvOf(d.container(id), method, env)
}

// agentEnvOf is agentEnv for the agent of a container, which works while the daemon is down.
func (d *testDaemon) agentEnvOf(container, method string, env map[string]string) map[string]string {
	d.t.Helper()
	socket := filepath.Join(d.runDir, "sandboxes", container, "agent.sock")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	var body []byte
	if method == http.MethodPut {
		body, _ = json.Marshal(api.SandboxEnv{Env: env})
	}
	req, _ := http.NewRequest(method, "http://agent/v1/env", bytes.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		d.t.Fatalf("%s agent env: %v", method, err)
	}
	defer resp.Body.Close()
	var got api.SandboxEnv
	switch {
	case method == http.MethodPut && resp.StatusCode == http.StatusNoContent:
	case method == http.MethodGet && resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&got) == nil:
	default:
		d.t.Fatalf("%s agent env: %s", method, resp.Status)
	}
	return got.Env
}

// TestSandboxEnvSurvivesDaemonRestart: the agent keeps the environment across a kill -9 of the
// daemon, and the daemon's record wins when the two disagree (the daemon died between pushing
// a change to the agent and recording it).
func TestSandboxEnvSurvivesDaemonRestart(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "keep", Image: "busybox", Env: map[string]string{"A": "1"}})
	d.createSession("keep", "s", api.CreateSessionRequest{})
	d.patchEnv("keep", map[string]string{"B": "2"}, "A")
	d.kill9()
	d.start()
	if got := d.sessionEnv("keep", "s", "A", "B"); got != "B=2" {
		t.Fatalf("existing session after restart: %q", got)
	}
	d.createSession("keep", "s2", api.CreateSessionRequest{})
	if got := d.sessionEnv("keep", "s2", "A", "B"); got != "B=2" {
		t.Fatalf("new session after restart: %q", got)
	}

	container := d.container("keep")
	d.kill9()
	d.agentEnvOf(container, http.MethodPut, map[string]string{"B": "2", "X": "never recorded"})
	d.start()
	if got := d.agentEnv("keep", http.MethodGet, nil); len(got) != 1 || got["B"] != "2" {
		t.Fatalf("the agent's env after reconcile: %v", got)
	}
	d.createSession("keep", "s3", api.CreateSessionRequest{})
	if got := d.sessionEnv("keep", "s3", "A", "B", "X"); got != "B=2" {
		t.Fatalf("after a restart the record is the truth: %q", got)
	}
	if sb, _ := d.client.GetSandbox(context.Background(), "keep"); len(sb.Env) != 1 || sb.Env["B"] != "2" {
		t.Fatalf("record: %+v", sb.Env)
	}
}

// TestSandboxEnvConcurrentPatches: patches are applied one after the other, none is lost.
func TestSandboxEnvConcurrentPatches(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "many", Image: "busybox"})
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.client.PatchEnv(context.Background(), "many", map[string]string{fmt.Sprintf("K%d", i): "v"}, nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	sb, _ := d.client.GetSandbox(context.Background(), "many")
	if len(sb.Env) != 10 {
		t.Fatalf("after 10 concurrent patches: %v", sb.Env)
	}
	if got := d.agentEnv("many", http.MethodGet, nil); len(got) != 10 {
		t.Fatalf("the agent has %v", got)
	}
}

func TestSandboxEnvErrors(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "bad", Image: "busybox", Env: map[string]string{"A": "1"}})
	url := "/v1/sandboxes/bad/env"
	for _, body := range []any{
		api.PatchEnvRequest{},
		api.PatchEnvRequest{Set: map[string]string{"1A": "x"}},
		api.PatchEnvRequest{Set: map[string]string{"A=B": "x"}},
		api.PatchEnvRequest{Set: map[string]string{"": "x"}},
		api.PatchEnvRequest{Set: map[string]string{"A-B": "x"}},
		api.PatchEnvRequest{Set: map[string]string{"UID": "0"}},
		api.PatchEnvRequest{Set: map[string]string{"A": "x\x00y"}},
		api.PatchEnvRequest{Unset: []string{"A B"}},
		api.PatchEnvRequest{Set: map[string]string{"A": "x"}, Unset: []string{"A"}},
		`{"set": {"A": 1}}`,
		`{"sett": {}}`,
		`{"set": {}} {}`,
	} {
		d.expectError("PATCH", url, body, 400, api.CodeInvalidArgument)
	}
	d.expectError("PATCH", "/v1/sandboxes/nope/env", api.PatchEnvRequest{Set: map[string]string{"A": "x"}}, 404, api.CodeNotFound)
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Env: map[string]string{"A.B": "x"}}, 400, api.CodeInvalidArgument)
	if sb, _ := d.client.GetSandbox(context.Background(), "bad"); len(sb.Env) != 1 || sb.Env["A"] != "1" {
		t.Fatalf("failed patches changed the env: %+v", sb.Env)
	}

	// The CLI prints, sets and unsets.
	if out, errOut, code := d.cli("", "env", "bad", "B=two words", "C=", "--unset", "A"); code != 0 || out != "B=two words\nC=\n" {
		t.Fatalf("nsbox env set: %d %q %q", code, out, errOut)
	}
	if out, _, code := d.cli("", "env", "bad"); code != 0 || out != "B=two words\nC=\n" {
		t.Fatalf("nsbox env: %d %q", code, out)
	}
	if _, errOut, code := d.cli("", "env", "bad", "NOEQUALS"); code == 0 || !strings.Contains(errOut, "--unset NOEQUALS") {
		t.Fatalf("nsbox env with a bad argument: %d %q", code, errOut)
	}
	if _, errOut, code := d.cli("", "env", "bad", "9X=1"); code == 0 || !strings.Contains(errOut, "invalid environment variable name") {
		t.Fatalf("nsbox env with a bad name: %d %q", code, errOut)
	}
}

// TestProcessesStartFromTheSandboxEnvAndCwd: a process that names no session starts in the
// sandbox's cwd with its environment as it is now, PATCHes included; on a warm-pool sandbox
// too, whose agent learned them when it was bound.
func TestProcessesStartFromTheSandboxEnvAndCwd(t *testing.T) {
	d := startDaemon(t, "--warm-pool", "busybox=1")
	d.waitWarm("busybox", 1)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "pe", Image: "busybox", Cwd: "/srv/app", Env: map[string]string{"A": "1", "GONE": "x"}})
	d.patchEnv("pe", map[string]string{"B": "2"}, "GONE")
	p, err := d.client.StartProcess(ctx, "pe", api.StartProcessRequest{Command: `echo "$A $B ${GONE-unset} $HOSTNAME $(pwd)"`})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.FollowProcessLogs(ctx, "pe", p.ID, client.LogsOptions{}, func(api.ProcessEvent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	logs, err := d.client.ProcessLogs(ctx, "pe", p.ID, client.LogsOptions{})
	if err != nil || len(logs.Chunks) != 1 {
		t.Fatalf("logs %+v %v", logs, err)
	}
	if got, _ := logs.Chunks[0].Bytes(); string(got) != "1 2 unset pe /srv/app\n" {
		t.Errorf("process output %q", got)
	}
}
