package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// ParseSignal reads a signal name ("TERM", "sigterm", "SIGKILL") or number; "" is SIGTERM.
func ParseSignal(s api.SignalName) (unix.Signal, error) {
	name := strings.ToUpper(strings.TrimSpace(string(s)))
	if name == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > 64 {
			return 0, badRequest("signal %d is out of range: use 1-64 or a name such as TERM or KILL", n)
		}
		return unix.Signal(n), nil
	}
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, badRequest("unknown signal %q: use a name such as TERM, KILL, INT, HUP or a number", s)
}

// Grace is a kill request's grace period: graceMs, or 5 s.
func Grace(ms *int64) (time.Duration, error) {
	if ms == nil {
		return defaultGrace, nil
	}
	if *ms < 0 {
		return 0, badRequest("graceMs must not be negative")
	}
	return time.Duration(*ms) * time.Millisecond, nil
}

// Kill sends sig to the process's whole group: the leader and its descendants, also when the
// leader has already exited. SIGTERM and SIGINT are given grace to end the group, after which
// the group gets SIGKILL; Kill then returns once the process has ended (no process of the
// group is left). SIGKILL also returns once it has ended; any other signal returns once it is
// sent.
func (p *Process) Kill(ctx context.Context, sig unix.Signal, grace time.Duration) error {
	select {
	case <-p.exited:
		return api.Errorf(api.CodeConflict, "process %q is not running (status %s)", p.Info().ID, p.Info().Status)
	default:
	}
	if err := p.signal(sig); err != nil {
		return err
	}
	switch sig {
	case unix.SIGKILL:
	case unix.SIGTERM, unix.SIGINT:
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-p.exited:
			return nil
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := p.signal(unix.SIGKILL); err != nil {
			return err
		}
	default:
		return nil
	}
	// Nothing of the group stays: SIGKILL reaches every member, also those forked meanwhile.
	for {
		select {
		case <-p.exited:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
			_ = p.signal(unix.SIGKILL)
		}
	}
}

// signal sends sig to the process's group, noting a TERM, INT or KILL when the leader is
// already gone (the signal then decides the status), and has awaitGroup look at the group again.
func (p *Process) signal(sig unix.Signal) error {
	p.mu.Lock()
	pgid := p.info.PID
	if p.leader != nil && (sig == unix.SIGKILL || sig == unix.SIGTERM || sig == unix.SIGINT) {
		p.killedBy = sig
	}
	p.mu.Unlock()
	defer func() {
		select {
		case p.recheck <- struct{}{}:
		default:
		}
	}()
	if err := unix.Kill(-pgid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", pgid, err)
	}
	return nil
}

// groupAlive reports whether any process of the group is left.
func groupAlive(pgid int) bool {
	return unix.Kill(-pgid, 0) == nil
}

// WriteStdin appends data to the process's stdin and closes it after when closeAfter is set.
func (p *Process) WriteStdin(ctx context.Context, data io.Reader, closeAfter bool) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	p.mu.Lock()
	info, stdin, closed := p.info, p.stdin, p.stdinClosed
	p.mu.Unlock()
	switch {
	case info.Stdin != api.StdinPipe:
		return api.Errorf(api.CodeConflict, "process %q was started with stdin %q; start it with stdin \"pipe\" to write to it", info.ID, info.Stdin)
	case info.Status != api.ProcessRunning || stdin == nil:
		return api.Errorf(api.CodeConflict, "process %q is not running (status %s)", info.ID, info.Status)
	case closed:
		return api.Errorf(api.CodeConflict, "process %q's stdin is closed", info.ID)
	}
	// A process that does not read blocks the write: the request's end stops it.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = stdin.SetWriteDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	_, err := io.Copy(stdin, data)
	if !stop() {
		<-interrupted
		_ = stdin.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return api.Errorf(api.CodeUnavailable, "stdin write to process %q was interrupted: %v", info.ID, ctx.Err())
		case errors.Is(err, unix.EPIPE):
			return api.Errorf(api.CodeConflict, "process %q closed its stdin", info.ID)
		case errors.Is(err, os.ErrClosed):
			return api.Errorf(api.CodeConflict, "process %q ended while its stdin was written", info.ID)
		}
		return fmt.Errorf("write stdin of process %q: %w", info.ID, err)
	}
	if closeAfter {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stdinClosed {
			p.stdinClosed = true
			if err := stdin.Close(); err != nil {
				return fmt.Errorf("close stdin of process %q: %w", info.ID, err)
			}
		}
	}
	return nil
}

// Logs reads the output log after cursor, at most limit bytes, and at most what one read of
// the log budget allows (see readShare): the cursor it answers says where to go on from.
func (p *Process) Logs(cursor int64, limit int) api.ProcessLogs {
	limit = p.out.budget.readLimit(limit)
	// Whether it had finished is taken before the read: then the read has everything.
	done := false
	select {
	case <-p.finished:
		done = true
	default:
	}
	chunks, skipped, next, _ := p.out.read(cursor, limit)
	if chunks == nil {
		chunks = []api.ProcessEvent{}
	}
	return api.ProcessLogs{Chunks: chunks, Skipped: skipped, Cursor: next, Status: p.Info().Status, Done: done && next == p.out.end()}
}

// Follow sends the log from cursor as it grows, a skipped event when bytes fell off the ring,
// and an exit event once the process has ended and its output is drained. It returns early
// when send fails or ctx ends.
func (p *Process) Follow(ctx context.Context, cursor int64, send func(api.ProcessEvent) bool) {
	for {
		finished := false
		select {
		case <-p.finished:
			finished = true
		default:
		}
		chunks, skipped, next, changed := p.out.read(cursor, p.out.budget.readLimit(1<<20))
		if skipped > 0 && !send(api.ProcessEvent{Type: api.EventSkipped, Skipped: skipped, Cursor: cursor + skipped}) {
			return
		}
		for _, c := range chunks {
			if !send(c) {
				return
			}
		}
		cursor = next
		if next < p.out.end() {
			continue // more than one read's worth is waiting
		}
		if finished {
			info := p.Info()
			send(api.ProcessEvent{Type: api.EventExit, Cursor: cursor, Process: &info})
			return
		}
		select {
		case <-changed:
		case <-p.finished:
		case <-ctx.Done():
			return
		}
	}
}

// Wait conditions.
const (
	WaitExit = "exit"
	WaitLog  = "log"
	WaitPort = "port"
	WaitHTTP = "http"
)

// maxLine bounds the part of a line kept for matching.
const maxLine = 64 << 10

// Wait waits for the request's condition until its timeout; not meeting it is an answer, not an error.
func (p *Process) Wait(ctx context.Context, req api.WaitProcessRequest) (*api.WaitProcessResult, error) {
	if req.TimeoutMs < 0 {
		return nil, badRequest("timeoutMs must not be negative")
	}
	timeout := 30 * time.Second
	if req.TimeoutMs > 0 {
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	res := &api.WaitProcessResult{Condition: WaitExit}
	var check func(context.Context, *api.WaitProcessResult) bool
	switch {
	case req.Log != "" && req.Port != 0:
		return nil, badRequest("wait for either a log line or a port, not both")
	case req.HTTPPath != "" && req.Port == 0:
		return nil, badRequest("httpPath needs a port")
	case req.Log != "":
		re, err := regexp.Compile(req.Log)
		if err != nil {
			return nil, badRequest("log is not a valid regular expression (RE2 syntax): %v", err)
		}
		if req.Cursor < 0 {
			return nil, badRequest("cursor must be a byte offset ≥ 0")
		}
		res.Condition = WaitLog
		m := &lineMatcher{re: re, cursor: req.Cursor, partial: map[string][]byte{}}
		check = func(_ context.Context, r *api.WaitProcessResult) bool { return m.scan(p, r) }
	case req.Port != 0:
		if req.Port < 1 || req.Port > 65535 {
			return nil, badRequest("port must be 1-65535, not %d", req.Port)
		}
		res.Condition = WaitPort
		if req.HTTPPath != "" {
			if !strings.HasPrefix(req.HTTPPath, "/") {
				return nil, badRequest("httpPath must start with '/', not %q", req.HTTPPath)
			}
			res.Condition = WaitHTTP
		}
		check = func(ctx context.Context, r *api.WaitProcessResult) bool {
			return probePort(ctx, req.Port, req.HTTPPath, r)
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ended := false
		select {
		case <-p.finished:
			ended = true
		default:
		}
		if check == nil {
			if ended {
				res.Met = true
				res.Process = p.Info()
				return res, nil
			}
		} else if check(ctx, res) {
			res.Met, res.Reason = true, ""
			res.Process = p.Info()
			return res, nil
		}
		if ended { // it will never be met: checked once more after the end
			res.Process = p.Info()
			res.Reason = fmt.Sprintf("the process ended (%s) before %s", describe(res.Process), res.Reason)
			return res, nil
		}
		poll := time.After(100 * time.Millisecond)
		select {
		case <-deadline.C:
			res.TimedOut, res.Process = true, p.Info()
			res.Reason = fmt.Sprintf("timed out after %s waiting for %s", timeout, res.Reason)
			if check == nil {
				res.Reason = fmt.Sprintf("timed out after %s; the process is still running", timeout)
			}
			return res, nil
		case <-ctx.Done():
			return nil, api.Errorf(api.CodeUnavailable, "wait interrupted: %v", ctx.Err())
		case <-p.finished:
		case <-poll:
		}
	}
}

func describe(i api.Process) string {
	switch i.Status {
	case api.ProcessKilled:
		return "killed by " + i.Signal
	case api.ProcessFailed:
		return "failed to start: " + i.Error
	}
	return fmt.Sprintf("exit code %d", i.ExitCode)
}

// lineMatcher finds the first output line matching re, reading the log from cursor. Lines are
// split per stream; a line not yet ended is matched too, once the log has nothing after it (a
// read that stops inside a line, at its share of the budget, must not match its first part).
type lineMatcher struct {
	re      *regexp.Regexp
	cursor  int64
	partial map[string][]byte
}

func (m *lineMatcher) scan(p *Process, r *api.WaitProcessResult) bool {
	r.Reason = fmt.Sprintf("an output line matching %q", m.re.String())
	for {
		chunks, skipped, next, _ := p.out.read(m.cursor, p.out.budget.readLimit(1<<20))
		atEnd := next >= p.out.end()
		if skipped > 0 {
			clear(m.partial)
		}
		for _, c := range chunks {
			data, _ := c.Bytes()
			off := c.Cursor - int64(len(data))
			for len(data) > 0 {
				line, rest, complete := bufioCut(data)
				off += int64(len(line))
				data = rest
				buf := append(m.partial[c.Type], line...)
				if len(buf) > maxLine {
					buf = buf[len(buf)-maxLine:]
				}
				text := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
				if (complete || atEnd) && m.re.MatchString(text) {
					r.Match, r.Cursor, m.cursor = text, off, off
					delete(m.partial, c.Type)
					return true
				}
				if complete {
					delete(m.partial, c.Type)
				} else {
					m.partial[c.Type] = buf
				}
			}
		}
		m.cursor, r.Cursor = next, next
		if len(chunks) == 0 || atEnd {
			return false
		}
	}
}

// bufioCut splits off the first line (with its newline) of data.
func bufioCut(data []byte) (line, rest []byte, complete bool) {
	for i, b := range data {
		if b == '\n' {
			return data[:i+1], data[i+1:], true
		}
	}
	return data, nil, false
}

// probePort checks whether the port accepts connections on the sandbox's loopback (IPv4, then
// IPv6), and with path whether an HTTP GET of it answers below 400.
func probePort(ctx context.Context, port int, path string, r *api.WaitProcessResult) bool {
	r.Reason = fmt.Sprintf("port %d to accept connections", port)
	if path != "" {
		r.Reason = fmt.Sprintf("http://localhost:%d%s to answer a status below 400", port, path)
	}
	var conn net.Conn
	var err error
	for _, host := range []string{"127.0.0.1", "::1"} {
		d := net.Dialer{Timeout: time.Second}
		if conn, err = d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port))); err == nil {
			break
		}
	}
	if err != nil {
		return false
	}
	defer conn.Close()
	if path == "" {
		return true
	}
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\nUser-Agent: nsbox-wait\r\nConnection: close\r\n\r\n", path, port); err != nil {
		return false
	}
	code, status, err := readStatus(bufio.NewReader(conn))
	if err != nil {
		r.Reason += fmt.Sprintf(" (last try: %v)", err)
		return false
	}
	if code >= 400 {
		r.Reason += fmt.Sprintf(" (last answer: %s)", status)
		return false
	}
	return true
}

// readStatus reads an HTTP answer's status line ("HTTP/1.1 200 OK") and returns its code and
// its status ("200 OK").
func readStatus(br *bufio.Reader) (code int, status string, err error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("read the answer's status line: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	proto, status, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/") || len(status) < 3 {
		return 0, "", fmt.Errorf("malformed HTTP status line %q", line)
	}
	code, err = strconv.Atoi(status[:3])
	if err != nil || code < 100 || (len(status) > 3 && status[3] != ' ') {
		return 0, "", fmt.Errorf("malformed HTTP status line %q", line)
	}
	return code, status, nil
}
