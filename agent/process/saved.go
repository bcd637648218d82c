package process

import (
	"context"
	"slices"
	"time"

	"github.com/nsbox/nsbox/api"
)

// StoppedByHibernation is the error of a process that ran when its sandbox hibernated.
const StoppedByHibernation = "stopped by hibernation"

// saveSettle bounds how long Save waits for output still in the processes' pipes.
const saveSettle = 200 * time.Millisecond

// Save returns every process as it is now, with at most logBytes of the end of its log, for
// the daemon to keep while the sandbox's container is gone.
func (m *Manager) Save(logBytes int64) []api.SavedProcess {
	m.mu.Lock()
	procs := make([]*Process, 0, len(m.procs))
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	m.mu.Unlock()
	// What the processes wrote before the save is in their logs first: a read of their pipes
	// may not have happened yet. One who goes on writing does not hold the save for long.
	settled := time.Now().Add(saveSettle)
	for _, p := range procs {
		select {
		case <-p.finished:
		default:
			p.out.settle(settled)
		}
	}
	out := make([]api.SavedProcess, 0, len(procs))
	for _, p := range procs {
		info := p.Info()
		chunks, _, _, _ := p.out.read(max(0, info.LogEnd-logBytes), -1)
		out = append(out, api.SavedProcess{Request: p.req, Info: info, Log: chunks})
	}
	slices.SortFunc(out, func(a, b api.SavedProcess) int { return a.Info.StartedAt.Compare(b.Info.StartedAt) })
	return out
}

// Restore brings saved processes back into a new container: those that were running and have
// the restart policy on-resume are started again (their log goes on from the saved end), the
// other running ones are listed as stopped by hibernation, the ended ones as they ended, each
// with its saved log.
func (m *Manager) Restore(ctx context.Context, saved []api.SavedProcess) []error {
	var errs []error
	for _, sp := range saved {
		if sp.Info.Status == api.ProcessRunning && sp.Request.Restart == api.RestartOnResume {
			if _, err := m.startWith(ctx, sp.Request, sp.Log, true); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		info := sp.Info
		if info.Status == api.ProcessRunning {
			info.Status, info.Error, info.EndedAt, info.PID = api.ProcessStopped, StoppedByHibernation, time.Now().UTC(), 0
		}
		info.LogBytes = m.logs.size(max(info.LogBytes, 1))
		p := &Process{req: sp.Request, out: newOutput(m.logs, info.LogBytes, sp.Log), info: info,
			exited: make(chan struct{}), finished: make(chan struct{}), recheck: make(chan struct{}, 1), stdinClosed: true}
		close(p.exited)
		close(p.finished)
		m.logs.ended(p.out)
		m.mu.Lock()
		_, taken := m.procs[info.ID]
		if !taken {
			m.procs[info.ID] = p
		}
		m.mu.Unlock()
		if taken {
			m.logs.forget(p.out)
		}
	}
	return errs
}
