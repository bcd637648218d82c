package nsbox

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/nsbox/nsbox/api"
)

// Activity and idle policies. Every API request that names a sandbox counts as activity while
// it runs (a long exec or an attached terminal keeps the sandbox busy), and so does every
// preview-proxy request to its ports; a sandbox with a lifecycle is paused or removed once it
// has been idle for its idleSeconds, and removed once it is older than its ttlSeconds. A
// request that needs a paused sandbox resumes it first (running, lockRunning).

// idleCheckEvery is how often the daemon looks for idle and expired sandboxes.
const idleCheckEvery = time.Second

// onIdle are the policies for idle sandboxes: pause (frozen), hibernate (hibernate.go), stop
// (hibernated without the sessions' state: they start afresh on resume), remove.
var onIdle = []string{api.OnIdlePause, api.OnIdleHibernate, api.OnIdleStop, api.OnIdleRemove}

// resolveLifecycle checks a create's lifecycle and fills the daemon's defaults.
func (c *Config) resolveLifecycle(l *api.Lifecycle) (*api.Lifecycle, error) {
	if l == nil {
		if c.DefaultLifecycle == nil {
			return nil, nil
		}
		d := *c.DefaultLifecycle
		l = &d
	}
	switch {
	case l.IdleSeconds < 0 || l.TTLSeconds < 0:
		return nil, api.Errorf(api.CodeInvalidArgument, "lifecycle.idleSeconds and lifecycle.ttlSeconds must not be negative")
	case l.OnIdle == "" && l.IdleSeconds > 0:
		l.OnIdle = api.OnIdlePause
	case l.OnIdle != "" && !slices.Contains(onIdle, l.OnIdle):
		return nil, api.Errorf(api.CodeInvalidArgument, "lifecycle.onIdle must be one of %s, not %q", strings.Join(onIdle, ", "), l.OnIdle)
	}
	if l.IdleSeconds == 0 && l.TTLSeconds == 0 {
		return nil, nil
	}
	return l, nil
}

// busy marks a sandbox in use by a request until done is called.
func (r *Runtime) busy(id string) (done func()) {
	sb, err := r.lookup(id)
	if err != nil {
		return func() {}
	}
	sb.touch()
	sb.inflight.Add(1)
	return func() {
		sb.inflight.Add(-1)
		sb.touch()
	}
}

// touch records activity now.
func (sb *sandbox) touch() { sb.lastActive.Store(time.Now().UnixNano()) }

// watchIdle applies the sandboxes' lifecycles until ctx ends.
func (r *Runtime) watchIdle(ctx context.Context) {
	ticker := time.NewTicker(idleCheckEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			r.applyLifecycles(now)
		}
	}
}

// applyLifecycles pauses or removes the sandboxes whose lifecycle says so by now.
func (r *Runtime) applyLifecycles(now time.Time) {
	for _, sb := range r.all() {
		rec := sb.snapshot()
		l := rec.Lifecycle
		if l == nil || (rec.Status != api.StatusRunning && rec.Status != api.StatusPaused && rec.Status != api.StatusHibernated) {
			continue
		}
		idle := rec.Status == api.StatusRunning && l.IdleSeconds > 0 && sb.inflight.Load() == 0 &&
			now.Sub(time.Unix(0, sb.lastActive.Load())) >= time.Duration(l.IdleSeconds)*time.Second
		var err error
		switch {
		case l.TTLSeconds > 0 && now.Sub(rec.CreatedAt) >= time.Duration(l.TTLSeconds)*time.Second:
			r.log.Info("removing a sandbox past its ttl", "sandbox", sb.id, "ttlSeconds", l.TTLSeconds)
			err = r.Remove(sb.id, true)
		case idle && l.OnIdle == api.OnIdleRemove:
			r.log.Info("removing an idle sandbox", "sandbox", sb.id, "idleSeconds", l.IdleSeconds)
			err = r.Remove(sb.id, true)
		case idle && (l.OnIdle == api.OnIdleHibernate || l.OnIdle == api.OnIdleStop):
			r.log.Info("hibernating an idle sandbox", "sandbox", sb.id, "idleSeconds", l.IdleSeconds, "onIdle", l.OnIdle)
			ctx, cancel := context.WithTimeout(context.Background(), awakenTimeout)
			_, err = r.hibernate(ctx, sb.id, l.OnIdle == api.OnIdleHibernate)
			cancel()
		case idle:
			r.log.Info("pausing an idle sandbox", "sandbox", sb.id, "idleSeconds", l.IdleSeconds)
			_, err = r.Pause(sb.id)
		}
		if err != nil && !api.IsCode(err, api.CodeConflict) && !api.IsCode(err, api.CodeNotFound) {
			r.log.Error("apply lifecycle", "sandbox", sb.id, "err", err)
		}
	}
}
