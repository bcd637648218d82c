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

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

func TestImagePullCreateRemove(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // the daemon finds no credentials of this machine
	d := startDaemon(t)
	ctx := context.Background()
	reg := ocitest.NewRegistry(t)
	ref := reg.Push(t, "test/busybox:v1", ocitest.BusyboxImage(t))

	var events []api.ImageProgress
	img, err := d.client.PullImage(ctx, api.PullImageRequest{Ref: ref}, func(p api.ImageProgress) { events = append(events, p) })
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
	escaped := "/v1/images/" + url.PathEscape(ref)
	d.expectError(http.MethodDelete, escaped, nil, http.StatusConflict, api.CodeConflict)
	if err := d.client.RemoveSandbox(ctx, sb.ID, true); err != nil {
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
	if _, err := d.client.RemoveImage(ctx, ref, false); err != nil {
		t.Fatal(err)
	}
	res, err := d.client.PruneImages(ctx, true)
	if err != nil || len(res.Images) != 1 || len(res.Layers) != 2 {
		t.Errorf("prune: %+v %v", res, err)
	}
	if left, _ := os.ReadDir(filepath.Join(d.dataDir, "images", "layers", "sha256")); len(left) != 0 {
		t.Errorf("layers left: %v", left)
	}
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
