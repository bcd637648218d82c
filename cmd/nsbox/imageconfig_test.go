package main

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

// importImage imports img as a `docker save` archive tagged tag and returns its full name.
func (d *testDaemon) importImage(tag string, img v1.Image) string {
	d.t.Helper()
	imgs, err := d.client.ImportImages(context.Background(), bytes.NewReader(ocitest.DockerSave(d.t, tag, img)), "")
	if err != nil || len(imgs) != 1 || len(imgs[0].Names) == 0 {
		d.t.Fatalf("import %s: %+v %v", tag, imgs, err)
	}
	return imgs[0].Names[0]
}

// exitedWith waits for a process to end and checks that it exited 0 with stdout want.
func (d *testDaemon) exitedWith(id, pid, want string) *api.Process {
	d.t.Helper()
	res := d.waitProc(id, pid, api.WaitProcessRequest{})
	stdout, stderr, _, _ := d.readLogs(id, pid, 0, 0)
	if p := res.Process; !res.Met || p.Status != api.ProcessExited || p.ExitCode != 0 || string(stdout) != want {
		d.t.Errorf("process %s: %+v, stdout %q (want %q), stderr %q", pid, res, stdout, want, stderr)
	}
	return &res.Process
}

func TestImageUserIsTheSandboxsDefault(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	ref := d.importImage("test/user:v1", ocitest.BusyboxImage(t)) // User "1000": "user", home /srv

	sb := d.create(api.CreateSandboxRequest{Image: ref})
	if sb.User != "1000" {
		t.Errorf("the sandbox's user: %q", sb.User)
	}
	if got := d.sh(sb.ID, "busybox id -u; busybox id -g; echo $HOME $USER"); got != "1000\n1000\n/srv user\n" {
		t.Errorf("the default session's user: %q", got)
	}
	p := d.startProc(sb.ID, api.StartProcessRequest{Argv: []string{"busybox", "id", "-u"}})
	if p.User != "user" {
		t.Errorf("a process's user: %q", p.User)
	}
	d.exitedWith(sb.ID, p.ID, "1000\n")
	// A session or process that names a user runs as that one.
	if _, err := d.client.CreateSession(ctx, sb.ID, api.CreateSessionRequest{ID: "root", User: "0"}); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := d.exec(sb.ID, api.ExecRequest{SessionID: "root", Command: "busybox id -u"}).Output(); string(out) != "0\n" {
		t.Errorf("a root session in an image whose user is 1000: %q", out)
	}
	p = d.startProc(sb.ID, api.StartProcessRequest{SessionID: "root", Argv: []string{"busybox", "id", "-u"}})
	d.exitedWith(sb.ID, p.ID, "0\n")
	p = d.startProc(sb.ID, api.StartProcessRequest{User: "0:65534", Argv: []string{"busybox", "id", "-G"}})
	d.exitedWith(sb.ID, p.ID, "65534\n")

	// The create's user wins over the image's: uid:gid without an /etc/group entry.
	out, errOut, code := d.cli("", "create", "--image", ref, "--user", "0:4242")
	id := strings.TrimSpace(out)
	if code != 0 {
		t.Fatalf("create --user: %d %q", code, errOut)
	}
	if got := d.sh(id, "busybox id -u; busybox id -g"); got != "0\n4242\n" {
		t.Errorf("create --user 0:4242: %q", got)
	}
	e := d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{Image: ref, User: "nosuch"}, http.StatusBadRequest, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, `user "nosuch" does not exist`) {
		t.Errorf("an unknown user: %s", e.Message)
	}
	e = d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{Image: ref, User: "user:staff"}, http.StatusBadRequest, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, `group "staff"`) {
		t.Errorf("an unknown group: %s", e.Message)
	}
}

func TestRunEntrypoint(t *testing.T) {
	d := startDaemon(t)
	ref := d.importImage("test/entrypoint:v1", ocitest.BusyboxImage(t)) // sh -c 'echo hi'
	sb := d.create(api.CreateSandboxRequest{Image: ref, RunEntrypoint: true})
	if p := d.exitedWith(sb.ID, api.EntrypointProcess, "hi\n"); p.User != "user" || p.Cwd != "/srv" || strings.Join(p.Argv, " ") != "/bin/sh -c echo hi" {
		t.Errorf("the entrypoint process: %+v", p)
	}
	out, errOut, code := d.cli("", "create", "--image", ref, "--run-entrypoint")
	if code != 0 {
		t.Fatalf("create --run-entrypoint: %d %q", code, errOut)
	}
	d.exitedWith(strings.TrimSpace(out), api.EntrypointProcess, "hi\n")
	e := d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{RunEntrypoint: true}, http.StatusBadRequest, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, "no Entrypoint or Cmd") {
		t.Errorf("runEntrypoint with the host image: %s", e.Message)
	}
}

// An image with a static program and nothing else (no libc, no shell, no /etc): the agent
// runs, processes run, and sessions say why they cannot.
func TestImageWithoutShell(t *testing.T) {
	d := startDaemon(t)
	img := ocitest.Image(t, runtime.GOARCH, v1.Config{Env: []string{"PATH=/bin"}},
		ocitest.Layer(t, ocitest.Entry{Name: "bin/", Type: tar.TypeDir},
			ocitest.Entry{Name: "bin/busybox", Type: tar.TypeReg, File: ocitest.BusyboxPath, Mode: 0o755}))
	ref := d.importImage("test/noshell:v1", img)
	e := d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{Image: ref, RunEntrypoint: true}, http.StatusBadRequest, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, "no Entrypoint or Cmd") {
		t.Errorf("runEntrypoint without an entrypoint: %s", e.Message)
	}
	sb := d.create(api.CreateSandboxRequest{Image: ref})

	const noShell = "sessions need a shell, and this sandbox's image has none"
	e = d.expectError(http.MethodPost, "/v1/sandboxes/"+sb.ID+"/exec", api.ExecRequest{Argv: []string{"busybox", "true"}}, http.StatusBadRequest, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, noShell) {
		t.Errorf("exec without a shell: %s", e.Message)
	}
	if _, errOut, code := d.cli("", "sh", sb.ID, "true"); code == 0 || !strings.Contains(errOut, noShell) {
		t.Errorf("nsbox sh without a shell: %d %q", code, errOut)
	}
	p := d.startProc(sb.ID, api.StartProcessRequest{Argv: []string{"busybox", "echo", "static"}})
	if p.User != "0" {
		t.Errorf("root without /etc/passwd: %q", p.User)
	}
	d.exitedWith(sb.ID, p.ID, "static\n")
	if p := d.startProc(sb.ID, api.StartProcessRequest{Command: "echo no"}); p.Status != api.ProcessFailed || !strings.Contains(p.Error, "needs /bin/sh") {
		t.Errorf("shell source without a shell: %+v", p)
	}
}
