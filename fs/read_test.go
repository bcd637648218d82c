package fs

import (
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

func TestStat(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	must(t, os.Chmod(s.host("/workspace/a.txt"), 0o640))
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	must(t, os.Chtimes(s.host("/workspace/a.txt"), mtime, mtime))

	info, err := s.Stat("/workspace/a.txt")
	must(t, err)
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if !info.MTime.Equal(mtime) {
		t.Errorf("mtime %v, want %v", info.MTime, mtime)
	}
	info.MTime = time.Time{}
	want := Info{Name: "a.txt", Path: "/workspace/a.txt", Type: TypeFile, Size: 6, Mode: "0640",
		UID: uid, GID: gid, Owner: wantName(uid), Group: wantName(gid)}
	if *info != want {
		t.Errorf("stat a.txt:\n got %+v\nwant %+v", *info, want)
	}
	for p, typ := range map[string]string{"/": TypeDir, "/workspace/sub": TypeDir, "/workspace/shadow": TypeSymlink, "/workspace/fifo": TypeOther} {
		info, err := s.Stat(p)
		must(t, err)
		if info.Type != typ || info.Path != p {
			t.Errorf("stat %s: %+v, want type %s", p, info, typ)
		}
	}
	_, err = s.Stat("/workspace/nope")
	wantCode(t, err, api.CodeNotFound, "stat /workspace/nope: no such file or directory")
	_, err = s.Stat("/workspace/a.txt/x")
	wantCode(t, err, api.CodeInvalidArgument, "not a directory")
}

// wantName is the fake /etc/passwd's name for an id: root, or tester for the test's own.
func wantName(id uint32) string {
	if id == 0 {
		return "root"
	}
	return "tester"
}

func TestList(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	for _, c := range []struct {
		depth  int
		hidden bool
		want   string
	}{
		{1, false, "/workspace/a.txt /workspace/fifo /workspace/hostdir /workspace/loop1 /workspace/loop2 /workspace/shadow /workspace/sub /workspace/up"},
		{2, false, "/workspace/a.txt /workspace/fifo /workspace/hostdir /workspace/loop1 /workspace/loop2 /workspace/shadow /workspace/sub /workspace/sub/b.txt /workspace/sub/deep /workspace/up"},
		{3, false, "/workspace/a.txt /workspace/fifo /workspace/hostdir /workspace/loop1 /workspace/loop2 /workspace/shadow /workspace/sub /workspace/sub/b.txt /workspace/sub/deep /workspace/sub/deep/c.txt /workspace/up"},
		{9, true, "/workspace/.hidden /workspace/a.txt /workspace/fifo /workspace/hostdir /workspace/loop1 /workspace/loop2 /workspace/shadow /workspace/sub /workspace/sub/.dot /workspace/sub/.dot/x /workspace/sub/b.txt /workspace/sub/deep /workspace/sub/deep/c.txt /workspace/up"},
	} {
		entries, err := s.List("/workspace", c.depth, c.hidden, 0)
		must(t, err)
		if got := paths(entries); got != c.want {
			t.Errorf("list depth %d hidden %v:\n got %s\nwant %s", c.depth, c.hidden, got, c.want)
		}
	}
	entries, err := s.List("workspace/sub", 1, false, 0) // relative to /
	must(t, err)
	if entries[0].Name != "b.txt" || entries[0].Size != 4 || entries[0].Type != TypeFile || entries[0].Owner != wantName(entries[0].UID) {
		t.Errorf("entry %+v", entries[0])
	}
	entries, err = s.List("/workspace", 1, false, 0)
	must(t, err)
	for _, e := range entries {
		if e.Name == "hostdir" && (e.Type != TypeSymlink || e.LinkTarget != s.outside) {
			t.Errorf("hostdir entry %+v", e)
		}
	}
	_, err = s.List("/workspace/a.txt", 1, false, 0)
	wantCode(t, err, api.CodeInvalidArgument, "list /workspace/a.txt: not a directory")
	_, err = s.List("/nope", 1, false, 0)
	wantCode(t, err, api.CodeNotFound)
	_, err = s.List("/workspace", 0, false, 0)
	wantCode(t, err, api.CodeInvalidArgument, "depth")
}

func TestOpen(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	writeHostFile(t, s.host("/workspace/digits"), "0123456789")
	f, info, err := s.Open("/workspace/digits")
	must(t, err)
	defer f.Close()
	if info.Size != 10 || info.Type != TypeFile || info.Path != "/workspace/digits" || f.Name() != "/workspace/digits" {
		t.Errorf("info %+v, file name %q", info, f.Name())
	}
	b, err := io.ReadAll(io.NewSectionReader(f, 3, 4)) // a Range
	must(t, err)
	if string(b) != "3456" {
		t.Errorf("range read %q", b)
	}

	_, _, err = s.Open("/workspace/sub")
	wantCode(t, err, api.CodeInvalidArgument, "open /workspace/sub: is a directory")
	_, _, err = s.Open("/workspace/fifo") // must not block: a FIFO is never opened
	wantCode(t, err, api.CodeInvalidArgument, "not a regular file")
	_, _, err = s.Open("/workspace/nope")
	wantCode(t, err, api.CodeNotFound, "/workspace/nope")
	if got := mustRead(t, s.Root, "/workspace/a.txt/"); got != "hello\n" {
		t.Errorf("a trailing slash is cleaned away: %q", got)
	}
}

func TestOpenDeviceRefused(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	// A sandbox with CAP_MKNOD can make a node for a host device; the daemon must not open it.
	must(t, os.MkdirAll(s.host("/dev"), 0o755))
	must(t, mknodChar(s.host("/dev/mem"), 1, 1))
	_, _, err := s.Open("/dev/mem")
	wantCode(t, err, api.CodeInvalidArgument, "not a regular file")
}

func TestOwnerNamesOptional(t *testing.T) {
	s := newSandbox(t)
	must(t, os.Remove(s.host("/etc/passwd")))
	must(t, os.Remove(s.host("/etc/group")))
	must(t, os.Symlink("/workspace/fifo", s.host("/etc/group"))) // must not hang
	info, err := s.Stat("/workspace/a.txt")
	must(t, err)
	if info.Owner != "" || info.Group != "" || info.UID != uint32(os.Getuid()) {
		t.Errorf("without passwd and group: %+v", info)
	}
}

func TestListStopsAtItsCap(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	// 14 entries at depth 9 with hidden ones (see TestList).
	all, err := s.List("/workspace", 9, true, 14)
	must(t, err)
	if len(all) != 14 {
		t.Fatalf("at the cap: %d entries, want 14", len(all))
	}
	_, err = s.List("/workspace", 9, true, 5)
	wantCode(t, err, api.CodeTooLarge, "list /workspace: more than 5 entries at depth 9")

	// The walk itself stops at the first entry past the cap, it does not collect the rest.
	fd, err := s.open("/workspace", unix.O_RDONLY|unix.O_DIRECTORY)
	must(t, err)
	defer unix.Close(fd)
	l := lister{names: s.loadNames(), hidden: true, max: 5}
	if err := l.walk(fd, "/workspace", 9); err != errTooMany || len(l.out) != 6 {
		t.Fatalf("walk with max 5: err %v after %d entries, want errTooMany after 6", err, len(l.out))
	}
}
