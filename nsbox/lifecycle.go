package nsbox

import (
	"fmt"
	"net/http"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// Pause freezes every process of a running sandbox (the cgroup freezer): nothing in it runs,
// its memory stays. A request that needs it running resumes it.
func (r *Runtime) Pause(id string) (*api.Sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := sb.requireRunning(); err != nil {
		return nil, err
	}
	began := time.Now()
	if err := sb.inst.Freeze(); err != nil {
		return nil, fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	if _, err := r.transition(sb, api.StatusPaused, nil); err != nil {
		if terr := sb.inst.Thaw(); terr != nil {
			r.log.Error("thaw after a failed pause", "sandbox", id, "err", terr)
		}
		return nil, err
	}
	r.log.Info("sandbox paused", "sandbox", id, "duration", time.Since(began))
	out := sb.rec.Sandbox
	return &out, nil
}

// Resume lets a paused sandbox run again, or starts a hibernated one again (hibernate.go).
func (r *Runtime) Resume(id string) (*api.Sandbox, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	switch sb.rec.Status {
	case api.StatusPaused:
		err = r.resume(sb)
	case api.StatusHibernated:
		err = r.awaken(sb)
	default:
		return nil, api.Errorf(api.CodeConflict, "sandbox %q is %s, not paused or hibernated", id, sb.rec.Status)
	}
	if err != nil {
		return nil, err
	}
	out := sb.rec.Sandbox
	return &out, nil
}

// resume thaws a paused sandbox. sb.mu must be held.
func (r *Runtime) resume(sb *sandbox) error {
	began := time.Now()
	if err := sb.inst.Thaw(); err != nil {
		return fmt.Errorf("resume sandbox %s: %w", sb.id, err)
	}
	if _, err := r.transition(sb, api.StatusRunning, nil); err != nil {
		return err
	}
	sb.touch()
	r.log.Info("sandbox resumed", "sandbox", sb.id, "duration", time.Since(began))
	return nil
}

func (r *Runtime) handlePause(w http.ResponseWriter, req *http.Request) error {
	sb, err := r.Pause(req.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
	return nil
}

func (r *Runtime) handleResume(w http.ResponseWriter, req *http.Request) error {
	sb, err := r.Resume(req.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
	return nil
}
