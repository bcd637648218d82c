package nsbox

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/nsbox/nsbox/api"
	sandboxfs "github.com/nsbox/nsbox/fs"
)

// fileCaller is on whose behalf a file request works: the session named by the query
// parameter sessionId (relative paths start at the session shell's current directory, and
// what the request creates belongs to the session's user), or else the sandbox itself (its
// working directory, and root).
type fileCaller struct {
	cwd      string
	uid, gid int
}

func (c fileCaller) resolve(p string) string { return sandboxfs.Resolve(c.cwd, p) }

// openFileCaller opens the sandbox's root and finds the caller of a file request. On error it
// has answered and returns a nil root.
func (r *Runtime) openFileCaller(w http.ResponseWriter, req *http.Request) (*sandboxfs.Root, *record, fileCaller) {
	root, rec, err := r.openSandboxRoot(req.PathValue("id"))
	if err != nil {
		r.writeError(w, err)
		return nil, nil, fileCaller{}
	}
	who, err := r.fileCaller(req.Context(), rec, req.URL.Query().Get("sessionId"))
	if err != nil {
		root.Close()
		r.writeError(w, err)
		return nil, nil, fileCaller{}
	}
	return root, rec, who
}

// fileCaller asks the agent for the session sid ("" means none: the sandbox itself).
func (r *Runtime) fileCaller(ctx context.Context, rec *record, sid string) (fileCaller, error) {
	if sid == "" {
		return fileCaller{cwd: rec.Cwd}, nil
	}
	var s api.Session
	if err := r.agentOf(rec).call(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(sid), nil, &s); err != nil {
		return fileCaller{}, r.agentFailure(ctx, rec, err)
	}
	switch {
	case s.Cwd == "": // no shell: the session has ended
		return fileCaller{}, api.Errorf(api.CodeConflict, "session %q has ended; name a running session, or none", sid)
	case strings.HasSuffix(s.Cwd, " (deleted)"): // how the kernel shows a removed directory
		return fileCaller{}, api.Errorf(api.CodeConflict, "the working directory of session %q (%s) was removed; cd elsewhere in the session first", sid, s.Cwd)
	}
	return fileCaller{cwd: s.Cwd, uid: s.UID, gid: s.GID}, nil
}
