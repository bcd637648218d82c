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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
	xattrs           map[string]string
}

func layerTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.uid, Linkname: e.link,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if e.typ == tar.TypeChar {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[paxXattrPrefix+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

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
	d := put(t, s, layerTar(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/passwd", typ: tar.TypeReg, body: "root:x:0:0::/root:/bin/sh\n"},
		entry{name: "etc/hard", typ: tar.TypeLink, link: "etc/passwd"},
		entry{name: "etc/abs", typ: tar.TypeSymlink, link: "/etc/shadow"},
		entry{name: "bin/ping", typ: tar.TypeReg, body: "\x7fELF", mode: 0o4755, uid: 1000,
			xattrs: map[string]string{"security.capability": capXattr, "user.note": "hi", "trusted.overlay.redirect": "/x"}},
		entry{name: "usr/lib/.wh.gone", typ: tar.TypeReg},
		entry{name: "var/cache/.wh..wh..opq", typ: tar.TypeReg},
		entry{name: "dev/null", typ: tar.TypeChar},
		entry{name: "tmp/fifo", typ: tar.TypeFifo},
		entry{name: "tmp/twice", typ: tar.TypeReg, body: "first"},
		entry{name: "tmp/twice", typ: tar.TypeReg, body: "second"},
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
		t.Errorf("hard link: %v, inodes %d %d", err, a.Ino, b.Ino)
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
	cases := map[string][]entry{
		"dotdot":           {{name: "../escape", typ: tar.TypeReg}},
		"nested dotdot":    {{name: "a/../../escape", typ: tar.TypeReg}},
		"through symlink":  {{name: "link", typ: tar.TypeSymlink, link: outside}, {name: "link/escape", typ: tar.TypeReg}},
		"relative symlink": {{name: "d/", typ: tar.TypeDir}, {name: "link", typ: tar.TypeSymlink, link: "d"}, {name: "link/f", typ: tar.TypeReg}},
		"hard link out":    {{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}},
		"hard link via symlink": {{name: "link", typ: tar.TypeSymlink, link: "/etc"},
			{name: "h", typ: tar.TypeLink, link: "link/passwd"}},
		"whiteout dotdot": {{name: "a/.wh...", typ: tar.TypeReg}},
	}
	for name, entries := range cases {
		data := layerTar(t, entries...)
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
	data := layerTar(t, entry{name: "f", typ: tar.TypeReg, body: "x"})
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
	data := layerTar(t, entry{name: "f", typ: tar.TypeReg, body: strings.Repeat("x", 1<<20)})
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
	keep := put(t, s, layerTar(t, entry{name: "keep", typ: tar.TypeReg}))
	drop := put(t, s, layerTar(t, entry{name: "drop", typ: tar.TypeReg}))
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
