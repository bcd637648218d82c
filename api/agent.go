package api

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Internal: the daemon-to-agent protocol only. The types below are not part of the public
// API (api/openapi.json does not describe them) and may change in any release; the rest of
// the agent's protocol reuses the public types (sessions, exec, processes, terminal events,
// SandboxEnv), so the daemon can relay them as they are.

// Health is what the agent answers on GET /v1/health.
type Health struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
	// Configured: the agent was started with its sandbox's AgentConfig and took it;
	// ConfigError: it was started with one and could not take it (a cwd that cannot be made,
	// a user its /etc/passwd lacks), as PUT /v1/config would have answered.
	Configured  bool   `json:"configured,omitempty"`
	ConfigError *Error `json:"configError,omitempty"`
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

// AgentNotice is one event ("notice") of the agent's GET /v1/watch stream: the sandbox's open
// sessions and running processes after a change (the first notice: as they are when the stream
// opens), and what ended, when that is the change.
type AgentNotice struct {
	Sessions  int `json:"sessions"`
	Processes int `json:"processes"`
	// SessionEnded is a session that ended: deleted, or its shell exited.
	SessionEnded *SessionEnd `json:"sessionEnded,omitempty"`
	// ProcessExited is a process that ended, or failed to start.
	ProcessExited *Process `json:"processExited,omitempty"`
}

// MarshalJSON writes the notice as encoding/json would, building only what it holds: an idle
// agent's notices are counts, and encoding/json's encoders for the whole type (Process's
// among them) are ~14 kB of heap that an agent, which never collects, would keep.
func (n AgentNotice) MarshalJSON() ([]byte, error) {
	b := strconv.AppendInt([]byte(`{"sessions":`), int64(n.Sessions), 10)
	b = strconv.AppendInt(append(b, `,"processes":`...), int64(n.Processes), 10)
	for _, field := range []struct {
		name string
		v    any
		set  bool
	}{{"sessionEnded", n.SessionEnded, n.SessionEnded != nil}, {"processExited", n.ProcessExited, n.ProcessExited != nil}} {
		if !field.set {
			continue
		}
		data, err := json.Marshal(field.v)
		if err != nil {
			return nil, fmt.Errorf("agent notice's %s: %w", field.name, err)
		}
		b = append(append(b, `,"`+field.name+`":`...), data...)
	}
	return append(b, '}'), nil
}

// SessionEnd is a session that ended and why.
type SessionEnd struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// Why a session ended (SessionEnd.Reason, the session.ended event's reason).
const (
	SessionDeleted     = "deleted"
	SessionShellExited = "its shell exited"
)

// AgentNoticeEvent is the name of the watch stream's events.
const AgentNoticeEvent = "notice"
