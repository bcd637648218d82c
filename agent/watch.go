package agent

import (
	"sync"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// The watch stream (GET /v1/watch) tells the daemon what changes inside the sandbox without
// being asked: its open sessions and running processes after every start and end, and each
// session and process that ended, also those that ended by themselves (a shell's exit, a
// process's). The daemon keeps the counts (its stats answer them) and publishes the ends as
// events.

// watchBuffer is how many notices a watch stream may lag behind; one that lags more is ended
// (the daemon opens another, which starts with the counts as they are).
const watchBuffer = 256

// watchers are the open watch streams.
type watchers struct {
	mu   sync.Mutex
	subs map[chan api.AgentNotice]struct{}
}

// watchChanges has the agent's sessions and processes report their starts and ends to its
// watch streams.
func (a *Agent) watchChanges() {
	a.watchers.subs = map[chan api.AgentNotice]struct{}{}
	a.sessions.OnChange(func(c session.Change) {
		var n api.AgentNotice
		if c.Ended {
			reason := api.SessionShellExited
			if c.Deleted {
				reason = api.SessionDeleted
			}
			n.SessionEnded = &api.SessionEnd{ID: c.ID, Reason: reason}
		}
		a.notify(n)
	})
	a.processes.OnChange(func(ended *api.Process) { a.notify(api.AgentNotice{ProcessExited: ended}) })
}

// counted is n with the sandbox's counts as they are now. a.watchers.mu must be held, so that
// the notices go out in the order of their counts.
func (a *Agent) counted(n api.AgentNotice) api.AgentNotice {
	n.Sessions, n.Processes = a.sessions.Open(), len(a.processes.Running())
	return n
}

// notify sends n, with the counts as they are now, to every watch stream.
func (a *Agent) notify(n api.AgentNotice) {
	a.watchers.mu.Lock()
	defer a.watchers.mu.Unlock()
	if len(a.watchers.subs) == 0 {
		return
	}
	n = a.counted(n)
	for ch := range a.watchers.subs {
		select {
		case ch <- n:
		default: // it lags: end it
			close(ch)
			delete(a.watchers.subs, ch)
		}
	}
}

// handleWatch streams notices as Server-Sent Events named api.AgentNoticeEvent: first the
// counts as they are, then one after each change, until the daemon goes away.
func (a *Agent) handleWatch(w *httpd.ResponseWriter, r *httpd.Request) error {
	ch := make(chan api.AgentNotice, watchBuffer)
	a.watchers.mu.Lock()
	ch <- a.counted(api.AgentNotice{})
	a.watchers.subs[ch] = struct{}{}
	a.watchers.mu.Unlock()
	defer func() {
		a.watchers.mu.Lock()
		if _, ok := a.watchers.subs[ch]; ok {
			delete(a.watchers.subs, ch)
			close(ch)
		}
		a.watchers.mu.Unlock()
	}()
	events := openEventStream(w)
	for {
		select {
		case n, ok := <-ch:
			if !ok || events.Send(api.AgentNoticeEvent, n) != nil {
				return nil
			}
		case <-r.Context().Done():
			return nil
		}
	}
}
