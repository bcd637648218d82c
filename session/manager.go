package session

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// DefaultID is the session used by calls that name none.
const DefaultID = api.DefaultSessionID

// Manager holds the sessions of one sandbox.
type Manager struct {
	dir       string // where session directories go
	start     StartFunc
	env       *SandboxEnv
	cwd       string // the sandbox's default working directory
	user      string // the sandbox's default user ("" is root)
	mu        sync.Mutex
	sessions  map[string]*Session
	creating  map[string]bool
	defaultMu sync.Mutex // one get-or-create of the default session at a time
	reserve   *reserve   // room kept in dir's file system for when the sandbox fills it
	store     *os.File   // the private store sessions get their private folders in (nil: none)

	// changed is told of each session's start and end (OnChange).
	changed func(Change)
}

// Change is a session that started or ended, as OnChange reports it.
type Change struct {
	ID      string
	Ended   bool
	Deleted bool // it ended by Delete, not by its shell exiting
}

// OnChange has fn called each time a session starts and each time one ends (an end from a
// goroutine of its own). Set it before the first session is created.
func (m *Manager) OnChange(fn func(Change)) { m.changed = fn }

// NewManager returns a manager that keeps session files under dir; its sessions start in cwd
// with the sandbox environment env.
func NewManager(dir, cwd string, start StartFunc, env *SandboxEnv) (*Manager, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear session dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("make session dir: %w", err)
	}
	return &Manager{dir: dir, start: start, env: env, cwd: cwd, sessions: map[string]*Session{}, creating: map[string]bool{},
		reserve: newReserve(filepath.Join(dir, ".reserve"))}, nil
}

// HoldReserve takes the room the session files keep for when something in the sandbox fills
// their file system (reserve.go), if there is room for it.
func (m *Manager) HoldReserve() { m.reserve.refill() }

// EnablePrivate gives every session created from now on a private folder in store (see
// private.go). It is called before any session exists.
func (m *Manager) EnablePrivate(store *os.File) { m.store = store }

// SetDefaults changes the working directory and user (a LookupUser spec) of sessions created
// from now on that name none. A default session that runs with others (a warm container's,
// started before the container had a sandbox) is ended: it starts again with these when used.
func (m *Manager) SetDefaults(cwd, user string) {
	m.mu.Lock()
	m.cwd, m.user = cwd, user
	s := m.sessions[DefaultID]
	m.mu.Unlock()
	if s != nil && !s.Ended() && (s.opts.Cwd != cwd || s.opts.User != user) {
		_ = m.Delete(DefaultID)
	}
}

// Defaults are the working directory and user of new sessions (the sandbox's).
func (m *Manager) Defaults() (cwd, user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cwd, m.user
}

// Create starts a new session. An id that belongs to a session that has ended is free again.
func (m *Manager) Create(opts Options) (*Session, error) {
	m.mu.Lock()
	if opts.Cwd == "" {
		opts.Cwd = m.cwd
	}
	if opts.User == "" {
		opts.User = m.user
	}
	if old, ok := m.sessions[opts.ID]; (ok && !old.Ended()) || m.creating[opts.ID] {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrExists, opts.ID)
	}
	old := m.sessions[opts.ID]
	m.creating[opts.ID] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.creating, opts.ID)
		m.mu.Unlock()
	}()
	if old != nil {
		old.destroy()
	}
	s, err := newSession(opts, m.dir, m.start, m.env, m.reserve, m.store)
	m.mu.Lock()
	if err != nil {
		delete(m.sessions, opts.ID)
		m.mu.Unlock()
		return nil, err
	}
	m.sessions[opts.ID] = s
	m.mu.Unlock()
	if m.changed != nil {
		m.changed(Change{ID: opts.ID})
		context.AfterFunc(s.finished, func() {
			s.mu.Lock()
			deleted := s.deleted
			s.mu.Unlock()
			m.changed(Change{ID: opts.ID, Ended: true, Deleted: deleted})
		})
	}
	return s, nil
}

// Get returns a session by id.
func (m *Manager) Get(id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s, nil
}

// Default returns the default session, starting it (again) when it does not run. When its
// shell ended while no command ran (killed from elsewhere), nothing has told its users that
// its state is gone: the next result of the new one says the session was reset.
func (m *Manager) Default() (*Session, error) {
	m.defaultMu.Lock()
	defer m.defaultMu.Unlock()
	old, err := m.Get(DefaultID)
	if err == nil && !old.Ended() {
		return old, nil
	}
	s, err := m.Create(Options{ID: DefaultID})
	if err != nil {
		return nil, err
	}
	if old != nil {
		old.mu.Lock()
		unseen := old.unseen
		old.mu.Unlock()
		s.mu.Lock()
		s.resetPending = unseen
		s.mu.Unlock()
	}
	return s, nil
}

// List returns every session, ordered by id.
func (m *Manager) List() []Info {
	m.mu.Lock()
	sessions := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		sessions = append(sessions, s)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(sessions))
	for _, s := range sessions {
		out = append(out, s.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Open counts the sessions that have not ended.
func (m *Manager) Open() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.sessions {
		if !s.Ended() {
			n++
		}
	}
	return n
}

// Delete ends a session: its shell and every process it started are killed.
func (m *Manager) Delete(id string) error {
	m.mu.Lock()
	s, ok := m.sessions[id]
	delete(m.sessions, id)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	s.destroy()
	return nil
}

// KillShells kills every session's shell but not what the shells started: at sandbox stop,
// processes get SIGTERM and time to exit, while interactive shells, which ignore SIGTERM,
// would only hold the stop up.
func (m *Manager) KillShells() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		s.mu.Lock()
		if s.sh != nil {
			_ = unix.Kill(s.sh.pid, unix.SIGKILL)
		}
		s.mu.Unlock()
	}
}

// ShellTrees returns the pids of every session's shell and of the processes below it (the
// command it runs and its jobs), e.g. to spare them when everything else is killed.
func (m *Manager) ShellTrees() map[int]bool {
	m.mu.Lock()
	var shells []int
	for _, s := range m.sessions {
		s.mu.Lock()
		if s.sh != nil && !s.sh.exited() {
			shells = append(shells, s.sh.pid)
		}
		s.mu.Unlock()
	}
	m.mu.Unlock()
	out := map[int]bool{}
	for _, pid := range shells {
		out[pid] = true
		maps.Copy(out, descendants(pid))
	}
	return out
}

// Info describes a session.
type Info struct {
	ID        string
	Shell     string // "bash" or "sh"
	User      string
	UID, GID  int
	ReadOnly  bool
	Cwd       string // the shell's current directory
	Status    string // idle, busy or ended
	ExitCode  int    // when ended
	PID       int    // the shell's pid inside the sandbox
	CreatedAt time.Time
	// PrivateDir is the path of the session's private folder (~/.private), "" without one.
	PrivateDir string
}

// Session states.
const (
	StateIdle  = "idle"
	StateBusy  = "busy"
	StateEnded = "ended"
)

// ID is the session's id; ReadOnly whether it may only be watched. Neither changes, and
// neither reads the shell's directory as Info does (an exec asks for both).
func (s *Session) ID() string     { return s.opts.ID }
func (s *Session) ReadOnly() bool { return s.opts.ReadOnly }

// Info describes the session now.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := Info{ID: s.opts.ID, ReadOnly: s.opts.ReadOnly, User: s.cred.name, UID: s.cred.uid, GID: s.cred.gid, CreatedAt: s.created, Status: StateIdle, Shell: s.shellName,
		PrivateDir: s.privateLink}
	switch {
	case s.ended || s.sh == nil:
		info.Status, info.ExitCode = StateEnded, s.exitCode
		return info
	case s.running != nil:
		info.Status = StateBusy
	}
	info.PID = s.sh.pid
	info.Cwd = s.cwd(s.sh.pid)
	return info
}

// Ended reports whether the session's shell has exited.
func (s *Session) Ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// Cancel stops the running command, if any, as a timeout would.
func (s *Session) Cancel() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		return false
	}
	s.running()
	return true
}

// destroy kills the session's shell and everything it started, and removes its files.
func (s *Session) destroy() {
	s.mu.Lock()
	s.deleted = true
	sh := s.sh
	cancel := s.running
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if sh != nil {
		killTree(sh.pid)
		<-sh.done
	}
	killMarked("NSBOX_SESSION=" + s.opts.ID)
	s.markDone()
	s.status.Close()
	_ = os.RemoveAll(s.dir)
	s.removePrivate()
}
