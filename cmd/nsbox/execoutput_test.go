package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// execAnswers are the two ways an exec is answered whole: one JSON document (what curl gets),
// and raw frames (what the SDKs ask for); and how each names a stream that is not text.
var execAnswers = []struct {
	name    string
	exec    func(d *testDaemon, id string, req api.ExecRequest) *api.ExecResult
	notText string
}{
	{"json", (*testDaemon).execJSON, api.EncodingBase64},
	{"frames", (*testDaemon).exec, api.EncodingRaw},
}

// execJSON runs an exec answered as one JSON document (no Accept header, as curl sends).
func (d *testDaemon) execJSON(id string, req api.ExecRequest) *api.ExecResult {
	d.t.Helper()
	status, data := d.call("POST", "/v1/sandboxes/"+id+"/exec", req)
	var res api.ExecResult
	if err := json.Unmarshal(data, &res); status != 200 || err != nil {
		d.t.Fatalf("exec %+v in %s: %d %.300q (%v)", req, id, status, data, err)
	}
	return &res
}

// TestExecLargeOutputComesBackWhole: 100 MiB of output through an exec answered whole, as one
// JSON document and as frames, comes back whole and equal, while the daemon's resident memory
// hardly grows (its peak, VmHWM, is reset just before each exec), and the spool files are gone
// afterwards.
func TestExecLargeOutputComesBackWhole(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "big", Image: "busybox"})
	line := "0123456789 abcdefghijklmnopqrstuvwxyz é € \"quoted\" \\ \t\n"
	const size = 100 << 20
	lines := size / len(line)
	want := sha256.Sum256([]byte(strings.Repeat(line, lines)))
	// The line, made inside the sandbox by printf, repeated by yes, cut by head.
	cmd := fmt.Sprintf(`yes "$(printf '0123456789 abcdefghijklmnopqrstuvwxyz \303\251 \342\202\254 "quoted" \\ \t')" | head -n %d`, lines)

	pid := d.cmd.Process.Pid
	for _, a := range execAnswers {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatalf("reset the daemon's peak RSS: %v", err)
		}
		before := vmKB(t, pid, "VmRSS")
		res := a.exec(d, "big", api.ExecRequest{Command: cmd})
		peak := vmKB(t, pid, "VmHWM")
		stdout, _, err := res.Output()
		if err != nil || res.ExitCode != 0 || res.Truncated || res.StdoutTruncated || res.StdoutEncoding != api.EncodingUTF8 {
			t.Fatalf("%s: exit %d truncated %v/%v encoding %s: %v", a.name, res.ExitCode, res.Truncated, res.StdoutTruncated, res.StdoutEncoding, err)
		}
		if len(stdout) != lines*len(line) || sha256.Sum256(stdout) != want {
			t.Fatalf("%s: got %d bytes, want %d (sha256 differs: %v)", a.name, len(stdout), lines*len(line), sha256.Sum256(stdout) != want)
		}
		t.Logf("%s: daemon RSS before %d KiB, peak during the exec %d KiB (+%d KiB) for %d MiB of output", a.name, before, peak, peak-before, size>>20)
		if grew := peak - before; grew > 64<<10 {
			t.Errorf("%s: the daemon's RSS grew by %d KiB during a %d MiB exec, want < 64 MiB", a.name, grew, size>>20)
		}
		if open := d.openSpoolFiles(); len(open) > 0 {
			t.Errorf("%s: spool files still open after the answer: %v", a.name, open)
		}
		if left, _ := os.ReadDir(d.spoolDir()); len(left) > 0 {
			t.Errorf("%s: spool dir not empty: %v", a.name, left)
		}
	}
}

// TestExecOutputCapAndEncodings: answered whole as JSON and as frames, output is byte-exact
// (binary, text with one invalid byte, both streams interleaved), a per-call cap truncates each
// stream on its own and says so (also in a stream), and each stream gets its own encoding.
func TestExecOutputCapAndEncodings(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "cap", Image: "busybox"})
	// 3 MB of random bytes (more than the daemon keeps in memory), its digest taken inside.
	d.sh("cap", "head -c 3000000 /dev/urandom > /tmp/random")
	digest := func(cmd string) string {
		sum, _, _ := strings.Cut(d.sh("cap", cmd+" | sha256sum"), " ")
		return sum
	}
	randomSum := digest("cat /tmp/random")
	// Both streams, interleaved line by line.
	var wantOut, wantErr strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&wantOut, "out %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
	}
	// 3 MB on stdout, 10 bytes on stderr.
	capped := "head -c 3000000 /dev/zero | tr '\\0' a; printf 0123456789 >&2"

	for _, a := range execAnswers {
		t.Run(a.name, func(t *testing.T) {
			// Binary, byte-exact.
			res := a.exec(d, "cap", api.ExecRequest{Command: "cat /tmp/random"})
			stdout, _, err := res.Output()
			if sum := sha256.Sum256(stdout); err != nil || len(stdout) != 3000000 || hex.EncodeToString(sum[:]) != randomSum || res.StdoutEncoding != a.notText || res.Truncated {
				t.Fatalf("3 MB of random bytes: %v, %d bytes (%s), truncated %v, sha256 equal %v", err, len(stdout), res.StdoutEncoding, res.Truncated, hex.EncodeToString(sum[:]) == randomSum)
			}
			// 2 MB of text, then one byte that is not UTF-8: the whole stream is not text.
			res = a.exec(d, "cap", api.ExecRequest{Command: `head -c 2000000 /dev/zero | tr '\0' x; printf '\377'`})
			if stdout, _, err = res.Output(); err != nil || len(stdout) != 2000001 || stdout[2000000] != 0xff || strings.Trim(string(stdout[:2000000]), "x") != "" || res.StdoutEncoding != a.notText {
				t.Fatalf("text then \\377: %v, %d bytes (%s)", err, len(stdout), res.StdoutEncoding)
			}
			// Both streams at once, each whole and in order.
			res = a.exec(d, "cap", api.ExecRequest{Command: `i=1; while [ $i -le 3000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`})
			if res.Stdout != wantOut.String() || res.Stderr != wantErr.String() || res.StdoutEncoding != api.EncodingUTF8 || res.StderrEncoding != api.EncodingUTF8 {
				t.Fatalf("interleaved: stdout %d bytes (want %d), stderr %d bytes (want %d), equal %v/%v",
					len(res.Stdout), wantOut.Len(), len(res.Stderr), wantErr.Len(), res.Stdout == wantOut.String(), res.Stderr == wantErr.String())
			}
			// Cap 1 MB: stdout cut there, stderr whole.
			res = a.exec(d, "cap", api.ExecRequest{Command: capped, MaxOutputBytes: 1000000})
			if len(res.Stdout) != 1000000 || strings.Trim(res.Stdout, "a") != "" || res.Stderr != "0123456789" ||
				!res.StdoutTruncated || res.StderrTruncated || !res.Truncated || res.ExitCode != 0 {
				t.Fatalf("capped at 1 MB: %d bytes of stdout, stderr %q, truncated %v/%v/%v, exit %d",
					len(res.Stdout), res.Stderr, res.StdoutTruncated, res.StderrTruncated, res.Truncated, res.ExitCode)
			}
			// Binary cut by the cap: the first bytes of the file, exactly.
			res = a.exec(d, "cap", api.ExecRequest{Command: "cat /tmp/random", MaxOutputBytes: 1000000})
			stdout, _, err = res.Output()
			kept := len(stdout)
			if sum := sha256.Sum256(stdout); err != nil || kept > 1000000 || kept < 1000000-3 || !res.StdoutTruncated ||
				hex.EncodeToString(sum[:]) != digest(fmt.Sprintf("head -c %d /tmp/random", kept)) {
				t.Fatalf("random bytes capped at 1 MB: %v, %d bytes, truncated %v", err, kept, res.StdoutTruncated)
			}
			// A cut never splits a character: text stays text.
			res = a.exec(d, "cap", api.ExecRequest{Command: `printf 'a\303\251\303\251'`, MaxOutputBytes: 4})
			if res.Stdout != "aé" || res.StdoutEncoding != api.EncodingUTF8 || !res.StdoutTruncated {
				t.Fatalf("capped at 4 bytes of aéé: %q %s truncated %v", res.Stdout, res.StdoutEncoding, res.StdoutTruncated)
			}
			// Mixed: stdout text, stderr binary, each in its own encoding, byte-exact.
			res = a.exec(d, "cap", api.ExecRequest{Command: `printf 'text \303\251\n'; printf '\377\376\000x' >&2`})
			stdout, stderr, err := res.Output()
			if err != nil || res.StdoutEncoding != api.EncodingUTF8 || res.StderrEncoding != a.notText ||
				res.Stdout != "text é\n" || !bytes.Equal(stderr, []byte{0xff, 0xfe, 0, 'x'}) || string(stdout) != "text é\n" {
				t.Fatalf("mixed: %v stdout %q (%s) stderr %q (%s)", err, res.Stdout, res.StdoutEncoding, stderr, res.StderrEncoding)
			}
		})
	}

	// The CLI (frames, written out as they come): the same bytes on its stdout, stderr apart.
	out, errOut, code := d.cli("", "exec", "cap", "--", "sh", "-c", "cat /tmp/random; printf 'e\\377' >&2; exit 3")
	if sum := sha256.Sum256([]byte(out)); code != 3 || len(out) != 3000000 || hex.EncodeToString(sum[:]) != randomSum || errOut != "e\xff" {
		t.Fatalf("nsbox exec of 3 MB of random bytes: exit %d, %d bytes, stderr %q", code, len(out), errOut)
	}

	// Streamed: no cap unless asked; asked, the stream stops there and the exit event says so.
	var got []byte
	exit, err := d.client.ExecStream(context.Background(), "cap", api.ExecRequest{Command: capped, MaxOutputBytes: 1000000}, func(ev api.ExecEvent) error {
		if ev.Type != api.EventStdout {
			return nil
		}
		b, err := ev.Bytes()
		got = append(got, b...)
		return err
	})
	if err != nil || len(got) != 1000000 || !exit.StdoutTruncated || exit.StderrTruncated || !exit.Truncated {
		t.Fatalf("streamed with a 1 MB cap: %v, %d bytes, truncated %+v", err, len(got), exit)
	}

	// Caps the daemon refuses.
	d.expectError("POST", "/v1/sandboxes/cap/exec", api.ExecRequest{Command: "true", MaxOutputBytes: -1}, 400, api.CodeInvalidArgument)
	e := d.expectError("POST", "/v1/sandboxes/cap/exec", api.ExecRequest{Command: "true", MaxOutputBytes: 2 << 30}, 400, api.CodeInvalidArgument)
	if !strings.Contains(e.Message, "--max-exec-output") {
		t.Errorf("a cap above the daemon's: %q does not name --max-exec-output", e.Message)
	}
}

// TestExecOutputSpoolDiskFull: when the host disk that holds the spool is full, the exec
// answers 507 with a message that says so, and nothing is left behind.
func TestExecOutputSpoolDiskFull(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "full", Image: "busybox"})
	// A 2 MiB tmpfs over the spool dir stands for a full disk.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "nsbox-test-spool", d.spoolDir()).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs on the spool dir: %v: %s", err, out)
	}
	unmounted := false
	unmount := func() {
		if !unmounted {
			unmounted = true
			if out, err := exec.Command("umount", d.spoolDir()).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", d.spoolDir(), err, out)
			}
		}
	}
	t.Cleanup(unmount) // before the daemon's cleanup, which checks for mounts left
	e := d.expectError("POST", "/v1/sandboxes/full/exec", api.ExecRequest{Command: "head -c 10000000 /dev/zero"}, 507, api.CodeInsufficientStorage)
	if !strings.Contains(e.Message, "full") {
		t.Errorf("disk full: message %q does not say so", e.Message)
	}
	if open := d.openSpoolFiles(); len(open) > 0 {
		t.Errorf("spool files still open after the error: %v", open)
	}
	unmount()
	// The sandbox is fine: the next exec works.
	if out := d.sh("full", "echo ok"); out != "ok\n" {
		t.Fatalf("after the error: %q", out)
	}
}
