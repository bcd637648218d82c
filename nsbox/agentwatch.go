package nsbox

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// Following agents: the daemon keeps one watch stream (the agent's GET /v1/watch) open to
// each running container's agent, from its bind (before an entrypoint starts) or the daemon's
// start, until the container exits. The agent says on it how many sessions are open and how
// many processes run after every change, and which ended, also by themselves (a shell's exit,
// a process's): the daemon keeps the counts, which stats answer without asking the agents,
// and publishes the ends as session.ended and process.exited events. A stream that breaks is
// opened again (its first notice is the counts as they are then); meanwhile, and for an agent
// that has no watch stream (started by an older daemon), stats ask the agent.

// followRetry is how long the daemon waits before it opens a broken watch stream again.
const followRetry = time.Second

// insideCounts are a sandbox's open sessions and running processes, as its agent last said.
type insideCounts struct{ sessions, processes int }

// agentFollow is the daemon's watch of one container's agent.
type agentFollow struct {
	inst   backend.Instance
	counts atomic.Pointer[insideCounts] // nil while the stream is not open
	ready  chan struct{}                // closed at the first notice, or when the watch ends
}

// followAgent starts watching the agent of inst, the container of sandbox id, until inst
// exits; the watch replaces the sandbox's earlier one.
func (r *Runtime) followAgent(id string, inst backend.Instance, agent *agentClient) *agentFollow {
	f := &agentFollow{inst: inst, ready: make(chan struct{})}
	r.ops.mu.Lock()
	r.ops.follows[id] = f
	r.ops.mu.Unlock()
	go r.follow(id, f, agent)
	return f
}

// follow reads the agent's notices, opening the stream again when it breaks, until the
// container exits. No goroutine waits for the exit to end the stream (one per sandbox, idle
// memory): the agent's exit closes its end of the connection, which ends the read, and the
// exit ends the wait before the next attempt.
func (r *Runtime) follow(id string, f *agentFollow, agent *agentClient) {
	var once sync.Once
	ready := func() { once.Do(func() { close(f.ready) }) }
	defer func() {
		ready()
		r.ops.mu.Lock()
		if r.ops.follows[id] == f {
			delete(r.ops.follows, id)
		}
		r.ops.mu.Unlock()
	}()
	for {
		err := r.readNotices(context.Background(), id, f, agent, ready)
		f.counts.Store(nil)
		switch {
		case !f.inst.Alive(): // the container is going
			return
		case api.IsCode(err, api.CodeNotFound):
			r.log.Info("the sandbox's agent has no watch stream (an older agent): its stats ask it for its counts", "sandbox", id)
			return
		}
		r.log.Debug("the sandbox's agent watch stream broke; opening it again", "sandbox", id, "err", err)
		select {
		case <-f.inst.Exited():
			return
		case <-time.After(followRetry):
		}
	}
}

// readNotices opens the agent's watch stream and keeps its counts and publishes its ends until
// it breaks.
func (r *Runtime) readNotices(ctx context.Context, id string, f *agentFollow, agent *agentClient, ready func()) error {
	events, err := agent.watch(ctx)
	if err != nil {
		return err
	}
	defer events.Close()
	for {
		var n api.AgentNotice
		if _, err := events.NextJSON(&n); err != nil {
			return err
		}
		f.counts.Store(&insideCounts{sessions: n.Sessions, processes: n.Processes})
		ready()
		if e := n.SessionEnded; e != nil {
			r.ops.events.publish(api.EventSessionEnded, id, "session", e.ID, "reason", e.Reason)
		}
		if p := n.ProcessExited; p != nil {
			oom := ""
			if p.OOMKilled {
				oom = "true"
			}
			r.ops.events.publish(api.EventProcessExited, id, "process", p.ID, "status", p.Status, "exitCode", strconv.Itoa(p.ExitCode),
				"signal", p.Signal, "error", p.Error, "oomKilled", oom)
		}
	}
}

// awaitFollow waits until a new watch has the agent's first notice, so that nothing the
// sandbox does from then on is missed, at most agentReadyTimeout.
func awaitFollow(ctx context.Context, f *agentFollow) error {
	ctx, cancel := context.WithTimeout(ctx, agentReadyTimeout)
	defer cancel()
	select {
	case <-f.ready:
		return nil
	case <-ctx.Done():
		return api.Errorf(api.CodeUnavailable, "the sandbox's agent did not open its watch stream: %v", ctx.Err())
	}
}

// countsOf returns the counts the agent of inst, sandbox id's container, last said; nil when
// its stream is not open.
func (o *ops) countsOf(id string, inst backend.Instance) *insideCounts {
	o.mu.Lock()
	f := o.follows[id]
	o.mu.Unlock()
	if f == nil || f.inst != inst {
		return nil
	}
	return f.counts.Load()
}
