package rootfs

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/rootfs/layers"
)

// TestExportLayer writes an upper dir the way overlayfs leaves it (whiteouts, an opaque
// directory, a symlink, a hard link, a FIFO, a setuid file, an xattr, files of a sandbox's
// shifted ids) through ExportLayer into a layer store, and checks the layer has the same
// marks, the sandbox's own ids, and no setuid bit; a second export of the same tree is the
// same layer.
func TestExportLayer(t *testing.T) {
	ids := IDMap{Host: 200000, Size: IDsPerSandbox}
	upper := testUpper(t, ids)

	store, err := layers.Open(t.TempDir())
	must(t, err)
	add := func() (string, int64) {
		digest, size, err := store.Add(context.Background(), func(w io.Writer) error { return ExportLayer(w, upper, ids, 0) }, nil)
		must(t, err)
		return digest, size
	}
	digest, size := add()
	if size == 0 {
		t.Fatal("size 0")
	}
	layer := store.Dir(digest)
	st := func(rel string) *syscall.Stat_t {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(layer, rel))
		must(t, err)
		return fi.Sys().(*syscall.Stat_t)
	}
	if s := st("etc/gone"); s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
		t.Errorf("etc/gone is not a whiteout: mode %o rdev %d", s.Mode, s.Rdev)
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(layer, "opaque"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque dir lost its mark: %q %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(layer, "opaque", ".wh..wh..opq")); err == nil {
		t.Error("the opaque marker was unpacked as a file")
	}
	if n, err := unix.Getxattr(filepath.Join(layer, "etc/app.conf"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("user xattr: %q %v", buf[:n], err)
	}
	if _, err := unix.Getxattr(filepath.Join(layer, "etc/app.conf"), "trusted.overlay.origin", buf); err == nil {
		t.Error("overlayfs' own xattr was kept")
	}
	if s := st("bin/tool"); s.Mode&0o7777 != 0o755 || s.Uid != 0 || s.Gid != 5 {
		t.Errorf("bin/tool: mode %o owner %d:%d, want 755 0:5", s.Mode&0o7777, s.Uid, s.Gid)
	}
	if s := st("home/u"); s.Uid != 1000 || s.Gid != 1000 {
		t.Errorf("home/u owner %d:%d, want 1000:1000", s.Uid, s.Gid)
	}
	if link, err := os.Readlink(filepath.Join(layer, "bin/conf")); err != nil || link != "../etc/app.conf" {
		t.Errorf("bin/conf: %q %v", link, err)
	}
	if a, b := st("etc/app.conf"), st("etc/same.conf"); a.Ino != b.Ino {
		t.Error("the hard link became a copy")
	}
	if s := st("home/u/fifo"); s.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("home/u/fifo mode %o", s.Mode)
	}
	if again, _ := add(); again != digest {
		t.Errorf("the same tree gave another layer: %s, then %s", digest, again)
	}
	store.Release(digest, digest)

	// A bound below the content (a sparse file's full size, say) refuses the export.
	sparse := filepath.Join(upper, "sparse")
	must(t, os.WriteFile(sparse, nil, 0o644))
	must(t, os.Truncate(sparse, 1<<30))
	if _, _, err := store.Add(context.Background(), func(w io.Writer) error { return ExportLayer(w, upper, ids, 1<<20) }, nil); err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Errorf("a 1 GiB sparse file under a 1 MiB bound: %v", err)
	}
}

// testUpper makes an upper dir the way overlayfs leaves it, of a sandbox's shifted ids:
// whiteouts, an opaque directory, a symlink, a hard link, a FIFO, a setuid file and xattrs.
func testUpper(t *testing.T, ids IDMap) string {
	t.Helper()
	upper := t.TempDir()
	mk(t, upper, map[string]string{"etc/app.conf": "x=1\n", "opaque/new": "n", "bin/tool": "#!/bin/sh\necho hi\n", "home/u/": ""})
	whiteout(t, filepath.Join(upper, "etc/gone"))
	if err := unix.Setxattr(filepath.Join(upper, "opaque"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(upper, "etc/app.conf"), "user.note", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(upper, "etc/app.conf"), "trusted.overlay.origin", []byte("dropped"), 0); err != nil {
		t.Fatal(err)
	}
	must(t, os.Chmod(filepath.Join(upper, "bin/tool"), 0o4755))
	must(t, os.Symlink("../etc/app.conf", filepath.Join(upper, "bin/conf")))
	must(t, os.Link(filepath.Join(upper, "etc/app.conf"), filepath.Join(upper, "etc/same.conf")))
	must(t, unix.Mkfifo(filepath.Join(upper, "home/u/fifo"), 0o600))
	must(t, filepath.Walk(upper, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(ids.Host), int(ids.Host)+5)
	}))
	must(t, os.Lchown(filepath.Join(upper, "home/u"), int(ids.Host)+1000, int(ids.Host)+1000))
	must(t, os.Chmod(filepath.Join(upper, "bin/tool"), 0o4755)) // chown cleared it

	return upper
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
