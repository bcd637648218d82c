package main

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
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

// debianConfig is the config of the Debian test images.
var debianConfig = v1.Config{
	Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "APP_MODE=test"},
	WorkingDir: "/srv/app",
	User:       "app",
	Cmd:        []string{"bash", "-c", `echo "$APP_MODE in $PWD as $(id -un)"`},
}

// A user's path: a `docker save` tar of a Debian-based image, imported with the CLI, a
// sandbox made from it that runs the image's programs with its env, workdir and user. The
// image is made of Debian's packages (apt-get download + dpkg-deb), or with
// NSBOX_TEST_DEBOOTSTRAP=1 also a debootstrap minbase system (a few minutes more; mirror
// NSBOX_TEST_DEBIAN_MIRROR, default deb.debian.org).
func TestDebianImage(t *testing.T) {
	builders := map[string]func(ctx context.Context, dir string) error{
		"debs": func(ctx context.Context, dir string) error { return ocitest.DebianRootfs(ctx, dir) },
	}
	if os.Getenv("NSBOX_TEST_DEBOOTSTRAP") == "1" {
		mirror := cmp.Or(os.Getenv("NSBOX_TEST_DEBIAN_MIRROR"), "http://deb.debian.org/debian")
		builders["debootstrap"] = func(ctx context.Context, dir string) error {
			return ocitest.Debootstrap(ctx, dir, hostCodename(t), mirror)
		}
	}
	d := startDaemon(t)
	for name, build := range builders {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			tmp := t.TempDir()
			root := filepath.Join(tmp, "rootfs")
			if err := build(ctx, root); err != nil {
				t.Fatal(err)
			}
			layer, err := ocitest.DirLayer(ctx, root, filepath.Join(tmp, "layer.tar"))
			if err != nil {
				t.Fatal(err)
			}
			archive := filepath.Join(tmp, "image.tar")
			tag := "example.com/debian-" + name + ":v1"
			if err := os.WriteFile(archive, ocitest.DockerSave(t, tag, ocitest.Image(t, runtime.GOARCH, debianConfig, layer)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, errOut, code := d.cli("", "image", "import", archive); code != 0 || !strings.HasPrefix(out, tag+" ") {
				t.Fatalf("image import: %d %q %q", code, out, errOut)
			}
			out, errOut, code := d.cli("", "create", "--image", tag, "--run-entrypoint")
			if code != 0 {
				t.Fatalf("create: %d %q", code, errOut)
			}
			id := strings.TrimSpace(out)
			got := d.sh(id, `apt --version; dpkg --print-architecture; id -un; echo "$HOME $PWD $APP_MODE $LANG"; cat /etc/debian_version`)
			lines := strings.Split(got, "\n")
			if len(lines) != 6 || !strings.HasPrefix(lines[0], "apt ") || lines[1] == "" || lines[2] != "app" ||
				lines[3] != "/home/app /srv/app test C.UTF-8" || lines[4] == "" {
				t.Errorf("the image's programs, env, workdir and user: %q", got)
			}
			if res := d.exec(id, api.ExecRequest{Argv: []string{"ls", "/usr/bin/apt"}}); res.ExitCode != 0 {
				t.Errorf("argv in the image: %+v", res)
			}
			d.exitedWith(id, api.EntrypointProcess, "test in /srv/app as app\n")
			if err := d.client.RemoveSandbox(ctx, id, client.RemoveOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.client.RemoveImage(ctx, tag, client.RemoveImageOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// hostCodename is this machine's Debian release (VERSION_CODENAME of /etc/os-release).
func hostCodename(t *testing.T) string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatal("/etc/os-release names no VERSION_CODENAME")
	return ""
}
