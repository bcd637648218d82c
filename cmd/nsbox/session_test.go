package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// Sessions are tested on both shells: bash (the host image, PTY + readline) and busybox sh
// (a pipe-driven shell).
var shells = []struct{ name, image string }{{"bash", "host"}, {"sh", "busybox"}}

func TestSessionStatePersists(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			d.create(api.CreateSandboxRequest{ID: "st", Image: sh.image})
			d.sh("st", "cd /tmp && export FOO=bar && alias hi='echo hello' && greet() { echo \"greet $1\"; } && set -o noglob && x=shellvar")
			d.sh("st", "mkdir -p /tmp/venv/bin && printf 'export VIRTUAL_ENV=/tmp/venv\\nPATH=/tmp/venv/bin:$PATH\\n' > /tmp/venv/bin/activate")
			d.sh("st", ". /tmp/venv/bin/activate")
			got := d.sh("st", "pwd; echo $FOO; hi; greet you; echo $x; case $- in *f*) echo noglob;; esac; echo $VIRTUAL_ENV")
			if got != "/tmp\nbar\nhello\ngreet you\nshellvar\nnoglob\n/tmp/venv\n" {
				t.Fatalf("state after earlier execs: %q", got)
			}
			// A second session shares files and processes, not state.
			if _, err := d.client.CreateSession(context.Background(), "st", api.CreateSessionRequest{ID: "other"}); err != nil {
				t.Fatal(err)
			}
			res := d.exec("st", api.ExecRequest{SessionID: "other", Command: "pwd; echo \"[$FOO]\"; cat /tmp/venv/bin/activate | wc -l"})
			if res.Stdout != "/workspace\n[]\n2\n" || res.SessionID != "other" {
				t.Fatalf("other session: %+v", res)
			}
		})
	}
}

func TestSessionExecSemantics(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			d.create(api.CreateSandboxRequest{ID: "ex", Image: sh.image})
			all := make([]byte, 256)
			for i := range all {
				all[i] = byte(i)
			}
			// All 256 byte values through stdin and stdout, exactly.
			res := d.exec("ex", api.ExecRequest{Command: "cat", Stdin: base64.StdEncoding.EncodeToString(all), StdinEncoding: "base64"})
			if out, _, _ := res.Output(); !bytes.Equal(out, all) || res.ExitCode != 0 {
				t.Fatalf("256 byte values: %q exit %d", out, res.ExitCode)
			}
			res = d.exec("ex", api.ExecRequest{Command: "printf 'x\\0y\\r\\nno newline'; printf 'e' >&2; false"})
			if out, errOut, _ := res.Output(); string(out) != "x\x00y\r\nno newline" || string(errOut) != "e" || res.ExitCode != 1 {
				t.Fatalf("NUL, CR, no final newline, stderr, exit: %q %q %d", out, errOut, res.ExitCode)
			}
			// Heredocs and multi-line scripts.
			if got := d.sh("ex", "cat <<'EOF'\n$not expanded\nline 2\nEOF\nif true; then\n  echo multi\nfi"); got != "$not expanded\nline 2\nmulti\n" {
				t.Fatalf("heredoc: %q", got)
			}
			// An unterminated heredoc or a syntax error does not poison the session.
			d.exec("ex", api.ExecRequest{Command: "cat <<EOF\nunterminated"})
			d.exec("ex", api.ExecRequest{Command: "if then fi ("})
			// A fatal error aborts the command back to the prompt; it still reports, and the
			// session keeps working.
			if res := d.exec("ex", api.ExecRequest{Command: "set -u; echo $NOT_SET_ANYWHERE; echo unreachable"}); res.ExitCode == 0 || strings.Contains(res.Stdout, "unreachable") {
				t.Fatalf("set -u abort: %+v", res)
			}
			d.sh("ex", "set +u")
			if got := d.sh("ex", "echo still fine"); got != "still fine\n" {
				t.Fatalf("after broken scripts: %q", got)
			}
			// Per-exec env and cwd are for that command only.
			d.sh("ex", "cd /tmp; export KEEP=1")
			res = d.exec("ex", api.ExecRequest{Command: "pwd; echo $KEEP $ONCE", Env: map[string]string{"ONCE": "o", "KEEP": "2"}, Cwd: "/"})
			if res.Stdout != "/\n2 o\n" {
				t.Fatalf("overlay: %q", res.Stdout)
			}
			if got := d.sh("ex", "pwd; echo $KEEP \"[$ONCE]\""); got != "/tmp\n1 []\n" {
				t.Fatalf("after overlay: %q", got)
			}
			// Also when the command is cut short by a timeout or a fatal error, which abandon
			// the rest of its run file: no override and no helper variable stays.
			for _, req := range []api.ExecRequest{{Command: "sleep 30", TimeoutMs: 300}, {Command: "echo ${NOPE?boom}"}} {
				req.Env, req.Cwd = map[string]string{"ONCE": "secret", "KEEP": "2"}, "/var"
				d.exec("ex", req)
				if got := d.sh("ex", "pwd; echo $KEEP \"[$ONCE]\"; set | grep '^__nsbox_' | grep -v -e '^__nsbox_dir=' -e '^__nsbox_run=' || true"); got != "/tmp\n1 []\n" {
					t.Fatalf("after overlay and %q: %q", req.Command, got)
				}
			}
			// argv is one program with its arguments, exactly.
			res = d.exec("ex", api.ExecRequest{Argv: []string{"printf", "%s|", "a b", "$HOME", "'q'", ""}})
			if res.Stdout != "a b|$HOME|'q'||" {
				t.Fatalf("argv: %q", res.Stdout)
			}
			if res := d.exec("ex", api.ExecRequest{Argv: []string{"no-such-program"}}); res.ExitCode != 127 {
				t.Fatalf("missing program: %+v", res)
			}
			// 10 MB of output, whole.
			res = d.exec("ex", api.ExecRequest{Command: "head -c 10000000 /dev/zero | tr '\\0' 'a'"})
			if len(res.Stdout) != 10000000 || strings.Trim(res.Stdout, "a") != "" {
				t.Fatalf("10 MB: got %d bytes", len(res.Stdout))
			}
		})
	}
}

// sleepsGone counts the sandbox's sleep processes until there are none or 5 s have passed:
// killed processes are gone once the agent has reaped them, which a loaded machine may delay.
func (d *testDaemon) sleepsGone(id string) string {
	d.t.Helper()
	got := ""
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = d.sh(id, "ps -o comm | grep -c '^sleep' || true"); got == "0\n" {
			break
		}
	}
	return got
}

func TestSessionTimeoutsAndBackgroundJobs(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			d.create(api.CreateSandboxRequest{ID: "to", Image: sh.image})
			d.sh("to", "cd /tmp; export KEPT=yes")
			// Prints forever: killed at the timeout, exit 124, session intact.
			res := d.exec("to", api.ExecRequest{Command: "yes", TimeoutMs: 300})
			if !res.TimedOut || res.ExitCode != 124 || res.SessionReset {
				t.Fatalf("yes with a timeout: %+v", res.ExitCode)
			}
			// A child that forks more children: all killed.
			res = d.exec("to", api.ExecRequest{Command: "sh -c 'sleep 600 & sleep 600'", TimeoutMs: 300})
			if !res.TimedOut {
				t.Fatalf("nested sleeps: %+v", res)
			}
			if got := d.sleepsGone("to"); got != "0\n" {
				t.Fatalf("processes of a timed-out command survived: %q", got)
			}
			// The rest of a timed-out command does not run.
			res = d.exec("to", api.ExecRequest{Command: "sleep 30; echo rest > /tmp/rest", TimeoutMs: 300})
			if got := d.sh("to", "cat /tmp/rest 2>/dev/null || echo absent"); !res.TimedOut || got != "absent\n" {
				t.Fatalf("after a timeout the rest of the command ran: %q", got)
			}
			if got := d.sh("to", "pwd; echo $KEPT"); got != "/tmp\nyes\n" {
				t.Fatalf("state after timeouts: %q", got)
			}
			// A background job neither blocks its exec nor leaks into later results.
			start := time.Now()
			res = d.exec("to", api.ExecRequest{Command: "(while :; do echo tick; sleep 0.05; done) & sleep 1000 & echo hi"})
			if !strings.HasPrefix(res.Stdout, "hi\n") && !strings.Contains(res.Stdout, "hi\n") || time.Since(start) > 5*time.Second {
				t.Fatalf("background jobs: %q after %v", res.Stdout, time.Since(start))
			}
			time.Sleep(200 * time.Millisecond)
			if got := d.sh("to", "echo next"); got != "next\n" {
				t.Fatalf("a background job's output leaked into a later result: %q", got)
			}
			if got := d.sh("to", "ps -o comm | grep -c '^sleep' || true"); got == "0\n" {
				t.Fatalf("background jobs were killed by a later exec")
			}
			// Deleting the session kills its background jobs.
			if err := d.client.DeleteSession(context.Background(), "to", "default"); err != nil {
				t.Fatal(err)
			}
			if got := d.sleepsGone("to"); got != "0\n" {
				t.Fatalf("background jobs survived their session: %q", got)
			}
		})
	}
}

func TestSessionEndsWithItsShell(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			d.create(api.CreateSandboxRequest{ID: "end", Image: sh.image})
			if _, err := d.client.CreateSession(context.Background(), "end", api.CreateSessionRequest{ID: "s1"}); err != nil {
				t.Fatal(err)
			}
			res := d.exec("end", api.ExecRequest{SessionID: "s1", Command: "echo bye; exit 3"})
			if res.ExitCode != 3 || !res.SessionEnded || res.Stdout != "bye\n" {
				t.Fatalf("exit 3: %+v", res)
			}
			s, err := d.client.GetSession(context.Background(), "end", "s1")
			if err != nil || s.Status != api.SessionEnded || s.ExitCode != 3 {
				t.Fatalf("ended session: %+v %v", s, err)
			}
			d.expectError("POST", "/v1/sandboxes/end/sessions/s1/exec", api.ExecRequest{Command: "true"}, 409, api.CodeConflict)
			// The id is free again.
			if _, err := d.client.CreateSession(context.Background(), "end", api.CreateSessionRequest{ID: "s1"}); err != nil {
				t.Fatalf("re-create an ended session: %v", err)
			}
			res = d.exec("end", api.ExecRequest{SessionID: "s1", Command: "exec sh -c 'echo replaced; exit 5'"})
			if res.ExitCode != 5 || !res.SessionEnded || res.Stdout != "replaced\n" {
				t.Fatalf("exec: %+v", res)
			}
			// The default session comes back by itself.
			d.exec("end", api.ExecRequest{Command: "exit 1"})
			if got := d.sh("end", "echo back"); got != "back\n" {
				t.Fatalf("default session after exit: %q", got)
			}
		})
	}
}

func TestSessionAPIErrors(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "se", Image: "busybox"})
	d.expectError("POST", "/v1/sandboxes/se/exec", api.ExecRequest{SessionID: "nope", Command: "true"}, 404, api.CodeNotFound)
	d.expectError("POST", "/v1/sandboxes/se/sessions/nope/exec", api.ExecRequest{Command: "true"}, 404, api.CodeNotFound)
	d.expectError("GET", "/v1/sandboxes/se/sessions/nope", nil, 404, api.CodeNotFound)
	d.expectError("DELETE", "/v1/sandboxes/se/sessions/nope", nil, 404, api.CodeNotFound)
	d.expectError("POST", "/v1/sandboxes/se/sessions/default/cancel", nil, 409, api.CodeConflict)
	d.expectError("POST", "/v1/sandboxes/nope/sessions", api.CreateSessionRequest{}, 404, api.CodeNotFound)
	d.expectError("POST", "/v1/sandboxes/se/sessions", api.CreateSessionRequest{ID: "bad id"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/se/sessions", api.CreateSessionRequest{Shell: "fish"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/se/sessions", api.CreateSessionRequest{User: "nobody-here"}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/se/sessions", api.CreateSessionRequest{Env: map[string]string{"1BAD": "x"}}, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/se/sessions", `{"idd": "x"}`, 400, api.CodeInvalidArgument)
	d.expectError("POST", "/v1/sandboxes/se/sessions/default/exec", api.ExecRequest{SessionID: "other", Command: "true"}, 400, api.CodeInvalidArgument)
	if _, err := d.client.CreateSession(context.Background(), "se", api.CreateSessionRequest{ID: "dup"}); err != nil {
		t.Fatal(err)
	}
	// Creating it again answers it as it is (issue 14).
	if status, body := d.call("POST", "/v1/sandboxes/se/sessions", api.CreateSessionRequest{ID: "dup", Permission: api.PermissionRead}); status != 200 || !strings.Contains(string(body), `"permission":"write"`) {
		t.Fatalf("create an existing session: %d %s", status, body)
	}
	d.expectError("POST", "/v1/sandboxes/se/sessions", api.CreateSessionRequest{Permission: "admin"}, 400, api.CodeInvalidArgument)
	// A session as another user.
	s, err := d.client.CreateSession(context.Background(), "se", api.CreateSessionRequest{ID: "nob", User: "nobody", Cwd: "/tmp"})
	if err != nil || s.User != "nobody" {
		t.Fatalf("session as nobody: %+v %v", s, err)
	}
	if got := d.exec("se", api.ExecRequest{SessionID: "nob", Command: "id -u; pwd; echo $HOME"}); got.Stdout != "65534\n/tmp\n/nonexistent\n" {
		t.Fatalf("nobody's session: %+v", got)
	}
	list, err := d.client.ListSessions(context.Background(), "se")
	if err != nil || len(list) != 3 || list[0].ID != "default" || list[1].ID != "dup" || list[2].ID != "nob" {
		t.Fatalf("list: %+v %v", list, err)
	}
}

func TestSessionsRunInParallelAndInOrder(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "par", Image: "busybox"})
	for i := 1; i <= 3; i++ {
		if _, err := d.client.CreateSession(context.Background(), "par", api.CreateSessionRequest{ID: fmt.Sprintf("s%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	sessions := []string{"default", "s1", "s2", "s3"}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	start := time.Now()
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sid := sessions[i%4]
			res, err := d.client.Exec(context.Background(), "par", api.ExecRequest{SessionID: sid, Command: fmt.Sprintf("sleep 0.2; echo %d >> /tmp/%s; echo %d", i, sid, i)})
			if err != nil || res.Stdout != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("exec %d in %s: %+v %v", i, sid, res, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// 5 commands of 0.2 s per session, sessions in parallel: about 1 s, not 4.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("20 execs over 4 sessions took %v: sessions did not run in parallel", took)
	}
	for _, sid := range sessions {
		if got := strings.Count(d.sh("par", "cat /tmp/"+sid), "\n"); got != 5 {
			t.Errorf("session %s ran %d commands, want 5", sid, got)
		}
	}
}

func TestSessionSurvivesDaemonKill(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "surv"})
	d.sh("surv", "cd /tmp && export WHO=me")
	d.kill9()
	d.start()
	if got := d.sh("surv", "pwd; echo $WHO"); got != "/tmp\nme\n" {
		t.Fatalf("after kill -9 and restart: %q", got)
	}
}

func TestExecStreamsAsProduced(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "stream", Image: "busybox"})
	type arrival struct {
		ev api.ExecEvent
		at time.Time
	}
	var got []arrival
	start := time.Now()
	res, err := d.client.ExecStream(context.Background(), "stream", api.ExecRequest{Command: "echo one; sleep 0.5; echo two >&2"}, func(ev api.ExecEvent) error {
		got = append(got, arrival{ev, time.Now()})
		return nil
	})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("stream: %+v %v", res, err)
	}
	if len(got) != 4 || got[0].ev.Type != "start" || got[1].ev.Data != "one\n" || got[2].ev.Type != "stderr" || got[3].ev.Type != "exit" {
		t.Fatalf("events: %+v", got)
	}
	if got[1].at.Sub(start) > 400*time.Millisecond {
		t.Errorf("the first line arrived after %v: output was not streamed", got[1].at.Sub(start))
	}
}

func TestDisconnectedClientDoesNotKillCommand(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "disc", Image: "busybox"})
	// The API's default; the Go SDK's when the context says KeepRunning.
	ctx, cancel := context.WithTimeout(client.KeepRunning(context.Background()), 200*time.Millisecond)
	defer cancel()
	_, err := d.client.Exec(ctx, "disc", api.ExecRequest{Command: "sleep 0.6; echo done > /tmp/marker"})
	if err == nil {
		t.Fatal("want a client timeout")
	}
	if got := d.sh("disc", "cat /tmp/marker"); got != "done\n" {
		t.Fatalf("the command did not finish after its client left: %q", got)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _ = d.client.Exec(ctx, "disc", api.ExecRequest{Command: "sleep 0.6; echo killed > /tmp/marker2", KillOnDisconnect: true})
	time.Sleep(800 * time.Millisecond)
	if got := d.sh("disc", "cat /tmp/marker2 2>/dev/null || echo absent"); got != "absent\n" {
		t.Fatalf("killOnDisconnect: %q", got)
	}
}

func TestCancelSession(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "can", Image: "busybox"})
	done := make(chan *api.ExecResult)
	go func() {
		res, _ := d.client.Exec(context.Background(), "can", api.ExecRequest{Command: "sleep 600", Env: map[string]string{"TOKEN": "secret"}, Cwd: "/var"})
		done <- res
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := d.client.CancelSession(context.Background(), "can", "default"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cancel never found the command running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case res := <-done:
		if res == nil || !res.Canceled || res.ExitCode != 130 {
			t.Fatalf("canceled exec: %+v", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end the command")
	}
	// The command's own env and cwd went with it.
	if got := d.sh("can", "pwd; echo \"[${TOKEN-}]\""); got != "/workspace\n[]\n" {
		t.Fatalf("after the cancel: %q", got)
	}
}

func TestCLISessions(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "clis"})
	out, errOut, code := d.cli("", "session", "create", "--id", "work", "--cwd", "/tmp", "clis")
	if code != 0 || out != "work\n" {
		t.Fatalf("session create: %q %q", out, errOut)
	}
	d.cli("", "sh", "-s", "work", "clis", "cd /var; export A=1")
	out, _, code = d.cli("", "sh", "-s", "work", "clis", "echo $A $(pwd); echo err >&2; (exit 4)")
	if out != "1 /var\n" || code != 4 {
		t.Fatalf("sh: %q %d", out, code)
	}
	out, _, _ = d.cli("", "exec", "-s", "work", "clis", "--", "pwd")
	if out != "/var\n" {
		t.Fatalf("exec in session: %q", out)
	}
	out, _, _ = d.cli("", "session", "ls", "clis")
	if !strings.Contains(out, "work") || !strings.Contains(out, "/var") {
		t.Fatalf("session ls: %q", out)
	}
	_, errOut, code = d.cli("", "sh", "-s", "nope", "clis", "true")
	if code == 0 || !strings.Contains(errOut, "not found") {
		t.Fatalf("unknown session: %q %d", errOut, code)
	}
	out, _, code = d.cli("", "session", "rm", "clis", "work")
	if code != 0 || out != "work\n" {
		t.Fatalf("session rm: %q %d", out, code)
	}
}

// sseLines reads a raw SSE answer, for checking the wire format itself.
func sseLines(t *testing.T, d *testDaemon, path string, body string) []string {
	req, _ := http.NewRequest("POST", "http://nsbox"+path, strings.NewReader(body))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func TestSSEWireFormat(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "wire", Image: "busybox"})
	lines := sseLines(t, d, "/v1/sandboxes/wire/exec", `{"command":"printf '\\377'"}`)
	want := []string{"event: start", "event: stdout", "event: exit"}
	var events []string
	for _, l := range lines {
		if strings.HasPrefix(l, "event: ") {
			events = append(events, l)
		}
	}
	if strings.Join(events, ",") != strings.Join(want, ",") || !strings.Contains(strings.Join(lines, "\n"), `"data":"/w==","encoding":"base64"`) {
		t.Fatalf("SSE: %q", lines)
	}
}

// waitForFile waits until path exists in the sandbox.
func waitForFile(t *testing.T, d *testDaemon, id, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := d.client.StatFile(context.Background(), id, path)
		if err == nil {
			return
		}
		if !api.IsCode(err, api.CodeNotFound) || time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readTerminalUntil reads a terminal until its output contains want.
func readTerminalUntil(t *testing.T, term interface {
	Read() ([]byte, *api.TerminalEvent, error)
}, want string) string {
	t.Helper()
	var seen strings.Builder
	deadline := time.AfterFunc(10*time.Second, func() { t.Errorf("terminal never showed %q; saw %q", want, seen.String()) })
	defer deadline.Stop()
	for !strings.Contains(seen.String(), want) {
		out, notice, err := term.Read()
		if err != nil {
			t.Fatalf("read terminal (waiting for %q, saw %q): %v", want, seen.String(), err)
		}
		if notice != nil && notice.Type == api.TerminalEnded {
			return seen.String() + "\n[ended]"
		}
		seen.Write(out)
	}
	return seen.String()
}

func TestTerminalSharesTheSession(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "tty"})
	d.sh("tty", "cd /tmp; export FROM_API=api")
	ctx := context.Background()
	ws := client.New(d.socket) // the spec-checking test client carries no WebSockets
	first, err := ws.AttachTerminal(ctx, "tty", "default", client.TerminalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := first.Resize(120, 33); err != nil {
		t.Fatal(err)
	}
	if err := first.Input([]byte("echo \"[$FROM_API $(pwd) $(stty size)]\"; export FROM_TTY=tty; cd /var\r")); err != nil {
		t.Fatal(err)
	}
	readTerminalUntil(t, first, "[api /tmp 33 120]")
	// Structured execs see what the terminal did, and their output stays out of the terminal.
	deadline := time.Now().Add(5 * time.Second)
	for d.sh("tty", "pwd") != "/var\n" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := d.sh("tty", "echo $FROM_TTY; pwd; echo structured-only"); got != "tty\n/var\nstructured-only\n" {
		t.Fatalf("exec after terminal input: %q", got)
	}
	// A second client gets the scrollback first, then shares the live terminal.
	second, err := ws.AttachTerminal(ctx, "tty", "default", client.TerminalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if replay := readTerminalUntil(t, second, "[api /tmp 33 120]"); strings.Contains(replay, "structured-only") {
		t.Fatalf("a structured command's output reached the terminal: %q", replay)
	}
	if err := second.Input([]byte("echo both-see-$((40+2))\r")); err != nil {
		t.Fatal(err)
	}
	readTerminalUntil(t, first, "both-see-42")
	readTerminalUntil(t, second, "both-see-42")
	// While a program holds the terminal, a structured command without a timeout is refused at
	// once (terminal_busy); one with a timeout waits for the prompt within it.
	if err := first.Input([]byte("sh -c 'touch /tmp/t1; exec sleep 2'; echo slept\r")); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, d, "tty", "/tmp/t1")
	_, err = d.client.Exec(ctx, "tty", api.ExecRequest{Command: "echo now"})
	if !api.IsCode(err, api.CodeTerminalBusy) || !strings.Contains(err.Error(), "interactive program") {
		t.Fatalf("exec without a timeout while the terminal runs sleep: %v; want terminal_busy", err)
	}
	res, err := d.client.Exec(ctx, "tty", api.ExecRequest{Command: "echo after-sleep", TimeoutMs: 20000})
	if err != nil || string(res.Stdout) != "after-sleep\n" {
		t.Fatalf("exec with a timeout while the terminal ran sleep: %+v %v", res, err)
	}
	readTerminalUntil(t, first, "slept")
	// The shell keeps the terminal after the program, running a long builtin loop in cooked
	// mode: the command's keys are typed before readline reads again, and the prompt that
	// follows the terminal's command line does not end the command.
	if err := first.Input([]byte("sh -c 'touch /tmp/t3; exec sleep 0.2'; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo looped\r")); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, d, "tty", "/tmp/t3")
	res, err = d.client.Exec(ctx, "tty", api.ExecRequest{Command: "echo after-loop", TimeoutMs: 30000})
	if err != nil || string(res.Stdout) != "after-loop\n" || res.ExitCode != 0 {
		t.Fatalf("exec typed while the shell ran a builtin loop: %+v %v", res, err)
	}
	readTerminalUntil(t, first, "looped")
	// A program that outlives the timeout: terminal_busy when the timeout ends.
	if err := first.Input([]byte("sh -c 'touch /tmp/t2; exec sleep 60'\r")); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, d, "tty", "/tmp/t2")
	if _, err := d.client.Exec(ctx, "tty", api.ExecRequest{Command: "echo never", TimeoutMs: 300}); !api.IsCode(err, api.CodeTerminalBusy) {
		t.Fatalf("exec with a short timeout while the terminal runs sleep 60: %v; want terminal_busy", err)
	}
	if err := first.Input([]byte("\x03")); err != nil { // ^C ends the sleep
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for _, err := d.client.Exec(ctx, "tty", api.ExecRequest{Command: "true"}); api.IsCode(err, api.CodeTerminalBusy) && time.Now().Before(deadline); _, err = d.client.Exec(ctx, "tty", api.ExecRequest{Command: "true"}) {
		time.Sleep(50 * time.Millisecond)
	}
	// Ending the shell from the terminal ends the session for every client.
	if err := first.Input([]byte("exit\r")); err != nil {
		t.Fatal(err)
	}
	if got := readTerminalUntil(t, second, "[ended]"); !strings.HasSuffix(got, "[ended]") {
		t.Fatalf("second client after exit: %q", got)
	}
	// Errors: missing session, and sh sessions have no terminal.
	if _, err := ws.AttachTerminal(ctx, "tty", "nope", client.TerminalOptions{}); err == nil {
		t.Fatal("attached to a missing session")
	}
	d.create(api.CreateSandboxRequest{ID: "notty", Image: "busybox"})
	d.sh("notty", "true")
	if _, err := ws.AttachTerminal(ctx, "notty", "default", client.TerminalOptions{}); err == nil {
		t.Fatal("attached to an sh session")
	}
}

// TestExecTimeoutCoversTheQueue: a command's timeout counts the time it waits behind the
// session's running command; a command whose whole timeout went there never runs and answers
// timedOut with exit code 124, and the command ahead of it is untouched.
func TestExecTimeoutCoversTheQueue(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			ctx := context.Background()
			d.create(api.CreateSandboxRequest{ID: "q", Image: sh.image})
			first := make(chan *api.ExecResult, 1)
			go func() {
				res, err := d.client.Exec(ctx, "q", api.ExecRequest{Command: "touch /tmp/first-started; sleep 2; echo first"})
				if err != nil {
					t.Errorf("first command: %v", err)
				}
				first <- res
			}()
			waitForFile(t, d, "q", "/tmp/first-started")
			res, err := d.client.Exec(ctx, "q", api.ExecRequest{Command: "touch /tmp/second-ran", TimeoutMs: 300})
			if err != nil || !res.TimedOut || res.ExitCode != 124 {
				t.Fatalf("a command queued past its timeout: %+v %v; want timedOut, exit 124", res, err)
			}
			if res := <-first; res == nil || string(res.Stdout) != "first\n" || res.ExitCode != 0 {
				t.Fatalf("the command ahead: %+v", res)
			}
			if got := d.sh("q", "test -e /tmp/second-ran && echo ran || echo never-ran"); got != "never-ran\n" {
				t.Fatalf("the timed-out queued command ran: %q", got)
			}
		})
	}
}

// TestDefaultSessionKilledWhileIdleIsReset: the default session's shell killed while idle
// (from another session) is started again on the next use, and that use's result says the
// session was reset, since its state is gone. It used to come back silently.
func TestDefaultSessionKilledWhileIdleIsReset(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			ctx := context.Background()
			d.create(api.CreateSandboxRequest{ID: "dk", Image: sh.image})
			shell := strings.TrimSpace(d.sh("dk", "export KEEP=1; echo $$"))
			if _, err := d.client.CreateSession(ctx, "dk", api.CreateSessionRequest{ID: "other"}); err != nil {
				t.Fatal(err)
			}
			if res := d.exec("dk", api.ExecRequest{SessionID: "other", Command: "kill -9 " + shell}); res.ExitCode != 0 {
				t.Fatalf("kill the default shell: %+v", res)
			}
			// Listing sessions starts the default session again once its shell is gone.
			for replaced := false; !replaced; {
				list, err := d.client.ListSessions(ctx, "dk")
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range list {
					replaced = replaced || (s.ID == "default" && s.PID != 0 && fmt.Sprint(s.PID) != shell)
				}
				time.Sleep(10 * time.Millisecond)
			}
			res := d.exec("dk", api.ExecRequest{Command: "echo ${KEEP:-unset}"})
			if !res.SessionReset || res.Stdout != "unset\n" || res.SessionEnded || res.ExitCode != 0 {
				t.Fatalf("first command after the kill: %+v; want sessionReset and the state gone", res)
			}
			if res := d.exec("dk", api.ExecRequest{Command: "true"}); res.SessionReset {
				t.Fatalf("second command after the kill: %+v; the reset was reported already", res)
			}
		})
	}
}

// TestSessionExecWithFullAgentTmpfs: with the agent's tmpfs (/run/nsbox inside, writable by
// the sandbox's root) full, the next session exec still runs, in the room the agent reserved
// there (so the sandbox's user can free the space); once that is used up too, an exec answers
// 507 insufficient_storage saying where, and the session keeps its shell and state for when
// there is room again. It used to answer 500, and a bash session was killed.
func TestSessionExecWithFullAgentTmpfs(t *testing.T) {
	for _, sh := range shells {
		t.Run(sh.name, func(t *testing.T) {
			d := startDaemon(t)
			ctx := context.Background()
			d.create(api.CreateSandboxRequest{ID: "fu", Image: sh.image})
			shell := d.sh("fu", "export KEEP=1; echo $$")
			// Filled by a process, which writes no control files of its own: a large file, then
			// small ones for the last pages.
			fillCmd := "head -c 100m /dev/zero > /run/nsbox/fill; i=0; while echo x > /run/nsbox/fill$i; do i=$((i+1)); done"
			fill := d.startProc("fu", api.StartProcessRequest{Command: fillCmd})
			d.waitProc("fu", fill.ID, api.WaitProcessRequest{})
			// The reserve holds a command with 100 KiB of stdin.
			res, err := d.client.Exec(ctx, "fu", api.ExecRequest{Command: "wc -c; echo $KEEP", Stdin: strings.Repeat("x", 100<<10)})
			if err != nil || strings.Join(strings.Fields(string(res.Stdout)), " ") != "102400 1" {
				t.Fatalf("the first exec with /run/nsbox full (in the reserve), 100 KiB of stdin: %+v, %v", res, err)
			}
			// The exec gave the reserve's room back when it ended: the next one runs too.
			if got := d.sh("fu", "echo $KEEP"); got != "1\n" {
				t.Fatalf("the second exec with /run/nsbox full: %q", got)
			}
			// A stdin larger than the reserve does not fit: 507, and the reserve is spent.
			_, err = d.client.Exec(ctx, "fu", api.ExecRequest{Command: "wc -c", Stdin: strings.Repeat("x", 2<<20)})
			if !api.IsCode(err, api.CodeInsufficientStorage) || !strings.Contains(err.Error(), "/run/nsbox") {
				t.Fatalf("exec with /run/nsbox full and a stdin larger than the reserve: %v; want insufficient_storage naming /run/nsbox", err)
			}
			// The sandbox takes the room the reserve left: now every exec is refused.
			d.waitProc("fu", d.startProc("fu", api.StartProcessRequest{Command: "i=0; while echo x > /run/nsbox/more$i; do i=$((i+1)); done"}).ID, api.WaitProcessRequest{})
			if _, err := d.client.Exec(ctx, "fu", api.ExecRequest{Command: "echo $KEEP"}); !api.IsCode(err, api.CodeInsufficientStorage) {
				t.Fatalf("exec with /run/nsbox full and the reserve spent: %v; want insufficient_storage", err)
			}
			if sh.name == "bash" {
				// Two pages free: room for the command and run files, not for the file the key
				// binding sources. The shell used to be killed when that one failed.
				free2 := "s=$(stat -c %s /run/nsbox/fill); truncate -s $(( (s + 4095) / 4096 * 4096 - 8192 )) /run/nsbox/fill"
				d.waitProc("fu", d.startProc("fu", api.StartProcessRequest{Command: free2}).ID, api.WaitProcessRequest{})
				if _, err := d.client.Exec(ctx, "fu", api.ExecRequest{Command: "echo $KEEP"}); !api.IsCode(err, api.CodeInsufficientStorage) {
					t.Fatalf("exec with two pages free in /run/nsbox: %v; want insufficient_storage", err)
				}
			}
			p := d.startProc("fu", api.StartProcessRequest{Command: "rm /run/nsbox/fill* /run/nsbox/more*"})
			if res := d.waitProc("fu", p.ID, api.WaitProcessRequest{}); res.Process.ExitCode != 0 {
				t.Fatalf("rm the filler: %+v", res.Process)
			}
			if got := d.sh("fu", "echo $KEEP $$"); got != "1 "+shell {
				t.Fatalf("after freeing /run/nsbox: %q; want the same shell %q with its state", got, shell)
			}
			// The reserve is held again: filled once more, the next exec runs.
			d.waitProc("fu", d.startProc("fu", api.StartProcessRequest{Command: fillCmd}).ID, api.WaitProcessRequest{})
			if got := d.sh("fu", "rm /run/nsbox/fill*; echo freed"); got != "freed\n" {
				t.Fatalf("an exec in the reserve taken back: %q", got)
			}
		})
	}
}
