package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ExecRequest is one structured command for a session.
type ExecRequest struct {
	Command string            // shell source, run in the session's shell (heredocs and all)
	Env     map[string]string // set for this command only
	Cwd     string            // run this command there, then return to the session's cwd
	Stdin   []byte            // nil: /dev/null
	Timeout time.Duration     // 0: none
}

// Result is how a command ended.
type Result struct {
	ExitCode     int
	TimedOut     bool
	Canceled     bool
	SessionEnded bool // the command ended the shell (exit, exec): the session is over
	Reset        bool // the shell did not come back after the command was killed and was replaced
	Duration     time.Duration
}

// Started is what Exec emits once the command has been handed to the shell.
const Started = "start"

// Exec runs a command in the session: it emits Started once the shell has the command, then
// its output ("stdout" or "stderr") as it is produced. ctx cancels the command (the caller decides whether a client that goes away
// cancels it). Commands run one at a time, in the order they arrive.
// The first result of a session that replaced a default session whose shell ended unseen
// says the session was reset (see Manager.Default).
func (s *Session) Exec(ctx context.Context, req ExecRequest, emit func(stream string, data []byte)) (*Result, error) {
	res, err := s.exec(ctx, req, emit)
	if res != nil {
		s.mu.Lock()
		res.Reset = res.Reset || s.resetPending
		s.resetPending = false
		s.mu.Unlock()
	}
	return res, err
}

func (s *Session) exec(ctx context.Context, req ExecRequest, emit func(stream string, data []byte)) (*Result, error) {
	// The timeout bounds the whole call: the wait for the session's turn and for its terminal
	// as well as the run.
	var timeout <-chan time.Time
	if req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return &Result{ExitCode: 130, Canceled: true}, nil
	case <-timeout:
		// Its whole time went waiting behind other commands: it never ran.
		return &Result{ExitCode: 124, TimedOut: true, Duration: req.Timeout}, nil
	}
	defer func() { <-s.turn }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	sh, ended, deleted := s.sh, s.ended, s.deleted
	s.running = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = nil
		s.mu.Unlock()
	}()
	if ended || deleted {
		return nil, ErrEnded
	}
	if err := s.waitForPrompt(ctx, sh, timeout); err != nil {
		return nil, err
	}

	started := time.Now()
	n, status := s.newExec()
	defer s.forget(n)
	run, err := s.prepare(sh, n, req, emit)
	if noSpace(err) && s.reserve.release() {
		run, err = s.prepare(sh, n, req, emit)
	}
	if err != nil {
		return nil, err
	}
	defer s.reserve.refill()
	before := descendants(sh.pid)
	// Started goes out before the shell can produce a byte of output.
	emit(Started, nil)
	if err := s.trigger(sh, n); err != nil {
		// The shell no longer takes input: it is gone or going; end it for good.
		killTree(sh.pid)
		<-sh.done
		run.finish(nil)
		return &Result{ExitCode: exitCode(sh.status), SessionEnded: true, Duration: time.Since(started)}, nil
	}
	res := &Result{}
	select {
	case res.ExitCode = <-status:
	case <-sh.done:
		res.ExitCode, res.SessionEnded = exitCode(sh.status), true
	case <-timeout:
		res.TimedOut, res.ExitCode = true, 124
		res.Reset = s.interrupt(sh, status, before)
	case <-ctx.Done():
		res.Canceled, res.ExitCode = true, 130
		res.Reset = s.interrupt(sh, status, before)
	}
	run.finish(s.Background)
	res.Duration = time.Since(started)
	return res, nil
}

// newExec numbers a new exec and registers for its exit status.
func (s *Session) newExec() (int64, <-chan int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	ch := make(chan int, 1)
	s.waiters[s.next] = ch
	return s.next, ch
}

// forget drops the registration of exec n (its status, if it ever comes, is ignored).
func (s *Session) forget(n int64) {
	s.mu.Lock()
	delete(s.waiters, n)
	s.mu.Unlock()
}

// busyGrace is how long a command without a timeout waits for its session's terminal;
// readlineGrace how long, once the shell has the terminal, it waits for readline to read.
const (
	busyGrace     = 200 * time.Millisecond
	readlineGrace = 100 * time.Millisecond
)

// waitForPrompt waits until a bash session's terminal is not running a foreground program (a
// person may be using vi or a REPL in it; the trigger keys would go to that program). A
// command without a timeout hardly waits: after busyGrace (a program ending just then) it
// fails with ErrBusy. One with a timeout waits for the program to end until the timeout, then
// fails with ErrBusy.
func (s *Session) waitForPrompt(ctx context.Context, sh *shell, timeout <-chan time.Time) error {
	if !sh.bash {
		return nil
	}
	if timeout == nil {
		t := time.NewTimer(busyGrace)
		defer t.Stop()
		timeout = t.C
	}
	fd := int(sh.term.Fd())
	var foreground time.Time // since when the shell has had the terminal, while it is still cooked
	for {
		pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		if err != nil {
			return nil
		}
		poll := 20 * time.Millisecond
		if pgrp == sh.pid {
			// The shell has the terminal, but it may still be running the rest of a command
			// line (a builtin after a program): keys typed now would reach readline after its
			// prompt, which reports the command as aborted. Readline reads with the terminal
			// out of canonical mode; wait a little for that, then go on anyway (readyTerminal
			// puts the terminal in readline's mode).
			if termios, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil || termios.Lflag&unix.ICANON == 0 {
				return nil
			}
			if foreground.IsZero() {
				foreground = time.Now()
			}
			if time.Since(foreground) >= readlineGrace {
				return nil
			}
			poll = 2 * time.Millisecond
		} else {
			foreground = time.Time{}
		}
		select {
		case <-ctx.Done():
			return ErrBusy
		case <-timeout:
			return ErrBusy
		case <-sh.done:
			return nil
		case <-time.After(poll):
		}
	}
}

// execFiles are the files of one exec in the session directory.
type execFiles struct {
	paths          []string
	stdout, stderr *fifoReader
}

// prepare writes exec n's files (command, run file, stdin; for bash the file its key binding
// sources) and opens its FIFOs. Every file is written here, before the shell is touched: a
// write that fails (say, a full /run/nsbox) fails the exec and leaves the shell as it was.
func (s *Session) prepare(sh *shell, n int64, req ExecRequest, emit func(string, []byte)) (*execFiles, error) {
	name := func(kind string) string { return execFile(s.dir, kind, n) }
	run := &execFiles{paths: []string{name("cmd"), name("run"), name("out"), name("err")}}
	if req.Stdin != nil {
		run.paths = append(run.paths, name("in"))
	}
	fail := func(err error) (*execFiles, error) {
		run.finish(nil)
		return nil, err
	}
	if err := writeFile(name("cmd"), []byte(req.Command+"\n"), 0o644); err != nil {
		return fail(fmt.Errorf("write command: %w", err))
	}
	// The run file first undoes the per-command env and cwd of an earlier exec that was cut
	// short and whose undo the abort path missed (undoPending), before the sandbox's changes
	// are compared with the session's variables; then it applies what changed in the
	// sandbox's environment since the shell last saw it (nothing to compare unless it changed).
	s.mu.Lock()
	script := runScript(s.dir, n, req.Cwd, req.Env, req.Stdin != nil)
	now, gen := s.env.Since(s.appliedGen)
	if now != nil {
		script = envUpdate(s.applied, now) + script
	}
	script = undoPending + "\n" + script
	s.mu.Unlock()
	if err := writeFile(name("run"), []byte(script), 0o644); err != nil {
		return fail(fmt.Errorf("write run file: %w", err))
	}
	if now != nil {
		s.mu.Lock()
		s.applied, s.appliedGen = now, gen
		s.mu.Unlock()
	}
	var err error
	if run.stdout, err = openFifoReader(name("out"), s.cred.uid, s.cred.gid, func(b []byte) { emit("stdout", b) }); err != nil {
		return fail(err)
	}
	if run.stderr, err = openFifoReader(name("err"), s.cred.uid, s.cred.gid, func(b []byte) { emit("stderr", b) }); err != nil {
		return fail(err)
	}
	if req.Stdin != nil {
		// The whole stdin came with the request: a plain file gives the command exactly those
		// bytes and then end-of-file, with no pipe to keep open or to block on.
		if err := writeFile(name("in"), req.Stdin, 0o600); err != nil {
			return fail(fmt.Errorf("write stdin: %w", err))
		}
		if err := os.Chown(name("in"), s.cred.uid, s.cred.gid); err != nil {
			return fail(fmt.Errorf("chown stdin: %w", err))
		}
	}
	if sh.bash {
		if err := writeFileAtomic(filepath.Join(s.dir, "next"), ". "+quote(name("run"))+"\n"); err != nil {
			return fail(err)
		}
	}
	return run, nil
}

// finish ends exec n's streams (handing late output to rest) and removes its files.
func (r *execFiles) finish(rest *Ring) {
	for _, f := range []*fifoReader{r.stdout, r.stderr} {
		if f != nil {
			if rest == nil {
				f.finish(nil)
			} else {
				f.finish(rest)
			}
		}
	}
	for _, p := range r.paths {
		_ = os.Remove(p)
	}
}

// trigger makes the shell run exec n, whose files prepare wrote.
func (s *Session) trigger(sh *shell, n int64) error {
	line := shTrigger(s.dir, n)
	if sh.bash {
		sh.readyTerminal()
		line = triggerKeys
	}
	if _, err := sh.term.Write([]byte(line)); err != nil {
		return fmt.Errorf("send command to the shell: %w", err)
	}
	return nil
}

// writeFile is os.WriteFile with bare system calls: os registers every file it opens with
// the runtime's poller (four fcntls and an epoll_ctl, refused for a regular file), and an
// exec writes two or three files.
func writeFile(path string, data []byte, perm uint32) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, perm)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		data = data[n:]
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

func writeFileAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := writeFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// interrupt stops exec n after a timeout or cancel, as ^C does in an interactive shell: the
// shell abandons the rest of the command (it reports through its abort path), then whatever
// the command started and is still running is killed. A shell that does not come back is
// replaced by a new one in the same directory, and interrupt reports true (a reset).
func (s *Session) interrupt(sh *shell, status <-chan int, before map[int]bool) bool {
	// Taken first: a process whose parent dies of the interrupt leaves the shell's tree.
	started := newProcs(sh.pid, before)
	defer func() {
		started.kill()
		killNew(sh.pid, before)
	}()
	if sh.bash {
		sh.readyTerminal()
		_, _ = sh.term.Write([]byte{3}) // to the terminal's foreground job, or the shell itself
	} else {
		// No terminal: the shell and its foreground children share its process group. Its
		// earlier background jobs ignore SIGINT, as in any shell without job control.
		_ = unix.Kill(-sh.pid, unix.SIGINT)
	}
	if s.reported(sh, status, 200*time.Millisecond) {
		return false
	}
	// Something ignores SIGINT: kill what the command started, and let the shell report.
	killNew(sh.pid, before)
	if s.reported(sh, status, interruptGrace) || (sh.bash && s.probe(sh)) {
		return false
	}
	s.reset(sh)
	return true
}

// reported waits up to limit for the command's status or the shell's end.
func (s *Session) reported(sh *shell, status <-chan int, limit time.Duration) bool {
	select {
	case <-status:
		return true
	case <-sh.done:
		return true
	case <-time.After(limit):
		return false
	}
}

// probe checks that a bash shell is back at its prompt by running a no-op through it.
func (s *Session) probe(sh *shell) bool {
	n, status := s.newExec()
	defer s.forget(n)
	run, err := s.prepare(sh, n, ExecRequest{Command: ":"}, func(string, []byte) {})
	if err != nil {
		return false
	}
	defer run.finish(nil)
	if s.trigger(sh, n) != nil {
		return false
	}
	return s.reported(sh, status, interruptGrace) && !sh.exited()
}

// reset replaces a shell that does not come back with a new one in the same directory. The
// shell's variables, functions and aliases are lost; its background jobs keep running.
func (s *Session) reset(sh *shell) {
	cwd := s.cwd(sh.pid)
	if cwd == "" {
		cwd = s.opts.Cwd
	}
	s.mu.Lock()
	s.sh = nil // the old shell's exit is not the session's end
	deleted := s.deleted
	s.mu.Unlock()
	_ = unix.Kill(sh.pid, unix.SIGKILL)
	<-sh.done
	sh.term.Close()
	if deleted {
		return // deleted meanwhile: no new shell
	}
	if err := s.startShell(cwd); err != nil {
		s.mu.Lock()
		s.ended, s.exitCode = true, 137
		s.mu.Unlock()
		s.markDone()
	}
}

// readyTerminal makes sure a bash session's terminal is in the mode readline reads keys in.
// bash restores a saved (cooked) mode after a foreground job is killed by a signal, under
// readline's feet: trigger keys would then wait in the line buffer for a newline that never
// comes. The mode readline sets is remembered the first time it is seen and put back.
func (sh *shell) readyTerminal() {
	fd := int(sh.term.Fd())
	now, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return
	}
	switch {
	case now.Lflag&unix.ICANON == 0:
		sh.readlineMode = now
	case sh.readlineMode != nil:
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, sh.readlineMode)
	}
}
