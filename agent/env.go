package agent

import (
	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
)

// The sandbox-wide environment lives in the agent (a.env, a *session.SandboxEnv): the daemon
// gives the complete set with PUT /v1/config when it binds the container to a sandbox
// (config.go), and with PUT /v1/env after PATCH …/env and when it reconciles a running
// sandbox at its own start, so the daemon's record stays the truth.
// Sessions read it through the manager; a.env.Effective() is what any new process gets.

func (a *Agent) handlePutEnv(w *httpd.ResponseWriter, r *httpd.Request) error {
	var req api.SandboxEnv
	if err := api.DecodeBody(r.Body, &req, false); err != nil {
		return err
	}
	if err := api.CheckEnv(req.Env); err != nil {
		return err
	}
	a.env.Replace(req.Env)
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

func (a *Agent) handleGetEnv(w *httpd.ResponseWriter, _ *httpd.Request) error {
	api.WriteJSON(w, httpd.StatusOK, api.SandboxEnv{Env: a.env.Vars()})
	return nil
}
