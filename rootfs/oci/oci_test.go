package oci

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/layers"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers needs root")
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials from the machine's docker config
	dir := t.TempDir()
	ls, err := layers.Open(filepath.Join(dir, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "oci"), ls, Registries{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func notInUse(*api.ImageInfo) bool { return false }

// withBusybox opens a store, and a registry with ocitest.BusyboxImage as test/busybox:v1.
func withBusybox(t *testing.T) (s *Store, reg *ocitest.Registry, img v1.Image, ref string) {
	t.Helper()
	s = openStore(t)
	reg = ocitest.NewRegistry(t)
	img = ocitest.BusyboxImage(t)
	return s, reg, img, reg.Push(t, "test/busybox:v1", img)
}

// checkBusybox checks the layers of ocitest.BusyboxImage as stored.
func checkBusybox(t *testing.T, s *Store, img *api.ImageInfo) {
	t.Helper()
	if len(img.Layers) != 2 {
		t.Fatalf("layers %v", img.Layers)
	}
	if want := (api.ImageConfig{Env: ocitest.Config.Env, WorkingDir: "/srv", User: "1000", Entrypoint: ocitest.Config.Entrypoint,
		Cmd: ocitest.Config.Cmd}); !slices.Equal(img.Config.Env, want.Env) || img.Config.WorkingDir != want.WorkingDir ||
		img.Config.User != want.User || !slices.Equal(img.Config.Entrypoint, want.Entrypoint) || !slices.Equal(img.Config.Cmd, want.Cmd) {
		t.Errorf("config %+v, want %+v", img.Config, want)
	}
	if img.Platform != "linux/"+runtime.GOARCH {
		t.Errorf("platform %q", img.Platform)
	}
	base, top := s.LayerDir(img.Layers[0]), s.LayerDir(img.Layers[1])
	var bb, env unix.Stat_t
	if err := unix.Lstat(filepath.Join(base, "bin/busybox"), &bb); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(base, "usr/bin/env"), &env); err != nil || env.Ino != bb.Ino || bb.Mode&0o777 != 0o755 {
		t.Errorf("hard link /usr/bin/env: %v, inode %d vs %d, mode %o", err, env.Ino, bb.Ino, bb.Mode&0o777)
	}
	var wh unix.Stat_t
	if err := unix.Lstat(filepath.Join(top, "etc/motd"), &wh); err != nil || wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
		t.Errorf("whiteout of etc/motd: %v mode %o", err, wh.Mode)
	}
	buf := make([]byte, 4)
	if n, err := unix.Lgetxattr(filepath.Join(top, "var/cache"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque var/cache: %q %v", buf[:n], err)
	}
}

func TestPullByTagAndDigest(t *testing.T) {
	s, reg, img, ref := withBusybox(t)
	var mu sync.Mutex
	statuses := map[string][]string{}
	progress := func(p api.ImageProgress) {
		mu.Lock()
		defer mu.Unlock()
		statuses[p.Layer] = append(statuses[p.Layer], p.Status)
	}
	got, err := s.Pull(context.Background(), ref, PullOptions{Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox(t, s, got)
	digest, _ := img.Digest()
	if got.Digest != digest.String() || !slices.Equal(got.Names, []string{ref}) || len(got.RepoDigests) != 1 || got.Size == 0 {
		t.Errorf("recorded %+v", got)
	}
	if len(statuses) != 2 {
		t.Errorf("progress for %d layers: %v", len(statuses), statuses)
	}
	for layer, st := range statuses {
		if st[0] != api.LayerDownloading || st[len(st)-1] != api.LayerDone {
			t.Errorf("layer %s: statuses %v", layer, st)
		}
	}
	// By digest: the same image, found by every name, its layers found stored.
	byDigest := reg.Host + "/test/busybox@" + digest.String()
	clear(statuses)
	again, err := s.Pull(context.Background(), byDigest, PullOptions{Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != got.ID || len(s.List()) != 1 {
		t.Errorf("second pull made another image: %+v", s.List())
	}
	for layer, st := range statuses {
		if !slices.Equal(st, []string{api.LayerExists}) {
			t.Errorf("layer %s pulled again: %v", layer, st)
		}
	}
	for _, name := range []string{ref, byDigest, got.ID, got.ID[len("sha256:"):][:12]} {
		if found, err := s.Get(name); err != nil || found.ID != got.ID {
			t.Errorf("Get(%q): %v", name, err)
		}
	}
}

func TestPullResolvesMultiArchIndex(t *testing.T) {
	s := openStore(t)
	reg := ocitest.NewRegistry(t)
	other := "arm64"
	if runtime.GOARCH == other {
		other = "amd64"
	}
	foreign := ocitest.Image(t, other, v1.Config{WorkingDir: "/foreign"}, ocitest.Layer(t, ocitest.Entry{Name: "foreign", Type: '0'}))
	ref := reg.PushIndex(t, "test/multi:latest", ocitest.Index(t, foreign, ocitest.BusyboxImage(t)))
	got, err := s.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox(t, s, got)
	// The foreign image alone is refused.
	fref := reg.Push(t, "test/foreign:latest", foreign)
	if _, err := s.Pull(context.Background(), fref, PullOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("foreign image: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	s, reg, img, ref := withBusybox(t)

	_, err := s.Pull(context.Background(), reg.Host+"/test/busybox:nope", PullOptions{})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "test/busybox:nope") {
		t.Errorf("unknown tag: %v", err)
	}
	if _, err := s.Pull(context.Background(), "UPPER/case", PullOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("malformed ref: %v", err)
	}

	imgLayers, _ := img.Layers()
	top, _ := imgLayers[1].Digest()
	reg.Corrupt(top.String())
	_, err = s.Pull(context.Background(), ref, PullOptions{})
	if err == nil || !strings.Contains(err.Error(), top.String()) {
		t.Fatalf("corrupt blob: want an error naming %s, got %v", top, err)
	}
	if !errors.Is(err, layers.ErrDigestMismatch) {
		t.Errorf("corrupt blob: not a digest mismatch: %v", err)
	}
	if len(s.List()) != 0 {
		t.Errorf("an image was recorded: %+v", s.List())
	}
	diffID, _ := imgLayers[1].DiffID()
	if s.layers.Has(diffID.String()) {
		t.Error("the corrupt layer was stored")
	}
	// Prune collects a base layer stored before the failure.
	if _, _, err := s.Prune(false, notInUse); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.layers.List(); len(left) != 0 {
		t.Errorf("layers left after prune: %v", left)
	}
}

func TestPullAuth(t *testing.T) {
	s, reg, _, ref := withBusybox(t)
	reg.RequireAuth("alice", "s3cret")
	_, err := s.Pull(context.Background(), ref, PullOptions{})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("without credentials: %v", err)
	}
	_, err = s.Pull(context.Background(), ref, PullOptions{Auth: authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "wrong"})})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	got, err := s.Pull(context.Background(), ref, PullOptions{Auth: authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "s3cret"})})
	if err != nil {
		t.Fatal(err)
	}
	checkBusybox(t, s, got)
	// Credentials from the docker config.json.
	s2 := openStore(t)
	config := `{"auths":{"` + reg.Host + `":{"auth":"YWxpY2U6czNjcmV0"}}}` // alice:s3cret
	if err := os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Pull(context.Background(), ref, PullOptions{}); err != nil {
		t.Fatalf("with config.json: %v", err)
	}
}

func TestConcurrentPullsAreDoneOnce(t *testing.T) {
	s, reg, img, ref := withBusybox(t)
	imgLayers, _ := img.Layers()
	base, _ := imgLayers[0].Digest()
	release := make(chan struct{})
	reg.BeforeBlob(base.String(), func() { <-release })
	var wg sync.WaitGroup
	results := make([]*api.ImageInfo, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = s.Pull(context.Background(), ref, PullOptions{}) })
	}
	// A caller that gives up does not stop the pull for the others.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() {
		_, err := s.Pull(ctx, ref, PullOptions{})
		gaveUp <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: %v", err)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		if results[i].ID != results[0].ID {
			t.Errorf("different results")
		}
	}
	if n := reg.BlobGets(base.String()); n != 1 {
		t.Errorf("base layer fetched %d times", n)
	}
}

func TestImportArchives(t *testing.T) {
	img := ocitest.BusyboxImage(t)
	save := ocitest.DockerSave(t, "example.com/team/app:v1", img)
	layoutTar := ocitest.LayoutTar(t, ocitest.Index(t, img), "example.com/team/app:v2")
	var gz, zst bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(save)
	_ = zw.Close()
	enc, err := zstd.NewWriter(&zst)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = enc.Write(layoutTar)
	_ = enc.Close()
	cases := []struct {
		name, wantName string
		archive        []byte
		hasDigest      bool
	}{
		{"docker save", "example.com/team/app:v1", save, false},
		{"docker save, gzip", "example.com/team/app:v1", gz.Bytes(), false},
		{"OCI layout", "example.com/team/app:v2", layoutTar, true},
		{"OCI layout, zstd", "example.com/team/app:v2", zst.Bytes(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t)
			got, err := s.Import(context.Background(), bytes.NewReader(c.archive), ImportOptions{Name: "local/extra"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !slices.Equal(got[0].Names, []string{c.wantName, "docker.io/local/extra:latest"}) {
				t.Fatalf("imported %+v", got)
			}
			checkBusybox(t, s, got[0])
			if (got[0].Digest != "") != c.hasDigest {
				t.Errorf("digest %q", got[0].Digest)
			}
			if left, _ := os.ReadDir(filepath.Join(s.dir, "tmp")); len(left) != 0 {
				t.Errorf("left in tmp: %v", left)
			}
		})
	}
	s := openStore(t)
	for _, bad := range [][]byte{[]byte("not a tar"), ocitest.Tar(t, ocitest.Entry{Name: "x", Type: '0'})} {
		if _, err := s.Import(context.Background(), bytes.NewReader(bad), ImportOptions{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad archive: %v", err)
		}
	}
}

func TestRemoveAndPrune(t *testing.T) {
	s := openStore(t)
	reg := ocitest.NewRegistry(t)
	img := ocitest.BusyboxImage(t)
	v1ref := reg.Push(t, "test/busybox:v1", img)
	v2ref := reg.Push(t, "test/busybox:v2", img)
	other := ocitest.Image(t, runtime.GOARCH, v1.Config{}, ocitest.Layer(t, ocitest.Entry{Name: "other", Type: '0'}))
	otherRef := reg.Push(t, "test/other:v1", other)
	for _, ref := range []string{v1ref, v2ref, otherRef} {
		if _, err := s.Pull(context.Background(), ref, PullOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bb, _ := s.Get(v1ref)
	if !slices.Equal(bb.Names, []string{v1ref, v2ref}) {
		t.Fatalf("names %v", bb.Names)
	}
	// One of two names: only the name goes.
	if _, err := s.Remove(v1ref, false, notInUse); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(v1ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed name still found: %v", err)
	}
	used := func(img *api.ImageInfo) bool { return img.ID == bb.ID }
	if _, err := s.Remove(v2ref, false, used); !errors.Is(err, ErrInUse) {
		t.Errorf("removing a used image: %v", err)
	}
	// Forced: the name goes, the image stays dangling with its layers while used.
	if _, err := s.Remove(v2ref, true, used); err != nil {
		t.Fatal(err)
	}
	if dangling, err := s.Get(bb.ID); err != nil || len(dangling.Names) != 0 || !s.layers.Has(bb.Layers[0]) {
		t.Errorf("forced removal of a used image: %+v %v", dangling, err)
	}
	if images, _, err := s.Prune(false, used); err != nil || len(images) != 0 {
		t.Errorf("prune removed a used image: %v %v", images, err)
	}
	images, removedLayers, err := s.Prune(false, notInUse)
	if err != nil || !slices.Equal(images, []string{bb.ID}) || len(removedLayers) != 2 {
		t.Errorf("prune: %v %v %v", images, removedLayers, err)
	}
	// Removing the last image removes its layers.
	if _, err := s.Remove(otherRef, false, notInUse); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.layers.List(); len(left) != 0 || len(s.List()) != 0 {
		t.Errorf("left: layers %v images %v", left, s.List())
	}
	// The records survive a reopen.
	if _, err := s.Pull(context.Background(), otherRef, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	reopened, err := Open(s.dir, s.layers, Registries{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reopened.Get("test/other:v1"); err == nil {
		t.Errorf("a short name found an image of another registry: %+v", got)
	}
	if _, err := reopened.Get(otherRef); err != nil {
		t.Errorf("after reopen: %v", err)
	}
}

func TestPlainHTTPPolicy(t *testing.T) {
	s := &Store{reg: Registries{Insecure: []string{"registry.lan:5000", "10.0.0.9"}}}
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1:1234": true, "[::1]:80": true, "registry.lan:5000": true, "10.0.0.9:443": true,
		"registry.lan": false, "192.168.1.10:5000": false, "docker.io": false,
	} {
		if got := s.plainHTTPAllowed(host); got != want {
			t.Errorf("%s: %v", host, got)
		}
	}
}

func TestMirrorIsTriedFirstForDockerHub(t *testing.T) {
	s := openStore(t)
	reg := ocitest.NewRegistry(t)
	reg.Push(t, "library/busybox:1.36", ocitest.BusyboxImage(t))
	s.reg.Mirror = reg.Host
	got, err := s.Pull(context.Background(), "busybox:1.36", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Names, []string{"docker.io/library/busybox:1.36"}) {
		t.Errorf("names %v", got.Names)
	}
	if _, err := s.Get("busybox:1.36"); err != nil {
		t.Error(err)
	}
}
