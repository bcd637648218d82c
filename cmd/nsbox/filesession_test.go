package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// TestFilesRelativeToSession: with sessionId (or session), relative paths start at the session shell's
// current directory; without it, at the sandbox's.
func TestFilesRelativeToSession(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "rel", Image: "host"})
	d.createSession("rel", "s", api.CreateSessionRequest{})
	if res := d.exec("rel", api.ExecRequest{SessionID: "s", Command: "mkdir -p /workspace/sub/deeper && cd /workspace/sub"}); res.ExitCode != 0 {
		t.Fatalf("cd: %+v", res)
	}
	if s, err := d.client.GetSession(ctx, "rel", "s"); err != nil || s.Cwd != "/workspace/sub" || s.UID != 0 || s.GID != 0 {
		t.Fatalf("session: %+v %v", s, err)
	}
	inS := d.client.InSession("s")
	if _, err := inS.WriteFile(ctx, "rel", "a.txt", strings.NewReader("in sub"), client.WriteFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.WriteFile(ctx, "rel", "a.txt", strings.NewReader("in workspace"), client.WriteFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if out := d.sh("rel", "cat /workspace/sub/a.txt; echo; cat /workspace/a.txt"); out != "in sub\nin workspace" {
		t.Fatalf("where the writes landed: %q", out)
	}
	// Every operation resolves against the session: read, stat, list, mkdir, move, remove.
	if got := string(readAll(t, inS, "rel", "a.txt")); got != "in sub" {
		t.Fatalf("read: %q", got)
	}
	if info, err := inS.StatFile(ctx, "rel", "../a.txt"); err != nil || info.Path != "/workspace/a.txt" {
		t.Fatalf("stat ../a.txt: %+v %v", info, err)
	}
	if _, err := inS.Mkdir(ctx, "rel", "made", client.MkdirOptions{Parents: false}); err != nil {
		t.Fatal(err)
	}
	if info, err := inS.MoveFile(ctx, "rel", "a.txt", "made/b.txt", client.MoveOptions{}); err != nil || info.Path != "/workspace/sub/made/b.txt" {
		t.Fatalf("move: %+v %v", info, err)
	}
	list, err := inS.ListFiles(ctx, "rel", ".", client.ListOptions{Depth: 2, Hidden: false})
	var listed []string
	for _, f := range list {
		listed = append(listed, f.Path)
	}
	if err != nil || strings.Join(listed, " ") != "/workspace/sub/deeper /workspace/sub/made /workspace/sub/made/b.txt" {
		t.Fatalf("list .: %v %v", listed, err)
	}
	// The session's directory is read when the request comes: after another cd, it follows.
	d.exec("rel", api.ExecRequest{SessionID: "s", Command: "cd deeper"})
	if _, err := inS.WriteFile(ctx, "rel", "c.txt", strings.NewReader("c"), client.WriteFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := inS.RemoveFile(ctx, "rel", "../made", client.RemoveFileOptions{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	if out := d.sh("rel", "cd /workspace/sub && find . | sort"); out != ".\n./deeper\n./deeper/c.txt\n" {
		t.Fatalf("after cd deeper: %q", out)
	}
	// The CLI takes --session.
	if out, errOut, code := d.cli("", "files", "cat", "--session", "s", "rel", "c.txt"); code != 0 || out != "c" {
		t.Fatalf("nsbox files cat --session: %d %q %q", code, out, errOut)
	}
	// The query parameter session is sessionId's other name (issue 14 spells it so).
	if status, body := d.call("GET", filesURL("rel", "stat", "path=c.txt", "session=s"), nil); status != 200 || !strings.Contains(string(body), `"/workspace/sub/deeper/c.txt"`) {
		t.Fatalf("stat c.txt with ?session=s: %d %s", status, body)
	}
	d.expectError("GET", filesURL("rel", "stat", "path=c.txt", "session=s", "sessionId=default"), nil, 400, api.CodeInvalidArgument)
	// Unknown and ended sessions.
	d.expectError("GET", filesURL("rel", "stat", "path=a.txt", "sessionId=nope"), nil, 404, api.CodeNotFound)
	d.expectError("POST", filesURL("rel", "mkdir", "sessionId=nope"), map[string]any{"path": "x"}, 404, api.CodeNotFound)
	d.createSession("rel", "gone", api.CreateSessionRequest{})
	if res := d.exec("rel", api.ExecRequest{SessionID: "gone", Command: "exit 3"}); !res.SessionEnded {
		t.Fatalf("exit: %+v", res)
	}
	d.expectError("PUT", filesURL("rel", "", "path=x", "sessionId=gone"), "data", 409, api.CodeConflict)
	// A working directory removed under the session.
	d.exec("rel", api.ExecRequest{SessionID: "s", Command: "mkdir /tmp/doomed && cd /tmp/doomed && rmdir /tmp/doomed"})
	if e := d.expectError("GET", filesURL("rel", "stat", "path=x", "sessionId=s"), nil, 409, api.CodeConflict); !strings.Contains(e.Message, "was removed") {
		t.Fatalf("removed cwd: %+v", e)
	}
}

func readAll(t *testing.T, c *client.Client, id, path string) []byte {
	t.Helper()
	rd, err := c.ReadFile(context.Background(), id, path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	defer rd.Close()
	data, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return data
}

// TestFilesOwnedBySessionUser: what the file API creates for a session of a non-root user
// belongs to that user, who can then change it from the session.
func TestFilesOwnedBySessionUser(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "own", Image: "busybox"})
	s := d.createSession("own", "nob", api.CreateSessionRequest{User: "nobody", Cwd: "/tmp"})
	if s.UID != 65534 || s.GID != 65534 || s.User != "nobody" || s.Cwd != "/tmp" { // the cwd of another user's shell is read too
		t.Fatalf("session: %+v", s)
	}
	nob := d.client.InSession("nob")
	info, err := nob.WriteFile(ctx, "own", "dir/f.txt", strings.NewReader("x"), client.WriteFileOptions{MakeParents: true, Mode: 0o600})
	if err != nil || info.UID != 65534 || info.GID != 65534 || info.Owner != "nobody" || info.Mode != "0600" || info.Path != "/tmp/dir/f.txt" {
		t.Fatalf("write: %+v %v", info, err)
	}
	if dir, err := nob.StatFile(ctx, "own", "dir"); err != nil || dir.UID != 65534 {
		t.Fatalf("parent made by the write: %+v %v", dir, err)
	}
	if dir, err := nob.Mkdir(ctx, "own", "/workspace/nd", client.MkdirOptions{Parents: false, Mode: 0o750}); err != nil || dir.UID != 65534 || dir.GID != 65534 || dir.Mode != "0750" {
		t.Fatalf("mkdir: %+v %v", dir, err)
	}
	// The session's user can write what was created for it (a root-owned 0600 file it could not).
	if res := d.exec("own", api.ExecRequest{SessionID: "nob", Command: "echo more >> dir/f.txt && touch /workspace/nd/g && id -u"}); res.ExitCode != 0 || res.Stdout != "65534\n" {
		t.Fatalf("as nobody: %+v", res)
	}
	// An explicit owner wins; without a session, root.
	status, body := d.call("PUT", filesURL("own", "", "path=/tmp/e", "uid=5", "gid=6", "sessionId=nob"), "e")
	if e := decodeInfo(t, body); status != 201 || e.UID != 5 || e.GID != 6 {
		t.Fatalf("explicit owner: %d %s", status, body)
	}
	if r, err := d.client.WriteFile(ctx, "own", "/tmp/r", strings.NewReader("r"), client.WriteFileOptions{}); err != nil || r.UID != 0 || r.Owner != "root" {
		t.Fatalf("no session: %+v %v", r, err)
	}
	if r, err := d.client.InSession("default").Mkdir(ctx, "own", "/tmp/rd", client.MkdirOptions{Parents: false}); err != nil || r.UID != 0 {
		t.Fatalf("root session: %+v %v", r, err)
	}
	// A move keeps the owner, as mv does.
	if m, err := nob.MoveFile(ctx, "own", "/tmp/r", "r2", client.MoveOptions{}); err != nil || m.UID != 0 || m.Path != "/tmp/r2" {
		t.Fatalf("move: %+v %v", m, err)
	}
}

// TestFileWriteKeepsOwner: a write that replaces a file (an IDE saving a user's file) keeps its
// owner as it keeps its mode, so the user can still change it; an explicit uid/gid wins, and a
// new file is the writer's.
func TestFileWriteKeepsOwner(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "keep", Image: "busybox"})
	d.createSession("keep", "dev", api.CreateSessionRequest{User: "nobody", Cwd: "/tmp"})
	if res := d.exec("keep", api.ExecRequest{SessionID: "dev", Command: "echo mine > /tmp/devfile && chmod 600 devfile"}); res.ExitCode != 0 {
		t.Fatalf("as nobody: %+v", res)
	}
	for _, c := range []struct {
		what string
		cl   *client.Client
	}{{"no session", d.client}, {"root's session", d.client.InSession("default")}} {
		info, err := c.cl.WriteFile(ctx, "keep", "/tmp/devfile", strings.NewReader("edited\n"), client.WriteFileOptions{})
		if err != nil || info.UID != 65534 || info.GID != 65534 || info.Owner != "nobody" || info.Mode != "0600" {
			t.Fatalf("%s replaced nobody's file: %+v %v", c.what, info, err)
		}
	}
	if res := d.exec("keep", api.ExecRequest{SessionID: "dev", Command: "echo more >> devfile && cat devfile"}); res.ExitCode != 0 || res.Stdout != "edited\nmore\n" {
		t.Fatalf("the owner appends: %+v", res)
	}
	status, body := d.call("PUT", filesURL("keep", "", "path=/tmp/devfile", "uid=5"), "x")
	if e := decodeInfo(t, body); status != 200 || e.UID != 5 || e.GID != 65534 || e.Mode != "0600" {
		t.Fatalf("explicit uid: %d %s", status, body)
	}
	if n, err := d.client.WriteFile(ctx, "keep", "/tmp/new", strings.NewReader("n"), client.WriteFileOptions{}); err != nil || n.UID != 0 || n.Mode != "0644" {
		t.Fatalf("a new file: %+v %v", n, err)
	}
}
