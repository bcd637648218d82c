package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
	"golang.org/x/sys/unix"
)

// writeTree makes files (path → content; a path ending in / is a directory) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot describes every entry under dir (type, mode, content or link target), to show
// that a directory did not change.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(data)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// changeSet renders a diff as sorted "kind type path" lines.
func changeSet(changes []api.WorkspaceChange) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Kind+" "+c.Type+" "+c.Path)
	}
	slices.Sort(out)
	return out
}

// readTar returns a tar's entries: name → content (regular files) or "-> target" (symlinks)
// or "dir".
func readTar(t *testing.T, r io.Reader) map[string]string {
	return mapTar(t, r, func(hdr *tar.Header, tr *tar.Reader) string {
		switch hdr.Typeflag {
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(data)
		case tar.TypeSymlink:
			return "-> " + hdr.Linkname
		case tar.TypeDir:
			return "dir"
		}
		return fmt.Sprintf("type %c", hdr.Typeflag)
	})
}

// mapTar maps each entry of a tar to what describe says of it.
func mapTar(t *testing.T, r io.Reader, describe func(*tar.Header, *tar.Reader) string) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		out[hdr.Name] = describe(hdr, tr)
	}
}

func TestWorkspaceCopyOnWrite(t *testing.T) {
	d := startDaemon(t)
	host := t.TempDir()
	writeTree(t, host, map[string]string{
		"a.txt": "a\n", "keep.txt": "k\n", "ren.txt": "r\n", "same.txt": "s\n",
		"dir1/x": "x\n", "dir1/sub/y": "y\n", "old/z": "z\n", "gone/g1": "1", "gone/deep/g2": "2",
		"opq/o1": "o1\n", "opq/o2": "o2\n", "opq/od/o3": "o3\n", "f2d": "file\n", "d2f/inner": "i\n",
	})
	before := snapshot(t, host)
	sb := d.create(api.CreateSandboxRequest{Image: "busybox", Workspace: &api.Workspace{HostPath: host}})
	if sb.Workspace == nil || sb.Workspace.Mode != api.WorkspaceCOW || sb.Workspace.HostPath != host {
		t.Fatalf("sandbox workspace = %+v, want cow on %s", sb.Workspace, host)
	}
	if got := d.sh(sb.ID, "cat /workspace/a.txt /workspace/dir1/sub/y; pwd"); got != "a\ny\n/workspace\n" {
		t.Fatalf("the sandbox sees %q", got)
	}
	d.sh(sb.ID, `set -e; cd /workspace
		echo new > new.txt
		echo more >> a.txt
		rm keep.txt
		mv ren.txt renamed.txt
		mkdir -p nd/deep && echo q > nd/deep/f
		echo y2 > dir1/sub/y
		rm -rf gone
		rm -rf opq && mkdir opq && echo n1 > opq/o1 && mkdir opq/od
		mv old old2
		ln -s a.txt link
		rm f2d && mkdir f2d
		rm -rf d2f && echo now-a-file > d2f
		cat same.txt >/dev/null`)
	// The file API writes into the same layer.
	if _, err := d.client.WriteFile(context.Background(), sb.ID, "/workspace/api.txt", strings.NewReader("via api"), client.WriteFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, host); !maps.Equal(before, after) {
		t.Fatalf("the host directory changed:\nbefore %v\nafter  %v", before, after)
	}

	want := []string{
		"added dir f2d", "added dir nd", "added dir nd/deep", "added dir old2",
		"added file api.txt", "added file d2f", "added file new.txt", "added file nd/deep/f", "added file old2/z",
		"added file renamed.txt", "added symlink link",
		"deleted dir d2f", "deleted dir gone", "deleted dir old", "deleted file f2d",
		"deleted file keep.txt", "deleted file opq/o2", "deleted file ren.txt",
		"modified file a.txt", "modified file dir1/sub/y", "modified file opq/o1",
		// opq was removed and made again (opaque): what the host has under it and the sandbox
		// does not is deleted, also in its new, empty od.
		"deleted file opq/od/o3",
	}
	slices.Sort(want)
	changes, err := d.client.WorkspaceDiff(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := changeSet(changes); !slices.Equal(got, want) {
		t.Fatalf("diff:\ngot  %q\nwant %q", got, want)
	}
	for _, c := range changes {
		if c.Path == "a.txt" && c.Size != int64(len("a\nmore\n")) || c.Kind == api.ChangeDeleted && c.Size != 0 {
			t.Errorf("change %+v has the wrong size", c)
		}
	}

	rc, err := d.client.ExportWorkspace(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	entries := readTar(t, rc)
	rc.Close()
	wantTar := map[string]string{
		"a.txt": "a\nmore\n", "api.txt": "via api", "new.txt": "new\n", "renamed.txt": "r\n", "dir1/sub/y": "y2\n",
		"nd/": "dir", "nd/deep/": "dir", "nd/deep/f": "q\n", "old2/": "dir", "old2/z": "z\n", "link": "-> a.txt",
		"opq/o1": "n1\n", "f2d/": "dir", "d2f": "now-a-file\n",
		".wh.keep.txt": "", ".wh.ren.txt": "", ".wh.gone": "", ".wh.old": "", "opq/.wh.o2": "", "opq/od/.wh.o3": "",
		".wh.f2d": "", ".wh.d2f": "",
	}
	if !maps.Equal(entries, wantTar) {
		t.Fatalf("export:\ngot  %q\nwant %q", entries, wantTar)
	}

	// The CLI says the same.
	out, stderr, code := d.cli("", "diff", sb.ID)
	if code != 0 || !strings.Contains(out, "A new.txt\n") || !strings.Contains(out, "D gone/\n") || !strings.Contains(out, "M a.txt\n") {
		t.Fatalf("nsbox diff: %d %q %q", code, out, stderr)
	}
	out, stderr, code = d.cli("", "export", sb.ID)
	if code != 0 || !maps.Equal(readTar(t, strings.NewReader(out)), wantTar) {
		t.Fatalf("nsbox export: %d %q", code, stderr)
	}

	// After a kill -9 and a restart the workspace is still there, and so is its diff.
	d.kill9()
	d.start()
	if got := d.sh(sb.ID, "cat /workspace/new.txt; ls /workspace/keep.txt 2>&1 || true"); !strings.HasPrefix(got, "new\n") || !strings.Contains(got, "No such file") {
		t.Fatalf("after a restart the sandbox sees %q", got)
	}
	d.sh(sb.ID, "echo later > /workspace/later.txt")
	changes, err = d.client.WorkspaceDiff(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := changeSet(changes); !slices.Contains(got, "added file later.txt") || len(got) != len(want)+1 {
		t.Fatalf("diff after restart: %q", got)
	}
	if err := d.client.RemoveSandbox(context.Background(), sb.ID, client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, host); !maps.Equal(before, after) {
		t.Fatalf("removing the sandbox changed the host directory")
	}

	// The host image (bash sessions) shows the same directory, and a second sandbox on it
	// starts from the host's files, not from the first one's changes.
	hb := d.create(api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: host}})
	if got := d.sh(hb.ID, "cat a.txt; test -e new.txt || echo no-new; echo hb > hb.txt"); got != "a\nno-new\n" {
		t.Fatalf("host image sandbox sees %q", got)
	}
	changes, err = d.client.WorkspaceDiff(context.Background(), hb.ID)
	if err != nil || !slices.Equal(changeSet(changes), []string{"added file hb.txt"}) {
		t.Fatalf("diff in the host image: %+v %v", changes, err)
	}
}

func TestWorkspaceReadWriteAndMounts(t *testing.T) {
	d := startDaemon(t)
	ws, roDir, rwDir := t.TempDir(), t.TempDir(), t.TempDir()
	writeTree(t, ws, map[string]string{"in.txt": "host\n"})
	writeTree(t, roDir, map[string]string{"data.txt": "ro\n"})
	rwFile := filepath.Join(rwDir, "file.txt")
	writeTree(t, rwDir, map[string]string{"file.txt": "before\n"})
	// A sandbox writes to a host path as the path's owner, which must not be root (the host's
	// root's files there are nobody's inside: it could not remove in.txt).
	for _, p := range []string{ws, filepath.Join(ws, "in.txt"), rwFile} {
		if err := os.Chown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}

	out, stderr, code := d.cli("", "create", "--image", "busybox", "--workspace", ws+":rw",
		"--mount", roDir+":/data:ro", "--mount", rwFile+":/etc/app.conf")
	if code != 0 {
		t.Fatalf("nsbox create: %d %q", code, stderr)
	}
	id := strings.TrimSpace(out)
	sb, err := d.client.GetSandbox(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	wantMounts := []api.Mount{{Source: roDir, Target: "/data", ReadOnly: true}, {Source: rwFile, Target: "/etc/app.conf"}}
	if sb.Workspace == nil || *sb.Workspace != (api.Workspace{HostPath: ws, Mode: api.WorkspaceRW}) || !slices.Equal(sb.Mounts, wantMounts) {
		t.Fatalf("sandbox shows workspace %+v mounts %+v", sb.Workspace, sb.Mounts)
	}
	// rw: changes go straight to the host.
	d.sh(id, "cat /workspace/in.txt; echo sandbox > /workspace/out.txt; rm /workspace/in.txt")
	if data, err := os.ReadFile(filepath.Join(ws, "out.txt")); err != nil || string(data) != "sandbox\n" {
		t.Fatalf("host out.txt: %q %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(ws, "in.txt")); !os.IsNotExist(err) {
		t.Fatalf("in.txt deleted in the sandbox is still on the host: %v", err)
	}
	e := d.expectError("GET", "/v1/sandboxes/"+id+"/workspace/diff", nil, 409, api.CodeConflict)
	if !strings.Contains(e.Message, "read-write") {
		t.Errorf("diff of an rw workspace: %q", e.Message)
	}
	d.expectError("GET", "/v1/sandboxes/"+id+"/workspace/export", nil, 409, api.CodeConflict)

	// A read-only mount is read-only, for commands and for the file API.
	res := d.exec(id, api.ExecRequest{Command: "cat /data/data.txt; echo x > /data/new.txt; touch /data/data.txt"})
	stdout, errOut, _ := res.Output()
	if res.ExitCode == 0 || string(stdout) != "ro\n" || strings.Count(string(errOut), "Read-only file system") != 2 {
		t.Fatalf("writes to a read-only mount: exit %d stdout %q stderr %q", res.ExitCode, stdout, errOut)
	}
	_, err = d.client.WriteFile(context.Background(), id, "/data/api.txt", strings.NewReader("x"), client.WriteFileOptions{})
	if !api.IsCode(err, api.CodePermissionDenied) {
		t.Fatalf("file API write to a read-only mount: %v", err)
	}
	if entries, _ := os.ReadDir(roDir); len(entries) != 1 {
		t.Fatalf("the read-only source has %d entries", len(entries))
	}
	// A read-write file mount writes through.
	d.sh(id, "echo after > /etc/app.conf")
	if data, _ := os.ReadFile(rwFile); string(data) != "after\n" {
		t.Fatalf("rw file mount: host has %q", data)
	}
	// No workspace at all: diff says so.
	plain := d.create(api.CreateSandboxRequest{Image: "busybox"})
	e = d.expectError("GET", "/v1/sandboxes/"+plain.ID+"/workspace/diff", nil, 409, api.CodeConflict)
	if !strings.Contains(e.Message, "no workspace") {
		t.Errorf("diff without a workspace: %q", e.Message)
	}
	d.expectError("GET", "/v1/sandboxes/nope/workspace/diff", nil, 404, api.CodeNotFound)
}

func TestStorageBadInputs(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	writeTree(t, dir, map[string]string{"f": "x"})
	for _, c := range []struct {
		name string
		req  api.CreateSandboxRequest
		want string
	}{
		{"relative workspace", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: "project"}}, "absolute"},
		{"missing workspace", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: dir + "/nope"}}, "does not exist"},
		{"empty workspace", api.CreateSandboxRequest{Workspace: &api.Workspace{}}, "required"},
		{"root workspace", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: "/"}}, "root directory"},
		{"state dir", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: d.dataDir}}, "nsbox's own state"},
		{"inside the run dir", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: d.runDir}}, "nsbox's own state"},
		{"holding the state", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: filepath.Dir(d.dataDir)}}, "nsbox's own state"},
		{"file workspace", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: file}}, "not a directory"},
		{"bad mode", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: dir, Mode: "ro"}}, "workspace.mode"},
		{"cwd missing in workspace", api.CreateSandboxRequest{Cwd: "/workspace/nope", Workspace: &api.Workspace{HostPath: dir}}, "no such directory"},
		{"relative source", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: "f", Target: "/f"}}}, "absolute"},
		{"missing source", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: dir + "/nope", Target: "/f"}}}, "does not exist"},
		{"root source", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: "/", Target: "/host"}}}, "root directory"},
		{"relative target", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: file, Target: "f"}}}, "absolute"},
		{"root target", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: dir, Target: "/"}}}, "must not be /"},
		{"proc target", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: file, Target: "/proc/x"}}}, "reserved"},
		{"sys target", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: dir, Target: "/sys"}}}, "reserved"},
		{"dev target", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: file, Target: "/dev/null"}}}, "reserved"},
		{"agent target", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: file, Target: "/.nsbox/nsbox"}}}, "reserved"},
		{"hiding the agent's tmpfs", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: dir, Target: "/run"}}}, "reserved"},
		{"hiding the workspace", api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: dir}, Mounts: []api.Mount{{Source: dir, Target: "/workspace"}}}, "hide the workspace"},
		{"twice", api.CreateSandboxRequest{Mounts: []api.Mount{{Source: file, Target: "/a"}, {Source: file, Target: "/a/"}}}, "twice"},
		{"tiny disk", api.CreateSandboxRequest{Limits: api.Limits{DiskMB: 1}}, "limits.diskMB"},
		{"negative disk", api.CreateSandboxRequest{Limits: api.Limits{DiskMB: -5}}, "limits.diskMB"},
	} {
		e := d.expectError("POST", "/v1/sandboxes", c.req, 400, api.CodeInvalidArgument)
		if !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: message %q does not say %q", c.name, e.Message, c.want)
		}
	}
	_, stderr, code := d.cli("", "create", "--mount", "/nope-nsbox-test:/x")
	if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "does not exist") {
		t.Errorf("nsbox create with a missing mount source: %d %q", code, stderr)
	}
	_, stderr, code = d.cli("", "create", "--mount", "just-one-part")
	if code == 0 || !strings.Contains(stderr, "SRC:DST") {
		t.Errorf("nsbox create --mount just-one-part: %d %q", code, stderr)
	}
	if list, _ := d.client.ListSandboxes(context.Background()); len(list) != 0 {
		t.Errorf("bad creates left sandboxes: %+v", list)
	}
}

func TestDiskLimit(t *testing.T) {
	d := startDaemon(t)
	host := t.TempDir()
	writeTree(t, host, map[string]string{"src.txt": "src\n"})
	sb := d.create(api.CreateSandboxRequest{Image: "busybox", Limits: api.Limits{DiskMB: 32}, Workspace: &api.Workspace{HostPath: host}})
	if sb.Limits.DiskMB != 32 {
		t.Fatalf("limits = %+v", sb.Limits)
	}
	image := filepath.Join(d.dataDir, "sandboxes", d.container(sb.ID), "disk.img")
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("no disk image: %v", err)
	}
	// Writes in the root fill the disk: ENOSPC.
	res := d.exec(sb.ID, api.ExecRequest{Command: "dd if=/dev/zero of=/big bs=1M count=64"})
	_, stderr, _ := res.Output()
	if res.ExitCode == 0 || !strings.Contains(string(stderr), "No space left on device") {
		t.Fatalf("filling the disk: exit %d, stderr %q", res.ExitCode, stderr)
	}
	// The workspace's changes are on the same disk.
	res = d.exec(sb.ID, api.ExecRequest{Command: "dd if=/dev/zero of=/workspace/more bs=1M count=8"})
	if _, stderr, _ := res.Output(); res.ExitCode == 0 || !strings.Contains(string(stderr), "No space left on device") {
		t.Fatalf("writing the workspace on a full disk: exit %d, stderr %q", res.ExitCode, stderr)
	}
	// The file API answers 507.
	d.sh(sb.ID, "rm /big")
	big := bytes.NewReader(make([]byte, 48<<20))
	_, err := d.client.WriteFile(context.Background(), sb.ID, "/workspace/big", big, client.WriteFileOptions{Size: 48 << 20})
	if !api.IsCode(err, api.CodeInsufficientStorage) {
		t.Fatalf("a 48 MiB upload to a 32 MiB disk: %v", err)
	}
	// Freed space can be used again; the host never saw any of it.
	d.sh(sb.ID, "echo fits > /workspace/small && cat /workspace/small")
	if entries, _ := os.ReadDir(host); len(entries) != 1 {
		t.Fatalf("the host directory has %d entries", len(entries))
	}

	// A kill -9 of the daemon leaves the sandbox, its disk and its diff working.
	d.kill9()
	d.start()
	if got := d.sh(sb.ID, "cat /workspace/small"); got != "fits\n" {
		t.Fatalf("after a restart: %q", got)
	}
	changes, err := d.client.WorkspaceDiff(context.Background(), sb.ID)
	if err != nil || !slices.Contains(changeSet(changes), "added file small") {
		t.Fatalf("diff after a restart: %v %v", changes, err)
	}
	if err := d.client.RemoveSandbox(context.Background(), sb.ID, client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Nothing is left (once the background teardown is over, which leaks waits for): no
	// image file, no loop device, no mount.
	for _, leak := range d.leaks() {
		t.Errorf("after rm: %s", leak)
	}
	if _, err := os.Stat(image); !os.IsNotExist(err) {
		t.Errorf("the disk image is still there: %v", err)
	}
}

// TestStorageReconcile: after a kill -9, a disk-limited sandbox that lost its record is
// destroyed with its disk, and one whose agent died keeps its workspace diff until removed.
func TestStorageReconcile(t *testing.T) {
	d := startDaemon(t)
	host := t.TempDir()
	writeTree(t, host, map[string]string{"a": "a"})
	ws := &api.Workspace{HostPath: host}
	d.create(api.CreateSandboxRequest{ID: "dead", Image: "busybox", Workspace: ws, Limits: api.Limits{DiskMB: 32}})
	d.create(api.CreateSandboxRequest{ID: "orphan", Image: "busybox", Workspace: ws, Limits: api.Limits{DiskMB: 32}})
	d.sh("dead", "echo b > /workspace/b")
	deadPID, orphanContainer := d.agentPID("dead"), d.container("orphan")
	d.kill9()
	d.loseWhileDown(deadPID, "orphan")
	d.start()
	orphanImage := filepath.Join(d.dataDir, "sandboxes", orphanContainer, "disk.img")
	if _, err := os.Stat(orphanImage); !os.IsNotExist(err) {
		t.Errorf("the orphan's disk image is still there: %v", err)
	}
	if got, err := d.client.GetSandbox(context.Background(), "dead"); err != nil || got.Status != api.StatusFailed {
		t.Fatalf("sandbox whose agent died: %+v %v", got, err)
	}
	// Its changes can still be read back.
	changes, err := d.client.WorkspaceDiff(context.Background(), "dead")
	if err != nil || !slices.Equal(changeSet(changes), []string{"added file b"}) {
		t.Fatalf("diff of a failed sandbox: %+v %v", changes, err)
	}
	if err := d.client.RemoveSandbox(context.Background(), "dead", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, leak := range d.leaks() {
		t.Errorf("after reconcile and rm: %s", leak)
	}
}

// TestCreateHostDiskFull: a create whose disk image does not fit on the host answers 507
// insufficient_storage saying so, and leaves nothing behind; once there is room, the next
// create works.
func TestCreateHostDiskFull(t *testing.T) {
	d := startDaemon(t, "--default-disk", "48")
	// A full 1 MiB tmpfs over the sandboxes' dir stands for a full host disk.
	dir := filepath.Join(d.dataDir, "sandboxes")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "nsbox-test-full", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs on the sandboxes' dir: %v: %s", err, out)
	}
	unmounted := false
	unmount := func() {
		if !unmounted {
			unmounted = true
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", dir, err, out)
			}
		}
	}
	t.Cleanup(unmount) // before the daemon's cleanup, which checks for mounts left
	if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, 2<<20), 0o600); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	// A disk of another size than the default is made by mkfs; one of the default size is a
	// spare (which cannot move to another file system) or a copy of the spares' template.
	d.waitSpares()
	for _, diskMB := range []int64{32, 0} {
		e := d.expectError("POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: "nospace", Image: "busybox", Limits: api.Limits{DiskMB: diskMB}}, 507, api.CodeInsufficientStorage)
		if !strings.Contains(e.Message, "no room") || !strings.Contains(e.Message, "no space left on device") {
			t.Errorf("a create (diskMB %d) on a full host disk: message %q does not say so", diskMB, e.Message)
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
			t.Errorf("the failed create (diskMB %d) left %v in the sandboxes' dir (%v)", diskMB, entries, err)
		}
		if _, err := d.client.GetSandbox(context.Background(), "nospace"); !api.IsCode(err, api.CodeNotFound) {
			t.Errorf("the failed create's sandbox: %v, want not_found", err)
		}
	}
	unmount()
	d.create(api.CreateSandboxRequest{ID: "room", Image: "busybox"})
	if out := d.sh("room", "echo ok"); out != "ok\n" {
		t.Fatalf("a create once there is room: %q", out)
	}
}

// TestDefaultDisk: a sandbox that names no disk gets the daemon's --default-disk, warm or cold;
// filling it is ENOSPC inside and nothing on the host; a create may ask for less, or more up to
// --max-disk, and a daemon whose default is out of bounds refuses to start.
func TestDefaultDisk(t *testing.T) {
	d := startDaemon(t, "--default-disk", "48", "--max-disk", "96", "--warm-pool", "busybox=1")
	d.waitWarm("busybox", 1)
	warm := d.containerDirs()
	sb := d.create(api.CreateSandboxRequest{Image: "busybox"})
	if sb.Limits.DiskMB != 48 {
		t.Fatalf("limits = %+v, want the default disk", sb.Limits)
	}
	if !slices.Contains(warm, d.container(sb.ID)) {
		t.Errorf("a sandbox with the default disk was not made from the warm pool (%s, pool %v)", d.container(sb.ID), warm)
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, "sandboxes", d.container(sb.ID), "disk.img")); err != nil {
		t.Fatalf("no disk image: %v", err)
	}
	res := d.exec(sb.ID, api.ExecRequest{Command: "dd if=/dev/zero of=/big bs=1M count=96"})
	if _, stderr, _ := res.Output(); res.ExitCode == 0 || !strings.Contains(string(stderr), "No space left on device") {
		t.Fatalf("filling the default disk: exit %d, stderr %q", res.ExitCode, stderr)
	}
	if got := d.sh(sb.ID, "rm /big && echo ok"); got != "ok\n" {
		t.Fatalf("after freeing the disk: %q", got)
	}

	for _, tc := range []struct {
		diskMB int64
		ok     bool
	}{{32, true}, {96, true}, {97, false}, {8, false}} {
		sb, err := d.client.CreateSandbox(context.Background(), api.CreateSandboxRequest{Image: "busybox", Limits: api.Limits{DiskMB: tc.diskMB}})
		switch {
		case tc.ok && (err != nil || sb.Limits.DiskMB != tc.diskMB):
			t.Errorf("diskMB %d: %+v %v", tc.diskMB, sb, err)
		case !tc.ok && !api.IsCode(err, api.CodeInvalidArgument):
			t.Errorf("diskMB %d: got %v, want invalid_argument", tc.diskMB, err)
		}
	}

	args := append([]string{"daemon", "--data-dir", t.TempDir(), "--run-dir", reachableTempDir(t), "--default-disk", "200", "--max-disk", "100"}, d.net.daemonArgs()...)
	out, err := exec.Command(nsboxBin, args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "default disk must be between 16 and 100") {
		t.Errorf("a default disk above --max-disk: %v %s", err, out)
	}
}
