package main

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
	"golang.org/x/sys/unix"
)

// The tests of user namespaces (on by default) and of the capability set: what sandbox root is
// on the host, and that nothing it writes becomes a privilege there.

// defaultCapsMask is containerd 2.0's nine capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE.
const defaultCapsMask = 1<<0 | 1<<1 | 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<10

// requireUserNS skips a test of user namespaces when the daemons run without them.
func requireUserNS(t *testing.T) {
	if noUserNS {
		t.Skip("the daemons run with --userns=false (NSBOX_TEST_USERNS=false)")
	}
}

// hostRoot is the host uid of a sandbox's root, read from its uid_map (which must not be the
// identity map).
func (d *testDaemon) hostRoot(id string) uint32 {
	d.t.Helper()
	f := strings.Fields(d.sh(id, "cat /proc/self/uid_map"))
	if len(f) != 3 || f[0] != "0" || f[2] != "65536" || f[1] == "0" {
		d.t.Fatalf("uid_map inside %s is %q, want one line 0 HOST 65536 with HOST not 0", id, f)
	}
	n, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		d.t.Fatal(err)
	}
	return uint32(n)
}

// layerDir is the host directory of a sandbox's writable layers: its disk's mount (every
// sandbox has one unless the daemon runs with --default-disk 0), else its data dir.
func (d *testDaemon) layerDir(id string) string {
	disk := filepath.Join(d.runDir, "sandboxes", d.container(id), "disk")
	if _, err := os.Stat(filepath.Join(disk, "upper")); err == nil {
		return disk
	}
	return filepath.Join(d.dataDir, "sandboxes", d.container(id))
}

// upperPath is the host path of an in-sandbox file written to the sandbox's upper dir.
func (d *testDaemon) upperPath(id, p string) string {
	return filepath.Join(d.layerDir(id), "upper", p)
}

// hostOwner is the uid, gid and mode of a host file.
func hostOwner(t *testing.T, p string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode()
}

// statusIDs are the Uid: (or Gid:) fields of a host process.
func statusField(t *testing.T, pid int, field string) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return nil
}

// requireNosuidMounts fails the test unless the host has mounts under dir (the run dir of a
// sandbox's container: its disk, its root overlay, a copy-on-write workspace's) and each is
// nosuid: a setuid file a sandbox plants in them gives no one its owner's rights on the host.
func requireNosuidMounts(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[4], dir+"/") {
			continue
		}
		seen = append(seen, f[4])
		if !slices.Contains(strings.Split(f[5], ","), "nosuid") {
			t.Errorf("the host mount %s is not nosuid: %s", f[4], line)
		}
	}
	if len(seen) == 0 {
		t.Errorf("no host mounts under %s", dir)
	}
}

func TestUserNamespaceIsolatesRoot(t *testing.T) {
	requireUserNS(t)
	d := startDaemon(t)
	for _, image := range []string{"busybox", "host"} {
		t.Run(image, func(t *testing.T) {
			sb := d.create(api.CreateSandboxRequest{Image: image})
			root := d.hostRoot(sb.ID)
			// PID 1 runs as the range's first id on the host, not as root.
			for _, field := range []string{"Uid", "Gid"} {
				want := strconv.FormatUint(uint64(root), 10)
				if ids := statusField(t, d.agentPID(sb.ID), field); !slices.Equal(ids, []string{want, want, want, want}) {
					t.Errorf("the agent's %s on the host: %v, want %s", field, ids, want)
				}
			}
			// The image's files are root's inside, the agent binary is nobody's.
			files := "/bin/sh /etc"
			if image == "host" {
				files = "/usr/bin/env /etc/passwd /lib"
			}
			if got := d.sh(sb.ID, "stat -L -c '%u:%g' "+files+" | sort -u"); got != "0:0\n" {
				t.Errorf("owners of the image's files inside: %q", got)
			}
			if got := d.sh(sb.ID, "stat -c '%u' /.nsbox/nsbox"); got != "65534\n" {
				t.Errorf("the agent binary is owned by %q inside, want nobody", got)
			}
			// The network's files are root's inside, and read-only all the same.
			if got := d.sh(sb.ID, "stat -c '%u:%g' /etc/hosts /etc/resolv.conf | sort -u"); got != "0:0\n" {
				t.Errorf("owners of /etc/hosts and /etc/resolv.conf inside: %q, want root", got)
			}
			if res := d.exec(sb.ID, api.ExecRequest{Command: "echo x >> /etc/hosts || echo x >> /etc/resolv.conf"}); res.ExitCode == 0 {
				t.Error("the sandbox's root wrote to its /etc/hosts or /etc/resolv.conf")
			}
			// What root creates inside belongs to the range on the host; a setuid program it
			// plants in its upper dir is the range's, in a 0700 dir, on a nosuid mount if any.
			d.sh(sb.ID, "echo x > /root/made && cp /bin/sh /root/suid && chmod 4755 /root/suid")
			if uid, gid, _ := hostOwner(t, d.upperPath(sb.ID, "root/made")); uid != root || gid != root {
				t.Errorf("a file made inside is %d:%d on the host, want %d", uid, gid, root)
			}
			uid, _, mode := hostOwner(t, d.upperPath(sb.ID, "root/suid"))
			if mode&os.ModeSetuid == 0 || uid == 0 || uid != root {
				t.Errorf("the planted setuid file is %v owned by %d on the host, want the sandbox's %d", mode, uid, root)
			}
			requireNosuidMounts(t, filepath.Join(d.runDir, "sandboxes", d.container(sb.ID)))
			for _, dir := range []string{d.dataDir, filepath.Join(d.dataDir, "sandboxes"), filepath.Join(d.dataDir, "sandboxes", d.container(sb.ID))} {
				if _, _, mode := hostOwner(t, dir); mode.Perm() != 0o700 {
					t.Errorf("%s has mode %v, want 0700", dir, mode.Perm())
				}
			}
			// Only containerd 2.0's nine capabilities, and no way to a new user namespace.
			if got := d.sh(sb.ID, "grep CapEff /proc/self/status"); got != fmt.Sprintf("CapEff:\t%016x\n", defaultCapsMask) {
				t.Errorf("capabilities inside: %q, want %016x", got, defaultCapsMask)
			}
			res := d.exec(sb.ID, api.ExecRequest{Command: "unshare -U -r true"})
			if _, stderr, _ := res.Output(); res.ExitCode == 0 || !strings.Contains(string(stderr), "not permitted") {
				t.Errorf("unshare -U inside: exit %d, stderr %q; want EPERM", res.ExitCode, stderr)
			}
		})
	}
}

func TestUserNamespaceSessionsAndFiles(t *testing.T) {
	requireUserNS(t)
	d := startDaemon(t)
	sb := d.create(api.CreateSandboxRequest{Image: "busybox"})
	root := d.hostRoot(sb.ID)
	ctx := context.Background()
	// A --user session runs as that user inside, its range's id outside.
	d.createSession(sb.ID, "nob", api.CreateSessionRequest{User: "nobody"})
	res := d.exec(sb.ID, api.ExecRequest{SessionID: "nob", Command: "id -u; cd /tmp && echo n > bynobody"})
	if out, _, _ := res.Output(); res.ExitCode != 0 || string(out) != "65534\n" {
		t.Fatalf("a nobody session: exit %d %q", res.ExitCode, out)
	}
	if uid, _, _ := hostOwner(t, d.upperPath(sb.ID, "tmp/bynobody")); uid != root+65534 {
		t.Errorf("nobody's file is %d on the host, want %d", uid, root+65534)
	}
	// The file API: the sandbox's ids in and out, the range's on the host.
	if _, err := d.client.WriteFile(ctx, sb.ID, "/tmp/api", strings.NewReader("a"), client.WriteFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.InSession("nob").WriteFile(ctx, sb.ID, "/tmp/sub/api-nobody", strings.NewReader("b"), client.WriteFileOptions{MakeParents: true}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]uint32{"/tmp/api": 0, "/tmp/sub": 65534, "/tmp/sub/api-nobody": 65534, "/tmp/bynobody": 65534} {
		info, err := d.client.StatFile(ctx, sb.ID, p)
		if err != nil || info.UID != want || info.GID != want {
			t.Errorf("stat %s: %+v %v, want owner %d", p, info, err, want)
		}
		if uid, gid, _ := hostOwner(t, d.upperPath(sb.ID, p)); uid != root+want || gid != root+want {
			t.Errorf("%s is %d:%d on the host, want %d", p, uid, gid, root+want)
		}
	}
	if got := d.sh(sb.ID, "stat -c '%u:%g %n' /tmp/api /tmp/sub/api-nobody"); got != "0:0 /tmp/api\n65534:65534 /tmp/sub/api-nobody\n" {
		t.Errorf("inside, the file API's files are %q", got)
	}
	_, err := d.client.WriteFile(ctx, sb.ID, "/tmp/x", strings.NewReader("x"), client.WriteFileOptions{UID: 70000})
	if !api.IsCode(err, api.CodeInvalidArgument) {
		t.Errorf("a uid outside the user namespace: %v", err)
	}
	if _, err := d.client.MoveFile(ctx, sb.ID, "/tmp/api", "/root/moved", client.MoveOptions{}); err != nil {
		t.Errorf("move: %v", err)
	}
	// nsbox cp, both ways.
	if _, stderr, code := d.cli("in", "cp", "-", sb.ID+":/tmp/cp"); code != 0 {
		t.Fatalf("nsbox cp in: %q", stderr)
	}
	if out, stderr, code := d.cli("", "cp", sb.ID+":/tmp/cp", "-"); code != 0 || out != "in" {
		t.Fatalf("nsbox cp out: %q %q", out, stderr)
	}
	// What cp writes belongs to the sandbox's root, or to the --session's user.
	if _, stderr, code := d.cli("in", "cp", "--session", "nob", "-", sb.ID+":/tmp/cp-nobody"); code != 0 {
		t.Fatalf("nsbox cp --session nob in: %q", stderr)
	}
	for p, want := range map[string]uint32{"/tmp/cp": 0, "/tmp/cp-nobody": 65534} {
		if got := d.sh(sb.ID, "stat -c %u:%g "+p); got != fmt.Sprintf("%d:%d\n", want, want) {
			t.Errorf("nsbox cp's %s is %q inside, want %d", p, got, want)
		}
		if uid, gid, _ := hostOwner(t, d.upperPath(sb.ID, p)); uid != root+want || gid != root+want {
			t.Errorf("nsbox cp's %s is %d:%d on the host, want %d", p, uid, gid, root+want)
		}
	}
}

func TestUserNamespaceWorkspacesAndMounts(t *testing.T) {
	requireUserNS(t)
	d := startDaemon(t)
	// A copy-on-write workspace of root's files: root's inside, the range's in the upper dir.
	cow := t.TempDir()
	writeTree(t, cow, map[string]string{"a": "a\n"})
	sb := d.create(api.CreateSandboxRequest{Image: "busybox", Workspace: &api.Workspace{HostPath: cow}})
	root := d.hostRoot(sb.ID)
	if got := d.sh(sb.ID, "stat -c %u:%g /workspace/a; echo b >> /workspace/a; cp /bin/sh /workspace/suid; chmod 4755 /workspace/suid"); got != "0:0\n" {
		t.Errorf("the workspace's files inside: %q", got)
	}
	requireNosuidMounts(t, filepath.Join(d.runDir, "sandboxes", d.container(sb.ID)))
	upper := filepath.Join(d.layerDir(sb.ID), "workspace", "upper")
	for _, name := range []string{"a", "suid"} {
		if uid, _, _ := hostOwner(t, filepath.Join(upper, name)); uid != root {
			t.Errorf("workspace upper %s is %d on the host, want %d", name, uid, root)
		}
	}
	// The overlays' options name no host path (issue 11): layers are staged under short names.
	// (Bind mounts still show their source's path: the agent binary, hosts, resolv.conf.)
	for _, line := range strings.Split(d.sh(sb.ID, "grep ' - overlay ' /proc/self/mountinfo"), "\n") {
		if strings.Contains(line, d.dataDir) || strings.Contains(line, d.runDir) || strings.Contains(line, cow) || strings.Contains(line, "dir=/") || strings.Contains(line, "dir+=/") {
			t.Errorf("an overlay in the sandbox's mountinfo shows host paths: %s", line)
		}
	}
	rc, err := d.client.ExportWorkspace(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := mapTar(t, rc, func(hdr *tar.Header, _ *tar.Reader) string {
		return fmt.Sprintf("%d:%d %o", hdr.Uid, hdr.Gid, hdr.Mode)
	})
	if entries["a"] != "0:0 644" || entries["suid"] != "0:0 755" {
		t.Errorf("export shows %v, want the sandbox's root, and no setuid bit", entries)
	}
	// Copied out, the setuid file is not setuid on the host.
	out := filepath.Join(t.TempDir(), "suid")
	if _, stderr, code := d.cli("", "cp", sb.ID+":/workspace/suid", out); code != 0 {
		t.Fatalf("nsbox cp out: %q", stderr)
	}
	if _, _, mode := hostOwner(t, out); mode&(os.ModeSetuid|os.ModeSetgid) != 0 || mode.Perm() != 0o755 {
		t.Errorf("copied out, the setuid file has mode %v", mode)
	}

	// A read-write workspace and a writable mount are written as their owner, never as root;
	// a read-only mount shows the host's owners.
	rw, ro := t.TempDir(), t.TempDir()
	writeTree(t, ro, map[string]string{"r": "r\n"})
	if err := os.Chown(rw, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	sb = d.create(api.CreateSandboxRequest{Image: "busybox", Workspace: &api.Workspace{HostPath: rw, Mode: api.WorkspaceRW},
		Mounts: []api.Mount{{Source: ro, Target: "/ro", ReadOnly: true}}})
	if got := d.sh(sb.ID, "stat -c %u:%g /workspace /ro/r; cp /bin/sh /workspace/suid && chmod 4755 /workspace/suid"); got != "0:0\n0:0\n" {
		t.Errorf("owners inside: %q", got)
	}
	if uid, gid, mode := hostOwner(t, filepath.Join(rw, "suid")); uid != 1000 || gid != 1001 || mode&os.ModeSetuid == 0 {
		t.Errorf("the setuid file planted in the rw workspace is %d:%d %v on the host, want 1000:1001", uid, gid, mode)
	}
	// The host's root may not be the writer.
	e := d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Image: "busybox", Workspace: &api.Workspace{HostPath: ro, Mode: api.WorkspaceRW}}, 400, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, "host's root") {
		t.Errorf("a root-owned rw workspace: %q", e.Message)
	}
	d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Image: "busybox", Mounts: []api.Mount{{Source: ro, Target: "/w"}}}, 400, api.CodeInvalidArgument)
}

func TestExtraCapabilities(t *testing.T) {
	d := startDaemon(t, "--allow-cap", "NET_RAW")
	out, stderr, code := d.cli("", "create", "--image", "busybox", "--cap-add", "net_raw")
	if code != 0 {
		t.Fatalf("nsbox create --cap-add net_raw: %q", stderr)
	}
	id := strings.TrimSpace(out)
	if got := d.sh(id, "grep CapEff /proc/self/status"); got != fmt.Sprintf("CapEff:\t%016x\n", defaultCapsMask|1<<13) {
		t.Errorf("capabilities with NET_RAW: %q", got)
	}
	if sb, err := d.client.GetSandbox(context.Background(), id); err != nil || !slices.Equal(sb.Capabilities, []string{"CAP_NET_RAW"}) {
		t.Errorf("the sandbox shows %+v %v", sb, err)
	}
	e := d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{Capabilities: []string{"SYS_ADMIN"}}, 400, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, "CAP_NET_RAW") {
		t.Errorf("a capability that is not allowed: %q", e.Message)
	}
}

func TestUserNamespacesOfPoolAndRestart(t *testing.T) {
	requireUserNS(t)
	d := startDaemon(t, "--warm-pool", "busybox=2")
	d.waitWarm("busybox", 2)
	a := d.create(api.CreateSandboxRequest{Image: "busybox"})
	b := d.create(api.CreateSandboxRequest{Image: "busybox"})
	ra, rb := d.hostRoot(a.ID), d.hostRoot(b.ID)
	if ra == rb {
		t.Fatalf("two sandboxes share the host ids %d", ra)
	}
	d.sh(a.ID, "echo before > /root/f")
	d.kill9()
	d.start()
	d.waitWarm("busybox", 2)
	for id, root := range map[string]uint32{a.ID: ra, b.ID: rb} {
		if got := d.hostRoot(id); got != root {
			t.Errorf("after a restart %s's root is %d, was %d", id, got, root)
		}
	}
	if got := d.sh(a.ID, "cat /root/f; echo after > /root/g; stat -c %u /root/g"); got != "before\n0\n" {
		t.Errorf("after a restart: %q", got)
	}
	// The new daemon knows which ranges are taken: new sandboxes (from the refilled pool and
	// cold) get others.
	seen := map[uint32]bool{ra: true, rb: true}
	for range 3 {
		sb := d.create(api.CreateSandboxRequest{Image: "busybox"})
		r := d.hostRoot(sb.ID)
		if seen[r] {
			t.Fatalf("sandbox %s got host ids %d, which another live sandbox has", sb.ID, r)
		}
		seen[r] = true
	}
}

// TestRunDirOutOfReach: with user namespaces (the default), a daemon whose run dir lies under
// a directory others cannot search refuses to start and says which one and what to do; it
// used to start, and then fail every create with a mount error that named neither.
func TestRunDirOutOfReach(t *testing.T) {
	dir := t.TempDir() // under a directory of mode 0700
	run := filepath.Join(dir, "run")
	out, err := daemonThatFails(nsboxBin, dir, "reach")
	if err == nil || !strings.Contains(string(out), "cannot reach "+run) || !strings.Contains(string(out), " is mode 0700") || !strings.Contains(string(out), "chmod o+x") {
		t.Fatalf("a daemon with its run dir under a private directory: %v\n%s", err, out)
	}
}

// TestUserNamespaceOwnsItsLimits: the kernel's per-user counts (inotify instances here) of a
// sandbox's root are charged to its own host ids, never to the host's root: a sandbox that
// uses up its inotify instances leaves the host's root able to make one. (A user namespace
// charges the counts of all in it to the namespace's owner in the parent namespace too.)
func TestUserNamespaceOwnsItsLimits(t *testing.T) {
	requireUserNS(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the host image needs python3")
	}
	d := startDaemon(t)
	sb := d.create(api.CreateSandboxRequest{Image: "host"})
	root := d.hostRoot(sb.ID)
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", d.agentPID(sb.ID)))
	if err != nil {
		t.Fatal(err)
	}
	owner, err := unix.IoctlGetUint32(int(ns.Fd()), unix.NS_GET_OWNER_UID)
	ns.Close()
	if err != nil {
		t.Fatalf("the owner of the sandbox's user namespace: %v", err)
	}
	t.Logf("the sandbox's user namespace is owned by host uid %d; its root is %d", owner, root)
	// The open-file limit, which the daemon cannot set from outside such a namespace without
	// CAP_SYS_RESOURCE, is still the daemon's hard limit, soft and hard, in a command.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if got, want := d.sh(sb.ID, "ulimit -Sn; ulimit -Hn"), fmt.Sprintf("%d\n%d\n", lim.Max, lim.Max); got != want {
		t.Errorf("the open-file limits inside: %q, want %q", got, want)
	}

	// Inside, root makes inotify instances until the kernel says no, says how many, and holds them.
	script := `import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while libc.inotify_init1(0) >= 0:
    n += 1
print(n, ctypes.get_errno(), flush=True)
time.sleep(600)
`
	p := d.startProc(sb.ID, api.StartProcessRequest{ID: "hog", Argv: []string{"python3", "-c", script}})
	var line string
	for line == "" {
		stdout, stderr, _, _ := d.readLogs(sb.ID, p.ID, 0, 0)
		if len(stderr) > 0 {
			t.Fatalf("the inotify hog: %s", stderr)
		}
		line, _, _ = strings.Cut(string(stdout), "\n")
		if !strings.Contains(string(stdout), "\n") {
			line = ""
			time.Sleep(20 * time.Millisecond)
		}
	}
	fd, hostErr := unix.InotifyInit1(unix.IN_CLOEXEC)
	if hostErr == nil {
		unix.Close(fd)
	}
	if err := d.client.RemoveSandbox(context.Background(), sb.ID, client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[1] != strconv.Itoa(int(syscall.EMFILE)) || mustAtoi(t, f[0]) == 0 {
		t.Fatalf("the sandbox's inotify instances: %q, want a count and EMFILE", line)
	}
	t.Logf("the sandbox's root made %s inotify instances", f[0])
	// EMFILE is also the open-file limit's answer: the attempt counts only if it met the
	// inotify limit (the host's, for the namespace's owner, who has no other instances).
	limit, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(limit)) != f[0] {
		t.Errorf("the sandbox made %s inotify instances, not the host's limit of %s per user: the test did not reach it", f[0], strings.TrimSpace(string(limit)))
	}
	if hostErr != nil {
		t.Errorf("with a sandbox's inotify instances used up, the host's root cannot make one: %v", hostErr)
	}
	if owner == 0 {
		t.Errorf("the sandbox's user namespace is owned by the host's root, who is charged for what is in it")
	}
}

// TestUserNamespaceBinaryOnlyRootRuns: the daemon's binary need not be executable by others.
// The helper that makes a sandbox's user namespace runs it as the sandbox's root (the
// namespace's owner); it used to be cloned into the new namespace first, where the host's
// root's capabilities no longer reached the file, and a daemon whose binary only root could
// run refused to start. The helper now execs with them and makes the namespace after.
func TestUserNamespaceBinaryOnlyRootRuns(t *testing.T) {
	requireUserNS(t)
	bin := filepath.Join(reachableTempDir(t), "nsbox")
	data, err := os.ReadFile(nsboxBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o700); err != nil {
		t.Fatal(err)
	}
	d := startDaemonOf(t, bin, 0)
	sb := d.create(api.CreateSandboxRequest{Image: "busybox"})
	if got := d.sh(sb.ID, "id -u; cat /proc/self/uid_map"); !strings.HasPrefix(got, "0\n") || !strings.Contains(got, strconv.FormatUint(uint64(d.hostRoot(sb.ID)), 10)) {
		t.Errorf("a sandbox of a daemon whose binary only root may run: %q, want root inside, mapped to its block of ids", got)
	}
}

// TestUserNamespaceRange: --userns-range is where sandboxes' ids come from, a block of 65536
// each; when its blocks are all in use a create fails and names the flag, and a remove frees
// a block for the next sandbox.
func TestUserNamespaceRange(t *testing.T) {
	requireUserNS(t)
	const start = 1500000000 + 7*65536
	d := startDaemon(t, "--userns-range", fmt.Sprintf("%d:%d", start, 2*65536))
	a := d.create(api.CreateSandboxRequest{Image: "busybox"})
	b := d.create(api.CreateSandboxRequest{Image: "busybox"})
	ra, rb := d.hostRoot(a.ID), d.hostRoot(b.ID)
	blocks := []uint32{ra, rb}
	slices.Sort(blocks)
	if blocks[0] != start || blocks[1] != start+65536 {
		t.Fatalf("the two sandboxes' roots are %d and %d, want the range's two blocks %d and %d", ra, rb, start, start+65536)
	}
	_, err := d.client.CreateSandbox(context.Background(), api.CreateSandboxRequest{Image: "busybox"})
	if err == nil || !strings.Contains(err.Error(), "--userns-range") {
		t.Fatalf("a third sandbox in a range of two blocks: %v", err)
	}
	if err := d.client.RemoveSandbox(context.Background(), a.ID, client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// The remove may end in the background: the block is free once the container is gone.
	var c *api.Sandbox
	for c == nil {
		if c, err = d.client.CreateSandbox(context.Background(), api.CreateSandboxRequest{Image: "busybox"}); err != nil {
			if !strings.Contains(err.Error(), "--userns-range") {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // the test's deadline bounds it
		}
	}
	if got := d.hostRoot(c.ID); got != ra {
		t.Errorf("after a remove the new sandbox's root is %d, want the freed block's %d", got, ra)
	}
}

// daemonThatFails starts the daemon bin with its data and run dirs under dir and a cgroup
// parent of the test's own (named by what), expecting it to refuse to start: it returns its
// output, and an error unless it exited with an error within a minute.
func daemonThatFails(bin, dir, what string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := filepath.Join(dir, "run")
	out, err := exec.CommandContext(ctx, bin, "--socket", filepath.Join(run, "nsbox.sock"), "daemon",
		"--data-dir", filepath.Join(dir, "data"), "--run-dir", run, "--cgroup-parent", fmt.Sprintf("nsbox-test-%d-%s", os.Getpid(), what),
		"--warm-pool", "").CombinedOutput()
	if ctx.Err() != nil {
		return out, nil // it ran on: not the refusal expected
	}
	return out, err
}
