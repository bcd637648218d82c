package nsbox

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// A sandbox's life is one state machine. Every sandbox the daemon knows is one *sandbox in
// Runtime.sandboxes, with one lock; its record's Status is its state, and transition is the
// only place that changes it:
//
//	creating ─▶ running ◀─▶ paused       (a create; pause and resume)
//	running, paused ─▶ hibernated ─▶ running (hibernate; resume, hibernate.go)
//	running, paused, hibernated ─▶ stopping ─▶ removed (a remove)
//	creating ─▶ removed                    (a create rolled back)
//	creating, running, paused, stopping ─▶ failed ─▶ stopping
//
// creating: POST /v1/sandboxes is at work; running: its agent answers; paused: frozen;
// hibernated: it has no container (no process, no memory), its files, address and ports kept;
// stopping: DELETE is at work; failed: its agent died, its container is gone, or its
// create or remove could not clean up (it can only be removed); removed: gone, the record
// deleted. A request that needs another state is refused with a conflict naming the state.
// A snapshot (snapshots.go) changes no state: it needs a running or paused sandbox, holds its
// lock, freezes a running one only while its writable layer is copied, and leaves a paused one
// paused.

// stateRemoved is the end of every sandbox: its record is deleted, the id is free again.
const stateRemoved = "removed"

// transitions lists the states each state may move to.
var transitions = map[string][]string{
	"":                   {api.StatusCreating}, // a new sandbox; reconcile loads the others as recorded
	api.StatusCreating:   {api.StatusRunning, api.StatusFailed, stateRemoved},
	api.StatusRunning:    {api.StatusPaused, api.StatusHibernated, api.StatusStopping, api.StatusFailed},
	api.StatusPaused:     {api.StatusRunning, api.StatusHibernated, api.StatusStopping, api.StatusFailed},
	api.StatusHibernated: {api.StatusRunning, api.StatusStopping, api.StatusFailed},
	api.StatusStopping:   {stateRemoved, api.StatusFailed},
	api.StatusFailed:     {api.StatusStopping},
}

// durable states are written to the records; the others live in memory only. A daemon that
// dies while a sandbox is stopping finds it as it was before (running or failed), and
// reconcile sees what is left of it.
var durable = map[string]bool{api.StatusCreating: true, api.StatusRunning: true, api.StatusPaused: true,
	api.StatusHibernated: true, api.StatusFailed: true}

// sandbox is one sandbox the daemon knows.
type sandbox struct {
	id string
	mu sync.Mutex // held for a transition, and by changes to one sandbox that must not interleave
	// rec is the sandbox as recorded; rec.Status is its state.
	rec record
	// inst is its container, nil when it has none (its create has not got one yet, or it is
	// gone); agent is the client of inst's agent.
	inst  backend.Instance
	agent *agentClient
	// lastActive (unix ns) and inflight are its activity: see idle.go.
	lastActive atomic.Int64
	inflight   atomic.Int32
	// reading is what the daemon keeps of its use between two readings (stats.go).
	reading reading
}

// stateError is the conflict answered to a request the sandbox's state does not allow.
func stateError(id, state, why string) error {
	switch state {
	case "", api.StatusCreating:
		return api.Errorf(api.CodeConflict, "sandbox %q is creating; %s when its create has answered", id, why)
	case api.StatusStopping:
		return api.Errorf(api.CodeConflict, "sandbox %q is stopping (being removed)", id)
	case stateRemoved: // a request that found it as its remove ended
		return api.Errorf(api.CodeNotFound, "sandbox %q not found", id)
	case api.StatusPaused, api.StatusHibernated:
		return api.Errorf(api.CodeConflict, "sandbox %q is %s; resume it first", id, state)
	}
	return api.Errorf(api.CodeConflict, "sandbox %q is %s; %s", id, state, why)
}

// transition moves sb to state to, with change applied to its record, once it is checked that
// the move is allowed; it persists the record when the new state is durable (and deletes it
// when the sandbox is removed). sb.mu must be held. It returns the state sb was in.
func (r *Runtime) transition(sb *sandbox, to string, change func(*record)) (from string, err error) {
	from = sb.rec.Status
	if !slices.Contains(transitions[from], to) {
		return from, stateError(sb.id, from, "try again")
	}
	next := sb.rec
	next.Env, next.Labels = maps.Clone(sb.rec.Env), maps.Clone(sb.rec.Labels)
	if change != nil {
		change(&next)
	}
	next.Status = to
	if to != api.StatusFailed {
		next.Error = ""
	}
	switch {
	case to == stateRemoved:
		err = r.records.Delete(sb.id)
	case from == "" && to == api.StatusCreating:
		err = r.records.Insert(&next)
	case durable[to]:
		err = r.records.Put(&next)
	}
	if err != nil {
		return from, fmt.Errorf("record sandbox %s as %s: %w", sb.id, to, err)
	}
	sb.rec = next
	r.transitioned(&next, from, to)
	if to == stateRemoved {
		r.mu.Lock()
		if r.sandboxes[sb.id] == sb {
			delete(r.sandboxes, sb.id)
		}
		r.mu.Unlock()
	}
	return from, nil
}

// update changes sb's record without changing its state, and persists it. sb.mu must be held.
func (r *Runtime) update(sb *sandbox, change func(*record)) error {
	next := sb.rec
	next.Env, next.Labels = maps.Clone(sb.rec.Env), maps.Clone(sb.rec.Labels)
	change(&next)
	next.Status = sb.rec.Status
	if err := r.records.Put(&next); err != nil {
		return fmt.Errorf("record sandbox %s: %w", sb.id, err)
	}
	sb.rec = next
	return nil
}

// fail records that sb has failed, and why, unless it is already on its way out. sb.mu must
// be held.
func (r *Runtime) fail(sb *sandbox, reason string) {
	if sb.rec.Status == api.StatusStopping || sb.rec.Status == api.StatusFailed {
		return
	}
	if _, err := r.transition(sb, api.StatusFailed, func(rec *record) { rec.Error, rec.PID = reason, 0 }); err != nil {
		r.log.Error("record failed sandbox", "sandbox", sb.id, "err", err)
	}
}

// lookup returns the sandbox with the id.
func (r *Runtime) lookup(id string) (*sandbox, error) {
	r.mu.Lock()
	sb := r.sandboxes[id]
	r.mu.Unlock()
	if sb == nil {
		return nil, api.Errorf(api.CodeNotFound, "sandbox %q not found", id)
	}
	return sb, nil
}

// alive reports whether the sandbox's container still runs, whatever its state says.
func (sb *sandbox) alive() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.inst != nil && sb.inst.Alive()
}

// snapshot returns a copy of a sandbox's record as it is now.
func (sb *sandbox) snapshot() record {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.rec
}

// live is a running sandbox as a request found it: its container, its agent and a copy of
// its record.
type live struct {
	sb    *sandbox
	inst  backend.Instance
	agent *agentClient
	rec   record
}

// running returns a sandbox that runs (resuming it when paused), or why it does not run.
func (r *Runtime) running(id string) (live, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return live{}, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := r.wake(sb); err != nil {
		return live{}, err
	}
	return sb.live(), nil
}

// live is sb as it is now. sb.mu must be held.
func (sb *sandbox) live() live { return live{sb: sb, inst: sb.inst, agent: sb.agent, rec: sb.rec} }

// failure turns an unreachable agent into the reason it is: the sandbox's removal meanwhile,
// or its failure, when it did.
func (l live) failure(ctx context.Context, err error) error {
	if !api.IsCode(err, api.CodeUnavailable) || ctx.Err() != nil {
		return stopCause(ctx, err)
	}
	if err := l.removed(); err != nil {
		return err
	}
	if reason := checkRunning(l.inst, l.agent); reason != "" {
		return api.Errorf(api.CodeConflict, "sandbox %q has failed (%s); remove it and create a new one", l.sb.id, reason)
	}
	return err
}

// removed is the not-found error to answer when the sandbox is being removed or is gone (a
// request whose agent went away with it), else nil.
func (l live) removed() error {
	switch l.sb.snapshot().Status {
	case api.StatusStopping, stateRemoved:
		return api.Errorf(api.CodeNotFound, "sandbox %q was removed while the request ran", l.sb.id)
	}
	return nil
}

// requireRunning is nil when sb runs, else the conflict to answer. sb.mu must be held.
func (sb *sandbox) requireRunning() error {
	switch sb.rec.Status {
	case api.StatusRunning:
		return nil
	case api.StatusFailed:
		return api.Errorf(api.CodeConflict, "sandbox %q has failed (%s); remove it and create a new one", sb.id, sb.rec.Error)
	}
	return stateError(sb.id, sb.rec.Status, "try again")
}

// lockRunning locks a sandbox that runs (resuming it when paused), for a change that must not interleave with another
// change to it (its network, its environment); the caller unlocks sb.mu.
func (r *Runtime) lockRunning(id string) (*sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	if err := r.wake(sb); err != nil {
		sb.mu.Unlock()
		return nil, err
	}
	return sb, nil
}

// wake is nil when sb runs, resuming it first when it is paused or hibernated, else the
// conflict to answer. sb.mu must be held.
func (r *Runtime) wake(sb *sandbox) error {
	switch sb.rec.Status {
	case api.StatusPaused:
		if err := r.resume(sb); err != nil {
			return err
		}
	case api.StatusHibernated:
		if err := r.awaken(sb); err != nil {
			return err
		}
	}
	return sb.requireRunning()
}

// watch marks a sandbox failed as soon as its container's agent (PID 1) exits by itself, so
// the API never shows a dead sandbox as running, and publishes its OOM kills (watchOOMs).
func (r *Runtime) watch(sb *sandbox, inst backend.Instance) {
	r.watchOOMs(sb, inst)
	inst.OnExit(func() {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		if sb.inst != inst || (sb.rec.Status != api.StatusRunning && sb.rec.Status != api.StatusPaused) {
			return // being removed, or gone
		}
		r.agentExited(sb.id, inst.PID())
		r.fail(sb, "its agent (PID 1) exited; everything in the sandbox was stopped")
		r.forgetAgent(sb)
		r.log.Warn("sandbox failed: its agent exited", "sandbox", sb.id, "pid", inst.PID())
	})
}
