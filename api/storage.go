package api

// Workspace modes.
const (
	// WorkspaceCOW: the host directory is the read-only lower layer of an overlay; the
	// sandbox's changes go to its own upper dir and can be listed (diff) and exported (tar).
	WorkspaceCOW = "cow"
	// WorkspaceRW: the host directory is bind-mounted read-write; changes go to the host.
	WorkspaceRW = "rw"
)

// WorkspacePath is where a sandbox sees its workspace.
const WorkspacePath = "/workspace"

// Workspace is a host directory a sandbox sees at /workspace (AgentFense's from_local).
type Workspace struct {
	HostPath string `json:"hostPath"`       // an existing absolute directory on the host
	Mode     string `json:"mode,omitempty"` // "cow" (default) or "rw"
}

// Mount is a host file or directory bind-mounted into a sandbox.
type Mount struct {
	Source   string `json:"source"` // absolute host path; must exist
	Target   string `json:"target"` // absolute path inside the sandbox
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Kinds of WorkspaceChange.
const (
	ChangeAdded    = "added"
	ChangeModified = "modified"
	ChangeDeleted  = "deleted"
)

// WorkspaceChange is one entry of a copy-on-write workspace's diff against its host
// directory. Path is relative to the workspace root (the host directory, /workspace inside).
// A deleted directory stands for its whole subtree; an entry whose type changed (a file
// replaced by a directory) is listed as deleted and then added.
type WorkspaceChange struct {
	Path string `json:"path"`
	Kind string `json:"kind"` // added, modified, deleted
	// Type is "file", "dir", "symlink" or "other": the sandbox's entry for added and
	// modified, the host's for deleted.
	Type string `json:"type"`
	Size int64  `json:"size"` // the sandbox's size in bytes; 0 for deleted entries and directories
}
