package nsbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/nsbox/nsbox/api"
)

// reconcile makes the records agree with what exists, after a clean restart, a kill -9 or a
// host reboot:
//   - a record whose create never finished is rolled back and forgotten;
//   - a record whose container is gone or whose agent does not answer is marked failed (it can
//     still be removed, which cleans up what is left);
//   - a running container, run dir or data dir with no record is destroyed.
func (r *Runtime) reconcile() error {
	recs, err := r.store.List()
	if err != nil {
		return err
	}
	known := map[string]bool{} // containers that belong to a sandbox
	for _, rec := range recs {
		known[rec.container()] = true
		if rec.Status == api.StatusCreating {
			r.log.Warn("rolling back a create the daemon did not finish", "sandbox", rec.ID)
			if err := errors.Join(r.destroy(rec), r.store.Delete(rec.ID)); err != nil {
				r.log.Error("roll back create", "sandbox", rec.ID, "err", err)
			}
			delete(known, rec.container())
			continue
		}
		if rec.Status != api.StatusRunning {
			continue
		}
		if reason := r.checkRunning(rec); reason != "" {
			r.log.Warn("sandbox is no longer running", "sandbox", rec.ID, "reason", reason)
			rec.Status, rec.Error, rec.PID = api.StatusFailed, reason, 0
			if err := r.store.Put(rec); err != nil {
				return err
			}
			continue
		}
		r.watchAgent(rec.ID, rec.PID)
		r.repushEnv(rec)
	}
	// Whatever has no record: a container, or a leftover run or data dir.
	for _, dir := range []string{r.stateRoot(), filepath.Join(r.cfg.RunDir, "sandboxes"), filepath.Join(r.cfg.DataDir, "sandboxes")} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		for _, e := range entries {
			if known[e.Name()] {
				continue
			}
			// A sandbox removed while the daemon was down, or a container that was started and
			// not yet given to a sandbox (a create cut short, or the warm pool).
			r.log.Info("destroying a container that belongs to no sandbox", "container", e.Name())
			cgroup := cgroupPath(r.cfg.CgroupParent, e.Name())
			if c, err := libcontainer.Load(r.stateRoot(), e.Name()); err == nil {
				cgroup = c.Config().Cgroups.Path
			}
			if err := r.destroyContainer(e.Name(), cgroup); err != nil {
				r.log.Error("destroy orphan container", "container", e.Name(), "err", err)
			}
			known[e.Name()] = true
		}
	}
	return r.reconcileNetwork()
}

// checkRunning returns why a sandbox recorded as running is not, or "" when it is.
func (r *Runtime) checkRunning(rec *record) string {
	c, err := libcontainer.Load(r.stateRoot(), rec.container())
	if err != nil {
		return "its container is gone (the host restarted, or it was removed outside nsbox)"
	}
	if status, err := c.Status(); err != nil || status != libcontainer.Running {
		return "its agent (PID 1) has exited"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.agentOf(rec).health(ctx); err != nil {
		return fmt.Sprintf("its agent does not answer: %v", err)
	}
	if state, err := c.State(); err == nil {
		rec.PID = state.InitProcessPid
	}
	return ""
}
