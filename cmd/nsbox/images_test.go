package main

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
