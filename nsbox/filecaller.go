package nsbox

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/nsbox/nsbox/api"
	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// fileCaller is on whose behalf a file request works: the session named by the query
// parameter sessionId (relative paths start at the session shell's current directory, and
// what the request creates belongs to the session's user), or else the sandbox itself (its
// working directory, and root).
type fileCaller struct {
	cwd      string
	uid, gid int
	readOnly bool // a read session's: nothing may be changed on its behalf
}

func (c fileCaller) resolve(p string) string { return sandboxfs.Resolve(c.cwd, p) }

// openFileCaller opens the root of a running sandbox as its agent sees it, and finds the
// caller of a file request.
func (r *Runtime) openFileCaller(req *http.Request) (*sandboxfs.Root, fileCaller, error) {
	id := req.PathValue("id")
	l, err := r.running(id)
	if err != nil {
		return nil, fileCaller{}, err
	}
	sid := req.URL.Query().Get("sessionId")
	who, err := fileCallerOf(req.Context(), l, sid)
	if err != nil {
		return nil, fileCaller{}, err
	}
	if who.readOnly && req.Method != http.MethodGet {
		return nil, fileCaller{}, api.Errorf(api.CodePermissionDenied, "session %q is read-only: files can be read, listed, stat'ed and watched on its behalf, not changed", sid)
	}
	root, err := l.inst.OpenRoot()
	if err != nil {
		if errors.Is(err, backend.ErrExited) {
			return nil, fileCaller{}, api.Errorf(api.CodeConflict, "sandbox %q is not running: its agent (PID 1) has exited; remove it and create a new one", id)
		}
		return nil, fileCaller{}, err
	}
	if _, ok := l.rec.SessionPermissions[sid]; ok && sid != "" {
		if err := r.actForSession(req, l.rec.container(), sid, root); err != nil {
			root.Close()
			return nil, fileCaller{}, err
		}
	}
	return root, who, nil
}

// fileCallerOf asks the agent for the session sid ("" means none: the sandbox itself).
func fileCallerOf(ctx context.Context, l live, sid string) (fileCaller, error) {
	if sid == "" {
		return fileCaller{cwd: l.rec.Cwd}, nil
	}
	s, err := l.agent.getSession(ctx, sid)
	if err != nil {
		return fileCaller{}, l.failure(ctx, err)
	}
	switch {
	case s.Cwd == "": // no shell: the session has ended
		return fileCaller{}, api.Errorf(api.CodeConflict, "session %q has ended; name a running session, or none", sid)
	case strings.HasSuffix(s.Cwd, " (deleted)"): // how the kernel shows a removed directory
		return fileCaller{}, api.Errorf(api.CodeConflict, "the working directory of session %q (%s) was removed; cd elsewhere in the session first", sid, s.Cwd)
	}
	return fileCaller{cwd: s.Cwd, uid: s.UID, gid: s.GID, readOnly: s.Permission == api.PermissionRead}, nil
}
