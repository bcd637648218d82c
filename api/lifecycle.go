package api

import "time"

// HibernateRequest is the body of POST /v1/sandboxes/{id}/hibernate (optional).
type HibernateRequest struct {
	// Memory checkpoints the processes' memory too (CRIU), so they go on after resume; refused
	// where the daemon found no working CRIU (GET /v1/version's checkpoint).
	Memory bool `json:"memory,omitempty"`
}

// Checkpoint is whether the daemon can checkpoint processes' memory (CRIU).
type Checkpoint struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"` // why not, when not available
}

// SessionState is one session's state as the agent saved it: its options and a script that
// restores its directory, exported variables, shell options, aliases and functions.
type SessionState struct {
	ID       string `json:"id"`
	Shell    string `json:"shell,omitempty"`
	User     string `json:"user,omitempty"` // uid:gid
	ReadOnly bool   `json:"readOnly,omitempty"`
	Script   string `json:"script"`
	History  string `json:"history,omitempty"`
}

// SavedProcess is one process as the agent saved it: how it was started, how it was, and the
// end of its log.
type SavedProcess struct {
	Request StartProcessRequest `json:"request"`
	Info    Process             `json:"info"`
	Log     []ProcessEvent      `json:"log,omitempty"`
}

// SandboxState is what the agent saves before its sandbox's container goes (hibernation,
// snapshots) and restores in a new one: the agent's internal API, kept by the daemon.
type SandboxState struct {
	Sessions  []SessionState `json:"sessions,omitempty"`
	Processes []SavedProcess `json:"processes,omitempty"`
}

// SaveStateRequest is the body of the agent's POST /v1/state/save.
type SaveStateRequest struct {
	Sessions  bool `json:"sessions,omitempty"`  // save every session's state
	Processes bool `json:"processes,omitempty"` // save every process and the end of its log
	// Stop stops the process group of every running process (SIGSTOP) once the sessions are
	// saved and before the processes are, so that nothing they write after the save is lost:
	// a hibernation kills them next. POST /v1/state/continue undoes it (a hibernation that
	// failed after the save), as the agent itself does if it still runs 10 s later. An agent
	// from before this field refuses the request (an unknown field).
	Stop bool `json:"stop,omitempty"`
}

// Snapshot is a sandbox's files and sessions' state at one moment: its writable layer,
// stored as an immutable layer with the image layers, plus what a sandbox made from it gets.
type Snapshot struct {
	ID      string `json:"id"`
	Sandbox string `json:"sandbox"` // the sandbox it was taken of (which may be gone)
	Name    string `json:"name,omitempty"`
	Image   string `json:"image"` // the image under its layer
	Layer   string `json:"layer"` // the layer's digest (sha256 of its tar stream)
	// SizeBytes is the size of the layer's tar stream.
	SizeBytes int64     `json:"sizeBytes"`
	Sessions  int       `json:"sessions"` // how many sessions' state it holds
	CreatedAt time.Time `json:"createdAt"`
}

// CreateSnapshotRequest is the body of POST /v1/sandboxes/{id}/snapshots (optional).
type CreateSnapshotRequest struct {
	Name string `json:"name,omitempty"`
}

// ForkRequest is the body of POST /v1/sandboxes/{id}/fork.
type ForkRequest struct {
	// Count is how many sandboxes to make, 1-100 (default 1).
	Count int `json:"count,omitempty"`
	// Prefix names them PREFIX-1 … PREFIX-COUNT; default: generated ids.
	Prefix string `json:"prefix,omitempty"`
	// Name is the name of the snapshot the fork takes.
	Name string `json:"name,omitempty"`
}

// ForkResult is the answer of a fork: the snapshot it took and the sandboxes made from it.
type ForkResult struct {
	Snapshot  Snapshot  `json:"snapshot"`
	Sandboxes []Sandbox `json:"sandboxes"`
}

// MaxFork is the most sandboxes one fork makes.
const MaxFork = 100
