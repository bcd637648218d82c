package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/api"
)

// handleConfig makes this agent's container the sandbox the daemon describes: the
// environment every new session and process inherits, and the working directory they start
// in. The daemon sends it once, when it gives a started container to a sandbox, before any
// session exists.
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
	if err := applyConfig(cfg); err != nil {
		api.WriteError(w, err)
		return
	}
	a.sessions.SetCwd(cfg.Cwd)
	w.WriteHeader(http.StatusNoContent)
}

// applyConfig replaces the agent's environment and moves it to the working directory.
func applyConfig(cfg api.AgentConfig) error {
	os.Clearenv()
	for k, v := range cfg.Env {
		if err := os.Setenv(k, v); err != nil {
			return api.Errorf(api.CodeInvalidArgument, "environment variable %q: %v", k, err)
		}
	}
	if err := os.MkdirAll(cfg.Cwd, 0o755); err != nil {
		return fmt.Errorf("make working directory %s: %w", cfg.Cwd, err)
	}
	if err := os.Chdir(cfg.Cwd); err != nil {
		return fmt.Errorf("enter working directory %s: %w", cfg.Cwd, err)
	}
	return nil
}
