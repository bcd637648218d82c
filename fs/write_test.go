package fs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// self is WriteOptions that leave the owner alone, so the tests also run without root.
var self = WriteOptions{UID: -1, GID: -1}

func TestWrite(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	info, err := s.Write("/workspace/new.txt", strings.NewReader("new"), self)
	must(t, err)
	if info.Path != "/workspace/new.txt" || info.Size != 3 || info.Mode != "0644" || info.Type != TypeFile {
		t.Errorf("new file: %+v", info)
	}
	opts := self
	opts.Mode = 0o600 | os.ModeSetgid
	info, err = s.Write("/workspace/a.txt", strings.NewReader("replaced"), opts)
	must(t, err)
	if info.Mode != "2600" || mustRead(t, s.Root, "/workspace/a.txt") != "replaced" {
		t.Errorf("replaced file: %+v", info)
	}
	info, err = s.Write("/workspace/a.txt", strings.NewReader("again"), self) // Mode 0 keeps it
	must(t, err)
	if info.Mode != "2600" {
		t.Errorf("mode not kept: %+v", info)
	}
	_, err = s.Write("/workspace/empty", strings.NewReader(""), self)
	must(t, err)
	if fi, err := os.Stat(s.host("/workspace/empty")); err != nil || fi.Size() != 0 {
		t.Errorf("empty file: %v %v", fi, err)
	}

	_, err = s.Write("/workspace/x/y/z.txt", strings.NewReader("deep"), self)
	wantCode(t, err, api.CodeNotFound, "write /workspace/x/y/z.txt")
	opts = self
	opts.MakeParents = true
	_, err = s.Write("/workspace/x/y/z.txt", strings.NewReader("deep"), opts)
	must(t, err)
	if got := mustRead(t, s.Root, "/workspace/x/y/z.txt"); got != "deep" {
		t.Errorf("with parents: %q", got)
	}
	_, err = s.Write("/workspace/sub", strings.NewReader("x"), self)
	wantCode(t, err, api.CodeInvalidArgument, "write /workspace/sub: is a directory")
	_, err = s.Write("/workspace/a.txt/x", strings.NewReader("x"), opts)
	wantCode(t, err, api.CodeInvalidArgument, "not a directory")
	_, err = s.Write("/", strings.NewReader("x"), self)
	wantCode(t, err, api.CodeInvalidArgument, "root directory")
	assertNoTempFiles(t, s.dir)
}

func TestWriteTooLarge(t *testing.T) {
	s := newSandbox(t)
	opts := self
	opts.MaxBytes = 10
	_, err := s.Write("/workspace/ten", strings.NewReader("0123456789"), opts)
	must(t, err)
	_, err = s.Write("/workspace/a.txt", strings.NewReader("0123456789+"), opts)
	wantCode(t, err, api.CodeTooLarge, "write /workspace/a.txt", "10 bytes")
	if got := mustRead(t, s.Root, "/workspace/a.txt"); got != "hello\n" {
		t.Errorf("a refused write changed the file: %q", got)
	}
	assertNoTempFiles(t, s.dir)
}

func TestWriteReaderFails(t *testing.T) {
	s := newSandbox(t)
	broken := errors.New("client went away")
	src := io.MultiReader(strings.NewReader("partial"), errReader{broken})
	_, err := s.Write("/workspace/a.txt", src, self)
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "write /workspace/a.txt") {
		t.Errorf("error %v, want the reader's, with the path", err)
	}
	if got := mustRead(t, s.Root, "/workspace/a.txt"); got != "hello\n" {
		t.Errorf("a failed write changed the file: %q", got)
	}
	assertNoTempFiles(t, s.dir)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestWriteOwner(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	opts := WriteOptions{UID: 1234, GID: 2345, Mode: 0o4755, MakeParents: true}
	info, err := s.Write("/home/u/bin/tool", strings.NewReader("#!/bin/sh\n"), opts)
	must(t, err)
	if info.UID != 1234 || info.GID != 2345 || info.Mode != "4755" { // set after the chown, which would clear it
		t.Errorf("info %+v", info)
	}
	opts.Mode = 0o755 | os.ModeSetuid
	info, err = s.Write("/home/u/bin/tool", strings.NewReader("#!/bin/sh\n"), opts)
	must(t, err)
	if info.Mode != "4755" {
		t.Errorf("os.ModeSetuid: %+v", info)
	}
	for _, p := range []string{"/home", "/home/u", "/home/u/bin"} {
		fi, err := s.Stat(p)
		must(t, err)
		if fi.UID != 1234 || fi.GID != 2345 || fi.Mode != "0755" {
			t.Errorf("parent %s: %+v", p, fi)
		}
	}
	fi, err := s.Stat("/workspace") // existed: untouched
	must(t, err)
	if fi.UID != 0 {
		t.Errorf("existing parent chowned: %+v", fi)
	}
}

// A write that replaces a regular file keeps its owner, as it keeps its mode, unless the owner
// is asked for; a writer other than root leaves no setuid or setgid bit on another's file.
func TestWriteKeepsOwner(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	must(t, os.Chown(s.host("/workspace/a.txt"), 1000, 1001))
	must(t, os.Chmod(s.host("/workspace/a.txt"), 0o640))
	write := func(p string, opts WriteOptions, want string) {
		t.Helper()
		info, err := s.Write(p, strings.NewReader("new"), opts)
		must(t, err)
		if got := fmt.Sprintf("%d:%d %s", info.UID, info.GID, info.Mode); got != want {
			t.Errorf("write %s with %+v: %s, want %s", p, opts, got, want)
		}
		if got := mustRead(t, s.Root, p); got != "new" {
			t.Errorf("%s holds %q", p, got)
		}
	}
	write("/workspace/a.txt", WriteOptions{UID: 0, GID: 0}, "1000:1001 0640")       // root, no session
	write("/workspace/a.txt", WriteOptions{UID: 2000, GID: 2000}, "1000:1001 0640") // another session's user
	write("/workspace/a.txt", WriteOptions{UID: 3000, GID: 0, ExplicitUID: true}, "3000:1001 0640")
	write("/workspace/a.txt", WriteOptions{UID: 3000, GID: 4000, ExplicitUID: true, ExplicitGID: true, Mode: 0o600}, "3000:4000 0600")
	write("/workspace/new.txt", WriteOptions{UID: 2000, GID: 2000}, "2000:2000 0644")
	// A symlink is replaced, not followed: the new file is the writer's.
	write("/workspace/shadow", WriteOptions{UID: 2000, GID: 2000}, "2000:2000 0644")

	setuid := func() {
		t.Helper()
		writeHostFile(t, s.host("/workspace/tool"), "#!/bin/sh\n")
		must(t, os.Chown(s.host("/workspace/tool"), 0, 0))
		must(t, unix.Chmod(s.host("/workspace/tool"), 0o6755))
	}
	setuid()
	write("/workspace/tool", WriteOptions{UID: 0, GID: 0}, "0:0 6755")
	write("/workspace/tool", WriteOptions{UID: 2000, GID: 2000}, "0:0 0755")
	setuid()
	write("/workspace/tool", WriteOptions{UID: 2000, GID: 2000, Mode: 0o6755}, "0:0 0755")
	setuid()
	write("/workspace/tool", WriteOptions{UID: 2000, GID: 0}, "0:0 2755") // its group's bit stays
	write("/workspace/tool", WriteOptions{UID: 2000, GID: 2000, ExplicitUID: true, ExplicitGID: true, Mode: 0o6755}, "2000:2000 6755")
}

func TestWriteNoSpace(t *testing.T) {
	requireRoot(t)
	dir := mountTmpfs(t, "size=1m")
	r := openTestRoot(t, dir)
	_, err := r.Write("/small", strings.NewReader("small"), self)
	must(t, err)
	_, err = r.Write("/big", io.LimitReader(zeros{}, 2<<20), self)
	wantCode(t, err, api.CodeInsufficientStorage, "write /big", "no space left on device")
	_, err = r.Write("/small", io.LimitReader(zeros{}, 2<<20), self)
	wantCode(t, err, api.CodeInsufficientStorage)
	if got := strings.Join(hostEntries(t, dir), " "); got != "small" {
		t.Errorf("after ENOSPC the fs holds %s, want only small", got)
	}
	if got := mustRead(t, r, "/small"); got != "small" {
		t.Errorf("small changed: %q", got)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestReadOnlyMount(t *testing.T) {
	requireRoot(t)
	dir := mountTmpfs(t, "size=1m")
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("ro"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	r := openTestRoot(t, dir)
	remountReadOnly(t, dir)
	_, err := r.Write("/f", strings.NewReader("x"), self)
	wantCode(t, err, api.CodePermissionDenied, "write /f", "read-only")
	wantCode(t, r.Mkdir("/d/new", false, 0, -1, -1), api.CodePermissionDenied, "read-only")
	wantCode(t, r.Mkdir("/d/new/deeper", true, 0, -1, -1), api.CodePermissionDenied, "read-only")
	must(t, r.Mkdir("/d", true, 0, -1, -1)) // exists: fine even read-only
	wantCode(t, r.Remove("/f", false), api.CodePermissionDenied, "remove /f", "read-only")
	wantCode(t, r.Remove("/d", true), api.CodePermissionDenied, "read-only")
	wantCode(t, r.Move("/f", "/g", false), api.CodePermissionDenied, "read-only")
	if got := mustRead(t, r, "/f"); got != "ro" {
		t.Errorf("read-only file: %q", got)
	}
}

// A 1 GiB upload streams with flat memory and reads back with the same checksum.
func TestWriteOneGiBStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB of I/O; not in -short")
	}
	s := newSandbox(t)
	const size = 1 << 30
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	src := &generator{left: size, sum: sha256.New()}
	info, err := s.Write("/workspace/big", src, self)
	must(t, err)
	if info.Size != size {
		t.Fatalf("size %d", info.Size)
	}
	f, _, err := s.Open("/workspace/big")
	must(t, err)
	defer f.Close()
	back := sha256.New()
	_, err = io.Copy(back, f)
	must(t, err)
	if !bytes.Equal(back.Sum(nil), src.sum.Sum(nil)) {
		t.Error("checksum differs after the round trip")
	}
	const limit = 64 << 20
	if growth := src.peakHeap - before.HeapAlloc; src.peakHeap > before.HeapAlloc && growth > limit {
		t.Errorf("heap grew by %d MiB while streaming", growth>>20)
	}
	t.Logf("heap before %d KiB, peak while streaming %d KiB", before.HeapAlloc>>10, src.peakHeap>>10)
}

// generator yields left pseudo-random bytes, hashing them, and samples the heap as it goes.
type generator struct {
	left, n  int64
	state    uint64
	sum      hash.Hash
	peakHeap uint64
}

func (g *generator) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.left)&^7] // whole 8-byte words (sizes are multiples of 8)
	for i := 0; i < len(p); i += 8 {
		g.state = g.state*6364136223846793005 + 1442695040888963407
		v := g.state
		p[i], p[i+1], p[i+2], p[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		p[i+4], p[i+5], p[i+6], p[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
	g.sum.Write(p)
	g.left -= int64(len(p))
	if g.n += int64(len(p)); g.n >= 64<<20 {
		g.n = 0
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		g.peakHeap = max(g.peakHeap, m.HeapAlloc)
	}
	return len(p), nil
}

func TestMkdir(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	must(t, s.Mkdir("/workspace/d", false, 0o777, -1, -1))
	if fi, err := os.Stat(s.host("/workspace/d")); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("mkdir mode (umask must not apply): %v %v", fi.Mode(), err)
	}
	wantCode(t, s.Mkdir("/workspace/d", false, 0, -1, -1), api.CodeConflict, "mkdir /workspace/d: file exists")
	must(t, s.Mkdir("/workspace/d", true, 0, -1, -1))
	wantCode(t, s.Mkdir("/workspace/p/q", false, 0, -1, -1), api.CodeNotFound)
	must(t, s.Mkdir("workspace/p/q/r", true, 0o700, -1, -1))
	for _, p := range []string{"/workspace/p", "/workspace/p/q", "/workspace/p/q/r"} {
		if fi, err := os.Stat(s.host(p)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", p, fi.Mode(), err)
		}
	}
	must(t, s.Mkdir("/workspace/up/workspace/sub/viaLink", true, 0, -1, -1))
	if fi, err := os.Stat(s.host("/workspace/sub/viaLink")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("through a symlinked component: %v", err)
	}
	wantCode(t, s.Mkdir("/workspace/a.txt/x", true, 0, -1, -1), api.CodeInvalidArgument, "mkdir /workspace/a.txt: not a directory")
	wantCode(t, s.Mkdir("/workspace/a.txt", true, 0, -1, -1), api.CodeInvalidArgument, "not a directory")
	wantCode(t, s.Mkdir("/", false, 0, -1, -1), api.CodeInvalidArgument, "root directory")
	must(t, s.Mkdir("/", true, 0, -1, -1))
}

func TestRemove(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	must(t, s.Remove("/workspace/a.txt", false))
	wantCode(t, s.Remove("/workspace/a.txt", false), api.CodeNotFound, "remove /workspace/a.txt")
	wantCode(t, s.Remove("/workspace/sub", false), api.CodeConflict, "directory not empty")
	must(t, os.Mkdir(s.host("/workspace/empty"), 0o755))
	must(t, s.Remove("/workspace/empty", false))
	must(t, s.Remove("/workspace/up", false)) // the link, not the root it points to
	if len(hostEntries(t, s.dir)) != 2 {
		t.Errorf("removing a link to / removed more: %v", hostEntries(t, s.dir))
	}
	wantCode(t, s.Remove("/", true), api.CodeInvalidArgument, "root directory")
	wantCode(t, s.Remove("/../..", true), api.CodeInvalidArgument, "root directory")
}

// A recursive remove never follows symlinks: what they point to, inside or outside the
// root, survives.
func TestRemoveRecursiveKeepsLinkTargets(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	tree := s.host("/workspace/tree")
	writeHostFile(t, filepath.Join(tree, "a/b/c/file"), "x")
	for name, target := range map[string]string{
		"toHost": s.outside, "toHostFile": filepath.Join(s.outside, "secret"), "toRoot": "/",
		"a/up": "../../../..", "a/b/etc": "/etc", "a/b/c/dotdot": "../../../../../../..",
	} {
		must(t, os.Symlink(target, filepath.Join(tree, name)))
	}
	must(t, s.Remove("/workspace/tree", true))
	if _, err := os.Lstat(tree); !os.IsNotExist(err) {
		t.Errorf("tree still there: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(s.outside, "secret")); err != nil || string(b) != hostSecret {
		t.Errorf("host file outside: %q %v", b, err)
	}
	for _, p := range []string{"/etc/shadow", "/etc/passwd", "/workspace/sub/b.txt"} {
		if _, err := os.Stat(s.host(p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	must(t, s.Remove("/workspace/sub/deep/c.txt", true)) // a file, recursively: fine
	wantCode(t, s.Remove("/workspace/nope", true), api.CodeNotFound)
}

func TestMove(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	must(t, s.Move("/workspace/a.txt", "/workspace/b.txt", false))
	if got := mustRead(t, s.Root, "/workspace/b.txt"); got != "hello\n" {
		t.Errorf("moved: %q", got)
	}
	writeHostFile(t, s.host("/workspace/c.txt"), "sea")
	wantCode(t, s.Move("/workspace/b.txt", "/workspace/c.txt", false), api.CodeConflict, "move /workspace/b.txt to /workspace/c.txt: file exists")
	must(t, s.Move("/workspace/b.txt", "/workspace/c.txt", true))
	if got := mustRead(t, s.Root, "/workspace/c.txt"); got != "hello\n" {
		t.Errorf("overwritten: %q", got)
	}
	must(t, s.Move("/workspace/sub", "/workspace/up/moved", false)) // a directory, through a link
	if got := mustRead(t, s.Root, "/moved/deep/c.txt"); got != "sea\n" {
		t.Errorf("moved dir: %q", got)
	}
	must(t, s.Move("/workspace/hostdir", "/workspace/hostlink", false)) // moves the link
	if got := hostEntries(t, s.outside); strings.Join(got, " ") != "secret" {
		t.Errorf("outside changed: %v", got)
	}
	wantCode(t, s.Move("/workspace/nope", "/workspace/x", false), api.CodeNotFound)
	wantCode(t, s.Move("/workspace/c.txt", "/workspace/no/x", false), api.CodeNotFound, "/workspace/no/x")
	wantCode(t, s.Move("/moved", "/workspace/fifo", true), api.CodeInvalidArgument, "not a directory")
	wantCode(t, s.Move("/", "/x", false), api.CodeInvalidArgument, "root directory")
	wantCode(t, s.Move("/moved", "/moved/deep/x", false), api.CodeInvalidArgument)
}

func TestMoveAcrossMounts(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	must(t, os.Mkdir(s.host("/tmp"), 0o755))
	must(t, unix.Mount("nsbox-test", s.host("/tmp"), "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { must(t, unix.Unmount(s.host("/tmp"), unix.MNT_DETACH)) })
	wantCode(t, s.Move("/workspace/a.txt", "/tmp/a.txt", false), api.CodeInvalidArgument, "different mounts")
	wantCode(t, s.Remove("/tmp", true), api.CodeConflict, "busy")
}

// assertNoTempFiles fails if an upload's temporary file is left anywhere under dir.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".nsbox-upload-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}
