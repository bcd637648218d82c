package fs

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// TestGuardedPaths: nothing is created, replaced, moved or removed on nsbox's own mounts
// (/run/nsbox here), also through a symlink, and mount points (a file bind-mounted at
// /.nsbox/nsbox, as the agent binary is) are never replaced, moved or removed (issue 11).
func TestGuardedPaths(t *testing.T) {
	requireRoot(t)
	s := newSandbox(t)
	must(t, os.MkdirAll(s.host("/run/nsbox"), 0o755))
	must(t, unix.Mount("nsbox-test", s.host("/run/nsbox"), "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { must(t, unix.Unmount(s.host("/run/nsbox"), unix.MNT_DETACH)) })
	writeHostFile(t, s.host("/run/nsbox/agent.conf"), "agent\n")
	writeHostFile(t, s.host("/.nsbox/nsbox"), "the agent\n")
	must(t, unix.Mount(s.host("/workspace/a.txt"), s.host("/.nsbox/nsbox"), "", unix.MS_BIND, ""))
	t.Cleanup(func() { must(t, unix.Unmount(s.host("/.nsbox/nsbox"), unix.MNT_DETACH)) })
	must(t, os.Symlink("/run/nsbox", s.host("/workspace/agentdir")))

	for _, p := range []string{"/run/nsbox/agent.conf", "/run/nsbox/new", "/workspace/agentdir/new"} {
		_, err := s.Write(p, strings.NewReader("evil"), WriteOptions{UID: -1, GID: -1})
		wantCode(t, err, api.CodePermissionDenied)
	}
	wantCode(t, s.Mkdir("/run/nsbox/d", false, 0, -1, -1), api.CodePermissionDenied)
	wantCode(t, s.Mkdir("/workspace/agentdir/d/e", true, 0, -1, -1), api.CodePermissionDenied)
	wantCode(t, s.Remove("/run/nsbox/agent.conf", false), api.CodePermissionDenied)
	wantCode(t, s.Remove("/run", true), api.CodeConflict) // stops at the mount point
	wantCode(t, s.Move("/run/nsbox/agent.conf", "/run/nsbox/x", false), api.CodePermissionDenied)
	wantCode(t, s.Move("/workspace/a.txt", "/workspace/agentdir/x", false), api.CodePermissionDenied)
	_, err := s.Write("/.nsbox/nsbox", strings.NewReader("evil"), WriteOptions{UID: -1, GID: -1})
	wantCode(t, err, api.CodeConflict)
	wantCode(t, s.Move("/.nsbox/nsbox", "/workspace/x", false), api.CodeConflict)
	wantCode(t, s.Move("/workspace/a.txt", "/.nsbox/nsbox", true), api.CodeConflict)
	wantCode(t, s.Remove("/.nsbox", true), api.CodeConflict)
	if got := mustRead(t, s.Root, "/run/nsbox/agent.conf"); got != "agent\n" {
		t.Errorf("guarded file changed: %q", got)
	}
	// Next to them, everything still works.
	_, err = s.Write("/.nsbox/other", strings.NewReader("fine"), WriteOptions{UID: -1, GID: -1})
	must(t, err)
	must(t, s.Remove("/.nsbox/other", false))
}
