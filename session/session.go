// Package session runs a sandbox's sessions inside the agent: stateful shells, each with its
// own working directory, environment, aliases, functions and history, sharing the sandbox's
// files and processes. A session runs structured commands one at a time with byte-exact,
// separately streamed stdout and stderr, and a bash session is also a terminal that people can
// attach to and type in, sharing the same shell state (see script.go for the shell side).
package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// StartFunc starts a process and returns its pid and a channel that receives its exit status.
// The agent, as PID 1, is the only one that may wait for processes, so it provides this.
// private, when not nil, is a session's private folder, which the process gets at PrivateFD
// besides attr.Files.
type StartFunc func(path string, argv []string, attr *os.ProcAttr, private *os.File) (int, <-chan unix.WaitStatus, error)

// Errors callers map to API errors.
var (
	ErrEnded    = errors.New("session has ended")
	ErrNotFound = errors.New("session not found")
	ErrExists   = errors.New("session already exists")
	ErrBusy     = errors.New("the session's terminal is running an interactive program (vi, top, a REPL…), so the command cannot be typed into its shell; end that program (attach to the terminal), give the command a timeout to wait for it, or run it in another session")
)

const (
	readyTimeout   = 10 * time.Second
	interruptGrace = time.Second // how long a command gets to report after its processes were killed
	terminalRing   = 1 << 20     // scrollback kept per session
	backgroundRing = 4 << 20     // output of background jobs after their command finished
)

// Options describe a new session.
type Options struct {
	ID    string
	Shell string // "", "bash", "sh" or a path; "" means bash when the image has it
	User  string // a LookupUser spec inside the sandbox; "" means the manager's default user
	Cwd   string
	Env   map[string]string
	// ReadOnly sessions are watched, not driven: the agent refuses what would run in them.
	ReadOnly bool
}

// Session is one shell and what it has produced.
type Session struct {
	opts      Options
	cred      credential
	dir       string // private directory of the session's FIFOs and scripts
	shellName string // "bash" or "sh"
	start     StartFunc
	created   time.Time
	env       *SandboxEnv
	reserve   *reserve // the session directory's room for a full tmpfs (shared by the manager's sessions)
	// store is the private store (nil: no private folders); private is this session's folder
	// in it (on the mount privateMnt), and privateLink its ~/.private ("" when the home has none).
	store       *os.File
	private     *os.File
	privateMnt  uint64
	privateLink string

	status     *os.File // read end of the status FIFO, held read-write so it never reads EOF
	ready      chan struct{}
	turn       chan struct{} // one command at a time, in arrival order
	Terminal   *Ring         // what the shell printed on its terminal
	Background *Ring         // what background jobs printed after their command had finished

	// finished is done when the session ends or is deleted (markDone): a context rather than a
	// channel, so that what waits for it can be a context.AfterFunc, not a parked goroutine.
	finished context.Context
	markDone context.CancelFunc

	mu       sync.Mutex
	waiters  map[int64]chan int // exit status of exec n, for whoever waits for it
	starting bool               // a shell was started and has not reported ready yet
	sh       *shell
	next     int64
	running  context.CancelFunc // cancels the running command
	ended    bool
	exitCode int
	deleted  bool
	applied  map[string]string // the sandbox environment the shell last had applied (see envUpdate)
	// appliedGen is applied's generation (SandboxEnv.Since).
	appliedGen uint64
	// unseen: the shell ended while no command ran, so no result has said so.
	unseen bool
	// resetPending: this session replaced one that ended unseen; the next result says reset.
	resetPending bool
}

// shell is one incarnation of a session's shell process (a reset starts a new one).
type shell struct {
	pid          int
	bash         bool
	readlineMode *unix.Termios // terminal settings readline uses at its prompt, once seen
	term         *os.File      // bash: the PTY master; sh: the pipe to its stdin
	done         chan struct{}
	status       unix.WaitStatus
}

func (sh *shell) exited() bool {
	select {
	case <-sh.done:
		return true
	default:
		return false
	}
}

// newSession makes the session's directory and status FIFO and starts its shell.
func newSession(opts Options, baseDir string, start StartFunc, env *SandboxEnv, room *reserve, store *os.File) (*Session, error) {
	cred, err := lookupUser(opts.User)
	if err != nil {
		return nil, err
	}
	s := &Session{
		opts: opts, cred: cred, dir: filepath.Join(baseDir, opts.ID), start: start, created: time.Now().UTC(), env: env, reserve: room, store: store,
		waiters: map[int64]chan int{}, ready: make(chan struct{}, 1), turn: make(chan struct{}, 1),
		Terminal: NewRing(terminalRing), Background: NewRing(backgroundRing),
	}
	s.finished, s.markDone = context.WithCancel(context.Background())
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("make session dir: %w", err)
	}
	if err := os.Chown(s.dir, cred.uid, cred.gid); err != nil {
		return nil, fmt.Errorf("chown session dir: %w", err)
	}
	statusPath := filepath.Join(s.dir, "status")
	if err := unix.Mkfifo(statusPath, 0o600); err != nil {
		return nil, fmt.Errorf("make status fifo: %w", err)
	}
	if err := os.Chown(statusPath, cred.uid, cred.gid); err != nil {
		return nil, fmt.Errorf("chown status fifo: %w", err)
	}
	if s.status, err = os.OpenFile(statusPath, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("open status fifo: %w", err)
	}
	go s.readStatuses()
	err = s.makePrivate()
	if err == nil {
		err = s.startShell(opts.Cwd)
	}
	if err != nil {
		s.status.Close()
		os.RemoveAll(s.dir)
		s.removePrivate()
		return nil, err
	}
	return s, nil
}

// statusBuffer is the size of the buffer the status FIFO is read through.
const statusBuffer = 128

// readStatuses dispatches what run files and rc files report on the status FIFO.
func (s *Session) readStatuses() {
	// Its lines are a few bytes ("R", "P 0 12"): a small buffer (a longer line is read in
	// pieces), not bufio's 4 KiB, which an idle agent, which never collects, keeps per session.
	lines := bufio.NewReaderSize(s.status, statusBuffer)
	for {
		line, err := lines.ReadString('\n')
		if err != nil {
			return
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) == 1 && fields[0] == "R":
			s.signalReady()
		case len(fields) == 3 && fields[0] == "P":
			// bash is reading a new command line. The first time, it is ready. Later, a
			// prompt that names an exec means that exec's run file was aborted to the prompt
			// (a fatal error such as an unbound variable under set -u); one that names none
			// follows a command line typed at the terminal and reports nothing.
			code, err1 := strconv.Atoi(fields[1])
			n, err2 := strconv.ParseInt(fields[2], 10, 64)
			if !s.signalReady() && err1 == nil && err2 == nil && n > 0 {
				s.deliver(n, code)
			}
		case len(fields) == 3 && fields[0] == "S":
			n, err1 := strconv.ParseInt(fields[1], 10, 64)
			code, err2 := strconv.Atoi(fields[2])
			if err1 == nil && err2 == nil {
				s.deliver(n, code)
			}
		}
	}
}

// signalReady reports a starting shell ready; it returns false when no shell was starting.
func (s *Session) signalReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.starting {
		return false
	}
	s.starting = false
	s.ready <- struct{}{}
	return true
}

// deliver hands an exit status to whoever waits for exec n.
func (s *Session) deliver(n int64, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.waiters[n]; ok {
		ch <- code
		delete(s.waiters, n)
	}
}

// startShell starts a (new) shell process for the session in cwd and waits until it is ready.
func (s *Session) startShell(cwd string) error {
	sandboxEnv, gen := s.env.Since(0)
	env := s.cred.env(s.opts, sandboxEnv)
	path, bash, err := chooseShell(s.opts.Shell, env)
	if err != nil {
		return err
	}
	if err := CheckCwd(cwd, s.privateLink, s.private); err != nil {
		return err
	}
	sh := &shell{bash: bash, done: make(chan struct{})}
	select {
	case <-s.ready: // a stale report from a shell that never finished starting
	default:
	}
	s.mu.Lock()
	s.starting = true
	s.mu.Unlock()
	s.shellName = "sh"
	if bash {
		s.shellName = "bash"
	}
	rcFile := filepath.Join(s.dir, "rc")
	rc := shRC(s.dir)
	if bash {
		rc = bashRC(s.dir)
	}
	if err := os.WriteFile(rcFile, []byte(rc), 0o644); err != nil {
		return fmt.Errorf("write rc: %w", err)
	}
	attr := &os.ProcAttr{Dir: ChdirPath(cwd, s.privateLink, s.private), Env: env, Sys: &syscall.SysProcAttr{
		Setsid:     true,
		Credential: &syscall.Credential{Uid: uint32(s.cred.uid), Gid: uint32(s.cred.gid), NoSetGroups: true},
	}}
	var argv []string
	var child []*os.File
	if bash {
		ptmx, tty, err := pty.Open()
		if err != nil {
			return fmt.Errorf("open pty: %w", err)
		}
		defer tty.Close()
		_ = pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80})
		if err := tty.Chown(s.cred.uid, s.cred.gid); err != nil {
			ptmx.Close()
			return fmt.Errorf("chown pty: %w", err)
		}
		sh.term, child = ptmx, []*os.File{tty, tty, tty}
		attr.Sys.Setctty, attr.Sys.Ctty = true, 0
		argv = []string{"bash", "--noprofile", "--rcfile", rcFile, "-i"}
		go pump(ptmx, newChunkBuffer(nil), s.writeTerminal)
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("shell stdin: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return fmt.Errorf("shell output: %w", err)
		}
		defer inR.Close()
		defer outW.Close()
		devNull, err := os.Open(os.DevNull)
		if err != nil {
			inW.Close()
			outR.Close()
			return fmt.Errorf("open %s: %w", os.DevNull, err)
		}
		defer devNull.Close()
		// The shell reopens fd 3 by path (/proc/self/fd/3), which checks the pipe's owner.
		if err := inR.Chown(s.cred.uid, s.cred.gid); err != nil {
			inW.Close()
			outR.Close()
			return fmt.Errorf("chown shell input: %w", err)
		}
		// Commands come in on fd 3, not stdin: busybox runs applets in forked children that
		// inherit the shell's stdio buffers, and a buffered stdin would hand them the shell's
		// own pending input.
		sh.term, child = inW, []*os.File{devNull, outW, outW, inR}
		argv = []string{"sh", "-i", "/proc/self/fd/3"}
		go func() {
			pump(outR, newChunkBuffer(nil), s.writeTerminal)
			outR.Close()
		}()
	}
	attr.Files = child
	pid, exited, err := s.start(path, argv, attr, s.private)
	if err != nil {
		sh.term.Close()
		return fmt.Errorf("start %s: %w", path, err)
	}
	sh.pid = pid
	go func() {
		sh.status = <-exited
		close(sh.done)
		s.shellExited(sh)
	}()
	if !bash {
		if _, err := fmt.Fprintf(sh.term, ". %s\n", quote(rcFile)); err != nil {
			return fmt.Errorf("start sh: %w", err)
		}
	}
	select {
	case <-s.ready:
	case <-sh.done:
		return fmt.Errorf("%s exited at start (%s); its output: %q", path, describeStatus(sh.status), tailOf(s.Terminal))
	case <-time.After(readyTimeout):
		killTree(sh.pid)
		return fmt.Errorf("%s did not become ready within %s; its output: %q", path, readyTimeout, tailOf(s.Terminal))
	}
	s.mu.Lock()
	s.sh, s.applied, s.appliedGen = sh, sandboxEnv, gen
	deleted := s.deleted
	s.mu.Unlock()
	if deleted { // deleted while this shell started: it must not outlive the session
		killTree(sh.pid)
		return ErrEnded
	}
	return nil
}

// shellExited records that a shell ended by itself: the session has ended.
func (s *Session) shellExited(sh *shell) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sh != sh {
		return // replaced by a reset, or never became the current shell
	}
	s.ended, s.exitCode = true, exitCode(sh.status)
	s.unseen = s.running == nil
	sh.term.Close()
	s.markDone()
}

func (s *Session) writeTerminal(b []byte) { _, _ = s.Terminal.Write(b) }

func tailOf(r *Ring) string {
	data, _, _, _ := r.ReadFrom(r.End() - 512)
	return strings.TrimSpace(string(data))
}

// chooseShell resolves the shell option to a path; bash gets a terminal, anything else a pipe.
func chooseShell(choice string, env []string) (path string, bash bool, err error) {
	pathEnv := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	find := func(name string) string {
		if strings.Contains(name, "/") {
			if fi, err := os.Stat(name); err == nil && !fi.IsDir() {
				return name
			}
			return ""
		}
		for _, dir := range filepath.SplitList(pathEnv) {
			if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return filepath.Join(dir, name)
			}
		}
		return ""
	}
	if choice == "" {
		for _, name := range []string{"bash", "sh"} {
			if p := find(name); p != "" {
				return p, name == "bash", nil
			}
		}
		return "", false, fmt.Errorf("%w: sessions need a shell, and this sandbox's image has none (no bash or sh in PATH %s); run its programs as processes with argv instead (POST /v1/sandboxes/{id}/processes, nsbox start ID -- PROGRAM ARG…)", ErrInvalid, pathEnv)
	}
	if p := find(choice); p != "" {
		return p, filepath.Base(p) == "bash", nil
	}
	return "", false, fmt.Errorf("%w: shell %q is not in this sandbox", ErrInvalid, choice)
}

// ErrInvalid marks errors in what the caller asked for.
var ErrInvalid = errors.New("invalid request")

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func describeStatus(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus())
}
