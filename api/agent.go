package api

// Internal: the daemon-to-agent protocol only. The types below are not part of the public
// API (api/openapi.json does not describe them) and may change in any release; the rest of
// the agent's protocol reuses the public types (sessions, exec, processes, terminal events,
// SandboxEnv), so the daemon can relay them as they are.

// Health is what the agent answers on GET /v1/health.
type Health struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
}

// AgentConfig is what the daemon tells an agent on PUT /v1/config when its container becomes
// a sandbox: the sandbox's id (HOSTNAME), its sandbox-wide environment (as PUT /v1/env sets
// it later), its working directory (made if missing) and the user its sessions and processes
// run as when they name none ("" is root; a user the sandbox's /etc/passwd lacks is a 400).
type AgentConfig struct {
	Hostname string            `json:"hostname"`
	Env      map[string]string `json:"env"`
	Cwd      string            `json:"cwd"`
	User     string            `json:"user,omitempty"`
}
