package main

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

func TestImagePullCreateRemove(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // the daemon finds no credentials of this machine
	d := startDaemon(t)
	ctx := context.Background()
	reg := ocitest.NewRegistry(t)
	ref := reg.Push(t, "test/busybox:v1", ocitest.BusyboxImage(t))

	var events []api.ImageProgress
	img, err := d.client.PullImage(ctx, api.PullImageRequest{Ref: ref}, func(p api.ImageProgress) error { events = append(events, p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Names, []string{ref}) || len(img.Layers) != 2 || img.Config.WorkingDir != "/srv" {
		t.Errorf("pulled %+v", img)
	}
	if len(events) < 4 {
		t.Errorf("progress events %+v", events)
	}
	if status, body := d.call(http.MethodPost, "/v1/images/pull", api.PullImageRequest{Ref: ref}); status != http.StatusOK {
		t.Errorf("pull again without a stream: %d %s", status, body)
	}
	d.expectError(http.MethodPost, "/v1/images/pull", api.PullImageRequest{Ref: reg.Host + "/test/busybox:nope"}, http.StatusNotFound, api.CodeNotFound)
	d.expectError(http.MethodGet, "/v1/images/nope", nil, http.StatusNotFound, api.CodeNotFound)

	out, errOut, code := d.cli("", "image", "pull", ref)
	if code != 0 || out != ref+" "+img.ID+"\n" || strings.Count(errOut, api.LayerExists) != 2 {
		t.Errorf("nsbox image pull: %d\nstdout %q\nstderr %q", code, out, errOut)
	}

	sb := d.create(api.CreateSandboxRequest{Image: ref})
	if got := d.sh(sb.ID, "busybox cat /etc/issue; busybox ls /var/cache; test -e /etc/motd || echo motd deleted"); got != "v2\nnew\nmotd deleted\n" {
		t.Errorf("the image's files in the sandbox: %q", got)
	}
	// The image's config is the sandbox's default env and cwd; the request's env wins.
	if got := d.sh(sb.ID, "pwd; echo $GREETING"); got != "/srv\nhello\n" {
		t.Errorf("the image's WorkingDir and Env: %q", got)
	}
	if list, _ := d.client.Images(ctx); !slices.ContainsFunc(list, func(i api.Image) bool { return i.Name == ref && i.ID == img.ID && i.Size > 0 }) {
		t.Errorf("GET /v1/images does not show the image's id and size: %+v", list)
	}
	escaped := "/v1/images/" + url.PathEscape(ref)
	d.expectError(http.MethodDelete, escaped, nil, http.StatusConflict, api.CodeConflict)
	if err := d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}

	save := ocitest.DockerSave(t, "example.com/team/app:v1", ocitest.BusyboxImage(t))
	out, errOut, code = d.cli(string(save), "image", "import", "--name", "local/app", "-")
	// The same image as the one pulled: one record with all the names.
	if code != 0 || !strings.Contains(out, "example.com/team/app:v1 docker.io/local/app:latest "+img.ID) {
		t.Errorf("nsbox image import: %d %q %q", code, out, errOut)
	}
	out, _, _ = d.cli("", "image", "ls", "-q")
	for _, name := range []string{"host", ref, "example.com/team/app:v1", "docker.io/local/app:latest"} {
		if !slices.Contains(strings.Fields(out), name) {
			t.Errorf("image ls -q lacks %s: %q", name, out)
		}
	}
	if _, err := d.client.RemoveImage(ctx, ref, client.RemoveImageOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := d.client.PruneImages(ctx, client.PruneOptions{All: true})
	if err != nil || len(res.Images) != 1 || len(res.Layers) != 2 {
		t.Errorf("prune: %+v %v", res, err)
	}
	if left, _ := os.ReadDir(filepath.Join(d.dataDir, "images", "layers", "sha256")); len(left) != 0 {
		t.Errorf("layers left: %v", left)
	}
}

func TestCreatePullsWhenAsked(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	d := startDaemon(t)
	reg := ocitest.NewRegistry(t)
	ref := reg.Push(t, "test/app:v2", ocitest.BusyboxImage(t))
	d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{Image: ref}, http.StatusNotFound, api.CodeNotFound)
	d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{Image: ref, Pull: "sometimes"}, http.StatusBadRequest, api.CodeInvalidArgument)
	d.expectError(http.MethodPost, "/v1/sandboxes", api.CreateSandboxRequest{Image: reg.Host + "/test/app:nope", Pull: api.PullMissing}, http.StatusNotFound, api.CodeNotFound)
	out, errOut, code := d.cli("", "create", "--id", "pulled", "--image", ref, "--pull", "missing", "--env", "GREETING=mine")
	if code != 0 || out != "pulled\n" {
		t.Fatalf("create --pull missing: %d %q %q", code, out, errOut)
	}
	if got := d.sh("pulled", "echo $GREETING; busybox cat /etc/issue"); got != "mine\nv2\n" {
		t.Errorf("a sandbox of a pulled image: %q", got)
	}
	gets := reg.BlobGets(mustDigest(t, ocitest.BusyboxImage(t)))
	d.create(api.CreateSandboxRequest{ID: "again", Image: ref, Pull: api.PullMissing})
	if reg.BlobGets(mustDigest(t, ocitest.BusyboxImage(t))) != gets {
		t.Errorf("pull missing pulled an image that is stored")
	}
	d.create(api.CreateSandboxRequest{ID: "host-always", Pull: api.PullAlways}) // built-in images are never pulled
}

// mustDigest is the digest of an image's first layer blob.
func mustDigest(t *testing.T, img interface {
	Layers() ([]v1.Layer, error)
}) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestPullProgress(t *testing.T) {
	var buf bytes.Buffer
	p := &pullProgress{out: &buf, tty: true, state: map[string]api.ImageProgress{}, start: map[string]time.Time{}, width: 10}
	a, b := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	p.update(api.ImageProgress{Layer: a, Status: api.LayerDownloading, Current: 500_000, Total: 1_000_000})
	p.update(api.ImageProgress{Layer: b, Status: api.LayerExists, Total: 2_000_000})
	p.update(api.ImageProgress{Layer: a, Status: api.LayerDone, Current: 1_000_000, Total: 1_000_000})
	screen := buf.String()
	for _, want := range []string{"aaaaaaaaaaaa  downloading  [=====     ]  500.0 kB / 1.0 MB", "\x1b[2A", "bbbbbbbbbbbb  exists       2.0 MB", "aaaaaaaaaaaa  done         1.0 MB"} {
		if !strings.Contains(screen, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, screen)
		}
	}
	buf.Reset()
	p = &pullProgress{out: &buf, state: map[string]api.ImageProgress{}, start: map[string]time.Time{}}
	p.update(api.ImageProgress{Layer: a, Status: api.LayerDownloading, Total: 1_000_000})
	p.update(api.ImageProgress{Layer: a, Status: api.LayerDownloading, Current: 10, Total: 1_000_000})
	p.update(api.ImageProgress{Layer: a, Status: api.LayerDone, Current: 1_000_000, Total: 1_000_000})
	if want := "aaaaaaaaaaaa  downloading  1.0 MB\naaaaaaaaaaaa  done         1.0 MB\n"; buf.String() != want {
		t.Errorf("plain output %q, want %q", buf.String(), want)
	}
}
