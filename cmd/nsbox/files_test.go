package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// readFile reads a whole file of a sandbox through the API.
func (d *testDaemon) readFile(id, path string) []byte {
	d.t.Helper()
	rd, err := d.client.ReadFile(context.Background(), id, path)
	if err != nil {
		d.t.Fatalf("read %s in %s: %v", path, id, err)
	}
	defer rd.Close()
	data, err := io.ReadAll(rd)
	if err != nil {
		d.t.Fatalf("read %s in %s: %v", path, id, err)
	}
	return data
}

func filesURL(id, op string, query ...string) string {
	u := "/v1/sandboxes/" + id + "/files"
	if op != "" {
		u += "/" + op
	}
	if len(query) > 0 {
		u += "?" + strings.Join(query, "&")
	}
	return u
}

func decodeInfo(t *testing.T, data []byte) api.FileInfo {
	t.Helper()
	var info api.FileInfo
	if err := json.Unmarshal(data, &info); err != nil {
		t.Fatalf("decode file info %q: %v", data, err)
	}
	return info
}

func TestFileRoundTrip(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "f", Image: "busybox"})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	status, body := d.call("PUT", filesURL("f", "", "path=/workspace/all&mode=0600"), string(all))
	info := decodeInfo(t, body)
	if status != 201 || info.Path != "/workspace/all" || info.Size != 256 || info.Mode != "0600" || info.Type != "file" || info.UID != 0 || info.Owner != "root" {
		t.Fatalf("first write: %d %s", status, body)
	}
	if got := d.readFile("f", "/workspace/all"); !bytes.Equal(got, all) {
		t.Fatalf("read back: %q", got)
	}
	// The sandbox sees the same bytes.
	sum := sha256.Sum256(all)
	if out := d.sh("f", "sha256sum /workspace/all; stat -c %a /workspace/all"); out != fmt.Sprintf("%x  /workspace/all\n600\n", sum) {
		t.Fatalf("in the sandbox: %q", out)
	}
	// A second write replaces the file (200) and keeps its mode; relative paths are relative to
	// the sandbox's cwd.
	status, body = d.call("PUT", filesURL("f", "", "path=all"), "new")
	if info := decodeInfo(t, body); status != 200 || info.Path != "/workspace/all" || info.Size != 3 || info.Mode != "0600" {
		t.Fatalf("second write: %d %s", status, body)
	}
	if got := d.readFile("f", "../workspace/./all"); string(got) != "new" {
		t.Fatalf("read back after replace: %q", got)
	}
	// An empty file, an owner, parents made on request.
	fi, err := d.client.WriteFile(context.Background(), "f", "/tmp/a/b/empty", nil, client.WriteFileOptions{MakeParents: true, UID: 1000, GID: 1000, Mode: 0o4755})
	if err != nil || fi.Size != 0 || fi.UID != 1000 || fi.GID != 1000 || fi.Mode != "4755" {
		t.Fatalf("write empty with parents: %+v %v", fi, err)
	}
	if got := d.readFile("f", "/tmp/a/b/empty"); len(got) != 0 {
		t.Fatalf("empty file reads %q", got)
	}
	if out := d.sh("f", "stat -c '%u %g %a' /tmp/a/b /tmp/a/b/empty"); out != "1000 1000 755\n1000 1000 4755\n" {
		t.Fatalf("owner and modes in the sandbox: %q", out)
	}
	st, err := d.client.StatFile(context.Background(), "f", "/tmp/a")
	if err != nil || st.Type != "dir" || st.Name != "a" {
		t.Fatalf("stat: %+v %v", st, err)
	}
	// maxBytes: a larger upload is refused and the file is untouched.
	d.expectError("PUT", filesURL("f", "", "path=all&maxBytes=2"), "toolong", 413, api.CodeTooLarge)
	// Without a Content-Length (chunked), the limit applies while the body streams.
	chunked := io.MultiReader(strings.NewReader("too"), strings.NewReader("long"))
	if _, err := d.client.WriteFile(context.Background(), "f", "all", chunked, client.WriteFileOptions{MaxBytes: 2}); !api.IsCode(err, api.CodeTooLarge) {
		t.Fatalf("chunked write over maxBytes: %v", err)
	}
	if got := d.readFile("f", "all"); string(got) != "new" {
		t.Fatalf("after a refused write: %q", got)
	}
	if out := d.sh("f", "ls -A /workspace"); out != "all\n" {
		t.Fatalf("a refused write left files: %q", out)
	}
}

func TestFileRange(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "r", Image: "busybox"})
	d.sh("r", "printf 0123456789 > /workspace/digits")
	ctx := context.Background()
	rd, err := d.client.ReadFileRange(ctx, "r", "digits", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rd)
	rd.Close()
	if string(got) != "234" {
		t.Fatalf("range 2+3: %q", got)
	}
	rd, err = d.client.ReadFileRange(ctx, "r", "digits", 7, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rd)
	rd.Close()
	if string(got) != "789" {
		t.Fatalf("range from 7: %q", got)
	}
	get := func(rangeHeader string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://nsbox"+filesURL("r", "", "path=/workspace/digits"), nil)
		req.Header.Set("Range", rangeHeader)
		resp, err := d.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := get("bytes=-4")
	if resp.StatusCode != 206 || string(body) != "6789" || resp.Header.Get("Content-Range") != "bytes 6-9/10" {
		t.Fatalf("suffix range: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	resp, body = get("bytes=0-0,8-9")
	if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(body, []byte("\r\n0\r\n")) || !bytes.Contains(body, []byte("\r\n89\r\n")) {
		t.Fatalf("two ranges: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body = get("bytes=10-")
	var eb api.ErrorBody
	if resp.StatusCode != 416 || json.Unmarshal(body, &eb) != nil || eb.Error == nil || eb.Error.Code != "range_not_satisfiable" ||
		resp.Header.Get("Content-Range") != "bytes */10" {
		t.Fatalf("range past the end: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	resp, body = get("bytes=0-")
	if resp.StatusCode != 206 || string(body) != "0123456789" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("whole range: %d %q", resp.StatusCode, body)
	}
	if _, err := d.client.ReadFileRange(ctx, "r", "digits", 11, 2); !api.IsCode(err, "range_not_satisfiable") {
		t.Fatalf("range past the end through the SDK: %v", err)
	}
}

// vmKB reads a field (VmRSS, VmHWM) of /proc/<pid>/status in KiB.
func vmKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func TestFileLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer")
	}
	const size = 1 << 30
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "big", Image: "busybox"})
	pid := d.cmd.Process.Pid
	before := vmKB(t, pid, "VmRSS")
	ctx := context.Background()

	src := io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), size)
	upSum := sha256.New()
	info, err := d.client.WriteFile(ctx, "big", "/workspace/big.bin", io.TeeReader(src, upSum), client.WriteFileOptions{})
	if err != nil || info.Size != size {
		t.Fatalf("upload: %+v %v", info, err)
	}
	rd, err := d.client.ReadFile(ctx, "big", "/workspace/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	downSum := sha256.New()
	n, err := io.Copy(downSum, rd)
	rd.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if !bytes.Equal(upSum.Sum(nil), downSum.Sum(nil)) {
		t.Fatalf("checksums differ: up %x down %x", upSum.Sum(nil), downSum.Sum(nil))
	}
	// The daemon's peak memory stayed flat through both transfers.
	if peak := vmKB(t, pid, "VmHWM"); peak-before > 64<<10 {
		t.Fatalf("daemon RSS grew from %d KiB to a peak of %d KiB during the transfers", before, peak)
	}
	d.sh("big", "rm /workspace/big.bin")
}

// TestFileUploadOutlastsARemove: an upload still under way when its sandbox is removed
// answers that the sandbox was removed (404), not that the file was made.
func TestFileUploadOutlastsARemove(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "up", Image: "busybox"})
	body, upload := io.Pipe()
	answered := make(chan error, 1)
	go func() {
		_, err := d.client.WriteFile(context.Background(), "up", "/tmp/slow.bin", body, client.WriteFileOptions{})
		answered <- err
	}()
	chunk := make([]byte, 1<<20)
	if _, err := upload.Write(chunk); err != nil { // the daemon has begun writing the file
		t.Fatal(err)
	}
	if err := d.client.RemoveSandbox(context.Background(), "up", client.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = upload.Write(chunk) // the daemon may stop reading: the error does not matter
		upload.Close()
	}()
	select {
	case err := <-answered:
		if !api.IsCode(err, api.CodeNotFound) || !strings.Contains(err.Error(), "was removed") {
			t.Errorf("the upload under the remove answered %v; want not found, the sandbox removed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the upload under the remove never answered")
	}
}

func TestFileSymlinkEscapes(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "bb", Image: "busybox"})
	d.create(api.CreateSandboxRequest{ID: "host"})

	// The host image masks /etc/shadow: a symlink to it reaches the sandbox's masked file (a
	// device, which is not read), never the host's.
	d.sh("host", "ln -s /etc/shadow /workspace/x && ln -s ../../../../etc/shadow /workspace/y")
	hostShadow, _ := os.ReadFile("/etc/shadow")
	for _, p := range []string{"/workspace/x", "/workspace/y", "/etc/shadow", "../../../../../etc/shadow"} {
		status, body := d.call("GET", filesURL("host", "", "path="+p), nil)
		if status != 400 || len(hostShadow) > 0 && bytes.Contains(body, hostShadow[:min(len(hostShadow), 16)]) {
			t.Fatalf("read %s: %d %q", p, status, body)
		}
	}
	if st, err := d.client.StatFile(context.Background(), "host", "/etc/shadow"); err != nil || st.Type != "other" {
		t.Fatalf("stat of the masked /etc/shadow: %+v %v", st, err)
	}

	// In busybox, /etc/passwd is the image's, not the host's: symlinks and .. lead to it.
	sandboxPasswd := d.sh("bb", "cat /etc/passwd")
	hostPasswd, _ := os.ReadFile("/etc/passwd")
	if sandboxPasswd == string(hostPasswd) {
		t.Fatal("the busybox image's /etc/passwd is the host's; the test cannot tell them apart")
	}
	d.sh("bb", "ln -s /etc/passwd /workspace/p && ln -s ../../../../ /workspace/up && ln -s loop /workspace/loop && ln -s /proc/1/root /workspace/magic")
	for _, p := range []string{"/workspace/p", "p", "/workspace/up/etc/passwd", "../../../../etc/passwd", "/workspace/up/workspace/up/etc/passwd"} {
		if got := d.readFile("bb", p); string(got) != sandboxPasswd {
			t.Fatalf("read %s: %q, want the sandbox's /etc/passwd", p, got)
		}
	}
	// Listing through the symlink to ../../../../ shows the sandbox's root.
	list, err := d.client.ListFiles(context.Background(), "bb", "/workspace/up", client.ListOptions{Depth: 1, Hidden: false})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range list {
		names = append(names, f.Name)
		if !strings.HasPrefix(f.Path, "/workspace/up/") {
			t.Fatalf("entry %+v is not under the listed path", f)
		}
	}
	want := strings.Fields(d.sh("bb", "ls /"))
	if !slices.Equal(names, want) {
		t.Fatalf("list of /workspace/up: %q, want the sandbox's / %q", names, want)
	}
	// A symlink loop and /proc magic links are refused.
	for _, p := range []string{"/workspace/loop", "/workspace/magic/etc/passwd", "/proc/1/root/etc/passwd"} {
		d.expectError("GET", filesURL("bb", "", "path="+p), nil, 400, api.CodeInvalidArgument)
	}
	// Writing through a symlink replaces the symlink, not its target.
	if _, err := d.client.WriteFile(context.Background(), "bb", "/workspace/p", strings.NewReader("x"), client.WriteFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := d.sh("bb", "cat /etc/passwd"); got != sandboxPasswd {
		t.Fatalf("a write through a symlink changed its target: %q", got)
	}
}

func TestFileErrors(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "e"})
	d.sh("e", "mkdir -p /workspace/dir/sub && echo hi > /workspace/file && echo there > /workspace/other")

	d.expectError("GET", filesURL("nope", "", "path=/x"), nil, 404, api.CodeNotFound)
	d.expectError("GET", filesURL("e", "", "path=/workspace/missing"), nil, 404, api.CodeNotFound)
	d.expectError("GET", filesURL("e", "stat", "path=/workspace/missing"), nil, 404, api.CodeNotFound)
	d.expectError("DELETE", filesURL("e", "", "path=/workspace/missing"), nil, 404, api.CodeNotFound)
	d.expectError("PUT", filesURL("e", "", "path=/workspace/no/such/dir/f"), "x", 404, api.CodeNotFound)
	d.expectError("GET", filesURL("e", ""), nil, 400, api.CodeInvalidArgument) // no path
	d.expectError("GET", filesURL("e", "", "path=/workspace/dir"), nil, 400, api.CodeInvalidArgument)
	d.expectError("PUT", filesURL("e", "", "path=/workspace/dir"), "x", 400, api.CodeInvalidArgument)
	d.expectError("GET", filesURL("e", "stat", "path=/workspace/file/x"), nil, 400, api.CodeInvalidArgument)
	d.expectError("GET", filesURL("e", "list", "path=/workspace/file"), nil, 400, api.CodeInvalidArgument)
	d.expectError("GET", filesURL("e", "list", "path=/workspace&depth=33"), nil, 400, api.CodeInvalidArgument)
	d.expectError("GET", filesURL("e", "list", "path=/workspace&hidden=maybe"), nil, 400, api.CodeInvalidArgument)
	d.expectError("PUT", filesURL("e", "", "path=/workspace/f&mode=999"), "x", 400, api.CodeInvalidArgument)
	d.expectError("DELETE", filesURL("e", "", "path=/&recursive=true"), nil, 400, api.CodeInvalidArgument)
	d.expectError("GET", filesURL("e", "", "path=/proc/1/status"), nil, 403, api.CodePermissionDenied)
	// The host image's /usr is read-only.
	d.expectError("PUT", filesURL("e", "", "path=/usr/evil"), "x", 403, api.CodePermissionDenied)
	d.expectError("POST", filesURL("e", "mkdir"), map[string]any{"path": "/usr/evil"}, 403, api.CodePermissionDenied)
	d.expectError("DELETE", filesURL("e", "", "path=/usr/bin/env"), nil, 403, api.CodePermissionDenied)
	if _, err := os.Stat("/usr/evil"); err == nil {
		t.Fatal("/usr/evil exists on the host")
	}
	// Conflicts.
	d.expectError("POST", filesURL("e", "move"), map[string]any{"from": "file", "to": "other"}, 409, api.CodeConflict)
	d.expectError("POST", filesURL("e", "mkdir"), map[string]any{"path": "/workspace/dir"}, 409, api.CodeConflict)
	d.expectError("DELETE", filesURL("e", "", "path=/workspace/dir"), nil, 409, api.CodeConflict)
	d.expectError("POST", filesURL("e", "move"), map[string]any{"from": "file", "to": "other", "force": true}, 400, api.CodeInvalidArgument)
	// Too much to list.
	d.sh("e", "mkdir /dev/shm/many && python3 -c 'import os\nfor i in range(100001): os.close(os.open(\"/dev/shm/many/%d\" % i, os.O_CREAT))'")
	e := d.expectError("GET", filesURL("e", "list", "path=/dev/shm/many"), nil, 413, api.CodeTooLarge)
	if !strings.Contains(e.Message, "100000") {
		t.Fatalf("list too large: %q", e.Message)
	}
	d.expectError("GET", filesURL("e", "list", "path=/dev/shm&depth=2"), nil, 413, api.CodeTooLarge)
	d.sh("e", "rm -rf /dev/shm/many")
	// A sandbox that is not running answers 409: simulate its agent going away.
	if err := syscall.Kill(d.agentPID("e"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body := d.call("GET", filesURL("e", "stat", "path=/"), nil)
		if status == 409 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat in a sandbox whose agent was killed: %d %s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The file API notices a dead agent before the daemon has recorded the sandbox as failed;
	// wait for that record, or the cleanup's remove would race with it (409, and a leak).
	for {
		sb, err := d.client.GetSandbox(context.Background(), "e")
		if err == nil && sb.Status == api.StatusFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox whose agent was killed: %+v %v", sb, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFileOps(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "o", Image: "busybox"})
	ctx := context.Background()

	status, body := d.call("POST", filesURL("o", "mkdir"), map[string]any{"path": "a/b/c", "parents": true, "mode": "0750"})
	if info := decodeInfo(t, body); status != 201 || info.Path != "/workspace/a/b/c" || info.Type != "dir" || info.Mode != "0750" {
		t.Fatalf("mkdir -p: %d %s", status, body)
	}
	status, body = d.call("POST", filesURL("o", "mkdir"), map[string]any{"path": "/workspace/a/b/c", "parents": true})
	if status != 200 {
		t.Fatalf("mkdir -p of an existing directory: %d %s", status, body)
	}
	d.expectError("POST", filesURL("o", "mkdir"), map[string]any{"path": "/workspace/x/y"}, 404, api.CodeNotFound)
	if _, err := d.client.Mkdir(ctx, "o", "/workspace/x", client.MkdirOptions{Parents: false}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a/f1", "a/b/f2", "a/b/c/f3", "a/.hidden"} {
		if _, err := d.client.WriteFile(ctx, "o", p, strings.NewReader(p), client.WriteFileOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Listing: depth, hidden, order.
	paths := func(list []api.FileInfo) []string {
		var out []string
		for _, f := range list {
			out = append(out, f.Path)
		}
		return out
	}
	list, err := d.client.ListFiles(ctx, "o", "/workspace/a", client.ListOptions{Depth: 1, Hidden: false})
	if got := paths(list); err != nil || !slices.Equal(got, []string{"/workspace/a/b", "/workspace/a/f1"}) {
		t.Fatalf("list depth 1: %q %v", got, err)
	}
	list, err = d.client.ListFiles(ctx, "o", "/workspace/a", client.ListOptions{Depth: 3, Hidden: true})
	want := []string{"/workspace/a/.hidden", "/workspace/a/b", "/workspace/a/b/c", "/workspace/a/b/c/f3", "/workspace/a/b/f2", "/workspace/a/f1"}
	if got := paths(list); err != nil || !slices.Equal(got, want) {
		t.Fatalf("list depth 3 hidden: %q %v", got, err)
	}
	status, body = d.call("GET", filesURL("o", "list", "path=/workspace/x"), nil)
	if status != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("list of an empty directory: %d %s", status, body)
	}
	// Move: rename, conflict, overwrite, directories.
	moved, err := d.client.MoveFile(ctx, "o", "a/f1", "/workspace/x/g1", client.MoveOptions{})
	if err != nil || moved.Path != "/workspace/x/g1" || moved.Size != 4 {
		t.Fatalf("move: %+v %v", moved, err)
	}
	if _, err := d.client.MoveFile(ctx, "o", "a/b/f2", "x/g1", client.MoveOptions{}); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("move onto an existing file: %v", err)
	}
	if _, err := d.client.MoveFile(ctx, "o", "a/b/f2", "x/g1", client.MoveOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if got := d.readFile("o", "x/g1"); string(got) != "a/b/f2" {
		t.Fatalf("after move with overwrite: %q", got)
	}
	if _, err := d.client.MoveFile(ctx, "o", "a/b", "x/b2", client.MoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := d.sh("o", "cat /workspace/x/b2/c/f3"); got != "a/b/c/f3" {
		t.Fatalf("after moving a directory: %q", got)
	}
	if _, err := d.client.StatFile(ctx, "o", "a/b"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("stat of the moved directory's old path: %v", err)
	}
	// Delete: a file, an empty directory, a tree.
	if err := d.client.RemoveFile(ctx, "o", "x/g1", client.RemoveFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.client.RemoveFile(ctx, "o", "x", client.RemoveFileOptions{}); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("remove of a non-empty directory: %v", err)
	}
	if err := d.client.RemoveFile(ctx, "o", "x", client.RemoveFileOptions{Recursive: true}); err != nil {
		t.Fatal(err)
	}
	status, _ = d.call("DELETE", filesURL("o", "", "path=/workspace/a&recursive=true"), nil)
	if status != 204 {
		t.Fatalf("remove -r: %d", status)
	}
	if got := d.sh("o", "ls -A /workspace"); got != "" {
		t.Fatalf("after removing everything: %q", got)
	}
}

func TestFileWatch(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "w", Image: "busybox"})
	d.sh("w", "mkdir -p /workspace/sub")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := d.client.OpenWatch(ctx, "w", "/workspace", client.WatchOptions{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan api.FileEvent, 64)
	go func() {
		defer close(events)
		for {
			ev, err := w.Next()
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	d.sh("w", "echo a > /workspace/sub/new; echo b >> /workspace/sub/new; mv /workspace/sub/new /workspace/moved; rm /workspace/moved")
	want := []api.FileEvent{
		{Type: "create", Path: "/workspace/sub/new"},
		{Type: "modify", Path: "/workspace/sub/new"},
		{Type: "move", Path: "/workspace/moved", OldPath: "/workspace/sub/new"},
		{Type: "delete", Path: "/workspace/moved"},
	}
	var got []api.FileEvent
	timeout := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the watch ended; got %+v", got)
			}
			got = append(got, ev)
			if ev == want[0] {
				want = want[1:]
			}
		case <-timeout:
			t.Fatalf("events so far %+v; still waiting for %+v", got, want)
		}
	}
	// Errors before the stream starts are ordinary answers.
	d.expectError("GET", filesURL("w", "watch", "path=/workspace/missing"), nil, 404, api.CodeNotFound)
	w.Close()
	// Removing the watched directory ends a watch of it.
	w2, err := d.client.OpenWatch(ctx, "w", "/workspace/sub", client.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	d.sh("w", "rmdir /workspace/sub")
	for {
		ev, err := w2.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != "delete" || ev.Path != "/workspace/sub" {
			t.Fatalf("unexpected event %+v", ev)
		}
	}
}

func TestCLIFiles(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "c", Image: "busybox"})
	local := t.TempDir()
	src := filepath.Join(local, "proj")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := []byte{0, 1, 2, 255, '\n'}
	for name, data := range map[string][]byte{"a.txt": []byte("hello\n"), "sub/b.bin": bin} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "a.txt"), 0o755); err != nil {
		t.Fatal(err)
	}
	// cp into the sandbox: an existing directory receives the source by name.
	if out, errOut, code := d.cli("", "cp", src, "c:/workspace"); code != 0 {
		t.Fatalf("cp in: %q %q %d", out, errOut, code)
	}
	if got := d.sh("c", "cd /workspace/proj && cat a.txt && stat -c %a a.txt sub/b.bin && od -An -tx1 sub/b.bin"); got != "hello\n755\n640\n 00 01 02 ff 0a\n" {
		t.Fatalf("after cp in: %q", got)
	}
	// A file to a new name; stdin to a file.
	if _, errOut, code := d.cli("", "cp", filepath.Join(src, "a.txt"), "c:copy.txt"); code != 0 {
		t.Fatalf("cp file in: %q", errOut)
	}
	if _, errOut, code := d.cli("from stdin", "cp", "-", "c:/tmp/stdin.txt"); code != 0 {
		t.Fatalf("cp - in: %q", errOut)
	}
	// files ls / cat / stat / mkdir / mv / rm.
	out, errOut, code := d.cli("", "files", "ls", "c", "/workspace")
	if code != 0 || out != "copy.txt\nproj\n" {
		t.Fatalf("files ls: %q %q %d", out, errOut, code)
	}
	out, _, _ = d.cli("", "files", "ls", "-d", "3", "c", "proj")
	if out != "a.txt\nsub\nsub/b.bin\n" {
		t.Fatalf("files ls -d 3: %q", out)
	}
	out, _, _ = d.cli("", "files", "ls", "-l", "c", "proj")
	if !strings.Contains(out, "- 0755 root root 6") || !strings.Contains(out, "d 0755 root root") {
		t.Fatalf("files ls -l: %q", out)
	}
	out, _, code = d.cli("", "files", "cat", "c", "copy.txt", "/tmp/stdin.txt")
	if code != 0 || out != "hello\nfrom stdin" {
		t.Fatalf("files cat: %q %d", out, code)
	}
	out, _, code = d.cli("", "files", "stat", "c", "proj/sub/b.bin")
	if info := decodeInfo(t, []byte(out)); code != 0 || info.Size != 5 || info.Mode != "0640" {
		t.Fatalf("files stat: %q", out)
	}
	if _, errOut, code := d.cli("", "files", "mkdir", "-p", "c", "/workspace/m/n"); code != 0 {
		t.Fatalf("files mkdir: %q", errOut)
	}
	if _, errOut, code := d.cli("", "files", "mv", "c", "copy.txt", "m/n/moved.txt"); code != 0 {
		t.Fatalf("files mv: %q", errOut)
	}
	_, errOut, code = d.cli("", "files", "cat", "c", "copy.txt")
	if code == 0 || !strings.Contains(errOut, "no such file") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("files cat of a moved file: %q %d", errOut, code)
	}
	// cp out of the sandbox: a directory, a file, to stdout.
	dst := filepath.Join(local, "back")
	if _, errOut, code := d.cli("", "cp", "c:/workspace", dst); code != 0 {
		t.Fatalf("cp out: %q", errOut)
	}
	for name, data := range map[string][]byte{"proj/a.txt": []byte("hello\n"), "proj/sub/b.bin": bin, "m/n/moved.txt": []byte("hello\n")} {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("cp out %s: %q %v", name, got, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "proj/a.txt")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("cp out kept no mode: %v %v", fi, err)
	}
	if _, errOut, code := d.cli("", "cp", "c:/workspace/proj/sub/b.bin", local); code != 0 {
		t.Fatalf("cp file out: %q", errOut)
	}
	if got, _ := os.ReadFile(filepath.Join(local, "b.bin")); !bytes.Equal(got, bin) {
		t.Fatalf("cp file out: %q", got)
	}
	out, _, _ = d.cli("", "cp", "c:proj/a.txt", "-")
	if out != "hello\n" {
		t.Fatalf("cp to stdout: %q", out)
	}
	if _, errOut, code := d.cli("", "files", "rm", "-r", "c", "/workspace/proj", "/workspace/m"); code != 0 {
		t.Fatalf("files rm -r: %q", errOut)
	}
	out, _, _ = d.cli("", "files", "ls", "c")
	if out != "" {
		t.Fatalf("after rm -r: %q", out)
	}
	_, errOut, code = d.cli("", "cp", "a", "b")
	if code == 0 || !strings.Contains(errOut, "ID:PATH") {
		t.Fatalf("cp with no sandbox side: %q %d", errOut, code)
	}
}
