package nsbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// reconcile loads every recorded sandbox and makes the records agree with what exists, after
// a clean restart, a kill -9 or a host reboot:
//   - a sandbox whose create never finished is rolled back and forgotten;
//   - a running sandbox whose container is gone or whose agent does not answer is marked
//     failed (it can still be removed, which cleans up what is left);
//   - a container, run dir or data dir with no record is destroyed;
//   - each sandbox kept is published as a sandbox.loaded event with the state it is in, and
//     the agents of those that run are followed (agentwatch.go).
//
// Networks with no record are removed by reconcileNetwork.
func (r *Runtime) reconcile() error {
	recs, err := r.records.List()
	if err != nil {
		return err
	}
	known := map[string]bool{} // containers that belong to a sandbox
	for _, rec := range recs {
		sb := &sandbox{id: rec.ID, rec: *rec}
		sb.touch() // idle time counts from the daemon's start
		inst, err := r.backend.Load(rec.container())
		switch {
		case err == nil:
			sb.inst, sb.agent = inst, newAgentClient(inst)
			r.claimIDs(inst)
		case !errors.Is(err, backend.ErrNotExist):
			r.log.Warn("load container", "sandbox", rec.ID, "container", rec.container(), "err", err)
		}
		r.sandboxes[sb.id] = sb
		known[rec.container()] = true
		switch rec.Status {
		case api.StatusHibernated:
			// No container; its files, ids and network wait for a resume.
			if rec.HeldIDs != nil && r.ids != nil {
				if err := r.ids.claim(rec.container(), *rec.HeldIDs); err != nil {
					r.log.Error("user namespace ids", "sandbox", rec.ID, "err", err)
				}
			}
		case api.StatusCreating:
			r.log.Warn("rolling back a create the daemon did not finish", "sandbox", rec.ID)
			r.abortCreate(sb)
		case api.StatusRunning, api.StatusPaused:
			var reason string
			switch {
			case rec.Status == api.StatusRunning:
				reason = checkRunning(sb.inst, sb.agent)
			case sb.inst == nil || !sb.inst.Alive(): // a frozen agent cannot answer; it must be there
				reason = checkRunning(sb.inst, nil)
			}
			if reason != "" {
				r.log.Warn("sandbox is no longer running", "sandbox", rec.ID, "reason", reason)
				sb.mu.Lock()
				r.fail(sb, reason)
				sb.mu.Unlock()
				continue
			}
			sb.rec.PID = sb.inst.PID()
			r.watch(sb, sb.inst)
			r.followAgent(rec.ID, sb.inst, sb.agent) // a paused one's answers once it is resumed
			if rec.Status == api.StatusRunning {
				r.repushEnv(sb)
			}
		}
	}
	// What each sandbox is now, for whoever follows the events from the first.
	for _, rec := range recs {
		if sb := r.sandboxes[rec.ID]; sb != nil { // not a create rolled back
			now := sb.snapshot()
			r.ops.events.publish(api.EventSandboxLoaded, rec.ID, "status", now.Status, "image", now.Image, "error", now.Error)
		}
	}
	// Whatever has no record: a container, or a leftover run or data dir.
	containers, err := r.backend.Containers()
	if err != nil {
		return err
	}
	dataDirs, err := os.ReadDir(filepath.Join(r.cfg.DataDir, "sandboxes"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list data dirs: %w", err)
	}
	for _, e := range dataDirs {
		containers = append(containers, e.Name())
	}
	for _, id := range containers {
		if known[id] {
			continue
		}
		known[id] = true
		// A sandbox removed while the daemon was down, or a container that was started and
		// not yet given to a sandbox (a create cut short, or the warm pool).
		r.log.Info("destroying a container that belongs to no sandbox", "container", id)
		destroy := r.destroyContainerID
		if inst, err := r.backend.Load(id); err == nil {
			r.claimIDs(inst) // until it is gone
			destroy = func(string, ...func() error) error { return r.destroyContainer(inst) }
		}
		if err := destroy(id); err != nil {
			r.log.Error("destroy orphan container", "container", id, "err", err)
		}
	}
	return nil
}

// claimIDs takes back the user namespace ids of a container started before.
func (r *Runtime) claimIDs(inst backend.Instance) {
	if ids := inst.IDs(); r.ids != nil && ids.Enabled() {
		if err := r.ids.claim(inst.ID(), ids); err != nil {
			r.log.Error("user namespace ids", "container", inst.ID(), "err", err)
		}
	}
}
