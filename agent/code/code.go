// Package code runs code contexts inside a sandbox: long-lived Python or JavaScript
// interpreters (the image's own python3 or node, driven by a small program of ours, driver.py
// or driver.js) that keep their state between runs. A run sends a cell to the driver and
// streams back its output, its results (MIME bundles) and its exception; a run that does not
// end by its timeout is interrupted, and an interpreter that does not come back is started anew.
package code

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

//go:embed driver.py
var pythonDriver string

//go:embed driver.js
var nodeDriver string

const (
	// interruptGrace is how long an interrupted run may take to end before its interpreter is
	// restarted.
	interruptGrace = 2 * time.Second
	// maxContexts bounds the contexts of one sandbox.
	maxContexts = 64
)

// Spec is what a context's interpreter starts with.
type Spec struct {
	Language string
	Cwd      string
	Env      []string // KEY=VALUE
	UID, GID int
	User     string
}

// Manager holds a sandbox's contexts.
type Manager struct {
	start session.StartFunc

	mu       sync.Mutex
	contexts map[string]*Context
	next     int
}

// NewManager returns a manager whose interpreters are started with start (the agent's
// reaping start).
func NewManager(start session.StartFunc) *Manager {
	return &Manager{start: start, contexts: map[string]*Context{}}
}

// Create starts a context's interpreter.
func (m *Manager) Create(spec Spec) (*Context, error) {
	m.mu.Lock()
	if len(m.contexts) >= maxContexts {
		m.mu.Unlock()
		return nil, api.Errorf(api.CodeConflict, "this sandbox has %d code contexts, the most it may have; delete one first", maxContexts)
	}
	m.next++
	id := "ctx-" + strconv.Itoa(m.next)
	m.mu.Unlock()
	c := &Context{info: api.CodeContext{ID: id, Language: spec.Language, Cwd: spec.Cwd, User: spec.User,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}, spec: spec, start: m.start}
	if err := c.launch(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.contexts[id] = c
	m.mu.Unlock()
	return c, nil
}

// Get finds a context.
func (m *Manager) Get(id string) (*Context, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.contexts[id]
	if c == nil {
		return nil, api.Errorf(api.CodeNotFound, "code context %q not found", id)
	}
	return c, nil
}

// List returns every context, oldest first.
func (m *Manager) List() []api.CodeContext {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.CodeContext, 0, len(m.contexts))
	for i := 1; i <= m.next; i++ {
		if c := m.contexts["ctx-"+strconv.Itoa(i)]; c != nil {
			out = append(out, c.info)
		}
	}
	return out
}

// Delete ends a context's interpreter and forgets it.
func (m *Manager) Delete(id string) error {
	m.mu.Lock()
	c := m.contexts[id]
	delete(m.contexts, id)
	m.mu.Unlock()
	if c == nil {
		return api.Errorf(api.CodeNotFound, "code context %q not found", id)
	}
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.stop()
	return nil
}

// Context is one interpreter.
type Context struct {
	info  api.CodeContext
	spec  Spec
	start session.StartFunc

	runMu sync.Mutex // one run at a time

	mu     sync.Mutex // guards what follows, which launch replaces
	pid    int
	stdin  *os.File
	exited chan struct{}     // closed when the interpreter has exited
	sink   func(driverEvent) // the running cell's, nil between runs (output then is dropped)
}

// Info describes the context.
func (c *Context) Info() api.CodeContext { return c.info }

// driverEvent is a line the driver writes on fd 3, or output read from the interpreter's fds
// 1 and 2.
type driverEvent struct {
	Type string `json:"type"`
	// Data is base64 output (stdout, stderr) or a MIME bundle (result).
	Data      json.RawMessage `json:"data"`
	Name      string          `json:"name"` // an error's
	Value     string          `json:"value"`
	Traceback string          `json:"traceback"`
	Fence     uint64          `json:"fence"` // its markers in fds 1 and 2 (fence.go); 0: none
	output    []byte          // decoded output, or read from the interpreter's fd 1 or 2
	result    map[string]any
}

// driver is how a language's driver runs.
type driver struct {
	prog string
	argv []string
	// readsOwnOutput: the driver gets the read ends of its fds 1 and 2 as fds 4 and 5 and
	// sends what they get on fd 3 itself, in order with the rest (Python: a thread of its own
	// reads them while the cell waits for a child). Without it the agent reads them and the
	// driver fences its events (fence.go; Node: its one thread would not read them while it
	// waits for a child in execSync, and a child that wrote more than a pipe holds would
	// never end). Its last argument is then the fences' token.
	readsOwnOutput bool
}

// interpreter is the driver for a language.
func interpreter(language string) (driver, error) {
	switch language {
	case api.LanguagePython:
		return driver{"python3", []string{"python3", "-u", "-c", pythonDriver}, true}, nil
	case api.LanguageJavaScript:
		return driver{"node", []string{"node", "-e", nodeDriver}, false}, nil
	}
	return driver{}, api.Errorf(api.CodeInvalidArgument, "language must be %q or %q, not %q", api.LanguagePython, api.LanguageJavaScript, language)
}

// launch starts the interpreter: requests on its stdin, driver events on its fd 3, and its
// own fds 1 and 2 (what subprocesses and C code write) as output, which the driver or the
// agent reads (driver.readsOwnOutput).
func (c *Context) launch() error {
	drv, err := interpreter(c.spec.Language)
	if err != nil {
		return err
	}
	if err := session.CheckCwd(c.spec.Cwd, "", nil); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	prog, argv := drv.prog, drv.argv
	var f *fences
	if !drv.readsOwnOutput {
		if f, err = newFences(c); err != nil {
			return fmt.Errorf("make the context's fence token: %w", err)
		}
		argv = append(slices.Clone(argv), f.token)
	}
	path, err := lookPath(prog, c.spec.Env)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "this sandbox's image has no %s for a %s context: %v", prog, c.spec.Language, err)
	}
	var files []*os.File
	closeAll := func() {
		for _, file := range files {
			file.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err1 := pipe()
	ctlR, ctlW, err2 := pipe()
	outR, outW, err3 := pipe()
	errR, errW, err4 := pipe()
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		closeAll()
		return fmt.Errorf("make the context's pipes: %w", err)
	}
	given := []*os.File{inR, outW, errW, ctlW}
	if drv.readsOwnOutput {
		given = append(given, outR, errR)
	}
	pid, exited, err := c.start(path, argv, &os.ProcAttr{
		Dir: c.spec.Cwd, Env: c.spec.Env, Files: given,
		Sys: &syscall.SysProcAttr{Setpgid: true,
			Credential: &syscall.Credential{Uid: uint32(c.spec.UID), Gid: uint32(c.spec.GID), NoSetGroups: true}},
	}, nil)
	for _, file := range given {
		file.Close()
	}
	if err != nil {
		closeAll()
		return api.Errorf(api.CodeInvalidArgument, "start %s for a %s context: %v", prog, c.spec.Language, err)
	}
	done := make(chan struct{})
	go func() {
		<-exited
		close(done)
	}()
	readers := []*os.File{outR, errR}
	if f != nil {
		for i, r := range readers {
			rc, err := r.SyscallConn()
			if err != nil {
				closeAll()
				return fmt.Errorf("read the interpreter's %s: %w", outputStreams[i], err)
			}
			f.pipes = append(f.pipes, &fencedPipe{stream: outputStreams[i], pipe: rc})
		}
	}
	c.mu.Lock()
	c.pid, c.stdin, c.exited = pid, inW, done
	c.mu.Unlock()
	go c.readEvents(ctlR, f)
	if f != nil {
		for i, p := range f.pipes {
			go func() {
				defer readers[i].Close()
				f.read(p)
			}()
		}
	}
	return nil
}

// lookPath finds prog in the PATH of env.
func lookPath(prog string, env []string) (string, error) {
	pathEnv := ""
	for _, kv := range env {
		if len(kv) > 5 && kv[:5] == "PATH=" {
			pathEnv = kv[5:]
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		p := filepath.Join(dir, prog)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// readEvents hands the driver's events to the running cell, if any, each after the output
// its fence covers (f: nil when the driver reads its own). It holds c.mu meanwhile, so no event
// reaches a run after it has returned, and a slow client holds back the interpreter.
func (c *Context) readEvents(r io.ReadCloser, f *fences) {
	defer r.Close()
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, 64<<10), 64<<20)
	for lines.Scan() {
		var ev driverEvent
		if json.Unmarshal(lines.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Type {
		case api.EventResult:
			_ = json.Unmarshal(ev.Data, &ev.result)
		case api.EventStdout, api.EventStderr:
			var b64 string
			_ = json.Unmarshal(ev.Data, &b64)
			ev.output, _ = api.DecodeData(b64, api.EncodingBase64)
		}
		c.mu.Lock()
		pass := func() {
			if c.sink != nil {
				c.sink(ev)
			}
		}
		if f != nil && ev.Fence > 0 {
			f.event(ev.Fence, pass)
		} else {
			pass()
		}
		c.mu.Unlock()
	}
}

// stop kills the interpreter's process group. c.runMu must be held.
func (c *Context) stop() {
	c.mu.Lock()
	pid, stdin, exited := c.pid, c.stdin, c.exited
	c.mu.Unlock()
	if stdin != nil {
		stdin.Close()
	}
	if pid > 0 {
		_ = unix.Kill(-pid, unix.SIGKILL)
		<-exited
	}
}

// Run runs a cell and calls emit with each event as it comes (output, results, the
// exception), then returns the run's result (without its output). A run that does not end by
// timeout (0: none) is interrupted; one that does not end interruptGrace later, or whose
// interpreter exits, restarts the interpreter. A run goes on to its end whoever listens: a cell
// abandoned half-way would end the next one with its own end.
func (c *Context) Run(code string, timeout time.Duration, emit func(api.CodeEvent)) (*api.RunCodeResult, error) {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	began := time.Now()
	res := &api.RunCodeResult{Results: []map[string]any{}, StdoutEncoding: api.EncodingUTF8, StderrEncoding: api.EncodingUTF8} // its output is the caller's to gather
	ended := make(chan struct{})
	var once sync.Once
	vmTimedOut := false // set by the sink before it closes ended
	c.mu.Lock()
	stdin, pid, exited := c.stdin, c.pid, c.exited
	c.sink = func(ev driverEvent) {
		switch ev.Type {
		case api.EventStdout, api.EventStderr:
			data, encoding := api.EncodeData(ev.output)
			emit(api.CodeEvent{Type: ev.Type, Data: data, Encoding: encoding})
		case api.EventResult:
			res.Results = append(res.Results, ev.result)
			emit(api.CodeEvent{Type: api.EventResult, Result: ev.result})
		case "error":
			res.Error = &api.CodeError{Name: ev.Name, Value: ev.Value, Traceback: ev.Traceback}
			// Node's vm timeout can fire before our timer does: the run timed out all the same.
			vmTimedOut = ev.Name == "TimeoutError" && c.spec.Language == api.LanguageJavaScript
			emit(api.CodeEvent{Type: api.EventException, CodeError: res.Error})
		case api.EventEnd:
			once.Do(func() { close(ended) })
		}
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.sink = nil
		c.mu.Unlock()
	}()
	req, _ := json.Marshal(map[string]any{"code": code, "timeoutMs": timeout.Milliseconds()})
	if _, err := stdin.Write(append(req, '\n')); err != nil {
		return c.restart(res, began, fmt.Errorf("the interpreter is gone: %w", err))
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	var grace <-chan time.Time
	for {
		select {
		case <-ended:
			res.TimedOut = res.TimedOut || vmTimedOut
			res.DurationMs = time.Since(began).Milliseconds()
			return res, nil
		case <-exited:
			return c.restart(res, began, errors.New("the interpreter exited"))
		case <-deadline:
			deadline, res.TimedOut = nil, true
			if c.spec.Language == api.LanguagePython {
				_ = unix.Kill(pid, unix.SIGINT) // KeyboardInterrupt; Node's vm timeout fires by itself
			}
			grace = time.After(interruptGrace)
		case <-grace:
			return c.restart(res, began, fmt.Errorf("the interpreter did not come back within %s of its interrupt", interruptGrace))
		}
	}
}

// restart replaces a lost interpreter with a new one and reports why in the result.
// c.runMu must be held.
func (c *Context) restart(res *api.RunCodeResult, began time.Time, why error) (*api.RunCodeResult, error) {
	c.stop()
	res.Restarted = true
	if res.Error == nil {
		res.Error = &api.CodeError{Name: "Restarted", Value: why.Error() + "; the context was restarted and its state is gone"}
	}
	res.DurationMs = time.Since(began).Milliseconds()
	if err := c.launch(); err != nil {
		return res, fmt.Errorf("restart the context: %w", err)
	}
	return res, nil
}
