package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// privateSecret is what the tests put in a session's private folder and look for elsewhere.
const privateSecret = "s3cret-7f3a"

// attackScript tries, from another session, every way into the private folder of the session
// whose shell is pid, and prints "LEAK <how>" for each that shows the secret (given as its two
// halves), and what each attempt answered.
const attackScript = `pid=%d secret=$(printf '%%s-%%s' %[2]s)
try() { name=$1; shift; out=$("$@" 2>&1); rc=$?; case "$out" in *"$secret"*) echo "LEAK $name";; esac; printf '%%s rc=%%s %%s\n' "$name" "$rc" "$(printf %%s "$out" | head -c 200 | tr '\n' ' ')"; }
try home cat ~/.private/token
try homedir ls -A ~/.private/
try fd cat /proc/$pid/fd/999/token
try cwd cat /proc/$pid/cwd/token
try root cat /proc/$pid/root/proc/$pid/fd/999/token
try agentfd sh -c 'cat /proc/1/fd/*/a/token'
try store sh -c 'ls -A /run/nsbox/private; cat /run/nsbox/private/a/token'
try parent ls -A /proc/self/fd/999/..
try sibling cat /proc/self/fd/999/../a/token
try cdparent sh -c 'cd -P ~/.private/.. && ls -A; cat a/token'
try cdparent-setuid su -s /bin/sh -c 'cd -P /proc/self/fd/999/.. && cat a/token' nobody
try environ cat /proc/$pid/environ
try grep grep -rs "$secret" /root /run /tmp /home /var /workspace
try strace timeout 10 strace -qq -e trace=none -p $pid
try nsenter nsenter -t $pid -m cat /root/.private/token
try unshare unshare -m sh -c 'mount --bind /proc/'$pid'/fd/999 /mnt && cat /mnt/token'
try getfd python3 -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(int(sys.argv[1]))
fd = libc.syscall(438, pidfd, 999, 0)
if fd < 0: sys.exit("pidfd_getfd: errno %%d" %% ctypes.get_errno())
print(open("/proc/self/fd/%%d/token" %% fd).read())' $pid
try ptrace python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, int(sys.argv[1]), 0, 0) != 0: sys.exit("PTRACE_ATTACH: errno %%d" %% ctypes.get_errno())
print("attached")' $pid
`

// TestPrivateFolder: each session's ~/.private is its own. Another session — root, like the
// victim — cannot reach it by path, through /proc/<pid>/{fd,cwd,root}, the agent's
// descriptors, ".." of its own private folder, ptrace, pidfd_getfd, setns or mount tricks,
// nor can the file API on another
// session's behalf or on none; the session's own processes and file calls can. It is not kept
// across a hibernation, and goes with its session.
func TestPrivateFolder(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	d.create(api.CreateSandboxRequest{ID: "priv", Image: "host"})
	a := d.createSession("priv", "a", api.CreateSessionRequest{})
	d.createSession("priv", "b", api.CreateSessionRequest{})
	if a.PrivateDir != "/root/.private" {
		t.Fatalf("session a's private folder: %+v", a)
	}
	if res := d.exec("priv", api.ExecRequest{SessionID: "a", Command: "echo " + privateSecret + " > ~/.private/token && cd ~/.private && cat token && stat -c '%U %a' ."}); res.ExitCode != 0 || res.Stdout != privateSecret+"\nroot 700\n" {
		t.Fatalf("session a writes its private folder: %+v", res)
	}

	// The script makes the secret it looks for at run time: its own text must not match.
	res := d.exec("priv", api.ExecRequest{SessionID: "b", Command: fmt.Sprintf(attackScript, a.PID, strings.Replace(privateSecret, "-", " ", 1))})
	t.Logf("attempts from session b:\n%s%s", res.Stdout, res.Stderr)
	if strings.Contains(res.Stdout, "LEAK") {
		t.Fatalf("session b reached session a's private folder:\n%s", res.Stdout)
	}
	for _, want := range []string{"home rc=1", "fd rc=1", "cwd rc=1", "parent rc=2", "sibling rc=1", "strace rc=1", "nsenter rc=1", "getfd rc=1", "ptrace rc=1"} {
		if !strings.Contains(res.Stdout, want+" ") {
			t.Errorf("attempt %q did not fail as it should:\n%s", want, res.Stdout)
		}
	}

	// The file API: the session's own calls reach its folder, others' and the sandbox's do not.
	inA, inB := d.client.InSession("a"), d.client.InSession("b")
	if got := string(readAll(t, inA, "priv", "/root/.private/token")); got != privateSecret+"\n" {
		t.Fatalf("file API read for session a: %q", got)
	}
	if got := string(readAll(t, inA, "priv", "token")); got != privateSecret+"\n" { // relative to its cwd, ~/.private
		t.Fatalf("file API read for session a, relative: %q", got)
	}
	for _, c := range []*client.Client{inB, d.client} {
		if rd, err := c.ReadFile(ctx, "priv", "/root/.private/token"); err == nil {
			data, _ := io.ReadAll(rd)
			rd.Close()
			t.Fatalf("file API read by another caller: %q", data)
		}
		// The link is listed as what it is (a link to /proc/self/fd/999), with nothing under it.
		if list, err := c.ListFiles(ctx, "priv", "/root/.private", client.ListOptions{Depth: 1, Hidden: true}); err == nil && len(list) > 0 {
			t.Fatalf("file API list by another caller: %+v", list)
		}
		// For session b, /root/.private is its own folder; for the sandbox there is none.
		_, err := c.WriteFile(ctx, "priv", "/root/.private/planted", strings.NewReader("x"), client.WriteFileOptions{})
		if (err == nil) != (c == inB) {
			t.Fatalf("file API write of /root/.private/planted (session b: %v): %v", c == inB, err)
		}
		for _, p := range []string{"/run/nsbox/private/a/token", fmt.Sprintf("/proc/%d/fd/999/token", a.PID), fmt.Sprintf("/proc/%d/cwd/token", a.PID)} {
			if rd, err := c.ReadFile(ctx, "priv", p); err == nil {
				data, _ := io.ReadAll(rd)
				rd.Close()
				t.Fatalf("file API read of %s by another caller: %q", p, data)
			}
		}
	}
	info, err := inA.WriteFile(ctx, "priv", "/root/.private/sub/api.txt", strings.NewReader("from the API"), client.WriteFileOptions{MakeParents: true})
	if err != nil || info.Path != "/root/.private/sub/api.txt" || info.UID != 0 {
		t.Fatalf("file API write for session a: %+v %v", info, err)
	}
	if info, err := inA.MoveFile(ctx, "priv", "/root/.private/sub/api.txt", "/root/.private/moved.txt", client.MoveOptions{}); err != nil || info.Path != "/root/.private/moved.txt" {
		t.Fatalf("file API move inside the private folder: %+v %v", info, err)
	}
	if e := d.expectError(http.MethodPost, filesURL("priv", "move", "sessionId=a"), map[string]any{"from": "/root/.private/moved.txt", "to": "/tmp/out.txt"}, 400, api.CodeInvalidArgument); !strings.Contains(e.Message, "private folder") {
		t.Fatalf("move out of the private folder: %+v", e)
	}
	list, err := inA.ListFiles(ctx, "priv", "/root/.private", client.ListOptions{Depth: 1, Hidden: true})
	var listed []string
	for _, f := range list {
		listed = append(listed, f.Path)
	}
	if err != nil || strings.Join(listed, " ") != "/root/.private/moved.txt /root/.private/sub /root/.private/token" {
		t.Fatalf("file API list for session a: %v %v", listed, err)
	}
	if st, err := inA.StatFile(ctx, "priv", "/root/.private"); err != nil || st.Path != "/root/.private" || st.Name != ".private" || st.Type != "dir" {
		t.Fatalf("file API stat of the folder: %+v %v", st, err)
	}
	if res := d.exec("priv", api.ExecRequest{SessionID: "a", Command: "cat ~/.private/moved.txt; ls ~/.private"}); res.Stdout != "from the APImoved.txt\nsub\ntoken\n" {
		t.Fatalf("the session sees what the API wrote: %+v", res)
	}

	// The session's cwd is in its folder, shown as the session names it.
	if s, err := d.client.GetSession(ctx, "priv", "a"); err != nil || s.Cwd != "/root/.private" {
		t.Fatalf("session a's cwd: %+v %v", s, err)
	}
	// Processes started for the session hold the folder, and start in it as the session's
	// shell is; those started for none do not.
	for sid, want := range map[string]string{"a": "/root/.private\n" + privateSecret + "\n", "": ""} {
		p, err := d.client.StartProcess(ctx, "priv", api.StartProcessRequest{SessionID: sid, Command: "cat /root/.private/token >/dev/null && pwd && cat token"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.client.WaitProcess(ctx, "priv", p.ID, api.WaitProcessRequest{}); err != nil {
			t.Fatal(err)
		}
		logs, err := d.client.ProcessLogs(ctx, "priv", p.ID, client.LogsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		for _, ev := range logs.Chunks {
			if ev.Type == api.EventStdout {
				out.WriteString(ev.Data)
			}
		}
		if out.String() != want {
			t.Fatalf("process of session %q read %q, want %q", sid, out.String(), want)
		}
	}

	// Not kept across a hibernation: the folder is there again, empty.
	if _, err := d.client.HibernateSandbox(ctx, "priv", api.HibernateRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.ResumeSandbox(ctx, "priv"); err != nil {
		t.Fatal(err)
	}
	if res := d.exec("priv", api.ExecRequest{SessionID: "a", Command: "ls -A ~/.private/ && echo kept > ~/.private/after && cat ~/.private/after"}); res.ExitCode != 0 || res.Stdout != "kept\n" {
		t.Fatalf("after a hibernation: %+v", res)
	}

	// Deleting the session removes its folder from the host.
	store := privateStores(t, d, "a")
	if len(store) != 1 {
		t.Fatalf("session a's private folder on the host: %v", store)
	}
	if err := d.client.DeleteSession(ctx, "priv", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(store[0]); !os.IsNotExist(err) {
		t.Fatalf("session a's private folder outlived it: %v", err)
	}
	if err := d.client.RemoveSandbox(ctx, "priv", client.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
}

// privateStores finds the host directories of the private folders of sessions sid.
func privateStores(t *testing.T, d *testDaemon, sid string) []string {
	t.Helper()
	var out []string
	for _, pattern := range []string{
		filepath.Join(d.dataDir, "sandboxes", "*", "private", sid),
		filepath.Join(d.runDir, "sandboxes", "*", "disk", "private", sid),
	} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	return out
}

// TestPrivateFolderOfUser: a session of a non-root user gets ~/.private in that user's home,
// owned by the user; a root session in the same sandbox, even become that user, cannot reach it.
func TestPrivateFolderOfUser(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "privu", Image: "busybox"})
	if out := d.sh("privu", "echo alice:x:1000:1000::/home/alice:/bin/sh >> /etc/passwd && echo alice:x:1000: >> /etc/group && mkdir -p /home/alice && chown 1000:1000 /home/alice && echo ok"); out != "ok\n" {
		t.Fatalf("adduser: %q", out)
	}
	al := d.createSession("privu", "al", api.CreateSessionRequest{User: "alice"})
	if al.PrivateDir != "/home/alice/.private" {
		t.Fatalf("alice's session: %+v", al)
	}
	if res := d.exec("privu", api.ExecRequest{SessionID: "al", Command: "echo " + privateSecret + " > ~/.private/token && stat -c '%U %a' ~/.private/ && ls -l ~/.private | cut -c1-10"}); res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "alice 700\n") {
		t.Fatalf("alice writes her private folder: %+v", res)
	}
	// A root session, as root and as alice.
	d.createSession("privu", "r", api.CreateSessionRequest{})
	script := fmt.Sprintf(`pid=%d
for how in "cat /home/alice/.private/token" "cat /proc/$pid/fd/999/token" "cat /proc/$pid/root/home/alice/.private/token"; do
  echo "root: $(sh -c "$how" 2>&1)"; echo "as alice: $(su -s /bin/sh alice -c "$how" 2>&1)"
done`, al.PID)
	res := d.exec("privu", api.ExecRequest{SessionID: "r", Command: script})
	t.Logf("attempts from a root session:\n%s%s", res.Stdout, res.Stderr)
	if strings.Contains(res.Stdout, privateSecret) || res.ExitCode != 0 {
		t.Fatalf("a root session reached alice's private folder: %+v", res)
	}
	if got := string(readAll(t, d.client.InSession("al"), "privu", "/home/alice/.private/token")); got != privateSecret+"\n" {
		t.Fatalf("file API read for alice's session: %q", got)
	}
}
