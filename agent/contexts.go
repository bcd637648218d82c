package agent

import (
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nsbox/nsbox/agent/code"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// handleCreateContext starts a code context: with a session's user, working directory and
// exported environment when one is named, else the sandbox's; the request's env and cwd win.
func (a *Agent) handleCreateContext(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateCodeContextRequest
	if err := api.DecodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := api.CheckEnv(req.Env); err != nil {
		return err
	}
	spec := code.Spec{Language: req.Language}
	var env []string
	if req.SessionID != "" {
		st, err := a.sessionState(r.Context(), req.SessionID)
		if err != nil {
			return err
		}
		env, spec.Cwd, spec.User = st.Env, st.Cwd, st.User
	} else {
		env, spec.Cwd, spec.User = a.sandboxDefaults()
	}
	vars := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	maps.Copy(vars, req.Env)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		spec.Env = append(spec.Env, k+"="+vars[k])
	}
	if req.Cwd != "" {
		if !filepath.IsAbs(req.Cwd) {
			req.Cwd = filepath.Join(spec.Cwd, req.Cwd)
		}
		spec.Cwd = filepath.Clean(req.Cwd)
	}
	var err error
	if spec.UID, spec.GID, spec.User, _, err = session.LookupUser(spec.User); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "user of the context: %v", err)
	}
	c, err := a.contexts.Create(spec)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusCreated, c.Info())
	return nil
}

func (a *Agent) handleListContexts(w http.ResponseWriter, _ *http.Request) error {
	api.WriteJSON(w, http.StatusOK, a.contexts.List())
	return nil
}

func (a *Agent) handleDeleteContext(w http.ResponseWriter, r *http.Request) error {
	if err := a.contexts.Delete(r.PathValue("cid")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleRunCode runs a cell and streams its events as Server-Sent Events (named by type),
// the last one `end` with the run's result. The run goes on to its end if the client leaves.
func (a *Agent) handleRunCode(w http.ResponseWriter, r *http.Request) error {
	var req api.RunCodeRequest
	if err := api.DecodeJSON(w, r, &req, false); err != nil {
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
