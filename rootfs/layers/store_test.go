package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
)

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func opener(data []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

func openStore(t *testing.T) *Store {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking layers (owners, whiteouts, trusted xattrs) needs root")
	}
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	d := digestOf(data)
	if err := s.Put(context.Background(), d, opener(data)); err != nil {
		t.Fatal(err)
	}
	s.Release(d)
	return d
}

// capXattr is a version-2 file capability granting cap_net_bind_service (bit 10).
var capXattr = string([]byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

func TestPutUnpacksInOverlayForm(t *testing.T) {
	s := openStore(t)
	d := put(t, s, ocitest.Tar(t,
		ocitest.Entry{Name: "./", Type: tar.TypeDir, Mode: 0o755},
		ocitest.Entry{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		ocitest.Entry{Name: "etc/passwd", Type: tar.TypeReg, Body: "root:x:0:0::/root:/bin/sh\n"},
		ocitest.Entry{Name: "etc/hard", Type: tar.TypeLink, Link: "etc/passwd"},
		ocitest.Entry{Name: "etc/abs", Type: tar.TypeSymlink, Link: "/etc/shadow"},
		ocitest.Entry{Name: "bin/ping", Type: tar.TypeReg, Body: "\x7fELF", Mode: 0o4755, UID: 1000,
			Xattrs: map[string]string{"security.capability": capXattr, "user.note": "hi", "trusted.overlay.redirect": "/x"}},
		ocitest.Entry{Name: "usr/lib/.wh.gone", Type: tar.TypeReg},
		ocitest.Entry{Name: "var/cache/.wh..wh..opq", Type: tar.TypeReg},
		ocitest.Entry{Name: "dev/null", Type: tar.TypeChar},
		ocitest.Entry{Name: "tmp/fifo", Type: tar.TypeFifo},
		ocitest.Entry{Name: "tmp/twice", Type: tar.TypeReg, Body: "first"},
		ocitest.Entry{Name: "tmp/twice", Type: tar.TypeReg, Body: "second"},
	))
	root := s.Dir(d)
	if !s.Has(d) {
		t.Fatal("layer not stored")
	}
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "etc/passwd"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(root, "etc/hard"), &b); err != nil || a.Ino != b.Ino {
		t.Errorf("hard Link: %v, inodes %d %d", err, a.Ino, b.Ino)
	}
	if target, err := os.Readlink(filepath.Join(root, "etc/abs")); err != nil || target != "/etc/shadow" {
		t.Errorf("symlink -> %q %v", target, err)
	}
	var ping unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "bin/ping"), &ping); err != nil {
		t.Fatal(err)
	}
	if ping.Mode&0o7777 != 0o4755 || ping.Uid != 1000 {
		t.Errorf("bin/ping mode %o uid %d", ping.Mode&0o7777, ping.Uid)
	}
	if time.Unix(ping.Mtim.Unix()) != time.Unix(1700000000, 0) {
		t.Errorf("bin/ping mtime %v", time.Unix(ping.Mtim.Unix()))
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "security.capability", buf); err != nil || string(buf[:n]) != capXattr {
		t.Errorf("file capability: %q %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "bin/ping"), "trusted.overlay.redirect", buf); err == nil {
		t.Error("an overlay xattr from the tar was set")
	}
	var wh unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "usr/lib/gone"), &wh); err != nil || wh.Mode&unix.S_IFMT != unix.S_IFCHR || wh.Rdev != 0 {
		t.Errorf("whiteout: %v mode %o rdev %d", err, wh.Mode, wh.Rdev)
	}
	if n, err := unix.Lgetxattr(filepath.Join(root, "var/cache"), opaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque dir: %q %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(root, "dev/null")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device node made: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "tmp/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "tmp/twice")); string(data) != "second" {
		t.Errorf("a later entry of one path should win: %q", data)
	}
	// Putting it again finds it.
	if err := s.Put(context.Background(), d, func() (io.ReadCloser, error) { t.Fatal("opened again"); return nil, nil }); err != nil {
		t.Fatal(err)
	}
	s.Release(d)
}

func TestPutRejectsEscapes(t *testing.T) {
	s := openStore(t)
	outside := t.TempDir()
	cases := map[string][]ocitest.Entry{
		"dotdot":           {{Name: "../escape", Type: tar.TypeReg}},
		"nested dotdot":    {{Name: "a/../../escape", Type: tar.TypeReg}},
		"through symlink":  {{Name: "link", Type: tar.TypeSymlink, Link: outside}, {Name: "link/escape", Type: tar.TypeReg}},
		"relative symlink": {{Name: "d/", Type: tar.TypeDir}, {Name: "link", Type: tar.TypeSymlink, Link: "d"}, {Name: "link/f", Type: tar.TypeReg}},
		"hard link out":    {{Name: "h", Type: tar.TypeLink, Link: "../../etc/passwd"}},
		"hard link via symlink": {{Name: "link", Type: tar.TypeSymlink, Link: "/etc"},
			{Name: "h", Type: tar.TypeLink, Link: "link/passwd"}},
		"whiteout dotdot": {{Name: "a/.wh...", Type: tar.TypeReg}},
	}
	for name, entries := range cases {
		data := ocitest.Tar(t, entries...)
		err := s.Put(context.Background(), digestOf(data), opener(data))
		t.Logf("%s: %v", name, err)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if s.Has(digestOf(data)) {
			t.Errorf("%s: layer stored", name)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("wrote outside the layer: %v", entries)
	}
	assertEmptyTmp(t, s)
}

func assertEmptyTmp(t *testing.T, s *Store) {
	t.Helper()
	if left, _ := os.ReadDir(s.tmpDir()); len(left) != 0 {
		t.Errorf("left in tmp: %v", left)
	}
}

func TestPutVerifiesDigest(t *testing.T) {
	s := openStore(t)
	data := ocitest.Tar(t, ocitest.Entry{Name: "f", Type: tar.TypeReg, Body: "x"})
	wrong := digestOf([]byte("other"))
	err := s.Put(context.Background(), wrong, opener(data))
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("want a digest mismatch naming the digest, got %v", err)
	}
	if s.Has(wrong) || s.Has(digestOf(data)) {
		t.Error("a layer was stored")
	}
	// A stream that breaks off leaves nothing either.
	broken := func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[:600]), errReader{})), nil
	}
	if err := s.Put(context.Background(), digestOf(data), broken); err == nil {
		t.Fatal("a broken stream was accepted")
	}
	assertEmptyTmp(t, s)
	if err := s.Put(context.Background(), "sha256:nothex", opener(data)); err == nil {
		t.Error("malformed digest accepted")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, syscall.ECONNRESET }

func TestConcurrentPutsUnpackOnce(t *testing.T) {
	s := openStore(t)
	data := ocitest.Tar(t, ocitest.Entry{Name: "f", Type: tar.TypeReg, Body: strings.Repeat("x", 1<<20)})
	d := digestOf(data)
	var opens atomic.Int32
	gate := make(chan struct{})
	open := func() (io.ReadCloser, error) {
		opens.Add(1)
		<-gate
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- s.Put(context.Background(), d, open) })
	}
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("unpacked %d times", n)
	}
	// Eight holds: GC keeps the layer until the last release.
	for i := range 8 {
		if removed, err := s.GC(func(string) bool { return false }); err != nil || len(removed) != 0 {
			t.Fatalf("GC with %d holds: %v %v", 8-i, removed, err)
		}
		s.Release(d)
	}
}

func TestGC(t *testing.T) {
	s := openStore(t)
	keep := put(t, s, ocitest.Tar(t, ocitest.Entry{Name: "keep", Type: tar.TypeReg}))
	drop := put(t, s, ocitest.Tar(t, ocitest.Entry{Name: "drop", Type: tar.TypeReg}))
	removed, err := s.GC(func(d string) bool { return d == keep })
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != drop || s.Has(drop) || !s.Has(keep) {
		t.Errorf("removed %v; has drop %v keep %v", removed, s.Has(drop), s.Has(keep))
	}
	assertEmptyTmp(t, s)
	// A reopened store clears what an interrupted put left.
	if err := os.Mkdir(filepath.Join(s.tmpDir(), "put-123"), 0o700); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	assertEmptyTmp(t, s2)
	if list, _ := s2.List(); len(list) != 1 || list[0] != keep {
		t.Errorf("layers after reopen: %v", list)
	}
}

// TestCheckDigest checks the hand-written digest check against the regular expression it
// replaced.
func TestCheckDigest(t *testing.T) {
	re := regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	h := strings.Repeat("0123456789abcdef", 4)
	for _, d := range []string{"sha256:" + h, "sha256:" + h[:63], "sha256:" + h + "0", "sha256:" + strings.ToUpper(h), "sha512:" + h,
		h, "sha256:", "", "sha256:" + h[:63] + "g", "sha256:" + h + "\n"} {
		if got, want := checkDigest(d) == nil, re.MatchString(d); got != want {
			t.Errorf("checkDigest(%q) ok = %t, want %t", d, got, want)
		}
	}
}
