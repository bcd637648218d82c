package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/agent/process"
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
		// Held through the answer: a continue (the daemon's, after a failure) comes after it.
		a.stopMu.Lock()
		defer a.stopMu.Unlock()
		if err := r.Context().Err(); err != nil {
			return err // the daemon gave up: stop nothing
		}
		a.stopProcesses()
	}
	if req.Processes {
		out.Processes = a.processes.Save(savedLogBytes)
	}
	api.WriteJSON(w, httpd.StatusOK, out)
	return nil
}

// stopWait bounds how long a save waits for the processes it stops to have stopped.
const stopWait = 200 * time.Millisecond

// stopWatchdog is how long processes a save stopped stay stopped at most: a hibernation kills
// the container within milliseconds of its save, so an agent still alive this long after it
// belongs to a hibernation that failed without a continue (the daemon's request lost, or the
// daemon gone), and lets them run again itself.
const stopWatchdog = 10 * time.Second

// stopProcesses stops the processes' groups for a save (process.Manager.Stop) and arms the
// watchdog. a.stopMu must be held.
func (a *Agent) stopProcesses() {
	a.stoppedGroups = append(a.stoppedGroups, a.processes.Stop(stopWait)...)
	a.stoppedAt = time.Now()
	if a.stopWatch == nil {
		a.stopWatch = time.AfterFunc(stopWatchdog, func() {
			a.stopMu.Lock()
			defer a.stopMu.Unlock()
			if time.Since(a.stoppedAt) < stopWatchdog {
				return // it fired for an earlier stop while a later one held the lock
			}
			if len(a.stoppedGroups) > 0 {
				a.log.Warn("processes a save stopped were not continued; letting them run", "groups", len(a.stoppedGroups))
			}
			a.continueProcesses()
		})
	} else {
		a.stopWatch.Reset(stopWatchdog)
	}
}

// continueProcesses lets the groups a save stopped run again. a.stopMu must be held.
func (a *Agent) continueProcesses() {
	process.Continue(a.stoppedGroups)
	a.stoppedGroups = nil
}

// handleContinue lets the processes a save stopped run again: the daemon asks for it when a
// hibernation fails after its save. It waits for a save still under way.
func (a *Agent) handleContinue(w *httpd.ResponseWriter, _ *httpd.Request) error {
	a.stopMu.Lock()
	a.continueProcesses()
	a.stopMu.Unlock()
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
