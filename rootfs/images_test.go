package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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

func TestOverlayMountAndDetach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		t.Fatal(err)
	}
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
