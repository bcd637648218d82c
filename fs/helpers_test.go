package fs

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// sandbox is a fake sandbox tree in a temp dir, opened as a Root, beside a directory
// outside it that stands for the host.
type sandbox struct {
	*Root
	dir     string // the root's host path
	outside string // a host directory outside the root, with a file "secret"
}

const (
	hostSecret    = "HOST-SECRET\n"
	sandboxShadow = "sandbox shadow\n"
)

// newSandbox builds:
//
//	/etc/passwd, /etc/group (the test's uid and gid are "tester"), /etc/shadow, /etc/hostname
//	/workspace/a.txt, .hidden, sub/b.txt, sub/.dot/x, sub/deep/c.txt
//	/workspace/shadow -> /etc/shadow, up -> ../../.., loop1 <-> loop2,
//	/workspace/hostdir -> <outside> (absolute host path), fifo
func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	base := t.TempDir()
	s := &sandbox{dir: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	uid, gid := os.Getuid(), os.Getgid()
	files := map[string]string{
		"etc/passwd":               fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\ntester:x:%d:%d::/home/tester:/bin/sh\n", uid, gid),
		"etc/group":                fmt.Sprintf("root:x:0:\ntester:x:%d:\n", gid),
		"etc/shadow":               sandboxShadow,
		"etc/hostname":             "sandbox\n",
		"workspace/a.txt":          "hello\n",
		"workspace/.hidden":        "hidden\n",
		"workspace/sub/b.txt":      "bee\n",
		"workspace/sub/.dot/x":     "x\n",
		"workspace/sub/deep/c.txt": "sea\n",
	}
	for name, content := range files {
		writeHostFile(t, filepath.Join(s.dir, name), content)
	}
	writeHostFile(t, filepath.Join(s.outside, "secret"), hostSecret)
	links := map[string]string{
		"workspace/shadow":  "/etc/shadow",
		"workspace/up":      "../../..",
		"workspace/loop1":   "loop2",
		"workspace/loop2":   "loop1",
		"workspace/hostdir": s.outside,
	}
	for name, target := range links {
		must(t, os.Symlink(target, filepath.Join(s.dir, name)))
	}
	must(t, unix.Mkfifo(filepath.Join(s.dir, "workspace/fifo"), 0o644))
	s.Root = openTestRoot(t, s.dir)
	return s
}

func openTestRoot(t *testing.T, dir string) *Root {
	t.Helper()
	r, err := OpenRoot(dir, rootfs.IDMap{})
	must(t, err)
	t.Cleanup(func() { must(t, r.Close()) })
	return r
}

// host is the host path of the in-sandbox path p.
func (s *sandbox) host(p string) string { return filepath.Join(s.dir, p) }

func writeHostFile(t *testing.T, p, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// requireRoot skips tests that need root (mounts, chown, namespaces), saying so.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts, chown or namespaces); CI runs these as root")
	}
}

// wantCode fails unless err is an *api.Error with code whose message holds every want,
// and never a host path.
func wantCode(t *testing.T, err error, code string, want ...string) {
	t.Helper()
	ae, ok := err.(*api.Error)
	if !ok {
		t.Fatalf("error %v (%T), want *api.Error %s", err, err, code)
	}
	if ae.Code != code {
		t.Fatalf("error %q has code %s, want %s", ae.Message, ae.Code, code)
	}
	for _, w := range want {
		if !strings.Contains(ae.Message, w) {
			t.Errorf("error %q does not say %q", ae.Message, w)
		}
	}
	if strings.Contains(ae.Message, filepath.Join(os.TempDir(), "Test")) { // t.TempDir's
		t.Errorf("error %q names a host path", ae.Message)
	}
}

// readAll reads the whole file at p through the root.
func readAll(r *Root, p string) (string, error) {
	f, _, err := r.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

func mustRead(t *testing.T, r *Root, p string) string {
	t.Helper()
	s, err := readAll(r, p)
	must(t, err)
	return s
}

// hostEntries lists a host directory's names.
func hostEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// mountTmpfs mounts a tmpfs with options on a new directory and unmounts it at cleanup.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	must(t, unix.Mount("nsbox-test", dir, "tmpfs", 0, opts))
	t.Cleanup(func() { must(t, unix.Unmount(dir, unix.MNT_DETACH)) })
	return dir
}

// checkNoLeaks fails the test at cleanup if it left descriptors or goroutines behind.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	pr, pw, err := os.Pipe() // starts the runtime's poller (two descriptors for good)
	must(t, err)
	pr.Close()
	pw.Close()
	fds, goroutines := countFDs(t), runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			nf, ng := countFDs(t), runtime.NumGoroutine()
			if nf <= fds && ng <= goroutines {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leak: %d descriptors (was %d), %d goroutines (was %d)", nf, fds, ng, goroutines)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(entries)
}

// startInMountNS runs script with sh in a new mount namespace (Go makes its mounts
// private) and returns the process and its stdout; the process is killed at cleanup.
func startInMountNS(t *testing.T, script string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, out
}

// names and paths join the names or paths of infos with spaces.
func names(infos []Info) string { return joinInfos(infos, func(i Info) string { return i.Name }) }
func paths(infos []Info) string { return joinInfos(infos, func(i Info) string { return i.Path }) }

func joinInfos(infos []Info, field func(Info) string) string {
	var out []string
	for _, i := range infos {
		out = append(out, field(i))
	}
	return strings.Join(out, " ")
}

// mknodChar makes a character device node.
func mknodChar(p string, major, minor uint32) error {
	return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor)))
}

// remountReadOnly makes the mount at dir read-only.
func remountReadOnly(t *testing.T, dir string) {
	t.Helper()
	must(t, unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""))
}
