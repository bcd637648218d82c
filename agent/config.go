package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/api"
)

// handleConfig makes this agent's container the sandbox the daemon describes: its HOSTNAME
// and sandbox-wide environment, which every new session and process inherits, and the working
// directory they start in. The daemon sends it once, when it gives a started container to a
// sandbox, before any session exists.
func (a *Agent) handleConfig(w http.ResponseWriter, r *http.Request) {
	var cfg api.AgentConfig
	if err := json.NewDecoder(r.Body).Decode(&cfg); err != nil {
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "malformed config: %v", err))
		return
	}
	if !filepath.IsAbs(cfg.Cwd) {
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "cwd must be an absolute path, got %q", cfg.Cwd))
		return
	}
	if err := validateShellEnv(cfg.Env); err != nil {
		api.WriteError(w, err)
		return
	}
	if err := enterCwd(cfg.Cwd); err != nil {
		api.WriteError(w, err)
		return
	}
	a.env.SetBase("HOSTNAME", cfg.Hostname)
	a.env.Replace(cfg.Env)
	a.sessions.SetCwd(cfg.Cwd)
	w.WriteHeader(http.StatusNoContent)
}

// enterCwd makes the sandbox's working directory if it is missing and moves the agent there.
func enterCwd(cwd string) error {
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return fmt.Errorf("make working directory %s: %w", cwd, err)
	}
	if err := os.Chdir(cwd); err != nil {
		return fmt.Errorf("enter working directory %s: %w", cwd, err)
	}
	return nil
}
