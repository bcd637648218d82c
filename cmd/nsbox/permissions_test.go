package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// doneWhenRules are issue 16's "Done when" rules.
var doneWhenRules = []api.PermissionRule{
	{Pattern: "**/.env", Level: api.PermissionNone},
	{Pattern: "docs/**", Level: api.PermissionRead},
	{Pattern: "secrets/**", Level: api.PermissionView},
	{Pattern: "src/**", Level: api.PermissionWrite},
	{Pattern: "**", Level: api.PermissionRead},
}

// permWorkspace makes a host workspace with something at every level.
func permWorkspace(t *testing.T) string {
	t.Helper()
	ws := t.TempDir()
	for name, content := range map[string]string{
		".env": "TOP=secret\n", "README.md": "readme\n", "docs/guide.md": "guide\n", "docs/.env": "DOCS=secret\n",
		"secrets/key.pem": "PRIVATE\n", "src/main.go": "package main\n", "src/app/.env": "APP=secret\n",
	} {
		p := filepath.Join(ws, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ws
}

// shOut runs command in the sandbox and returns its exit code and combined output.
func shOut(d *testDaemon, id, command string) (int, string) {
	d.t.Helper()
	res := d.exec(id, api.ExecRequest{Command: command})
	stdout, stderr, _ := res.Output()
	return res.ExitCode, string(stdout) + string(stderr)
}

// TestPermissions: the sandbox (**/.env none, docs read, secrets view, src write,
// default read) behaves as its levels say for shells, processes and the file API, and no
// bypass gets through: symlinks, hard links, renames (of files and of trees), /proc/self/fd,
// mounts, O_TMPFILE.
func TestPermissions(t *testing.T) {
	d := startDaemon(t)
	ws := permWorkspace(t)
	sb := d.create(api.CreateSandboxRequest{ID: "perm", Workspace: &api.Workspace{HostPath: ws}, Permissions: doneWhenRules})
	if len(sb.Permissions) != len(doneWhenRules) {
		t.Fatalf("create answered permissions %+v", sb.Permissions)
	}
	must := func(command, want string) {
		t.Helper()
		if code, out := shOut(d, "perm", "cd /workspace && "+command); code != 0 || !strings.Contains(out, want) {
			t.Errorf("%q: exit %d, output %q; want success with %q", command, code, out, want)
		}
	}
	fails := func(command, want string) {
		t.Helper()
		if code, out := shOut(d, "perm", "cd /workspace && "+command); code == 0 || !strings.Contains(out, want) {
			t.Errorf("%q: exit %d, output %q; want a failure saying %q", command, code, out, want)
		}
	}
	const denied, missing = "Permission denied", "No such file or directory"

	t.Run("levels", func(t *testing.T) {
		must("ls -A . src src/app docs secrets | tr '\\n' ' '", "README.md docs secrets src")
		if _, out := shOut(d, "perm", "find /workspace; ls -A /workspace/src/app /workspace/docs"); strings.Contains(out, ".env") {
			t.Errorf("a none file is listed: %q", out)
		}
		fails("cat .env", missing)
		fails("cat src/app/.env", missing)
		fails("stat docs/.env", missing)
		must("stat -c %s secrets/key.pem", "8")
		fails("cat secrets/key.pem", denied)
		fails("head -c1 secrets/key.pem", denied)
		must("cat docs/guide.md README.md", "guide")
		fails("echo x >> docs/guide.md", denied)
		fails("echo x > docs/new.md", denied)
		fails("rm README.md", denied)
		fails("chmod 600 docs/guide.md", denied)
		fails("mkdir docs/sub", denied)
		must("echo hi > src/new.go && cat src/new.go && mkdir -p src/pkg/x && rm -r src/pkg && echo ok", "ok")
		fails("touch src/.env", denied)
		fails("echo K=V > .env", denied)
		fails("mkdir src/x && touch src/x/.env", denied)
	})

	t.Run("many files", func(t *testing.T) {
		// Enough requests for the layer to collect garbage while serving (a finalizer once
		// closed its /dev/fuse under it).
		must("mkdir -p src/many && cd src/many && for i in $(seq 1 2000); do echo $i > f$i; done && echo made", "made")
		must("find /workspace/src/many -type f | wc -l && tar -cf - -C /workspace/src many | wc -c >/dev/null && cat /workspace/src/many/* | wc -l", "2000\n2000\n")
		must("rm -r src/many && echo gone", "gone")
	})

	t.Run("processes", func(t *testing.T) {
		ctx := context.Background()
		p, err := d.client.StartProcess(ctx, "perm", api.StartProcessRequest{Command: "cat /workspace/secrets/key.pem /workspace/.env; cat /workspace/docs/guide.md", Cwd: "/workspace"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.client.WaitProcess(ctx, "perm", p.ID, api.WaitProcessRequest{}); err != nil {
			t.Fatal(err)
		}
		logs, err := d.client.ProcessLogs(ctx, "perm", p.ID, client.LogsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, c := range logs.Chunks {
			out += c.Data
		}
		if !strings.Contains(out, denied) || !strings.Contains(out, missing) || !strings.Contains(out, "guide") || strings.Contains(out, "PRIVATE") || strings.Contains(out, "=secret") {
			t.Errorf("process output %q", out)
		}
	})

	t.Run("file API", func(t *testing.T) {
		checkFileCalls(t, d, "perm", []fileCall{
			{"GET", "/workspace/.env", http.StatusNotFound},
			{"GET", "/workspace/src/app/.env", http.StatusNotFound},
			{"GET", "/workspace/secrets/key.pem", http.StatusForbidden},
			{"GET", "/workspace/docs/guide.md", http.StatusOK},
			{"PUT", "/workspace/docs/guide.md", http.StatusForbidden},
			{"PUT", "/workspace/src/.env", http.StatusForbidden},
			{"PUT", "/workspace/src/api.go", http.StatusCreated},
			{"DELETE", "/workspace/README.md", http.StatusForbidden},
		})
		// Symlinks the file API follows resolve in the sandbox's view, rules applied: with
		// "..", absolute, and climbing above the sandbox's root (which ends at its root).
		must("ln -s ../docs/guide.md src/up && ln -s ../secrets/key.pem src/upk && ln -s ../.env src/upe && mkdir -p src/d && ln -s ../../docs src/d/updocs && ln -s ../../../../../../../tmp/marker src/host && ln -s /workspace/../workspace/docs/../secrets src/abs && echo made", "made")
		inSandbox := d.sh("perm", "echo in-sandbox > /tmp/marker && cat /tmp/marker")
		hostDir := t.TempDir() // a host file at a path the sandbox does not have
		if err := os.WriteFile(filepath.Join(hostDir, "marker"), []byte("HOSTFILE"), 0o644); err != nil {
			t.Fatal(err)
		}
		must("ln -s ../../../../../../..'"+hostDir+"'/marker src/hostfile && echo made", "made")
		for _, c := range []struct {
			path   string
			status int
			want   string
		}{
			{"/workspace/src/up", http.StatusOK, "guide"},
			{"/workspace/src/d/updocs/guide.md", http.StatusOK, "guide"},
			{"/workspace/src/upk", http.StatusForbidden, ""},
			{"/workspace/src/abs/key.pem", http.StatusForbidden, ""},
			{"/workspace/src/upe", http.StatusNotFound, ""},
			{"/workspace/src/d/updocs/.env", http.StatusNotFound, ""},
			{"/workspace/src/host", http.StatusOK, inSandbox},
			{"/workspace/src/hostfile", http.StatusNotFound, ""},
		} {
			got, data := d.call("GET", "/v1/sandboxes/perm/files?path="+c.path, nil)
			if got != c.status || !strings.Contains(string(data), c.want) || strings.Contains(string(data), "PRIVATE") || strings.Contains(string(data), "secret") || strings.Contains(string(data), "HOSTFILE") {
				t.Errorf("GET %s: %d %q, want %d with %q", c.path, got, data, c.status, c.want)
			}
		}
		if got, data := d.call("GET", "/v1/sandboxes/perm/files/list?path=/workspace/src/d/updocs", nil); got != http.StatusOK || strings.Contains(string(data), ".env") || !strings.Contains(string(data), "guide.md") {
			t.Errorf("list through a .. symlink: %d %s", got, data)
		}
		if got, data := d.call("GET", "/v1/sandboxes/perm/files/list?path=/workspace/src&recursive=true", nil); got != http.StatusOK || strings.Contains(string(data), `"name":".env"`) {
			t.Errorf("list: %d %s", got, data)
		}
		stdout, stderr, code := d.cli("", "files", "cat", "perm", "/workspace/secrets/key.pem")
		if code == 0 || strings.Contains(stdout, "PRIVATE") {
			t.Errorf("nsbox files cat of a view file: exit %d, %q %q", code, stdout, stderr)
		}
	})

	t.Run("bypasses", func(t *testing.T) {
		// Symlinks resolve through the layer: into a hidden or view path they find it so.
		must("ln -s ../secrets/key.pem src/k && ln -s /workspace/.env src/e && ln -s ../docs/.env src/de && echo made", "made")
		fails("cat src/k", denied)
		fails("cat src/e", missing)
		fails("cat src/de", missing)
		// Hard links need write on both names.
		fails("ln secrets/key.pem src/key", denied)
		fails("ln docs/guide.md src/guide", denied)
		fails("ln src/main.go docs/main.go", denied)
		fails("ln src/main.go src/.env", denied)
		// Renames: out of, into and onto lower levels.
		fails("mv secrets/key.pem src/", denied)
		fails("mv docs/guide.md src/", denied)
		fails("mv src/main.go docs/", denied)
		fails("mv src/new.go src/.env", denied)
		fails("mv src secrets-src", denied)
		// /proc/self/fd: an O_PATH descriptor (no open) cannot be reopened for reading.
		fails("exec 3</workspace/secrets/key.pem", denied)
		fails("python3 -c \"import os; fd=os.open('/workspace/secrets/key.pem', os.O_PATH); print(open('/proc/self/fd/%d' % fd).read())\"", "PermissionError")
		// No mount can lift the layer: no CAP_SYS_ADMIN, and a user namespace does not own it.
		fails("umount /workspace", "")
		fails("umount -l /workspace", "")
		fails("mount --bind /workspace/src /workspace/docs", "")
		fails("unshare -Urm sh -c 'umount /workspace && cat /workspace/.env'", "")
		// Nothing the layer would do as the host's root: ioctls, xattrs outside user.*.
		fails("chattr +i src/main.go", "not supported")
		fails("python3 -c \"import os; os.setxattr('/workspace/src/main.go', 'trusted.x', b'1')\"", "PermissionError")
		must("python3 -c \"import os; os.setxattr('/workspace/src/main.go', 'user.x', b'1'); print(os.getxattr('/workspace/src/main.go', 'user.x'))\"", "b'1'")
		// O_TMPFILE in a read directory, then linked in: refused at the open.
		fails("python3 -c \"import os; os.open('/workspace/docs', os.O_TMPFILE|os.O_WRONLY, 0o600)\"", "PermissionError")
		// Reading through another session: sessions share the layer's rules.
		if _, err := d.client.CreateSession(context.Background(), "perm", api.CreateSessionRequest{ID: "other"}); err != nil {
			t.Fatal(err)
		}
		res := d.exec("perm", api.ExecRequest{SessionID: "other", Command: "cat /workspace/.env /workspace/secrets/key.pem"})
		if stdout, _, _ := res.Output(); res.ExitCode == 0 || strings.Contains(string(stdout), "=secret") || strings.Contains(string(stdout), "PRIVATE") {
			t.Errorf("another session read hidden content: %q", stdout)
		}
	})
	// The host's workspace kept its hidden files as they were (a copy-on-write workspace).
	if data, err := os.ReadFile(filepath.Join(ws, ".env")); err != nil || string(data) != "TOP=secret\n" {
		t.Errorf("host .env: %q %v", data, err)
	}

	t.Run("patch", func(t *testing.T) {
		sb, err := d.client.SetPermissions(context.Background(), "perm", []api.PermissionRule{
			{Pattern: "**", Level: api.PermissionWrite}, {Pattern: "docs/**", Level: api.PermissionNone},
		})
		if err != nil || len(sb.Permissions) != 2 {
			t.Fatalf("set permissions: %+v %v", sb, err)
		}
		must("cat .env secrets/key.pem && echo x > README.md && echo wrote", "wrote")
		fails("cat docs/guide.md", missing)
		if _, err := d.client.SetPermissions(context.Background(), "perm", []api.PermissionRule{{Pattern: "a", Level: "secret"}}); !isCode(err, api.CodeInvalidArgument) {
			t.Errorf("a bad level: %v", err)
		}
	})
}

// TestPermissionsRefused: rules that cannot be enforced, or are malformed, are refused with
// 400; a sandbox created without rules has no layer to change (409).
func TestPermissionsRefused(t *testing.T) {
	d := startDaemon(t)
	ws := t.TempDir()
	for _, c := range []struct {
		name string
		req  api.CreateSandboxRequest
		want string
	}{
		{"no workspace", api.CreateSandboxRequest{Permissions: doneWhenRules}, "need a workspace"},
		{"bad level", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: ws}, Permissions: []api.PermissionRule{{Pattern: "a", Level: "hidden"}}}, "level must be"},
		{"the whole root", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/*/secret", Level: "none"}}}, "whole root"},
		{"the whole root, **", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/opt/**", Level: "none"}}}, "whole root"},
		{"/proc", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/proc/1/**", Level: "none"}}}, "nsbox's own"},
		{"/run holds /run/nsbox", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/run/secret", Level: "none"}}}, "/run/nsbox"},
		{"/run/nsbox", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/run/nsbox/x", Level: "none"}}}, "nsbox's own"},
		{"/.nsbox", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/.nsbox/nsbox", Level: "none"}}}, "nsbox's own"},
		{"/dev", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/dev/shm/x", Level: "none"}}}, "nsbox's own"},
		{"/sys", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/sys/fs/**", Level: "none"}}}, "nsbox's own"},
		{"network files", api.CreateSandboxRequest{Permissions: []api.PermissionRule{{Pattern: "/etc/*", Level: "read"}}}, "/etc/hosts"},
		{"a bind mount", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: ws, Target: "/opt/data", ReadOnly: true}}, Permissions: []api.PermissionRule{{Pattern: "/opt/data/x", Level: "none"}}}, "bind mount"},
		{"twice", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: ws}, Permissions: []api.PermissionRule{{Pattern: "a", Level: "none"}, {Pattern: "/workspace/a", Level: "read"}}}, "twice"},
		{"dot dot", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: ws}, Permissions: []api.PermissionRule{{Pattern: "../x", Level: "none"}}}, "clean path"},
	} {
		if e := d.expectError("POST", "/v1/sandboxes", c.req, http.StatusBadRequest, api.CodeInvalidArgument); !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %q, want it to say %q", c.name, e.Message, c.want)
		}
	}
	d.create(api.CreateSandboxRequest{ID: "plain", Workspace: &api.Workspace{HostPath: ws}})
	d.expectError("PATCH", "/v1/sandboxes/plain/permissions", api.PermissionsRequest{Permissions: doneWhenRules}, http.StatusConflict, api.CodeConflict)
	_, stderr, code := d.cli("", "create", "--perm", "nolevel")
	if code != 2 || !strings.Contains(stderr, "PATTERN=LEVEL") {
		t.Errorf("create --perm nolevel: exit %d, %q", code, stderr)
	}
	// The CLI: create with --perm, print and replace the rules, a session with --perm.
	stdout, stderr, code := d.cli("", "create", "--id", "cli", "--workspace", ws, "--perm", "**=read", "--perm", "**/.env=none")
	if code != 0 || strings.TrimSpace(stdout) != "cli" {
		t.Fatalf("create --perm: exit %d, %q %q", code, stdout, stderr)
	}
	if stdout, stderr, code = d.cli("", "permissions", "cli"); code != 0 || stdout != "**=read\n**/.env=none\n" {
		t.Errorf("permissions cli: exit %d, %q %q", code, stdout, stderr)
	}
	if stdout, stderr, code = d.cli("", "permissions", "cli", "**=write"); code != 0 || stdout != "**=write\n" {
		t.Errorf("permissions cli **=write: exit %d, %q %q", code, stdout, stderr)
	}
	if _, stderr, code = d.cli("", "session", "create", "--id", "s", "--perm", "**=read", "cli"); code != 0 {
		t.Errorf("session create --perm: exit %d, %q", code, stderr)
	}
	if _, stderr, code = d.cli("", "session", "create", "--id", "w", "--perm", "**=write", "plain"); code == 0 || !strings.Contains(stderr, "without permissions") {
		t.Errorf("session create --perm on a sandbox without rules: exit %d, %q", code, stderr)
	}
}

// isCode reports whether err is an API error with code.
func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

// TestPermissionsSessions: a session created with narrower rules gets them for its shell and
// everything it starts (background, setsid), the other sessions keep the sandbox's; wider
// rules are refused; what would run outside the session's confinement (processes, code
// contexts, watches on its behalf) is refused; file calls on its behalf get its rules;
// hibernation keeps the session, its state and its confinement. A kill -9 of the daemon
// leaves the layer serving, and the restarted daemon changes its rules.
func TestPermissionsSessions(t *testing.T) {
	d := startDaemon(t)
	ws := permWorkspace(t)
	d.create(api.CreateSandboxRequest{ID: "sess", Workspace: &api.Workspace{HostPath: ws}, Permissions: doneWhenRules})
	narrow := []api.PermissionRule{{Pattern: "docs/**", Level: api.PermissionNone}, {Pattern: "src/**", Level: api.PermissionRead}}
	if _, err := d.client.CreateSession(context.Background(), "sess", api.CreateSessionRequest{ID: "narrow", Permissions: narrow}); err != nil {
		t.Fatal(err)
	}
	run := func(sid, command string) (int, string) {
		res := d.exec("sess", api.ExecRequest{SessionID: sid, Command: "cd /workspace && " + command})
		stdout, stderr, _ := res.Output()
		return res.ExitCode, string(stdout) + string(stderr)
	}
	for _, c := range []string{"cat docs/guide.md", "echo x >> src/main.go", "touch src/n.go", "(cat docs/guide.md) & wait $!", "setsid -w cat docs/guide.md", "sh -c 'cat docs/guide.md'"} {
		if code, out := run("narrow", c); code == 0 || strings.Contains(out, "guide\n") || !(strings.Contains(out, "No such file") || strings.Contains(out, "Permission denied")) {
			t.Errorf("narrow session: %q: exit %d, %q; want refused", c, code, out)
		}
	}
	if _, out := run("narrow", "ls -A"); strings.Contains(out, "docs") {
		t.Errorf("narrow session lists docs: %q", out)
	}
	if code, out := run("narrow", "cat src/main.go README.md"); code != 0 || !strings.Contains(out, "package main") {
		t.Errorf("narrow session cannot read what both allow: %d %q", code, out)
	}
	if code, out := run("", "cat docs/guide.md && echo x >> src/main.go && echo ok"); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("default session lost the sandbox's rules: %d %q", code, out)
	}
	// Wider than the sandbox, or on a sandbox without rules: 400.
	for _, rules := range [][]api.PermissionRule{{{Pattern: "docs/**", Level: "write"}}, {{Pattern: ".env", Level: "read"}}, {{Pattern: "**", Level: "write"}}} {
		d.expectError("POST", "/v1/sandboxes/sess/sessions", api.CreateSessionRequest{ID: "wide", Permissions: rules}, http.StatusBadRequest, api.CodeInvalidArgument)
	}
	d.expectError("POST", "/v1/sandboxes/sess/processes", api.StartProcessRequest{SessionID: "narrow", Command: "true"}, http.StatusConflict, api.CodeConflict)
	// File calls on the session's behalf get its rules, through symlinks too; the sandbox's
	// own calls keep the sandbox's.
	if code, out := run("", "ln -s /workspace/docs/guide.md src/to-guide && ln -s ../docs/guide.md src/up-guide && echo made"); code != 0 {
		t.Fatalf("make a symlink: %q", out)
	}
	for _, c := range []struct {
		method, path, sid string
		status            int
	}{
		{"GET", "/workspace/docs/guide.md", "narrow", http.StatusNotFound},
		{"GET", "/workspace/src/to-guide", "narrow", http.StatusNotFound},
		{"GET", "/workspace/src/up-guide", "narrow", http.StatusNotFound},
		{"GET", "/workspace/src/up-guide", "", http.StatusOK},
		{"GET", "/workspace/src/main.go", "narrow", http.StatusOK},
		{"GET", "/workspace/README.md", "narrow", http.StatusOK},
		{"PUT", "/workspace/src/new.go", "narrow", http.StatusForbidden},
		{"GET", "/workspace/files/watch", "narrow", http.StatusForbidden},
		{"GET", "/workspace/src/to-guide", "", http.StatusOK},
		{"PUT", "/workspace/src/new.go", "", http.StatusCreated},
	} {
		var body any
		if c.method == "PUT" {
			body = "content"
		}
		url := "/v1/sandboxes/sess/files?path=" + c.path + "&sessionId=" + c.sid
		if c.path == "/workspace/files/watch" {
			url = "/v1/sandboxes/sess/files/watch?path=/workspace&sessionId=" + c.sid
		}
		if got, data := d.call(c.method, url, body); got != c.status {
			t.Errorf("%s %s as %q: %d %s, want %d", c.method, c.path, c.sid, got, data, c.status)
		}
	}
	if got, data := d.call("GET", "/v1/sandboxes/sess/files/list?path=/workspace&sessionId=narrow", nil); got != http.StatusOK || strings.Contains(string(data), "docs") {
		t.Errorf("list as the narrow session: %d %s", got, data)
	}

	// Hibernation keeps the session, its state and its confinement.
	raw := func(sid, command string) (int, string) {
		res := d.exec("sess", api.ExecRequest{SessionID: sid, Command: command})
		stdout, stderr, _ := res.Output()
		return res.ExitCode, string(stdout) + string(stderr)
	}
	if code, out := raw("narrow", "cd /workspace/src && export KEPT=yes && echo ok"); code != 0 {
		t.Fatalf("narrow session: %q", out)
	}
	if got, data := d.call("POST", "/v1/sandboxes/sess/hibernate", struct{}{}); got != http.StatusOK {
		t.Fatalf("hibernate with a confined session: %d %s", got, data)
	}
	if code, out := raw("narrow", "echo $PWD $KEPT"); code != 0 || out != "/workspace/src yes\n" {
		t.Errorf("narrow session after resume: %d %q, want its directory and variable back", code, out)
	}
	for _, c := range []string{"cat ../docs/guide.md", "setsid -w cat /workspace/docs/guide.md", "echo x >> main.go", "ls -A /workspace | grep docs"} {
		if code, out := raw("narrow", c); code == 0 || strings.Contains(out, "guide\n") {
			t.Errorf("narrow session after resume: %q: exit %d, %q; want refused", c, code, out)
		}
	}
	if got, data := d.call("GET", "/v1/sandboxes/sess/files?path=/workspace/docs/guide.md&sessionId=narrow", nil); got != http.StatusNotFound {
		t.Errorf("file API for the narrow session after resume: %d %s", got, data)
	}
	if code, out := run("", "cat docs/guide.md"); code != 0 || !strings.Contains(out, "guide") {
		t.Errorf("the default session after resume: %d %q", code, out)
	}

	// The layer outlives a daemon killed with -9; the next daemon reaches it.
	d.kill9()
	d.start()
	if code, out := run("narrow", "cat docs/guide.md"); code == 0 {
		t.Errorf("after a daemon restart the narrow session reads docs: %q", out)
	}
	if _, err := d.client.SetPermissions(context.Background(), "sess", []api.PermissionRule{{Pattern: "**", Level: "write"}, {Pattern: "README.md", Level: "none"}}); err != nil {
		t.Fatalf("set permissions after a daemon restart: %v", err)
	}
	if code, out := run("", "cat README.md"); code == 0 {
		t.Errorf("README.md readable after it became none: %q", out)
	}
	// Without the session, hibernation keeps the sandbox's rules.
	if err := d.client.DeleteSession(context.Background(), "sess", "narrow"); err != nil {
		t.Fatal(err)
	}
	if got, data := d.call("POST", "/v1/sandboxes/sess/hibernate", struct{}{}); got != http.StatusOK {
		t.Fatalf("hibernate: %d %s", got, data)
	}
	if code, out := run("", "cat src/main.go; cat README.md"); code == 0 || !strings.Contains(out, "package main") {
		t.Errorf("after resume: %d %q (want src readable, README.md hidden)", code, out)
	}
}

// TestPermissionsRW: a read-write workspace behind rules shows its owner as the sandbox's root
// and gives what the sandbox creates to the directory's owner, as without rules.
func TestPermissionsRW(t *testing.T) {
	d := startDaemon(t)
	ws := permWorkspace(t)
	if err := filepath.Walk(ws, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 1234, 1234)
	}); err != nil {
		t.Fatal(err)
	}
	d.create(api.CreateSandboxRequest{ID: "rw", Workspace: &api.Workspace{HostPath: ws, Mode: api.WorkspaceRW}, Permissions: doneWhenRules})
	out := d.sh("rw", "cd /workspace && stat -c '%u:%g' src/main.go && echo new > src/new.go && stat -c '%u:%g' src/new.go && (cat .env || true)")
	if out != "0:0\n0:0\n" {
		t.Errorf("owners in the sandbox: %q, want 0:0 twice", out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(ws, "src", "new.go"), &st); err != nil || st.Uid != 1234 || st.Gid != 1234 {
		t.Errorf("host owner of a created file: %d:%d %v, want 1234:1234", st.Uid, st.Gid, err)
	}
}

// TestPermissionsOutsideWorkspace: rules for paths outside /workspace (the container's root:
// /opt, /home, /srv; the host image's read-only /etc) are enforced by layers on the
// directories they name, for shells and the file API, through symlinks, hard links and
// renames; the image's masked files stay hidden and the network files stay mounted after a
// change of rules; hibernation keeps the layers.
func TestPermissionsOutsideWorkspace(t *testing.T) {
	d := startDaemon(t)
	ws := permWorkspace(t)
	// Created with the roots writable, to put files there; then narrowed (PATCH).
	d.create(api.CreateSandboxRequest{ID: "out", Workspace: &api.Workspace{HostPath: ws}, Permissions: []api.PermissionRule{
		{Pattern: "/opt/data/**", Level: "write"}, {Pattern: "/home/user/**", Level: "write"}, {Pattern: "/srv/keys/**", Level: "write"},
		{Pattern: "/etc/hostname", Level: "none"}, {Pattern: "**/.env", Level: "none"},
	}})
	d.sh("out", "mkdir -p /opt/data /home/user/.ssh /srv/keys && echo data > /opt/data/a.txt && echo KEY > /home/user/.ssh/id_rsa && echo PEM > /srv/keys/k.pem && echo profile > /home/user/.profile")
	if _, err := d.client.SetPermissions(context.Background(), "out", []api.PermissionRule{
		{Pattern: "/opt/data/**", Level: "read"}, {Pattern: "/home/user/.ssh/**", Level: "none"}, {Pattern: "/srv/keys/*.pem", Level: "view"},
		{Pattern: "/etc/hostname", Level: "none"}, {Pattern: "**/.env", Level: "none"},
	}); err != nil {
		t.Fatal(err)
	}
	// A rule that needs a layer the sandbox was not made with is refused.
	d.expectError("PATCH", "/v1/sandboxes/out/permissions", api.PermissionsRequest{Permissions: []api.PermissionRule{{Pattern: "/var/lib/x", Level: "none"}}}, http.StatusBadRequest, api.CodeInvalidArgument)
	must := func(command, want string) {
		t.Helper()
		if code, out := shOut(d, "out", command); code != 0 || !strings.Contains(out, want) {
			t.Errorf("%q: exit %d, output %q; want success with %q", command, code, out, want)
		}
	}
	fails := func(command, want string) {
		t.Helper()
		if code, out := shOut(d, "out", command); code == 0 || !strings.Contains(out, want) || strings.Contains(out, "KEY") || strings.Contains(out, "PEM") {
			t.Errorf("%q: exit %d, output %q; want a failure saying %q", command, code, out, want)
		}
	}
	const denied, missing = "Permission denied", "No such file or directory"
	check := func(t *testing.T) {
		must("cat /opt/data/a.txt /home/user/.profile && stat -c %s /srv/keys/k.pem && cat /etc/hosts", "data\nprofile\n4\n")
		fails("echo x >> /opt/data/a.txt", denied)
		fails("touch /opt/data/new", denied)
		fails("cat /home/user/.ssh/id_rsa", missing)
		fails("ls -A /home/user | grep ssh", "")
		fails("cat /srv/keys/k.pem", denied)
		fails("cat /etc/hostname", missing)
		fails("ls /etc/shadow", missing) // masked by the host image: hidden by the layer too
		must("test -f /etc/passwd && echo passwd", "passwd")
		// Bypasses: symlinks (absolute, with ..), hard links, renames, /proc/self/fd.
		fails("ln -sf /home/user/.ssh/id_rsa /tmp/l && cat /tmp/l", missing)
		fails("ln -sf ../../home/user/.ssh /tmp/x/y 2>/dev/null; mkdir -p /tmp/x && ln -sf ../../home/user/.ssh /tmp/x/y && cat /tmp/x/y/id_rsa", missing)
		fails("ln /srv/keys/k.pem /srv/keys/k2.pem", "")
		fails("ln /srv/keys/k.pem /tmp/k.pem", "")
		fails("mv /home/user /home/other", "")
		fails("cat /home/other/.ssh/id_rsa", missing)
		must("mkdir -p /home/user/d && mv /home/user/d /home/user/e && rmdir /home/user/e && echo moved", "moved")
		fails("mv /opt/data/a.txt /opt/data/b.txt", denied)
		fails("python3 -c \"import os; fd=os.open('/srv/keys/k.pem', os.O_PATH); print(open('/proc/self/fd/%d' % fd).read())\"", "PermissionError")
		fails("umount /home", "")
		must("echo w > /home/user/new && cat /home/user/new", "w")
		// The file API, following symlinks in the sandbox's view.
		checkFileCalls(t, d, "out", []fileCall{
			{"GET", "/opt/data/a.txt", http.StatusOK},
			{"PUT", "/opt/data/b.txt", http.StatusForbidden},
			{"GET", "/home/user/.ssh/id_rsa", http.StatusNotFound},
			{"GET", "/tmp/l", http.StatusNotFound},
			{"GET", "/tmp/x/y/id_rsa", http.StatusNotFound},
			{"GET", "/srv/keys/k.pem", http.StatusForbidden},
			{"GET", "/etc/hostname", http.StatusNotFound},
			{"GET", "/etc/shadow", http.StatusNotFound},
		}, "KEY", "PEM")
		if got, data := d.call("GET", "/v1/sandboxes/out/files/list?path=/home/user", nil); got != http.StatusOK || strings.Contains(string(data), ".ssh") {
			t.Errorf("list /home/user: %d %s", got, data)
		}
	}
	t.Run("running", check)
	if got, data := d.call("POST", "/v1/sandboxes/out/hibernate", struct{}{}); got != http.StatusOK {
		t.Fatalf("hibernate: %d %s", got, data)
	}
	t.Run("resumed", check)
}

// fileCall is a file API call on a path and the status it must answer.
type fileCall struct {
	method, path string
	status       int
}

// checkFileCalls makes each call on the sandbox (a PUT with a small body) and checks its
// status, and that no answer holds any of secrets.
func checkFileCalls(t *testing.T, d *testDaemon, sandbox string, calls []fileCall, secrets ...string) {
	t.Helper()
	for _, c := range calls {
		var body any
		if c.method == "PUT" {
			body = "content"
		}
		got, data := d.call(c.method, "/v1/sandboxes/"+sandbox+"/files?path="+c.path, body)
		leaked := slices.ContainsFunc(secrets, func(secret string) bool { return strings.Contains(string(data), secret) })
		if got != c.status || leaked {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, got, data, c.status)
		}
	}
}
