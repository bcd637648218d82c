package nsbox

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strings"

	"github.com/nsbox/nsbox/api"
	sandboxfs "github.com/nsbox/nsbox/fs"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// fileCaller is on whose behalf a file request works: the session named by the query
// parameter session or sessionId (relative paths start at the session shell's current
// directory, and what the request creates belongs to the session's user), or else the sandbox
// itself (its working directory, and root).
type fileCaller struct {
	cwd      string
	uid, gid int
	readOnly bool // a read session's: nothing may be changed on its behalf
	// private is the session's private folder as its processes see it (~/.private, "" when
	// it has none), privateHost the host directory it is (nsbox/private.go): no path in the
	// sandbox leads there, so file calls for the session reach it directly.
	private, privateHost string
}

func (c fileCaller) resolve(p string) string { return sandboxfs.Resolve(c.cwd, p) }

// inPrivate reports whether the resolved path p is in the caller's private folder, and where
// in it.
func (c fileCaller) inPrivate(p string) (string, bool) {
	if c.private == "" || !within(p, c.private) {
		return "", false
	}
	return "/" + strings.TrimPrefix(strings.TrimPrefix(p, c.private), "/"), true
}

// fileRequest is what every file handler starts from: the root it works in, for whom the
// request is made, and the request's paths resolved against that caller's working directory.
// The root is the sandbox's, or the calling session's private folder when the paths are in it.
type fileRequest struct {
	root  *sandboxfs.Root
	who   fileCaller
	paths []string // in root
	// prefix is where root is in the sandbox: "" for the sandbox's root, else the private folder.
	prefix string
	// sandbox is the sandbox as the request found it.
	sandbox live
}

// shown is where the path p of the request's root is in the sandbox, for answers.
func (fr *fileRequest) shown(p string) string {
	switch {
	case fr.prefix == "":
		return p
	case p == "/":
		return fr.prefix
	}
	return fr.prefix + p
}

// showInfo makes info's path the sandbox's.
func (fr *fileRequest) showInfo(info *api.FileInfo) {
	info.Path = fr.shown(info.Path)
	if fr.prefix != "" && info.Path == fr.prefix {
		info.Name = path.Base(fr.prefix)
	}
}

// openFileCaller finds the caller of a file request on a running sandbox, resolves paths for
// it, and opens the root they are in: the sandbox's as its agent sees it, or the calling
// session's private folder when they are all in it.
func (r *Runtime) openFileCaller(req *http.Request, paths ...string) (*fileRequest, error) {
	id := req.PathValue("id")
	l, err := r.running(id)
	if err != nil {
		return nil, err
	}
	sid, err := api.QuerySession(req.URL.Query())
	if err != nil {
		return nil, err
	}
	who, err := r.fileCallerOf(req.Context(), l, sid)
	if err != nil {
		return nil, err
	}
	if who.readOnly && req.Method != http.MethodGet {
		return nil, api.Errorf(api.CodePermissionDenied, "session %q is read-only: files can be read, listed, stat'ed and watched on its behalf, not changed", sid)
	}
	fr := &fileRequest{who: who, sandbox: l}
	private := 0
	for _, p := range paths {
		p = who.resolve(p)
		if in, ok := who.inPrivate(p); ok {
			p = in
			private++
		}
		fr.paths = append(fr.paths, p)
	}
	switch private {
	case 0:
	case len(paths):
		fr.prefix = who.private
		fr.root, err = sandboxfs.OpenRoot(who.privateHost, l.inst.IDs())
		return fr, err
	default:
		return nil, api.Errorf(api.CodeInvalidArgument, "%s is session %q's private folder: files cannot be moved between it and the rest of the sandbox; copy them", who.private, sid)
	}
	if fr.root, err = l.inst.OpenRoot(); err != nil {
		if errors.Is(err, backend.ErrExited) {
			return nil, api.Errorf(api.CodeConflict, "sandbox %q is not running: its agent (PID 1) has exited; remove it and create a new one", id)
		}
		return nil, err
	}
	if _, ok := l.rec.SessionPermissions[sid]; ok && sid != "" {
		if err := r.actForSession(req, l.rec.container(), sid, fr.root); err != nil {
			fr.root.Close()
			return nil, err
		}
	}
	return fr, nil
}

// fileCallerOf asks the agent for the session sid ("" means none: the sandbox itself).
func (r *Runtime) fileCallerOf(ctx context.Context, l live, sid string) (fileCaller, error) {
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
	host, private := r.sessionPrivate(&l.rec, s)
	return fileCaller{cwd: s.Cwd, uid: s.UID, gid: s.GID, readOnly: s.Permission == api.PermissionRead, private: private, privateHost: host}, nil
}
