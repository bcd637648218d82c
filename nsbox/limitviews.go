package nsbox

import (
	"context"
	"errors"
	"path/filepath"
	"sync"

	"github.com/nsbox/nsbox/internal/lxcfs"
	"github.com/nsbox/nsbox/nsbox/backend"
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
	gen uint64 // counts the LXCFSes started (or found dead) since the daemon started (publishViews)
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
	dir := ""
	if err == nil {
		dir = v.srv.Mount()
	}
	switch {
	case errors.Is(err, lxcfs.ErrNotInstalled):
		r.log.Warn("lxcfs is not installed: sandboxes see the host's memory and CPUs in /proc (free, top, nproc of /proc/cpuinfo); install lxcfs (scripts/install-deps.sh) for views of their own limits")
	case err != nil:
		r.log.Error("lxcfs did not start: sandboxes see the host's memory and CPUs in /proc", "err", err)
	default:
		r.log.Info("lxcfs shows sandboxes their limits", "mount", dir, "pid", v.srv.PID(), "started", v.srv.Fresh)
	}
	if err != nil || v.srv.Fresh {
		r.publishViews(dir)
	} else { // the LXCFS the sandboxes' views came from
		v.mu.Lock()
		v.dir = dir
		v.mu.Unlock()
	}
	if err == nil {
		v.srv.Watch(ctx, func() {
			r.log.Error("lxcfs exited; starting it again", "pid", v.srv.PID())
			r.startLimitViews(ctx)
		})
	}
}

// current is the mount of a running LXCFS ("" when none runs), and its generation.
func (v *limitViews) current() (dir string, gen uint64) {
	if v == nil {
		return "", 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.dir, v.gen
}

// publishViews makes dir (a new LXCFS's mount, or "" when none runs) the sandboxes' views, a
// generation of its own, and binds it into every container that showLimits finds.
func (r *Runtime) publishViews(dir string) {
	v := r.views
	v.mu.Lock()
	v.dir = dir
	v.gen++
	gen := v.gen
	v.mu.Unlock()
	r.showLimits(dir, gen)
}

// showLimits binds the views of the LXCFS at dir, of generation gen, into every sandbox's
// running container and every container of the warm pool (or, with dir "", removes their dead
// ones). A container being started is not there yet: its launch binds it, and checks once it
// is there (recheckViews).
func (r *Runtime) showLimits(dir string, gen uint64) {
	scs := r.pool.containers()
	var insts []backend.Instance
	for _, sb := range r.all() {
		sb.mu.Lock()
		if sb.inst != nil {
			insts = append(insts, sb.inst)
		}
		sb.mu.Unlock()
	}
	for _, sc := range scs {
		insts = append(insts, sc.inst)
		sc.viewsGen.Store(gen)
	}
	for _, inst := range insts {
		r.bindViews(inst, dir)
	}
}

// recheckViews binds the views of the LXCFS that runs now into a container whose views came
// from an earlier one: its start overlapped an LXCFS restart, whose showLimits came before the
// container was where it looks. Called once the container is there (a sandbox's, the warm
// pool's): a restart after the check finds it.
func (r *Runtime) recheckViews(sc *startedContainer) {
	dir, gen := r.views.current()
	if sc.viewsGen.Swap(gen) != gen {
		r.bindViews(sc.inst, dir)
	}
}

// bindViews binds the views of the LXCFS at dir into a running container (dir "": removes its
// dead ones).
func (r *Runtime) bindViews(inst backend.Instance, dir string) {
	if !inst.Alive() {
		return
	}
	var err error
	onOwnThread(func() { err = inst.ShowLimits(dir) })
	if err != nil {
		r.log.Warn("bind lxcfs views into a container", "container", inst.ID(), "err", err)
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
