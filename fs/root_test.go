package fs

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

func TestResolve(t *testing.T) {
	for _, c := range []struct{ cwd, p, want string }{
		{"/workspace", "a.txt", "/workspace/a.txt"},
		{"/workspace", "/etc/passwd", "/etc/passwd"},
		{"/workspace", "", "/workspace"},
		{"/workspace", "../../../../etc", "/etc"},
		{"/workspace", "./a/./b//c/", "/workspace/a/b/c"},
		{"/", "/../..", "/"},
		{"", "x", "/x"},
		{"relative", "x", "/relative/x"},
	} {
		if got := Resolve(c.cwd, c.p); got != c.want {
			t.Errorf("Resolve(%q, %q) = %q, want %q", c.cwd, c.p, got, c.want)
		}
	}
}

func TestOpenRootMissing(t *testing.T) {
	_, err := OpenRoot(filepath.Join(t.TempDir(), "gone"), rootfs.IDMap{})
	wantCode(t, err, api.CodeUnavailable, "not reachable")
}

// Absolute and relative symlinks and ".." chains resolve inside the root, whatever they say.
func TestEscapesStayInRoot(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	for p, want := range map[string]string{
		"/workspace/shadow":                           sandboxShadow, // -> /etc/shadow
		"/workspace/up/etc/hostname":                  "sandbox\n",   // -> ../../..
		"/workspace/up/workspace/up/workspace/shadow": sandboxShadow,
		"/../../../../etc/hostname":                   "sandbox\n",
		"../../etc/hostname":                          "sandbox\n",
		"/workspace/sub/../../etc/hostname":           "sandbox\n",
		"/workspace/up/workspace/sub/b.txt":           "bee\n",
		"/workspace/up/workspace/up/etc/shadow":       sandboxShadow,
	} {
		if got := mustRead(t, s.Root, p); got != want {
			t.Errorf("%s: read %q, want %q", p, got, want)
		}
	}
	// The host path of the outside dir does not exist inside the root.
	_, err := readAll(s.Root, "/workspace/hostdir/secret")
	wantCode(t, err, api.CodeNotFound, "/workspace/hostdir/secret", "no such file")
	if _, err = readAll(s.Root, s.outside+"/secret"); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("the outside dir's host path, in the root: %v", err)
	}

	entries, err := s.List("/workspace/up", 1, true, 0)
	must(t, err)
	if got := names(entries); got != "etc workspace" {
		t.Errorf("list of /workspace/up (-> ../../..) = %s, want the root's: etc workspace", got)
	}
	info, err := s.Stat("/workspace/up")
	must(t, err)
	if info.Type != TypeSymlink || info.LinkTarget != "../../.." {
		t.Errorf("stat of the link itself: %+v", info)
	}
}

func TestSymlinkLoop(t *testing.T) {
	s := newSandbox(t)
	_, err := readAll(s.Root, "/workspace/loop1")
	wantCode(t, err, api.CodeInvalidArgument, "/workspace/loop1", "symlink loop")
	_, err = s.List("/workspace/loop2/x", 1, false, 0)
	wantCode(t, err, api.CodeInvalidArgument, "symlink loop")
	info, err := s.Stat("/workspace/loop1") // the link itself is fine
	must(t, err)
	if info.LinkTarget != "loop2" {
		t.Errorf("loop1 target %q", info.LinkTarget)
	}
}

// Writes, mkdirs and removes through links that point outside stay inside the root too.
func TestMutationsThroughLinksStayInRoot(t *testing.T) {
	s := newSandbox(t)
	_, err := s.Write("/workspace/hostdir/secret", strings.NewReader("pwned"), WriteOptions{UID: -1, GID: -1})
	wantCode(t, err, api.CodeNotFound)
	// The link dangles inside the root, so like mkdir -p, the parents cannot be made...
	_, err = s.Write("/workspace/hostdir/new", strings.NewReader("x"), WriteOptions{UID: -1, GID: -1, MakeParents: true})
	wantCode(t, err, api.CodeNotFound, "/workspace/hostdir")
	// ...until its target exists, in the root.
	_, err = s.Write(s.outside+"/new", strings.NewReader("x"), WriteOptions{UID: -1, GID: -1, MakeParents: true})
	must(t, err)
	_, err = s.Write("/workspace/hostdir/secret", strings.NewReader("pwned"), WriteOptions{UID: -1, GID: -1})
	must(t, err)
	must(t, s.Mkdir("/workspace/up/made", true, 0, -1, -1))
	must(t, s.Remove("/workspace/up/etc/hostname", false))
	_, err = s.Write("/workspace/shadow", strings.NewReader("replaced link"), WriteOptions{UID: -1, GID: -1})
	must(t, err)

	if got := hostEntries(t, s.outside); strings.Join(got, " ") != "secret" {
		t.Errorf("outside dir changed: %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(s.outside, "secret")); string(b) != hostSecret {
		t.Errorf("outside secret changed: %q", b)
	}
	if got := hostEntries(t, s.host(s.outside)); strings.Join(got, " ") != "new secret" {
		t.Errorf("the writes should land under the root: %v", got)
	}
	for _, p := range []string{"/made", "/etc/shadow"} {
		if _, err := os.Stat(s.host(p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(s.host("/etc/hostname")); !os.IsNotExist(err) {
		t.Errorf("/etc/hostname should be removed: %v", err)
	}
	if got := mustRead(t, s.Root, "/etc/shadow"); got != sandboxShadow {
		t.Errorf("writing the link /workspace/shadow changed its target: %q", got)
	}
}

// A reader loops on a file while another goroutine keeps swapping its parent directory
// for symlinks to host directories. No host content may ever come back.
func TestSymlinkSwappedInDuringRead(t *testing.T) {
	s := newSandbox(t)
	const sandboxData = "SANDBOX DATA\n"
	writeHostFile(t, s.host("/workspace/d/secret"), sandboxData)
	writeHostFile(t, s.host("/workspace/d/passwd"), sandboxData)
	hostPasswd, err := os.ReadFile("/etc/passwd")
	must(t, err)

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the attacker
		defer wg.Done()
		d, real := s.host("/workspace/d"), s.host("/workspace/d.real")
		for i := 0; !stop.Load(); i++ {
			target := []string{s.outside, "/etc", "../../../../../../../../etc"}[i%3]
			if os.Rename(d, real) != nil || os.Symlink(target, d) != nil {
				t.Error("swap failed")
				return
			}
			time.Sleep(time.Duration(i%3) * time.Microsecond)
			if os.Remove(d) != nil || os.Rename(real, d) != nil {
				t.Error("swap back failed")
				return
			}
		}
	}()
	var reads, sandboxReads int
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); reads++ {
		for _, p := range []string{"/workspace/d/secret", "/workspace/d/passwd"} {
			got, err := readAll(s.Root, p)
			switch {
			case err != nil:
				if !api.IsCode(err, api.CodeNotFound) {
					t.Fatalf("read %s: %v", p, err)
				}
			case got == hostSecret || got == string(hostPasswd):
				t.Fatalf("read %s returned host content %q", p, got)
			case got == sandboxData:
				sandboxReads++
			case p == "/workspace/d/passwd" && strings.HasPrefix(got, "root:x:0:0:root"):
				// the sandbox's own /etc/passwd, through the swapped-in link: fine
			default:
				t.Fatalf("read %s: unexpected %q", p, got)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if sandboxReads == 0 {
		t.Errorf("no read of the real file succeeded in %d rounds", reads)
	}
	t.Logf("%d rounds, %d reads of the sandbox file", reads, sandboxReads)
}

// With a real procfs inside the root, /proc magic links are refused, and /proc files
// cannot be read with the daemon's privileges.
func TestProcMagicLinks(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	must(t, os.Mkdir(s.host("/proc"), 0o555))
	must(t, unix.Mount("proc", s.host("/proc"), "proc", 0, ""))
	t.Cleanup(func() { must(t, unix.Unmount(s.host("/proc"), unix.MNT_DETACH)) })

	_, err := readAll(s.Root, "/proc/self/root/etc/hostname")
	wantCode(t, err, api.CodeInvalidArgument, "magic link")
	_, err = s.List("/proc/self/cwd", 1, false, 0)
	wantCode(t, err, api.CodeInvalidArgument, "magic link")
	_, err = readAll(s.Root, "/proc/self/status")
	wantCode(t, err, api.CodePermissionDenied, "/proc/self/status", "use exec")
	info, err := s.Stat("/proc/self/root") // describing the link is fine
	must(t, err)
	if info.Type != TypeSymlink || info.LinkTarget != "/" {
		t.Errorf("stat /proc/self/root: %+v", info)
	}
}

// The daemon reaches a sandbox's root through /proc/<pid>/root: the Root must see the
// mounts of that process's mount namespace, not the host's.
func TestProcPidRootSeesChildMounts(t *testing.T) {
	requireRoot(t)
	checkNoLeaks(t)
	dir := t.TempDir()
	script := fmt.Sprintf("mount -t tmpfs nsbox-test %s && echo inside > %s/marker && echo ready && exec sleep 60", dir, dir)
	cmd, ready := startInMountNS(t, script)
	if _, err := ready.Read(make([]byte, 6)); err != nil {
		t.Fatalf("child did not get ready: %v", err)
	}
	r := openTestRoot(t, fmt.Sprintf("/proc/%d/root", cmd.Process.Pid))
	if got := mustRead(t, r, dir+"/marker"); got != "inside\n" {
		t.Errorf("marker through /proc/pid/root: %q", got)
	}
	if _, err := os.Stat(dir + "/marker"); !os.IsNotExist(err) {
		t.Errorf("the child's mount leaked to the host: %v", err)
	}
	_, err := r.Write(dir+"/written", strings.NewReader("w"), WriteOptions{UID: -1, GID: -1})
	must(t, err)
	if _, err := os.Stat(dir + "/written"); !os.IsNotExist(err) {
		t.Errorf("a write in the child's mount reached the host dir: %v", err)
	}
}

func TestErrnoCodes(t *testing.T) {
	for errno, want := range map[unix.Errno]int{
		unix.ENOENT: http.StatusNotFound, unix.EISDIR: http.StatusBadRequest, unix.ENOTDIR: http.StatusBadRequest,
		unix.EACCES: http.StatusForbidden, unix.EPERM: http.StatusForbidden, unix.EROFS: http.StatusForbidden,
		unix.ENOSPC: http.StatusInsufficientStorage, unix.EDQUOT: http.StatusInsufficientStorage,
		unix.EFBIG: http.StatusRequestEntityTooLarge, unix.ELOOP: http.StatusBadRequest, unix.EXDEV: http.StatusBadRequest,
		unix.EEXIST: http.StatusConflict, unix.ENOTEMPTY: http.StatusConflict, unix.EIO: http.StatusInternalServerError,
	} {
		err := pathErr("op", "/p", &os.PathError{Op: "write", Path: "/host/path", Err: errno})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.HTTPStatus() != want {
			t.Errorf("%v: %v, want status %d", errno, err, want)
		}
		if !strings.HasPrefix(ae.Message, "op /p: "+errno.Error()) || strings.Contains(ae.Message, "/host") {
			t.Errorf("%v: message %q", errno, ae.Message)
		}
	}
	plain := errors.New("reader broke")
	if err := pathErr("write", "/p", plain); !errors.Is(err, plain) || err.Error() != "write /p: reader broke" {
		t.Errorf("a non-errno error: %v", err)
	}
}
