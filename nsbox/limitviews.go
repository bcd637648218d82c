package nsbox

import (
	"context"
	"errors"
	"path/filepath"
	"sync"

	"github.com/nsbox/nsbox/internal/lxcfs"
)

// limitViews is the LXCFS that shows each sandbox its own limits in /proc/meminfo, cpuinfo,
// stat, uptime… (internal/lxcfs). It runs detached in <run>/lxcfs and outlives the daemon,
// since running sandboxes' binds depend on it: a daemon that starts finds it again. When it
// had to be started anew (the one the sandboxes' binds came from died: they fail with
// ENOTCONN), and whenever it dies while the daemon runs, the daemon starts it again and binds
// the new views into every running sandbox. It is stopped when the daemon exits with no
// sandbox running, and by `daemon --cleanup`.
type limitViews struct {
	srv    *lxcfs.Server
	cancel context.CancelFunc // ends the watch

	mu  sync.Mutex
	dir string // the mount; "" while LXCFS does not run
}

// openLimitViews starts (or finds) LXCFS and watches it. Without lxcfs, or when it does not
// start, sandboxes show the host's /proc files, and the daemon says so.
func (r *Runtime) openLimitViews() {
	v := &limitViews{srv: lxcfs.New(filepath.Join(r.cfg.RunDir, "lxcfs"), r.log)}
	r.views = v
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	r.startLimitViews(ctx)
}

// startLimitViews starts LXCFS, binds its views into the running sandboxes if they come from
// an earlier one, and watches it.
func (r *Runtime) startLimitViews(ctx context.Context) {
	v := r.views
	err := v.srv.Start()
	v.mu.Lock()
	v.dir = ""
	if err == nil {
		v.dir = v.srv.Mount()
	}
	v.mu.Unlock()
	switch {
	case errors.Is(err, lxcfs.ErrNotInstalled):
		r.log.Warn("lxcfs is not installed: sandboxes see the host's memory and CPUs in /proc (free, top, nproc of /proc/cpuinfo); install lxcfs (scripts/install-deps.sh) for views of their own limits")
	case err != nil:
		r.log.Error("lxcfs did not start: sandboxes see the host's memory and CPUs in /proc", "err", err)
	default:
		r.log.Info("lxcfs shows sandboxes their limits", "mount", v.dir, "pid", v.srv.PID(), "started", v.srv.Fresh)
	}
	if err != nil || v.srv.Fresh {
		r.showLimits(v.dirNow())
	}
	if err == nil {
		v.srv.Watch(ctx, func() {
			r.log.Error("lxcfs exited; starting it again", "pid", v.srv.PID())
			r.startLimitViews(ctx)
		})
	}
}

// dirNow is the mount of a running LXCFS, or "".
func (v *limitViews) dirNow() string {
	if v == nil {
		return ""
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.dir
}

// showLimits binds the views of the LXCFS at dir into every sandbox's running container and
// every container of the warm pool (or, with dir "", removes their dead ones).
func (r *Runtime) showLimits(dir string) {
	insts := r.pool.instances()
	for _, sb := range r.all() {
		sb.mu.Lock()
		if sb.inst != nil {
			insts = append(insts, sb.inst)
		}
		sb.mu.Unlock()
	}
	for _, inst := range insts {
		if !inst.Alive() {
			continue
		}
		var err error
		onOwnThread(func() { err = inst.ShowLimits(dir) })
		if err != nil {
			r.log.Warn("bind lxcfs views into a container", "container", inst.ID(), "err", err)
		}
	}
}

// closeLimitViews stops watching LXCFS, and stops it if no sandbox runs.
func (r *Runtime) closeLimitViews() {
	v := r.views
	if v == nil {
		return
	}
	v.cancel()
	for _, sb := range r.all() {
		if sb.alive() {
			return
		}
	}
	if err := v.srv.Stop(); err != nil {
		r.log.Warn("stop lxcfs", "err", err)
	}
}
