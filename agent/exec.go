package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// maxOutput bounds what one exec keeps of each stream; the rest is read and dropped, and the
// result says it was truncated.
const maxOutput = 64 << 20

// exec runs one command to completion in its own process group and returns its output.
// When the command exits, output its background children write later is not part of the
// result: the pipes are drained of what is buffered and closed.
func (a *Agent) exec(ctx context.Context, req *api.ExecRequest) (*api.ExecResult, error) {
	argv, err := commandArgv(req)
	if err != nil {
		return nil, err
	}
	stdin, err := req.StdinBytes()
	if err != nil {
		return nil, err
	}
	if req.Cwd != "" {
		if fi, err := os.Stat(req.Cwd); err != nil || !fi.IsDir() {
			return nil, api.Errorf(api.CodeInvalidArgument, "cwd %q is not a directory in the sandbox", req.Cwd)
		}
	}
	env := mergeEnv(os.Environ(), req.Env)
	path, err := lookPath(argv[0], envValue(env, "PATH"))
	if err != nil {
		return notRunnable(argv[0], err), nil
	}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	defer stdinW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	started := time.Now()
	pid, exited, err := a.procs.start(path, argv, &os.ProcAttr{
		Dir:   req.Cwd,
		Env:   env,
		Files: []*os.File{stdinR, outW, errW},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	stdinR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return notRunnable(argv[0], err), nil
	}
	go func() {
		_, _ = stdinW.Write(stdin)
		stdinW.Close()
	}()
	stdout, stderr := newCollector(outR), newCollector(errR)

	var timeout <-chan time.Time
	if req.TimeoutMs > 0 {
		t := time.NewTimer(time.Duration(req.TimeoutMs) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	var ws unix.WaitStatus
	timedOut := false
	select {
	case ws = <-exited:
	case <-timeout:
		timedOut = true
		_ = unix.Kill(-pid, unix.SIGKILL)
		ws = <-exited
	case <-ctx.Done():
		// The caller went away: the command is not left running unobserved.
		_ = unix.Kill(-pid, unix.SIGKILL)
		ws = <-exited
	}
	res := api.NewExecResult(exitCode(ws), stdout.finish(), stderr.finish())
	res.Truncated = stdout.truncated || stderr.truncated
	res.DurationMs = time.Since(started).Milliseconds()
	if timedOut {
		res.TimedOut, res.ExitCode = true, 124
	}
	return &res, nil
}

func commandArgv(req *api.ExecRequest) ([]string, error) {
	switch {
	case len(req.Argv) > 0 && req.Command != "":
		return nil, api.Errorf(api.CodeInvalidArgument, "give either argv or command, not both")
	case len(req.Argv) > 0:
		if req.Argv[0] == "" {
			return nil, api.Errorf(api.CodeInvalidArgument, "argv[0] is empty")
		}
		return req.Argv, nil
	case req.Command != "":
		return []string{"/bin/sh", "-c", req.Command}, nil
	}
	return nil, api.Errorf(api.CodeInvalidArgument, "argv or command is required")
}

// notRunnable is the result for a program that could not be started, shaped like a shell's:
// exit code 127 when it does not exist, 126 when it cannot be executed.
func notRunnable(name string, err error) *api.ExecResult {
	code := 126
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, errNotFound) {
		code = 127
	}
	res := api.NewExecResult(code, nil, []byte(fmt.Sprintf("nsbox: %s: %v\n", name, unwrapPath(err))))
	return &res
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var errNotFound = errors.New("command not found")

// lookPath finds name in pathEnv the way a shell does.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errNotFound
}

// mergeEnv returns base with overrides applied (KEY=VALUE form, overrides win).
func mergeEnv(base []string, overrides map[string]string) []string {
	out := make([]string, 0, len(base)+len(overrides))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := overrides[k]; !overridden {
			out = append(out, kv)
		}
	}
	for k, v := range overrides {
		out = append(out, k+"="+v)
	}
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// collector reads one output pipe in the background, keeping up to maxOutput bytes.
type collector struct {
	f         *os.File
	buf       bytes.Buffer
	truncated bool
	done      chan struct{}
}

func newCollector(f *os.File) *collector {
	c := &collector{f: f, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		chunk := make([]byte, 64<<10)
		for {
			n, err := f.Read(chunk)
			c.keep(chunk[:n])
			if err != nil {
				return
			}
		}
	}()
	return c
}

func (c *collector) keep(b []byte) {
	room := maxOutput - c.buf.Len()
	if len(b) > room {
		b, c.truncated = b[:room], true
	}
	c.buf.Write(b)
}

// finish is called once the command has exited: it stops the background reader, takes what is
// still buffered in the pipe without waiting for writers that outlive the command, and closes it.
func (c *collector) finish() []byte {
	_ = c.f.SetReadDeadline(time.Now())
	<-c.done
	// The raw read below honours deadlines too: clear it, then read only what is there.
	_ = c.f.SetReadDeadline(time.Time{})
	if rc, err := c.f.SyscallConn(); err == nil {
		chunk := make([]byte, 64<<10)
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.Read(int(fd), chunk)
				if n <= 0 || err != nil {
					return true
				}
				c.keep(chunk[:n])
			}
		})
	}
	c.f.Close()
	return c.buf.Bytes()
}
