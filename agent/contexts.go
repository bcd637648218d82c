package agent

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nsbox/nsbox/agent/code"
	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// caller is whom a request works for: a session (its user, working directory and exported
// environment) or else the sandbox itself (its default user — root unless the image or the
// create named one —, its working directory and environment).
type caller struct {
	env      map[string]string
	cwd      string
	user     string
	uid, gid int
}

func (a *Agent) caller(ctx context.Context, sid string) (caller, error) {
	var env []string
	c := caller{env: map[string]string{}}
	if sid != "" {
		st, err := a.sessionState(ctx, sid)
		if err != nil {
			return c, err
		}
		env, c.cwd, c.user = st.Env, st.Cwd, st.User
	} else {
		env, c.cwd, c.user = a.sandboxDefaults()
	}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			c.env[k] = v
		}
	}
	var err error
	if c.uid, c.gid, c.user, _, err = session.LookupUser(c.user); err != nil {
		return c, api.Errorf(api.CodeInvalidArgument, "user %q: %v", c.user, err)
	}
	return c, nil
}

// dir resolves p against the caller's working directory ("" is that directory).
func (c caller) dir(p string) string {
	if p == "" {
		return c.cwd
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.cwd, p)
	}
	return filepath.Clean(p)
}

// environ is the caller's environment as KEY=VALUE, sorted.
func (c caller) environ() []string {
	out := make([]string, 0, len(c.env))
	for _, k := range slices.Sorted(maps.Keys(c.env)) {
		out = append(out, k+"="+c.env[k])
	}
	return out
}

// handleCreateContext starts a code context: with a session's user, working directory and
// exported environment when one is named, else the sandbox's; the request's env and cwd win.
func (a *Agent) handleCreateContext(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.CreateCodeContextRequest
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if err := api.CheckEnv(req.Env); err != nil {
		return err
	}
	who, err := a.caller(r.Context(), req.SessionID)
	if err != nil {
		return err
	}
	maps.Copy(who.env, req.Env)
	spec := code.Spec{Language: req.Language, Cwd: who.dir(req.Cwd), Env: who.environ(), UID: who.uid, GID: who.gid, User: who.user}
	c, err := a.contexts.Create(spec)
	if err != nil {
		return err
	}
	api.WriteJSON(w, httpd.StatusCreated, c.Info())
	return nil
}

func (a *Agent) handleListContexts(w *httpd.ResponseWriter, _ *httpd.Request) error {
	api.WriteJSON(w, httpd.StatusOK, a.contexts.List())
	return nil
}

func (a *Agent) handleDeleteContext(w *httpd.ResponseWriter, r *httpd.Request) error {
	if err := a.contexts.Delete(r.PathValue("cid")); err != nil {
		return err
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

// handleRunCode runs a cell and streams its events as Server-Sent Events (named by type),
// the last one `end` with the run's result. The run goes on to its end if the client leaves.
func (a *Agent) handleRunCode(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.RunCodeRequest
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if req.TimeoutMs < 0 {
		return api.Errorf(api.CodeInvalidArgument, "timeoutMs must not be negative")
	}
	c, err := a.contexts.Get(r.PathValue("cid"))
	if err != nil {
		return err
	}
	events := openEventStream(w)
	res, err := c.Run(req.Code, time.Duration(req.TimeoutMs)*time.Millisecond, func(ev api.CodeEvent) {
		_ = events.Send(ev.Type, ev)
	})
	if err != nil {
		_ = events.SendError(err)
		return nil
	}
	_ = events.Send(api.EventEnd, api.CodeEvent{Type: api.EventEnd, End: res})
	return nil
}
