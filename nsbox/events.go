package nsbox

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Events: everything that happens to sandboxes (their state machine's moves, OOM kills, their
// agent's exit, ports, sessions, processes) is published as an api.Event to one in-memory log:
// a bounded ring of the latest, which GET /v1/events?since= replays, and a fan-out to every
// open stream. Publishing never waits for a reader: a stream that falls eventHistory behind
// is ended with an error, and its client reconnects with since=.

// eventHistory is how many events the log keeps for replay, and how far a stream may lag.
const eventHistory = 4096

// eventLog is the daemon's event log.
type eventLog struct {
	mu   sync.Mutex
	seq  uint64      // the last event's
	ring []api.Event // the latest events, oldest first once it is full (at next)
	next int
	subs map[*eventSub]struct{}
}

// eventSub is one open stream: events go to ch; lagged is closed when it fell behind.
type eventSub struct {
	ch     chan api.Event
	lagged chan struct{}
}

func newEventLog() *eventLog {
	return &eventLog{ring: make([]api.Event, 0, eventHistory), subs: map[*eventSub]struct{}{}}
}

// publish records an event about sandbox and sends it to every stream. details are key, value
// pairs.
func (l *eventLog) publish(typ, sandbox string, details ...string) {
	ev := api.Event{Time: time.Now().UTC(), Type: typ, Sandbox: sandbox}
	if len(details) > 0 {
		ev.Details = make(map[string]string, len(details)/2)
		for i := 0; i+1 < len(details); i += 2 {
			if details[i+1] != "" {
				ev.Details[details[i]] = details[i+1]
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	ev.Seq = l.seq
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, ev)
	} else {
		l.ring[l.next] = ev
		l.next = (l.next + 1) % len(l.ring)
	}
	for s := range l.subs {
		select {
		case s.ch <- ev:
		default:
			close(s.lagged)
			delete(l.subs, s)
		}
	}
}

// subscribe opens a stream of the events after since (0: only new ones, none replayed), and
// returns those already kept. The caller ends it with unsubscribe.
func (l *eventLog) subscribe(since uint64, replay bool) ([]api.Event, *eventSub, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var past []api.Event
	if replay {
		if since > l.seq {
			return nil, nil, api.Errorf(api.CodeConflict, "since=%d is after the last event (%d): the daemon restarted, and numbers its events from 1 again; list the sandboxes, then follow from since=%d", since, l.seq, l.seq)
		}
		oldest := l.seq - uint64(len(l.ring)) + 1
		if since+1 < oldest {
			return nil, nil, api.Errorf(api.CodeConflict, "the events after %d are no longer kept (the oldest kept is %d); list the sandboxes, then follow from since=%d", since, oldest, l.seq)
		}
		for i := range len(l.ring) {
			if ev := l.ring[(l.next+i)%len(l.ring)]; ev.Seq > since {
				past = append(past, ev)
			}
		}
	}
	s := &eventSub{ch: make(chan api.Event, eventHistory), lagged: make(chan struct{})}
	l.subs[s] = struct{}{}
	return past, s, nil
}

func (l *eventLog) unsubscribe(s *eventSub) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.subs, s)
}

// stateEvents are the events of the state machine's moves, by the state moved to; a move to
// running is started from creating, else resumed (from paused or hibernated).
var stateEvents = map[string]string{
	api.StatusCreating: api.EventSandboxCreated, api.StatusPaused: api.EventSandboxPaused, api.StatusHibernated: api.EventSandboxHibernated,
	api.StatusStopping: api.EventSandboxStopping, stateRemoved: api.EventSandboxRemoved, api.StatusFailed: api.EventSandboxFailed,
}

// transitioned publishes a move of the state machine (called by transition).
func (r *Runtime) transitioned(rec *record, from, to string) {
	typ := stateEvents[to]
	if to == api.StatusRunning {
		typ = api.EventSandboxStarted
		if from != api.StatusCreating {
			typ = api.EventSandboxResumed
		}
	}
	details := []string{"status", to, "from", from, "error", rec.Error}
	if to == api.StatusCreating {
		details = append(details, "image", rec.Image)
	}
	r.ops.events.publish(typ, rec.ID, details...)
}

// agentExited publishes that a sandbox's agent exited by itself (called by watch).
func (r *Runtime) agentExited(id string, pid int) {
	r.ops.metrics.agentEnd.Inc()
	r.ops.events.publish(api.EventSandboxAgentExited, id, "pid", strconv.Itoa(pid))
}

// handleEvents streams events as Server-Sent Events named by their type until the client goes
// away: with since=N first those after event N that are still kept.
func (r *Runtime) handleEvents(w http.ResponseWriter, req *http.Request) error {
	var since uint64
	v := req.URL.Query().Get("since")
	if v != "" {
		var err error
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "since must be an event's seq (0 or more), got %q", v)
		}
	}
	past, sub, err := r.ops.events.subscribe(since, v != "")
	if err != nil {
		return err
	}
	defer r.ops.events.unsubscribe(sub)
	out := httpapi.NewSSEWriter(w)
	if err := out.Start(); err != nil {
		return nil // the client went away
	}
	for _, ev := range past {
		if out.Send(ev.Type, ev) != nil {
			return nil
		}
	}
	for {
		select {
		case ev := <-sub.ch:
			if out.Send(ev.Type, ev) != nil {
				return nil
			}
		case <-sub.lagged:
			_ = out.SendError(api.Errorf(api.CodeUnavailable, "this stream fell %d events behind and was ended; reconnect with since= the last seq read", eventHistory))
			return nil
		case <-req.Context().Done():
			endOfStream(req.Context(), out)
			return nil
		}
	}
}
