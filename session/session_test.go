package session

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRingKeepsTheTailAndCountsWhatItDropped(t *testing.T) {
	r := NewRing(10)
	r.Write([]byte("0123456789"))
	r.Write([]byte("abc"))
	data, skipped, next, _ := r.ReadFrom(0)
	if string(data) != "3456789abc" || skipped != 3 || next != 13 {
		t.Fatalf("got %q skipped %d next %d", data, skipped, next)
	}
	data, skipped, next, _ = r.ReadFrom(11)
	if string(data) != "bc" || skipped != 0 || next != 13 {
		t.Fatalf("from 11: %q %d %d", data, skipped, next)
	}
	if data, _, next, _ = r.ReadFrom(99); len(data) != 0 || next != 13 {
		t.Fatalf("past the end: %q %d", data, next)
	}
}

func TestRingWakesReaders(t *testing.T) {
	r := NewRing(1 << 10)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cursor int64
			var got bytes.Buffer
			for got.Len() < 100 {
				data, _, next, changed := r.ReadFrom(cursor)
				got.Write(data)
				cursor = next
				if got.Len() < 100 {
					<-changed
				}
			}
		}()
	}
	for i := 0; i < 100; i++ {
		r.Write([]byte{'x'})
	}
	wg.Wait()
}

func TestFifoReaderKeepsOutputOfFastWriters(t *testing.T) {
	// Output written just before the writer exits must never be lost to the race between the
	// status report and the reader goroutine (the raw drain in finish guarantees it).
	dir := t.TempDir()
	for i := 0; i < 200; i++ {
		path := filepath.Join(dir, "out")
		var mu sync.Mutex
		var got bytes.Buffer
		r, err := openFifoReader(path, os.Getuid(), os.Getgid(), func(b []byte) {
			mu.Lock()
			got.Write(b)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := exec.Command("sh", "-c", "echo out > "+path).Run(); err != nil {
			t.Fatal(err)
		}
		rest := NewRing(1 << 10)
		r.finish(rest)
		os.Remove(path)
		if got.String() != "out\n" {
			t.Fatalf("run %d: got %q", i, got.String())
		}
	}
}

func TestFifoReaderHandsLateOutputToTheRing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	var got bytes.Buffer
	r, err := openFifoReader(path, os.Getuid(), os.Getgid(), func(b []byte) { got.Write(b) })
	if err != nil {
		t.Fatal(err)
	}
	// A "background job" keeps the FIFO open and writes after its command finished.
	job := exec.Command("sh", "-c", "echo now; sleep 0.3; echo later")
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	job.Stdout = f
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	time.Sleep(100 * time.Millisecond)
	rest := NewRing(1 << 10)
	r.finish(rest)
	if got.String() != "now\n" {
		t.Fatalf("command output: %q", got.String())
	}
	_ = job.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _, _, _ := rest.ReadFrom(0)
		if string(data) == "later\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("late output in the ring: %q", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQuoteArgvRunsExactlyThatArgv(t *testing.T) {
	argv := []string{"printf", "[%s]", "a b", "it's", "$HOME", "`x`", "\\n", "", "*"}
	out, err := exec.Command("sh", "-c", QuoteArgv(argv)).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "[a b][it's][$HOME][`x`][\\n][][*]"; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

func TestRunScriptOverlaysEnvAndCwdForOneCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cmd.1"), []byte("echo \"$A $B $(pwd)\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run.1"), []byte(runScript(dir, 1, "/", map[string]string{"A": "x y", "B": "it's"}, false)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The status line goes to $__nsbox_dir/status; here a plain file. No helper variable is left.
	script := "__nsbox_dir=" + quote(dir) + "; A=orig; cd /tmp; . " + quote(filepath.Join(dir, "run.1")) +
		"; cat " + quote(filepath.Join(dir, "out.1")) + "; echo \"after: $A [${B-unset}] $(pwd)\"; cat \"$__nsbox_dir/status\"" +
		"; set | grep '^__nsbox_' | grep -v '^__nsbox_dir=' || true"
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "x y it's /\nafter: orig [unset] /tmp\nS 1 0\n"; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

// A pipe-driven sh reports each exec once on the status FIFO: from the run file when it gets
// to its end, from the trigger's fallback line only when it was aborted (here a syntax error
// in the command, which an interactive shell survives).
func TestShReportsAnExecOnce(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox")
	}
	dir := t.TempDir()
	var input strings.Builder
	input.WriteString("PS1=''; PS2=''; __nsbox_dir=" + quote(dir) + "\n")
	for n, command := range map[int64]string{1: "true", 2: "f() { return 3; }; f", 3: "if then fi"} {
		for name, content := range map[string]string{"cmd": command + "\n", "run": runScript(dir, n, "", nil, false)} {
			if err := os.WriteFile(filepath.Join(dir, name+"."+strconv.FormatInt(n, 10)), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for n := range int64(3) {
		input.WriteString(shTrigger(dir, n+1))
	}
	// The status "FIFO" is the shell's stdout, which the test reads.
	if err := os.Symlink("/dev/stdout", filepath.Join(dir, "status")); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(script, []byte(input.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(busybox, "sh", "-i", script)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var lines []string // after busybox's banner
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "S ") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	if len(lines) != 3 || lines[0] != "S 1 0" || lines[1] != "S 2 3" || !strings.HasPrefix(lines[2], "S 3 ") || lines[2] == "S 3 0" {
		t.Fatalf("statuses %q, want S 1 0, S 2 3 and a failure of 3, once each", lines)
	}
}

func TestScriptShapes(t *testing.T) {
	if !strings.Contains(bashRC("/d"), "bind -x") || !strings.Contains(shTrigger("/d", 7), "S 7") {
		t.Errorf("rc or trigger changed shape")
	}
}

func TestLookupUserTakesTheFormsOfAnImagesUser(t *testing.T) {
	for spec, want := range map[string]credential{
		"":              {uid: 0, gid: 0, name: "root", home: "/root"},
		"root":          {uid: 0, gid: 0, name: "root", home: "/root"},
		"0:65534":       {uid: 0, gid: 65534, name: "root", home: "/root"},
		"root:nogroup":  {uid: 0, gid: 65534, name: "root", home: "/root"},
		"4242":          {uid: 4242, gid: 4242, name: "4242", home: "/"},
		"4242:4343":     {uid: 4242, gid: 4343, name: "4242", home: "/"},
		"nobody:root":   {uid: 65534, gid: 0, name: "nobody", home: "/nonexistent"},
		"65534:nogroup": {uid: 65534, gid: 65534, name: "nobody", home: "/nonexistent"},
	} {
		if got, err := lookupUser(spec); err != nil || got != want {
			t.Errorf("lookupUser(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, spec := range []string{"no-such-user", "root:no-such-group", "-1", "0:-1"} {
		if _, err := lookupUser(spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("lookupUser(%q): %v, want ErrInvalid", spec, err)
		}
	}
}

func TestFifoReaderGrowsWithItsOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	gotFirst, wroteMore := make(chan struct{}), make(chan struct{})
	defer func() {
		select {
		case <-wroteMore:
		default:
			close(wroteMore) // a failed test lets the reader go
		}
	}()
	var got bytes.Buffer
	var sizes []int
	r, err := openFifoReader(path, os.Getuid(), os.Getgid(), func(b []byte) {
		sizes = append(sizes, len(b))
		got.Write(b)
		if len(sizes) == 1 {
			close(gotFirst)
			<-wroteMore // the pipe, grown, fills meanwhile
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	pipeSize := func() (size int) {
		_ = r.chunk.pipe.Control(func(fd uintptr) { size, _ = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) })
		return size
	}
	if size := pipeSize(); size != smallChunk {
		t.Fatalf("a new FIFO holds %d bytes, want the default %d", size, smallChunk)
	}
	want := make([]byte, smallChunk+3*largeChunk)
	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// 64 KiB fill the new pipe, and the small buffer when read; then 1 MiB fills the grown
	// pipe while the sink holds the first chunk; the next read takes all of it.
	if _, err := f.Write(want[:smallChunk]); err != nil {
		t.Fatal(err)
	}
	<-gotFirst
	if size := pipeSize(); size != largeChunk || len(sizes) != 1 || sizes[0] != smallChunk {
		t.Fatalf("the FIFO holds %d bytes after a first read of %v bytes, want %d after %d", size, sizes, largeChunk, smallChunk)
	}
	if _, err := f.Write(want[smallChunk : smallChunk+largeChunk]); err != nil {
		t.Fatal(err)
	}
	close(wroteMore)
	if _, err := f.Write(want[smallChunk+largeChunk:]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.finish(nil)
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes, not the %d written", got.Len(), len(want))
	}
	if len(sizes) < 2 || sizes[0] != smallChunk || sizes[1] != largeChunk {
		t.Fatalf("chunks of %v bytes, want %d, then %d", sizes[:min(len(sizes), 4)], smallChunk, largeChunk)
	}
	if r.chunk.mapped || r.chunk.b != nil {
		t.Fatalf("the large buffer was not released: %d bytes", len(r.chunk.b))
	}
}
