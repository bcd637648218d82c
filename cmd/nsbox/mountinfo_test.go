package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestMountinfoNamesNoDaemonPath reads /proc/self/mountinfo in sandboxes of every kind and
// fails if a path of the daemon's data or run dir (or of a copy-on-write workspace) shows in it
// (issue 11): the agent binary, /etc/hosts and /etc/resolv.conf are bound from the daemon's
// stage (root field /nsbox-agent-<hash>, /<container>/hosts), overlays name their layers by
// short names in a staging tmpfs. The paths an operator hands over whole — an rw workspace,
// a --mount, the host image's /usr and /etc — show as themselves (docs/threat-model.md). Kinds:
// busybox from the warm pool, busybox with a copy-on-write workspace with permission rules
// and a read-only --mount, host with an rw workspace and a --mount, a fork, a sandbox
// hibernated and woken, and one made after a daemon kill -9 and restart.
func TestMountinfoNamesNoDaemonPath(t *testing.T) {
	d := startDaemon(t, "--warm-pool", "busybox=1")
	ctx := context.Background()
	cow, rw, mnt := permWorkspace(t), t.TempDir(), t.TempDir()
	for _, dir := range []string{rw, mnt} { // with user namespaces, not root's (storage.go)
		if err := os.Chown(dir, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	check := func(id string) {
		t.Helper()
		info := d.sh(id, "cat /proc/self/mountinfo")
		for _, line := range strings.Split(strings.TrimSpace(info), "\n") {
			for _, hidden := range []string{d.dataDir, d.runDir, cow} {
				if strings.Contains(line, hidden) {
					t.Errorf("%s's mountinfo shows the host path %s: %s", id, hidden, line)
				}
			}
		}
		for _, want := range []string{" /.nsbox/nsbox ", " /etc/hosts ", " /etc/resolv.conf "} {
			if !strings.Contains(info, want) {
				t.Errorf("%s's mountinfo has no mount at%s:\n%s", id, want, info)
			}
		}
		// The operator's own paths show as they are, and only those.
		for _, line := range strings.Split(info, "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[3], "/tmp/") && !strings.HasPrefix(f[3], rw) && !strings.HasPrefix(f[3], mnt) {
				t.Errorf("%s's mountinfo shows a host path: %s", id, line)
			}
		}
	}
	d.waitWarm("busybox", 1)
	d.create(api.CreateSandboxRequest{ID: "pooled", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "cow", Image: "busybox", Workspace: &api.Workspace{HostPath: cow}, Permissions: doneWhenRules,
		Mounts: []api.Mount{{Source: mnt, Target: "/mnt/ro", ReadOnly: true}}})
	d.create(api.CreateSandboxRequest{ID: "host", Image: "host", Workspace: &api.Workspace{HostPath: rw, Mode: api.WorkspaceRW},
		Mounts: []api.Mount{{Source: mnt, Target: "/mnt/rw"}}})
	for _, id := range []string{"pooled", "cow", "host"} {
		check(id)
	}
	if _, err := d.client.ForkSandbox(ctx, "cow", api.ForkRequest{Count: 1, Prefix: "fork"}); err != nil {
		t.Fatal(err)
	}
	check("fork-1")
	if _, err := d.client.HibernateSandbox(ctx, "host", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.ResumeSandbox(ctx, "host"); err != nil {
		t.Fatal(err)
	}
	check("host")
	// A killed daemon leaves its stage mounted; the next one takes it over, and sandboxes of
	// both keep working.
	d.kill9()
	d.start()
	d.create(api.CreateSandboxRequest{ID: "after", Image: "busybox"})
	for _, id := range []string{"after", "pooled"} {
		check(id)
	}
	if got := d.sh("after", "cat /etc/hosts"); !strings.Contains(got, "after") {
		t.Errorf("/etc/hosts after a daemon restart: %q", got)
	}
}
