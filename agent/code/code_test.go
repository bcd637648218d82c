package code

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/internal/childproc"
)

func newContext(t *testing.T, language string) (*Manager, *Context) {
	t.Helper()
	drv, _ := interpreter(language)
	if _, err := exec.LookPath(drv.prog); err != nil {
		t.Skipf("no %s here", drv.prog)
	}
	m := NewManager(childproc.Start)
	c, err := m.Create(Spec{Language: language, Cwd: t.TempDir(), Env: os.Environ(), UID: os.Getuid(), GID: os.Getgid(), User: "me"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Delete(c.Info().ID) })
	return m, c
}

// run runs a cell and gathers its output.
func run(t *testing.T, c *Context, code string, timeout time.Duration) (stdout, stderr string, res *api.RunCodeResult) {
	t.Helper()
	var out, errOut strings.Builder
	res, err := c.Run(code, timeout, func(ev api.CodeEvent) {
		b, _ := ev.Bytes()
		switch ev.Type {
		case api.EventStdout:
			out.Write(b)
		case api.EventStderr:
			errOut.Write(b)
		}
	})
	if err != nil {
		t.Fatalf("run %q: %v", code, err)
	}
	return out.String(), errOut.String(), res
}

func TestPythonContext(t *testing.T) {
	_, c := newContext(t, api.LanguagePython)
	if _, _, res := run(t, c, "import os\nx = 41\ndef inc(v): return v + 1", 0); res.Error != nil || len(res.Results) != 0 {
		t.Fatalf("definitions: %+v", res)
	}
	out, errOut, res := run(t, c, "print('hi', x); import sys; sys.stderr.write('warn\\n'); os.system('echo from-a-child')\ninc(x)", 0)
	if out != "hi 41\nfrom-a-child\n" || errOut != "warn\n" || len(res.Results) != 1 || res.Results[0]["text/plain"] != "42" {
		t.Errorf("state and output: %q %q %+v", out, errOut, res.Results)
	}
	// What the interpreter prints and what its children write come in the order they were
	// written, and a child's output written just before its cell ends reaches the cell.
	for i := range 30 {
		out, errOut, _ := run(t, c, "for i in range(3):\n  print('p', i); sys.stderr.write('e%d\\n' % i); os.system('echo c%d; echo d%d >&2' % (i, i))", 0)
		if out != "p 0\nc0\np 1\nc1\np 2\nc2\n" || errOut != "e0\nd0\ne1\nd1\ne2\nd2\n" {
			t.Fatalf("run %d: prints and a child's lines: %q %q", i, out, errOut)
		}
	}
	// A child that writes more than a pipe holds while the interpreter waits for it.
	out, _, res = run(t, c, "os.system('head -c 300000 /dev/zero | tr \"\\\\0\" a')", 10*time.Second)
	if len(out) != 300000 || strings.Trim(out, "a") != "" || res.TimedOut || res.Error != nil {
		t.Errorf("a child's 300000 bytes: got %d bytes, %+v", len(out), res)
	}
	if out, _, _ := run(t, c, "print('b' * 300000)", 0); len(out) != 300001 {
		t.Errorf("a print of 300000 bytes: got %d bytes", len(out))
	}
	_, _, res = run(t, c, "{'a': [1, 2]}", 0)
	if len(res.Results) != 1 || res.Results[0]["application/json"] == nil {
		t.Errorf("a dict's bundle: %+v", res.Results)
	}
	_, _, res = run(t, c, "1/0", 0)
	if res.Error == nil || res.Error.Name != "ZeroDivisionError" || !strings.Contains(res.Error.Traceback, "ZeroDivisionError") {
		t.Errorf("exception: %+v", res.Error)
	}
	_, _, res = run(t, c, "while True: x += 1", 300*time.Millisecond)
	if !res.TimedOut || res.Restarted || res.Error == nil || res.Error.Name != "KeyboardInterrupt" {
		t.Errorf("interrupted loop: %+v", res)
	}
	if _, _, res := run(t, c, "x > 41 and inc(1)", 0); len(res.Results) != 1 || res.Results[0]["text/plain"] != "2" {
		t.Errorf("state after the interrupt: %+v", res)
	}
	// Interrupted while it writes: the line it was writing is finished, and the error comes.
	for i := range 5 {
		out, _, res := run(t, c, "while True: print('x' * 200000)", 300*time.Millisecond)
		if !res.TimedOut || res.Restarted || res.Error == nil || res.Error.Name != "KeyboardInterrupt" || strings.Trim(out, "x\n") != "" {
			t.Errorf("run %d: interrupted while printing: %d bytes, %+v", i, len(out), res)
		}
	}
	// One that ignores the interrupt is restarted, its state gone.
	_, _, res = run(t, c, "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", 200*time.Millisecond)
	if !res.TimedOut || !res.Restarted {
		t.Errorf("a run that ignores its interrupt: %+v", res)
	}
	if _, _, res := run(t, c, "'x' in globals()", 0); len(res.Results) != 1 || res.Results[0]["text/plain"] != "False" {
		t.Errorf("state after a restart: %+v", res.Results)
	}
}

func TestJavaScriptContext(t *testing.T) {
	_, c := newContext(t, api.LanguageJavaScript)
	run(t, c, "let n = 20; function twice(v) { return 2 * v }", 0)
	out, _, res := run(t, c, "console.log('n is', n); twice(n) + 2", 0)
	if out != "n is 20\n" || len(res.Results) != 1 || res.Results[0]["text/plain"] != "42" {
		t.Errorf("state and result: %q %+v", out, res.Results)
	}
	// Its own output and its children's, synchronous or not, in the order they were written.
	for i := range 30 {
		out, errOut, _ := run(t, c, `var cp = require('child_process');
for (let i = 0; i < 3; i++) {
  console.log('p', i); console.error('e' + i);
  cp.execSync('echo c' + i + '; echo d' + i + ' >&2', { stdio: 'inherit' });
}
process.stdout.write('direct\n');
new Promise((done) => cp.spawn('sh', ['-c', 'echo async'], { stdio: 'inherit' }).on('exit', done))`, 0)
		if out != "p 0\nc0\np 1\nc1\np 2\nc2\ndirect\nasync\n" || errOut != "e0\nd0\ne1\nd1\ne2\nd2\n" {
			t.Fatalf("run %d: output and a child's lines: %q %q", i, out, errOut)
		}
	}
	// A child that writes more than a pipe holds while the interpreter waits for it (the
	// agent reads Node's fds 1 and 2: its driver's one thread cannot, then).
	out, _, res = run(t, c, `require('child_process').execSync('head -c 300000 /dev/zero | tr "\\0" a', { stdio: 'inherit' }); 1`, 10*time.Second)
	if len(out) != 300000 || strings.Trim(out, "a") != "" || res.TimedOut || res.Error != nil {
		t.Errorf("a child's 300000 bytes: got %d bytes, %+v", len(out), res)
	}
	if out, _, _ := run(t, c, "console.log('b'.repeat(300000))", 0); len(out) != 300001 {
		t.Errorf("a console.log of 300000 bytes: got %d bytes", len(out))
	}
	_, _, res = run(t, c, "null.x", 0)
	if res.Error == nil || res.Error.Name != "TypeError" {
		t.Errorf("exception: %+v", res.Error)
	}
	_, _, res = run(t, c, "while (true) { n++ }", 300*time.Millisecond)
	if !res.TimedOut || res.Restarted || res.Error == nil {
		t.Errorf("interrupted loop: %+v", res)
	}
	if _, _, res := run(t, c, "n > 20", 0); len(res.Results) != 1 || res.Results[0]["text/plain"] != "true" {
		t.Errorf("state after the interrupt: %+v", res.Results)
	}
}

func TestCreateErrors(t *testing.T) {
	m := NewManager(childproc.Start)
	if _, err := m.Create(Spec{Language: "cobol", Env: os.Environ()}); !api.IsCode(err, api.CodeInvalidArgument) {
		t.Errorf("unknown language: %v", err)
	}
	if _, err := m.Create(Spec{Language: api.LanguagePython, Env: []string{"PATH=/nonexistent"}}); !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), "no python3") {
		t.Errorf("no interpreter: %v", err)
	}
	if _, err := m.Create(Spec{Language: api.LanguagePython, Cwd: "/no/such/dir", Env: os.Environ()}); !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), `cwd "/no/such/dir" does not exist`) {
		t.Errorf("missing cwd: %v", err)
	}
	if _, err := m.Create(Spec{Language: api.LanguagePython, Cwd: "/etc/passwd", Env: os.Environ()}); !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), `cwd "/etc/passwd" is not a directory`) {
		t.Errorf("cwd a file: %v", err)
	}
	if err := m.Delete("ctx-9"); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("delete unknown: %v", err)
	}
}

// TestFenceMarkers: markers are taken out of the output wherever reads split them, output after
// a marker waits for its event, and bytes that only look like a marker are output.
func TestFenceMarkers(t *testing.T) {
	c := &Context{}
	f, err := newFences(c)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe() // empty: what the test feeds take is what was read
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	p := &fencedPipe{stream: api.EventStdout, pipe: rc}
	f.pipes = []*fencedPipe{p}
	var got []string
	c.sink = func(ev driverEvent) {
		if ev.Type == api.EventStdout {
			got = append(got, string(ev.output))
		} else {
			got = append(got, "<"+ev.Type+">")
		}
	}
	marker := func(seq int) string { return fmt.Sprintf("\x00nsbox-fence:%s:%08x\x00", f.token, seq) }
	stream := "a\x00" + marker(1) + "b" + marker(2) + "\x00nsbox-fence:" + f.token + ":zzzzzzzz\x00" + "c\x00"
	// Fed a byte at a time: every marker is split across reads.
	for i := range len(stream) {
		f.take(p, []byte{stream[i]})
	}
	pass := func(name string) func() { return func() { c.sink(driverEvent{Type: name}) } }
	f.event(1, pass("one"))
	f.event(2, pass("two"))
	f.output(p, p.pending) // the end of the pipe
	out := strings.Join(got, "")
	want := "a\x00<one>b<two>\x00nsbox-fence:" + f.token + ":zzzzzzzz\x00c\x00"
	if out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}
