package agent

import (
	"encoding/json"
	"net/http"

	"github.com/nsbox/nsbox/api"
)

// The sandbox-wide environment lives in the agent (a.env, a *session.SandboxEnv): the daemon
// gives the complete set with PUT /v1/config when it binds the container to a sandbox
// (config.go), and with PUT /v1/env after PATCH …/env and when it reconciles a running
// sandbox at its own start, so the daemon's record stays the truth.
// Sessions read it through the manager; a.env.Effective() is what any new process gets.

func (a *Agent) handlePutEnv(w http.ResponseWriter, r *http.Request) {
	var req api.SandboxEnv
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "malformed env request: %v", err))
		return
	}
	if err := validateShellEnv(req.Env); err != nil {
		api.WriteError(w, err)
		return
	}
	a.env.Replace(req.Env)
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agent) handleGetEnv(w http.ResponseWriter, _ *http.Request) {
	api.WriteJSON(w, http.StatusOK, api.SandboxEnv{Env: a.env.Vars()})
}
