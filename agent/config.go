package agent

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/agent/httpd"
	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// handleConfig makes this agent's container the sandbox the daemon describes (configure). The
// daemon sends it once, when it gives a started container to a sandbox, before any session
// exists; a container started for a sandbox gets its configuration at its start instead
// (bootConfig).
func (a *Agent) handleConfig(w *httpd.ResponseWriter, r *httpd.Request) error {
	var cfg api.AgentConfig
	if err := api.DecodeBody(r.Body, &cfg, false); err != nil {
		return err
	}
	if err := a.configure(cfg); err != nil {
		return err
	}
	w.WriteHeader(httpd.StatusNoContent)
	return nil
}

// bootConfig configures the agent from the configuration its container was started with (the
// --config-fd file, read to its end). What it finds wrong is answered by GET /v1/health, for the
// daemon to fail the create with.
func (a *Agent) bootConfig(r io.Reader) {
	var cfg api.AgentConfig
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	err := dec.Decode(&cfg)
	if err != nil {
		err = api.Errorf(api.CodeInternal, "the agent's configuration at its start: %v", err)
	} else {
		err = a.configure(cfg)
	}
	var apiErr *api.Error
	switch {
	case err == nil:
		a.configured = true
	case errors.As(err, &apiErr):
		a.configErr = apiErr
	default:
		a.configErr = api.Errorf(api.CodeInternal, "%v", err)
	}
}

// configure makes the agent's container the sandbox cfg describes: its HOSTNAME and
// sandbox-wide environment, which every new session and process inherits, and the working
// directory they start in and the user they run as unless they name others.
func (a *Agent) configure(cfg api.AgentConfig) error {
	if !filepath.IsAbs(cfg.Cwd) {
		return api.Errorf(api.CodeInvalidArgument, "cwd must be an absolute path, got %q", cfg.Cwd)
	}
	if err := api.CheckEnv(cfg.Env); err != nil {
		return err
	}
	if _, _, _, _, err := session.LookupUser(cfg.User); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "the sandbox's user: %v", err)
	}
	if err := enterCwd(cfg.Cwd); err != nil {
		return err
	}
	a.env.SetBase("HOSTNAME", cfg.Hostname)
	a.env.Replace(cfg.Env)
	a.sessions.SetDefaults(cfg.Cwd, cfg.User)
	// The default session, which nearly every sandbox's first command uses, starts now, in
	// the background: the sandbox is whole (hostname, env, cwd), and the shell is ready, or
	// nearly, when that command comes. A warm container's runs already (unless SetDefaults
	// ended it): its first command brings it the sandbox's environment, as any command does
	// after a change.
	go func() {
		if _, err := a.sessions.Default(); err != nil {
			// An image without a shell, say: the sessions' requests say so.
			a.log.Info("no default session", "err", err)
		}
	}()
	return nil
}

// enterCwd makes the sandbox's working directory if it is missing and moves the agent there.
// A directory that cannot be made or entered (a file, a read-only place) is the request's
// mistake.
func enterCwd(cwd string) error {
	err := os.MkdirAll(cwd, 0o755)
	if err == nil {
		err = os.Chdir(cwd)
	}
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "cwd %s cannot be used in this sandbox (%v); choose a directory that exists or can be made there, such as one under /workspace or /tmp", cwd, err)
	}
	return nil
}
