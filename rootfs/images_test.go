package rootfs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nsbox/nsbox/rootfs/oci"
	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

func TestStoreBuildsImagesOnce(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	host, err := s.Get("host")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(host.Masked, "/etc/shadow") {
		t.Errorf("host image does not mask /etc/shadow: %v", host.Masked)
	}
	for _, b := range host.Binds {
		if b.Source != b.Dest || !slices.Contains(hostSystemDirs, b.Source) {
			t.Errorf("unexpected bind %+v", b)
		}
	}
	root := host.Layers[0]
	for _, d := range []string{"workspace", "tmp", "root", "var/lib", "proc"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("host skeleton lacks %s: %v", d, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "tmp")); fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp mode %v", fi.Mode())
	}
	if target, err := os.Readlink("/bin"); err == nil {
		if got, _ := os.Readlink(filepath.Join(root, "bin")); got != target {
			t.Errorf("merged-/usr link bin -> %q, want %q", got, target)
		}
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown image: %v", err)
	}

	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skip("busybox-static is not installed (scripts/install-deps.sh installs it)")
	}
	bb, err := s.Get("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(bb.Layers[0], "bin/sh")); err != nil || target != "/bin/busybox" {
		t.Errorf("busybox /bin/sh -> %q %v", target, err)
	}
	// Opening again reuses what was built.
	marker := filepath.Join(bb.Layers[0], "marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("reopening rebuilt the image")
	}
	if names := s.Names(); !slices.Equal(names, []string{"busybox", "host"}) {
		t.Errorf("names %v", names)
	}
}

func TestBuildOnceLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "img", "rootfs")
	err := buildOnce(target, func(tmp string) error { return errors.New("boom") })
	if err == nil {
		t.Fatal("want error")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "img"))
	if len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

// overlayTestDirs is a temporary directory with an empty layer, lower, in it; a test run
// without root, which cannot mount, is skipped.
func overlayTestDirs(t *testing.T) (dir, lower string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir = t.TempDir()
	lower = filepath.Join(dir, "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, lower
}

func TestOverlayMountAndDetach(t *testing.T) {
	dir, lower := overlayTestDirs(t)
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(dir, "merged")
	if err := MountOverlay([]string{lower}, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), merged, IDMap{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(merged, "f"), []byte("upper"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Detach(merged); err != nil {
		t.Fatal(err)
	}
	if err := Detach(merged); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(lower, "f")); string(data) != "lower" {
		t.Errorf("lower layer changed: %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "upper", "f")); string(data) != "upper" {
		t.Errorf("upper layer: %q", data)
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mountinfo), merged) {
		t.Errorf("overlay still mounted")
	}
}

func TestOCIImageMountsAsOverlay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers and mounting need root")
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := ocitest.NewRegistry(t)
	ref := reg.Push(t, "test/busybox:v1", ocitest.BusyboxImage(t))
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ref); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before the pull: %v", err)
	}
	info, err := s.OCI().Pull(context.Background(), ref, oci.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != ref || img.OCI == nil || img.OCI.Config.WorkingDir != "/srv" || len(img.Layers) != 2 ||
		img.Layers[0] != s.OCI().LayerDir(info.Layers[1]) {
		t.Fatalf("image %+v", img)
	}
	if byID, err := s.Get(info.ID); err != nil || byID.Name != info.ID {
		t.Errorf("by ID: %+v %v", byID, err)
	}
	if bb, err := s.Get("busybox"); err == nil && bb.OCI != nil {
		t.Error("busybox is the built-in image")
	}
	if !slices.Contains(s.Names(), ref) {
		t.Errorf("names %v", s.Names())
	}
	merged := filepath.Join(dir, "merged")
	if err := MountOverlay(img.Layers, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), merged, IDMap{}); err != nil {
		t.Fatal(err)
	}
	defer Detach(merged)
	cmd := exec.Command("/bin/sh", "-c", "busybox cat /etc/issue; busybox ls /var/cache /etc; /usr/bin/env -i X=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: merged}
	cmd.Env = []string{"PATH=/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("busybox in the image: %v: %s", err, out)
	}
	if want := "v2\n/etc:\nissue\npasswd\n\n/var/cache:\nnew\nX=1\n"; string(out) != want {
		t.Errorf("the image's merged view:\n%s\nwant:\n%s", out, want)
	}
}

func TestUnreadableFindsWhatOnlyItsOwnerReads(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []struct {
		path string
		mode os.FileMode
		dir  bool
	}{
		{"public.conf", 0o644, false}, {"secret.conf", 0o640, false}, {"private", 0o700, true},
		{"private/key", 0o600, false}, {"open", 0o755, true}, {"open/token", 0o600, false},
	} {
		p := filepath.Join(dir, f.path)
		var err error
		if f.dir {
			err = os.Mkdir(p, f.mode)
		} else {
			err = os.WriteFile(p, []byte("x"), f.mode)
		}
		if err == nil {
			err = os.Chmod(p, f.mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := unreadable(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "open/token"), filepath.Join(dir, "private"), filepath.Join(dir, "secret.conf")}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
