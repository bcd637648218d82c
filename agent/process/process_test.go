package process

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/internal/childproc"
)

func newTestManager(t *testing.T) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starting processes with a credential needs root")
	}
	dir := t.TempDir()
	defaults := func() ([]string, string, string) { return os.Environ(), dir, "" }
	m := NewManager(childproc.Start, defaults, func(context.Context, string) (SessionState, error) {
		return SessionState{}, api.Errorf(api.CodeNotFound, "no sessions here")
	})
	t.Cleanup(func() {
		for _, p := range m.Running() {
			_ = p.Kill(context.Background(), unix.SIGKILL, 0)
		}
	})
	return m
}

func start(t *testing.T, m *Manager, req api.StartProcessRequest) *Process {
	t.Helper()
	p, err := m.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("start %+v: %v", req, err)
	}
	return p
}

func finish(t *testing.T, p *Process) api.Process {
	t.Helper()
	select {
	case <-p.Finished():
	case <-time.After(30 * time.Second):
		t.Fatalf("process %+v did not finish", p.Info())
	}
	return p.Info()
}

// allOutput reads the whole log back by cursors, a few bytes at a time.
func allOutput(p *Process, limit int) (stdout, stderr []byte, skipped int64) {
	var out, errOut bytes.Buffer
	var cursor int64
	for {
		logs := p.Logs(cursor, limit)
		skipped += logs.Skipped
		for _, c := range logs.Chunks {
			b, _ := c.Bytes()
			if c.Type == api.EventStderr {
				errOut.Write(b)
			} else {
				out.Write(b)
			}
		}
		if logs.Cursor == cursor {
			return out.Bytes(), errOut.Bytes(), skipped
		}
		cursor = logs.Cursor
	}
}

func TestOutputTagsStreamsAndCountsSkipped(t *testing.T) {
	o := newOutput(nil, 8, nil)
	o.write(api.EventStdout, []byte("ab"))
	o.write(api.EventStdout, []byte("c"))
	o.write(api.EventStderr, []byte("DE"))
	o.write(api.EventStdout, []byte("f"))
	chunks, skipped, next, _ := o.read(0, -1)
	var got []string
	for _, c := range chunks {
		got = append(got, fmt.Sprintf("%s:%s@%d", c.Type, c.Data, c.Cursor))
	}
	if strings.Join(got, " ") != "stdout:abc@3 stderr:DE@5 stdout:f@6" || skipped != 0 || next != 6 {
		t.Fatalf("got %q skipped %d next %d", got, skipped, next)
	}
	o.write(api.EventStderr, []byte("GHIJ")) // 10 bytes: the first 2 fall off
	chunks, skipped, next, _ = o.read(1, 3)
	got = nil
	for _, c := range chunks {
		got = append(got, fmt.Sprintf("%s:%s@%d", c.Type, c.Data, c.Cursor))
	}
	if strings.Join(got, " ") != "stdout:c@3 stderr:DE@5" || skipped != 1 || next != 5 {
		t.Fatalf("after overflow: %q skipped %d next %d", got, skipped, next)
	}
	if len(o.runs) != 4 {
		t.Fatalf("runs kept: %+v", o.runs)
	}
	o.write(api.EventStderr, bytes.Repeat([]byte("x"), 20))
	if len(o.runs) != 1 {
		t.Fatalf("runs after everything fell off: %+v", o.runs)
	}
}

func TestOutputBoundsItsRuns(t *testing.T) {
	o := newOutput(nil, 4096, nil) // at most 128 runs
	for i := range 1000 {
		o.write([]string{api.EventStdout, api.EventStderr}[i%2], []byte{byte('a' + i%2)})
	}
	if len(o.runs) != o.maxRuns || o.maxRuns != 128 {
		t.Fatalf("%d runs kept, max %d", len(o.runs), o.maxRuns)
	}
	chunks, skipped, next, _ := o.read(0, -1)
	if skipped != 1000-128 || next != 1000 || len(chunks) != 128 || chunks[0].Type != api.EventStdout || chunks[0].Data != "a" || chunks[0].Cursor != 1000-127 {
		t.Fatalf("skipped %d next %d, %d chunks, first %+v", skipped, next, len(chunks), chunks[0])
	}
	// Reads from inside the kept part skip nothing.
	if chunks, skipped, _, _ := o.read(999, -1); skipped != 0 || len(chunks) != 1 || chunks[0].Data != "b" {
		t.Fatalf("from 999: %+v skipped %d", chunks, skipped)
	}
}

func TestStartRunAndRead(t *testing.T) {
	m := newTestManager(t)
	_, cwd, _ := m.defaults()
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	if err := os.WriteFile(cwd+"/bin", binary, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, m, api.StartProcessRequest{Command: "cat bin; echo err >&2; echo \"$FOO $PWD\"; exit 3", Env: map[string]string{"FOO": "bar"}})
	info := finish(t, p)
	if info.Status != api.ProcessExited || info.ExitCode != 3 || info.PID <= 0 || info.EndedAt.IsZero() || info.LogEnd != int64(256+4+len("bar "+cwd+"\n")) {
		t.Fatalf("info %+v", info)
	}
	stdout, stderr, skipped := allOutput(p, 7)
	if !bytes.Equal(stdout, append(binary, []byte("bar "+cwd+"\n")...)) || string(stderr) != "err\n" || skipped != 0 {
		t.Fatalf("stdout %q stderr %q skipped %d", stdout, stderr, skipped)
	}
	if logs := p.Logs(0, 1<<20); !logs.Done || logs.Status != api.ProcessExited {
		t.Fatalf("logs of an ended process: %+v", logs)
	}
}

func TestSmallRingReportsSkipped(t *testing.T) {
	m := newTestManager(t)
	p := start(t, m, api.StartProcessRequest{Argv: []string{"sh", "-c", "i=0; while [ $i -lt 100 ]; do echo line$i; i=$((i+1)); done"}, LogBytes: 100})
	info := finish(t, p)
	stdout, _, skipped := allOutput(p, 1000)
	if int64(len(stdout))+skipped != info.LogEnd || len(stdout) != 100 || !strings.HasSuffix(string(stdout), "line99\n") {
		t.Fatalf("kept %d bytes %q, skipped %d, logEnd %d", len(stdout), stdout, skipped, info.LogEnd)
	}
}

func TestStartErrors(t *testing.T) {
	m := newTestManager(t)
	for _, req := range []api.StartProcessRequest{
		{}, {Command: "x", Argv: []string{"x"}}, {Argv: []string{""}}, {Command: "x", ID: "../x"},
		{Command: "x", Stdin: "file"}, {Command: "x", LogBytes: MaxLogBytes + 1}, {Command: "x", Env: map[string]string{"A=B": "c"}},
		{Command: "x", User: "no-such-user-here"},
	} {
		if _, err := m.Start(context.Background(), req); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%+v: %v, want invalid_argument", req, err)
		}
	}
	if _, err := m.Start(context.Background(), api.StartProcessRequest{Command: "true", SessionID: "nope"}); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("unknown session: %v", err)
	}
	p := start(t, m, api.StartProcessRequest{ID: "same", Argv: []string{"no-such-program-anywhere"}})
	if info := p.Info(); info.Status != api.ProcessFailed || !strings.Contains(info.Error, `executable "no-such-program-anywhere" not found in PATH`) {
		t.Fatalf("missing program: %+v", info)
	}
	if _, err := m.Start(context.Background(), api.StartProcessRequest{ID: "same", Command: "true"}); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("taken id: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for cwd, want := range map[string]string{"/no/such/dir": `cwd "/no/such/dir" does not exist`, file: fmt.Sprintf("cwd %q is not a directory", file)} {
		_, err := m.Start(context.Background(), api.StartProcessRequest{ID: "cwd", Argv: []string{"true"}, Cwd: cwd})
		if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("cwd %s: %v, want invalid_argument %q", cwd, err, want)
		}
	}
	if _, err := m.Get("cwd"); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("a process refused for its cwd is listed: %v", err)
	}
	// Started again after a hibernation, a process whose cwd is gone is a failed process.
	restore := api.StartProcessRequest{ID: "back", Argv: []string{"true"}, Cwd: "/no/such/dir", Restart: api.RestartOnResume}
	if errs := m.Restore(context.Background(), []api.SavedProcess{{Request: restore, Info: api.Process{ID: "back", Status: api.ProcessRunning}}}); len(errs) > 0 {
		t.Fatalf("restore: %v", errs)
	}
	if p, err := m.Get("back"); err != nil || p.Info().Status != api.ProcessFailed || !strings.Contains(p.Info().Error, "does not exist") {
		t.Fatalf("restored with a missing cwd: %v %+v", err, p)
	}
	if err := m.Remove("same"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("same"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("removed: %v", err)
	}
}

func TestKillGroupAndGrace(t *testing.T) {
	m := newTestManager(t)
	// A child in the background dies with the group.
	p := start(t, m, api.StartProcessRequest{Command: "sleep 100 & echo $!; wait"})
	res, err := p.Wait(context.Background(), api.WaitProcessRequest{Log: `^\d+$`, TimeoutMs: 10000})
	if err != nil || !res.Met {
		t.Fatalf("child pid: %+v %v", res, err)
	}
	if child, _ := strconv.Atoi(res.Match); child <= 0 {
		t.Fatalf("child pid %q", res.Match)
	}
	if err := p.Kill(context.Background(), unix.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if info := p.Info(); info.Status != api.ProcessKilled || info.Signal != "SIGTERM" || info.ExitCode != 143 {
		t.Fatalf("after TERM: %+v", info)
	}
	if liveMembers(p.Info().PID) > 0 {
		t.Fatalf("%d processes of the group survived", liveMembers(p.Info().PID))
	}
	// A group that ignores TERM gets SIGKILL after the grace.
	p = start(t, m, api.StartProcessRequest{Command: "trap '' TERM; echo ready; while :; do sleep 0.05; done"})
	if res, _ := p.Wait(context.Background(), api.WaitProcessRequest{Log: "ready"}); !res.Met {
		t.Fatalf("not ready: %+v", res)
	}
	if err := p.Kill(context.Background(), unix.SIGTERM, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if info := p.Info(); info.Status != api.ProcessKilled || info.Signal != "SIGKILL" || liveMembers(info.PID) > 0 {
		t.Fatalf("after grace: %+v", info)
	}
	if err := p.Kill(context.Background(), unix.SIGTERM, 0); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("kill of an ended process: %v", err)
	}
	for _, s := range []string{"", "TERM", "sigkill", "9", "HUP"} {
		if _, err := ParseSignal(api.SignalName(s)); err != nil {
			t.Errorf("signal %q: %v", s, err)
		}
	}
	for _, s := range []string{"NOPE", "0", "65", "-1"} {
		if _, err := ParseSignal(api.SignalName(s)); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("signal %q: %v", s, err)
		}
	}
}

// TestDescendantsOutliveTheLeader: a process runs while any process of its group does, also
// after its leader exited, and Kill reaches them (it used to answer "not running").
func TestDescendantsOutliveTheLeader(t *testing.T) {
	m := newTestManager(t)
	p := start(t, m, api.StartProcessRequest{Command: "for i in 1 2 3; do (while :; do sleep 1; done) & done; echo started"})
	leader := p.Info().PID
	for deadline := time.Now().Add(10 * time.Second); unix.Kill(leader, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the leader did not exit")
		}
	}
	if info := p.Info(); info.Status != api.ProcessRunning || liveMembers(info.PID) < 3 {
		t.Fatalf("leader gone, 3 loops left: %+v with %d processes in its group", info, liveMembers(info.PID))
	}
	if err := p.Kill(context.Background(), unix.SIGTERM, 5*time.Second); err != nil {
		t.Fatalf("kill after the leader exited: %v", err)
	}
	if info := p.Info(); info.Status != api.ProcessKilled || info.Signal != "SIGTERM" || info.ExitCode != 143 || liveMembers(info.PID) > 0 {
		t.Fatalf("after TERM: %+v with %d processes in its group", info, liveMembers(info.PID))
	}

	// Descendants that end by themselves: the leader's exit code, once they are gone.
	p = start(t, m, api.StartProcessRequest{Command: "(sleep 0.3; echo child done) & exit 7"})
	if info := finish(t, p); info.Status != api.ProcessExited || info.ExitCode != 7 {
		t.Fatalf("leader exit 7, child later: %+v", info)
	}
	if out, _, _ := allOutput(p, 1<<20); string(out) != "child done\n" {
		t.Fatalf("output %q: the child's line is missing", out)
	}
}

func TestStdin(t *testing.T) {
	m := newTestManager(t)
	p := start(t, m, api.StartProcessRequest{Argv: []string{"cat"}, Stdin: api.StdinPipe})
	for _, part := range []string{"hello ", "world\x00\xff"} {
		if err := p.WriteStdin(context.Background(), strings.NewReader(part), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WriteStdin(context.Background(), strings.NewReader(""), true); err != nil {
		t.Fatal(err)
	}
	info := finish(t, p)
	if stdout, _, _ := allOutput(p, 3); string(stdout) != "hello world\x00\xff" || info.ExitCode != 0 {
		t.Fatalf("cat got %q, %+v", stdout, info)
	}
	if err := p.WriteStdin(context.Background(), strings.NewReader("x"), false); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("write after exit: %v", err)
	}
	q := start(t, m, api.StartProcessRequest{Argv: []string{"sleep", "100"}})
	if err := q.WriteStdin(context.Background(), strings.NewReader("x"), false); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), `stdin "null"`) {
		t.Fatalf("stdin null: %v", err)
	}
	// A write the process does not read ends with its request.
	r := start(t, m, api.StartProcessRequest{Argv: []string{"sleep", "100"}, Stdin: api.StdinPipe})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.WriteStdin(ctx, bytes.NewReader(make([]byte, 1<<20)), false); !api.IsCode(err, api.CodeUnavailable) {
		t.Fatalf("blocked write: %v", err)
	}
}

func TestWaits(t *testing.T) {
	m := newTestManager(t)
	bg := context.Background()
	p := start(t, m, api.StartProcessRequest{Command: "echo one; echo two; sleep 0.2; printf 'ready at 42'; sleep 100"})
	res, err := p.Wait(bg, api.WaitProcessRequest{Log: `ready at \d+`})
	if err != nil || !res.Met || res.Match != "ready at 42" || res.Condition != WaitLog || res.Cursor != int64(len("one\ntwo\nready at 42")) {
		t.Fatalf("log wait: %+v %v", res, err)
	}
	if res, _ := p.Wait(bg, api.WaitProcessRequest{Log: "one", Cursor: 4, TimeoutMs: 200}); res.Met || !res.TimedOut || !strings.Contains(res.Reason, "timed out") {
		t.Fatalf("from a cursor after the line: %+v", res)
	}
	if res, _ := p.Wait(bg, api.WaitProcessRequest{TimeoutMs: 100}); res.Met || !res.TimedOut || res.Process.Status != api.ProcessRunning {
		t.Fatalf("exit wait timeout: %+v", res)
	}
	for _, bad := range []api.WaitProcessRequest{{Log: "("}, {Port: 70000}, {HTTPPath: "/x"}, {Port: 1, HTTPPath: "x"}, {Log: "a", Port: 1}, {TimeoutMs: -1}} {
		if _, err := p.Wait(bg, bad); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%+v: %v", bad, err)
		}
	}

	// Ports: a listener the test opens on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	if res, _ := p.Wait(bg, api.WaitProcessRequest{Port: port}); !res.Met || res.Condition != WaitPort {
		t.Fatalf("port: %+v", res)
	}
	if res, _ := p.Wait(bg, api.WaitProcessRequest{Port: port, HTTPPath: "/ok"}); !res.Met || res.Condition != WaitHTTP {
		t.Fatalf("http: %+v", res)
	}
	if res, _ := p.Wait(bg, api.WaitProcessRequest{Port: port, HTTPPath: "/down", TimeoutMs: 300}); res.Met || !res.TimedOut || !strings.Contains(res.Reason, "503") {
		t.Fatalf("http 503: %+v", res)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	if res, _ := p.Wait(bg, api.WaitProcessRequest{Port: closedPort, TimeoutMs: 300}); res.Met || !res.TimedOut {
		t.Fatalf("closed port: %+v", res)
	}

	// A process that ends before the condition.
	q := start(t, m, api.StartProcessRequest{Command: "echo bye; exit 4"})
	if res, _ := q.Wait(bg, api.WaitProcessRequest{Log: "never", TimeoutMs: 20000}); res.Met || res.TimedOut || !strings.Contains(res.Reason, "ended (exit code 4)") {
		t.Fatalf("log after exit: %+v", res)
	}
	if res, _ := q.Wait(bg, api.WaitProcessRequest{Port: closedPort, TimeoutMs: 20000}); res.Met || res.TimedOut || !strings.Contains(res.Reason, "ended") {
		t.Fatalf("port after exit: %+v", res)
	}
	if res, _ := q.Wait(bg, api.WaitProcessRequest{}); !res.Met || res.Process.ExitCode != 4 {
		t.Fatalf("exit: %+v", res)
	}
}

// TestConcurrentUse starts, follows, lists, reads and kills processes from many goroutines at
// once (run it with -race).
func TestConcurrentUse(t *testing.T) {
	m := newTestManager(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			p, err := m.Start(context.Background(), api.StartProcessRequest{Command: fmt.Sprintf("i=0; while [ $i -lt 200 ]; do echo %d-$i; echo e$i >&2; i=$((i+1)); done", i)})
			if err != nil {
				t.Error(err)
				return
			}
			var out bytes.Buffer
			var last api.ProcessEvent
			p.Follow(context.Background(), 0, func(ev api.ProcessEvent) bool {
				if ev.Type == api.EventStdout {
					b, _ := ev.Bytes()
					out.Write(b)
				}
				last = ev
				return true
			})
			if last.Type != api.EventExit || last.Process == nil || last.Process.Status != api.ProcessExited || strings.Count(out.String(), "\n") != 200 {
				t.Errorf("follow of %d: last %+v, %d lines", i, last, strings.Count(out.String(), "\n"))
			}
		})
		wg.Go(func() { _ = m.List("", "") })
	}
	sleeper := start(t, m, api.StartProcessRequest{Argv: []string{"sleep", "100"}})
	wg.Go(func() { _ = sleeper.Kill(context.Background(), unix.SIGKILL, 0) })
	wg.Wait()
	// Kill returns once the sleeper has exited; it is finished (removable) once its output is
	// drained too.
	<-sleeper.Finished()
	if got := len(m.List("", "")); got != 21 {
		t.Fatalf("listed %d processes", got)
	}
	if removed := m.RemoveFinished(); len(removed) != 21 || len(m.List("", "")) != 0 {
		t.Fatalf("removed %d", len(removed))
	}
}

// liveMembers counts the processes of a process group that are not zombies (the test is not
// PID 1: orphans are reaped by someone else, whenever they please).
func liveMembers(pgid int) int {
	n := 0
	eachProcess(func(_ int, state byte, pgrp int) {
		if pgrp == pgid && state != 'Z' {
			n++
		}
	})
	return n
}

// TestSaveHasWhatWasWritten: what a process wrote before a save (a hibernation's) is in the
// saved log, even when the agent has not read it from the pipe yet.
func TestSaveHasWhatWasWritten(t *testing.T) {
	m := newTestManager(t)
	dir := t.TempDir()
	begin, written := filepath.Join(dir, "begin"), filepath.Join(dir, "written")
	p := start(t, m, api.StartProcessRequest{Command: fmt.Sprintf(
		"while [ ! -e %s ]; do sleep 0.01; done; echo before-the-save; touch %s; exec sleep 100", begin, written)})
	// The agent reads nothing of the pipe until the test lets it.
	p.out.reading.Lock()
	if err := os.WriteFile(begin, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(written); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	saved := make(chan []api.SavedProcess, 1)
	go func() { saved <- m.Save(1 << 20) }()
	select {
	case <-saved:
		t.Fatal("the save did not wait for the output in the pipe")
	case <-time.After(20 * time.Millisecond):
	}
	p.out.reading.Unlock()
	procs := <-saved
	var log strings.Builder
	for _, ev := range procs[0].Log {
		b, _ := ev.Bytes()
		log.Write(b)
	}
	if len(procs) != 1 || log.String() != "before-the-save\n" || procs[0].Info.LogEnd != int64(len("before-the-save\n")) {
		t.Fatalf("saved %+v with log %q, want the line written before the save", procs, log.String())
	}
}

// TestReadStatus checks the status line a wait's HTTP probe reads.
func TestReadStatus(t *testing.T) {
	for line, want := range map[string]int{
		"HTTP/1.1 200 OK\r\n": 200, "HTTP/1.0 404\r\n": 404, "HTTP/1.1 503 Service Unavailable\n": 503,
		"HTTP/1.1 20 OK\r\n": 0, "SSH-2.0-OpenSSH\r\n": 0, "HTTP/1.1 2000 OK\r\n": 0, "HTTP/1.1 200": 0, "": 0,
	} {
		code, status, err := readStatus(bufio.NewReader(strings.NewReader(line)))
		if code != want || (err == nil) != (want != 0) || (want != 0 && !strings.HasPrefix(status, strconv.Itoa(want))) {
			t.Errorf("%q: %d %q %v, want %d", line, code, status, err, want)
		}
	}
}

// TestStopAndContinue: Stop stops every thread of each running process's group (a finished
// one is left out) before it returns; Continue lets them run again, but for a process that
// was stopped before (here by its shell's `kill -STOP`), also after two Stops (a save asked
// twice).
func TestStopAndContinue(t *testing.T) {
	for _, c := range []struct {
		name, command string
		stops         int
	}{
		{"nothing stopped before", "sleep 100 & exec sleep 100", 1},
		{"one stopped before", "sleep 100 & kill -STOP $!; sleep 100 & exec sleep 100", 1},
		{"one stopped before, two stops", "sleep 100 & kill -STOP $!; sleep 100 & exec sleep 100", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newTestManager(t)
			done := start(t, m, api.StartProcessRequest{Command: "true"})
			finish(t, done)
			p := start(t, m, api.StartProcessRequest{Command: c.command})
			pgid := p.Info().PID
			stoppedBefore := strings.Contains(c.command, "kill -STOP")
			state := func(pid int) byte {
				s, _, _ := readStat(fmt.Sprintf("/proc/%d/stat", pid))
				return s
			}
			// members are the group's processes: which was stopped first, and the others.
			members := func() (stopped int, others []int) {
				eachProcess(func(pid int, state byte, pgrp int) {
					if pgrp != pgid {
						return
					}
					if stoppedBefore && pid != pgid && state == 'T' && stopped == 0 {
						stopped = pid
					} else {
						others = append(others, pid)
					}
				})
				return stopped, others
			}
			first, others := members()
			for deadline := time.Now().Add(10 * time.Second); len(others) < 2 || (stoppedBefore && first == 0); first, others = members() {
				if time.Now().After(deadline) {
					t.Fatalf("the group %d never had its sleeps: %d stopped, %v others", pgid, first, others)
				}
				time.Sleep(time.Millisecond)
			}
			var groups []StoppedGroup
			for range c.stops {
				groups = append(groups, m.Stop(5*time.Second)...)
			}
			if len(groups) != c.stops || groups[0].PGID != pgid {
				t.Fatalf("Stop stopped the groups %v, want only the running process's %d", groups, pgid)
			}
			for _, pid := range others {
				if s := state(pid); s != 'T' {
					t.Errorf("process %d of the group is in state %c after Stop, want T", pid, s)
				}
			}
			Continue(groups)
			// Continue's signals have reached the processes when it returns.
			for _, pid := range others {
				if s := state(pid); s == 'T' {
					t.Errorf("process %d is still stopped after Continue", pid)
				}
			}
			if s := state(first); first != 0 && s != 'T' {
				t.Errorf("process %d, stopped before Stop, is in state %c after Continue, want T still", first, s)
			}
		})
	}
}
