package agent

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// The agent's exec runs real processes; the test binary acts as their parent and reaper.
func newTestAgent(t *testing.T) *Agent {
	t.Helper()
	a := &Agent{procs: newProcTable()}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ticker.C:
				a.procs.reap()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return a
}

func TestExecKeepsOutputOfFastCommands(t *testing.T) {
	a := newTestAgent(t)
	// Output written just before exit must never be lost to the race between the exit and the
	// pipe readers (the raw drain after the exit is what guarantees it).
	for i := 0; i < 200; i++ {
		res, err := a.exec(context.Background(), &api.ExecRequest{Argv: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stdout != "out\n" || res.Stderr != "err\n" || res.ExitCode != 3 {
			t.Fatalf("run %d: %+v", i, res)
		}
	}
}

func TestExecBackgroundWriterDoesNotHoldResult(t *testing.T) {
	a := newTestAgent(t)
	start := time.Now()
	res, err := a.exec(context.Background(), &api.ExecRequest{Command: "(sleep 2; echo late) & echo now"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "now\n" || time.Since(start) > time.Second {
		t.Fatalf("got %+v after %v", res, time.Since(start))
	}
}

func TestExecLargeOutputAndStdin(t *testing.T) {
	a := newTestAgent(t)
	in := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	res, err := a.exec(context.Background(), &api.ExecRequest{Argv: []string{"cat"}, Stdin: string(in)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != string(in) {
		t.Fatalf("4 MiB through cat: got %d bytes", len(res.Stdout))
	}
}

func TestExecTimeoutKillsTheGroup(t *testing.T) {
	a := newTestAgent(t)
	dir := t.TempDir()
	res, err := a.exec(context.Background(), &api.ExecRequest{
		Command:   "(sleep 1; touch " + dir + "/survivor) & sleep 30",
		TimeoutMs: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.ExitCode != 124 {
		t.Fatalf("got %+v", res)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(dir + "/survivor"); err == nil {
		t.Fatalf("a process of the timed-out command's group survived")
	}
}

func TestExecCancelKillsCommand(t *testing.T) {
	a := newTestAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := a.exec(ctx, &api.ExecRequest{Argv: []string{"sleep", "30"}})
	if err != nil || res.ExitCode != 137 || time.Since(start) > 5*time.Second {
		t.Fatalf("got %+v, %v after %v", res, err, time.Since(start))
	}
}

func TestExecErrors(t *testing.T) {
	a := newTestAgent(t)
	for _, tc := range []struct {
		req  api.ExecRequest
		code string
	}{
		{api.ExecRequest{}, api.CodeInvalidArgument},
		{api.ExecRequest{Argv: []string{""}}, api.CodeInvalidArgument},
		{api.ExecRequest{Argv: []string{"true"}, Command: "true"}, api.CodeInvalidArgument},
		{api.ExecRequest{Argv: []string{"true"}, Cwd: "/nonexistent-dir"}, api.CodeInvalidArgument},
		{api.ExecRequest{Argv: []string{"true"}, Stdin: "%%%", StdinEncoding: "base64"}, api.CodeInvalidArgument},
		{api.ExecRequest{Argv: []string{"true"}, StdinEncoding: "rot13"}, api.CodeInvalidArgument},
	} {
		if _, err := a.exec(context.Background(), &tc.req); !api.IsCode(err, tc.code) {
			t.Errorf("%+v: got %v, want %s", tc.req, err, tc.code)
		}
	}
	res, err := a.exec(context.Background(), &api.ExecRequest{Argv: []string{"definitely-not-a-program"}})
	if err != nil || res.ExitCode != 127 || !strings.Contains(res.Stderr, "not found") {
		t.Errorf("missing program: %+v %v", res, err)
	}
}

func TestMergeEnvOverrides(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2", "PATH=/bin"}, map[string]string{"B": "3", "C": "4"})
	want := map[string]bool{"A=1": true, "B=3": true, "C=4": true, "PATH=/bin": true}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for _, kv := range got {
		if !want[kv] {
			t.Fatalf("unexpected %q in %v", kv, got)
		}
	}
	if envValue(got, "PATH") != "/bin" || envValue(got, "NOPE") != "" {
		t.Fatalf("envValue on %v", got)
	}
}

func TestLookPath(t *testing.T) {
	if p, err := lookPath("sh", "/nonexistent:/bin"); err != nil || p != "/bin/sh" {
		t.Fatalf("sh: %q %v", p, err)
	}
	if _, err := lookPath("sh", "/nonexistent"); err != errNotFound {
		t.Fatalf("missing: %v", err)
	}
	if p, _ := lookPath("./x/y", ""); p != "./x/y" {
		t.Fatalf("path with a slash is used as it is: %q", p)
	}
}
