package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// Saving and restoring a sandbox's state, for hibernation and snapshots: the daemon asks the
// agent for every session's state and every process (with the end of its log) before the
// container goes, keeps them where the sandbox cannot reach, and hands them to the agent of
// the next container.

const (
	// savedLogBytes is how much of the end of each process's log is kept.
	savedLogBytes = 64 << 10
	// stateTimeout bounds saving or restoring one session (a command may be running in it).
	stateTimeout = 10 * time.Second
)

func (a *Agent) handleSaveState(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.SaveStateRequest
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	var out api.SandboxState
	if req.Sessions {
		for _, info := range a.sessions.List() {
			if info.Status == session.StateEnded {
				continue
			}
			s, err := a.sessions.Get(info.ID)
			if err != nil {
				continue // deleted meanwhile
			}
			ctx, cancel := context.WithTimeout(r.Context(), stateTimeout)
			st, err := s.SaveState(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("save session %q: %w", info.ID, sessionError(err))
			}
			out.Sessions = append(out.Sessions, api.SessionState{ID: info.ID, Shell: info.Shell, ReadOnly: info.ReadOnly,
				User: strconv.Itoa(info.UID) + ":" + strconv.Itoa(info.GID), Script: st.Script, History: st.History})
		}
	}
	if req.Stop {
		a.stopOthers()
	}
	if req.Processes {
		out.Processes = a.processes.Save(savedLogBytes)
	}
	api.WriteJSON(w, httpd.StatusOK, out)
	return nil
}

// stopWait bounds stopOthers' wait for the processes to stop.
const stopWait = 200 * time.Millisecond

// stopOthers stops every other process in the sandbox with SIGSTOP, which none can catch, and
// waits until each of their threads has stopped (stopWait at most): a write they were about
// to make is then in their pipes, for the save's settle to read, and nothing comes after.
func (a *Agent) stopOthers() {
	// kill(-1) from PID 1 reaches every other process in its pid namespace.
	if err := unix.Kill(-1, unix.SIGSTOP); err != nil && !errors.Is(err, unix.ESRCH) {
		a.log.Warn("stop the sandbox's processes before saving them", "err", err)
		return
	}
	a.stoppedOthers.Store(true)
	for deadline := time.Now().Add(stopWait); !othersStopped() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// othersStopped reports whether every thread of every process but PID 1 in this pid namespace
// is stopped or dead, by /proc.
func othersStopped() bool {
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/stat")
	for _, stat := range tasks {
		if strings.HasPrefix(stat, "/proc/1/") {
			continue
		}
		data, err := os.ReadFile(stat)
		if err != nil {
			continue // gone meanwhile
		}
		// The state is the field after the command name, which ends with the last ')'.
		end := bytes.LastIndexByte(data, ')')
		if end < 0 || end+2 >= len(data) {
			continue
		}
		switch data[end+2] {
		case 'T', 't', 'Z', 'X', 'x':
		default:
			return false
		}
	}
	return true
}

// handleContinue lets the processes stopOthers stopped run again (SIGCONT to every other
// process in the sandbox, a job stopped before them too): the daemon asks for it when a
// hibernation fails after its save. Without a stop before, it does nothing.
func (a *Agent) handleContinue(w *httpd.ResponseWriter, _ *httpd.Request) error {
	if a.stoppedOthers.Swap(false) {
		if err := unix.Kill(-1, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("continue the sandbox's processes: %w", err)
		}
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

// handleRestoreState starts the saved sessions with their state, all at once, and then
// brings the saved processes back (process.Manager.Restore; a restarted process may use a
// session's state). A session that cannot be restored is reported, after the others were.
func (a *Agent) handleRestoreState(w *httpd.ResponseWriter, r *httpd.Request) error {
	var st api.SandboxState
	if err := api.DecodeBody(r.Body, &st, false); err != nil {
		return err
	}
	errs := make([]error, len(st.Sessions))
	var wg sync.WaitGroup
	for i, ss := range st.Sessions {
		wg.Go(func() {
			if err := a.restoreSession(r.Context(), ss); err != nil {
				errs[i] = fmt.Errorf("session %q: %w", ss.ID, err)
			}
		})
	}
	wg.Wait()
	errs = append(errs, a.processes.Restore(r.Context(), st.Processes)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore saved state: %w", err)
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

func (a *Agent) restoreSession(ctx context.Context, ss api.SessionState) error {
	var s *session.Session
	var err error
	if ss.ID == session.DefaultID {
		s, err = a.sessions.Default()
	} else {
		s, err = a.sessions.Create(session.Options{ID: ss.ID, Shell: ss.Shell, User: ss.User, ReadOnly: ss.ReadOnly})
		if errors.Is(err, session.ErrExists) {
			s, err = a.sessions.Get(ss.ID)
		}
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	return s.RestoreState(ctx, session.State{Script: ss.Script, History: ss.History})
}
