package main

import (
	"context"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestBadCwdIsInvalidArgument: a session, process or code context asked to start in a directory
// that does not exist, or in a file, answers 400 invalid_argument that says so of the cwd (the
// kernel's error names the program: "fork/exec /bin/sh: no such file or directory"), also
// through the CLI; nothing is left behind. An exec's per-command cwd is the shell's cd, which
// fails that command.
func TestBadCwdIsInvalidArgument(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "cwd", Image: "busybox"})
	bad := map[string]string{"/nonexistent": `cwd "/nonexistent" does not exist`, "/etc/passwd": `cwd "/etc/passwd" is not a directory`}
	for cwd, want := range bad {
		for _, c := range []struct {
			what string
			call func() error
		}{
			{"session", func() error {
				_, err := d.client.CreateSession(ctx, "cwd", api.CreateSessionRequest{ID: "z", Cwd: cwd})
				return err
			}},
			{"process", func() error {
				_, err := d.client.StartProcess(ctx, "cwd", api.StartProcessRequest{ID: "p", Argv: []string{"ls"}, Cwd: cwd})
				return err
			}},
			{"context", func() error {
				_, err := d.client.CreateCodeContext(ctx, "cwd", api.CreateCodeContextRequest{Language: api.LanguagePython, Cwd: cwd})
				return err
			}},
		} {
			if err := c.call(); !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s in %s: %v, want invalid_argument %q", c.what, cwd, err, want)
			}
		}
		for _, args := range [][]string{{"start", "--cwd", cwd, "cwd", "--", "ls"}, {"session", "create", "--id", "z", "--cwd", cwd, "cwd"}} {
			if out, errOut, code := d.cli("", args...); code == 0 || !strings.Contains(errOut, want) || strings.Contains(errOut, "fork/exec") {
				t.Errorf("nsbox %v: %d %q %q, want a failure that says %q", args, code, out, errOut, want)
			}
		}
	}
	d.expectError("GET", "/v1/sandboxes/cwd/sessions/z", nil, 404, api.CodeNotFound)
	d.expectError("GET", "/v1/sandboxes/cwd/processes/p", nil, 404, api.CodeNotFound)
	// An exec's cwd is entered by the session's shell: the command fails, the session goes on.
	res := d.exec("cwd", api.ExecRequest{Command: "echo ran", Cwd: "/nonexistent"})
	if stdout, stderr, _ := res.Output(); res.ExitCode == 0 || string(stdout) != "" || !strings.Contains(string(stderr), "/nonexistent") {
		t.Errorf("exec in a missing cwd: exit %d, stdout %q, stderr %q", res.ExitCode, stdout, stderr)
	}
	if out := d.sh("cwd", "pwd"); out != "/workspace\n" {
		t.Errorf("after the exec: pwd %q", out)
	}
}
