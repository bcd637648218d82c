// Package api holds the wire types of nsbox's HTTP API, its error model and the HTTP idiom
// (http.go) that the daemon and the agent share, without net/http (the daemon's adapter to
// it is package httpapi). The daemon-to-agent channel reuses the
// public types; the few that are the agent's alone are in agent.go, marked internal. The
// machine-readable description of the public API is openapi.json beside this file.
package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Sandbox statuses.
const (
	StatusCreating = "creating"
	StatusRunning  = "running"
	StatusPaused   = "paused"
	StatusStopping = "stopping"
	StatusFailed   = "failed"
	// StatusHibernated: no process and no memory left; files, address and ports kept.
	StatusHibernated = "hibernated"
)

// Limits are a sandbox's cgroup limits. Zero means "the daemon's default".
type Limits struct {
	CPUs     float64 `json:"cpus,omitempty"`
	MemoryMB int64   `json:"memoryMB,omitempty"`
	Pids     int64   `json:"pids,omitempty"`
	// DiskMB bounds the sandbox's writable layer (its overlay upper dirs, a copy-on-write
	// workspace's included); 0 means no limit beyond the host's disk.
	DiskMB int64 `json:"diskMB,omitempty"`
}

// CreateSandboxRequest is the body of POST /v1/sandboxes.
type CreateSandboxRequest struct {
	ID     string            `json:"id,omitempty"`
	Image  string            `json:"image,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
	Cwd    string            `json:"cwd,omitempty"`
	Limits Limits            `json:"limits,omitzero"`
	Labels map[string]string `json:"labels,omitempty"`
	// Workspace is a host directory shown at /workspace (see Workspace).
	Workspace *Workspace `json:"workspace,omitempty"`
	// Mounts are host files or directories bind-mounted into the sandbox.
	Mounts []Mount `json:"mounts,omitempty"`
	// Network is the sandbox's network; default mode egress.
	Network *NetworkSpec `json:"network,omitempty"`
	// Lifecycle: pause or remove the sandbox when idle, remove it when old (default: the
	// daemon's --idle-seconds, --on-idle and --ttl-seconds).
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
	// Pull says when an OCI image is pulled from its registry first: "never" (the default:
	// it must be pulled or imported already), "missing" (when it is not stored) or "always".
	Pull string `json:"pull,omitempty"`
	// User is who the sandbox's sessions and processes run as when they name no user:
	// "name", "uid", "uid:gid" or "name:group" of the image's /etc/passwd and /etc/group.
	// Default: the OCI image's User, else root.
	User string `json:"user,omitempty"`
	// RunEntrypoint starts the OCI image's Entrypoint + Cmd as the process "entrypoint"
	// right after the create (an image with neither is a 400).
	RunEntrypoint bool `json:"runEntrypoint,omitempty"`
	// Capabilities are extra capabilities ("CAP_NET_RAW" or "NET_RAW") beyond the default set,
	// from those the daemon allows (--allow-cap).
	Capabilities []string `json:"capabilities,omitempty"`
	// FromSnapshot makes the sandbox from a snapshot (POST /v1/sandboxes/{id}/snapshots): its
	// image and files, and its env, labels, limits, cwd, user and network policy where the
	// request gives none; its sessions come back with their saved state. Image must be empty.
	FromSnapshot string `json:"fromSnapshot,omitempty"`
	// Permissions are per-path rules for the workspace and other paths (see PermissionRule);
	// none: write everywhere. Rules for the workspace need one.
	Permissions []PermissionRule `json:"permissions,omitempty"`
}

// PermissionRule gives the paths a pattern matches a level: none (they do not exist for the
// sandbox), view (listed and stat-able, content unreadable), read (read-only) or write. A
// pattern is an absolute path in the sandbox, or a path relative to /workspace, with shell
// globs per component and ** for any number of components; the most specific matching
// pattern wins, and "**" is the workspace's default.
type PermissionRule struct {
	Pattern string `json:"pattern"`
	Level   string `json:"level"`
}

// PermissionsRequest is the body of PATCH /v1/sandboxes/{id}/permissions: the sandbox's new
// rules, replacing its old ones.
type PermissionsRequest struct {
	Permissions []PermissionRule `json:"permissions"`
}

// EntrypointProcess is the id of the process a create with RunEntrypoint starts.
const EntrypointProcess = "entrypoint"

// Pull policies of a create.
const (
	PullNever   = "never"
	PullMissing = "missing"
	PullAlways  = "always"
)

// Sandbox is a sandbox as the API shows it.
type Sandbox struct {
	ID     string            `json:"id"`
	Image  string            `json:"image"`
	Status string            `json:"status"`
	Error  string            `json:"error,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
	Cwd    string            `json:"cwd"`
	// User is the default user of its sessions and processes ("" is root).
	User      string            `json:"user,omitempty"`
	Limits    Limits            `json:"limits"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	// PID is the host pid of the sandbox's agent (its PID 1), while it runs.
	PID       int        `json:"pid,omitempty"`
	Workspace *Workspace `json:"workspace,omitempty"`
	Mounts    []Mount    `json:"mounts,omitempty"`
	// Network is the sandbox's network mode and address.
	Network SandboxNetwork `json:"network"`
	// Lifecycle is what happens to the sandbox when it is idle or old (nil: nothing).
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
	// Capabilities are the extra capabilities the sandbox was given, as CAP_…, sorted.
	Capabilities []string `json:"capabilities,omitempty"`
	// Permissions are its per-path rules, as last set.
	Permissions []PermissionRule `json:"permissions,omitempty"`
	// FromSnapshot is the snapshot the sandbox was made from, if any.
	FromSnapshot string `json:"fromSnapshot,omitempty"`
}

// Lifecycle is a sandbox's idle and age policy. A sandbox is idle when no API request for it
// (exec, sessions, files, processes, terminals, …) and no preview-proxy request to its ports
// has been seen for IdleSeconds and none is in progress.
type Lifecycle struct {
	IdleSeconds int64 `json:"idleSeconds,omitempty"`
	// OnIdle is "pause" (frozen; a request that needs the sandbox resumes it), "hibernate"
	// (processes stopped, memory freed, sessions' state kept; a request resumes it), "stop"
	// (hibernated without keeping the sessions' state: they start afresh) or "remove".
	OnIdle string `json:"onIdle,omitempty"`
	// TTLSeconds: the sandbox is removed this long after its create, idle or not.
	TTLSeconds int64 `json:"ttlSeconds,omitempty"`
}

// What an idle sandbox becomes.
const (
	OnIdlePause     = "pause"
	OnIdleHibernate = "hibernate"
	OnIdleStop      = "stop"
	OnIdleRemove    = "remove"
)

// DefaultSessionID is the session an exec that names none runs in (started on demand).
const DefaultSessionID = "default"

// ExecRequest is the body of POST /v1/sandboxes/{id}/exec and …/sessions/{sid}/exec. Exactly
// one of Argv and Command is set: Command is shell source run in the session's shell (state
// persists across execs), Argv is one program with its arguments, quoted for that shell.
type ExecRequest struct {
	Argv      []string          `json:"argv,omitempty"`
	Command   string            `json:"command,omitempty"`
	SessionID string            `json:"sessionId,omitempty"` // default: the sandbox's "default" session
	Env       map[string]string `json:"env,omitempty"`       // for this command only
	Cwd       string            `json:"cwd,omitempty"`       // for this command only
	// Stdin is fed to the command, then closed; StdinEncoding "base64" means it is base64.
	Stdin         string `json:"stdin,omitempty"`
	StdinEncoding string `json:"stdinEncoding,omitempty"`
	TimeoutMs     int64  `json:"timeoutMs,omitempty"`
	// KillOnDisconnect kills the command when the client goes away; by default it finishes.
	KillOnDisconnect bool `json:"killOnDisconnect,omitempty"`
	// MaxOutputBytes bounds what is kept of each of stdout and stderr: the rest is read and
	// dropped, and the result says which stream was truncated. 0: DefaultMaxOutputBytes for
	// an answer as one JSON document (at most the daemon's --max-exec-output, which also
	// bounds what a call may ask for), no bound for a streamed exec (Server-Sent Events or
	// frames; the Go SDK's Exec asks for DefaultMaxOutputBytes when given 0).
	MaxOutputBytes int64 `json:"maxOutputBytes,omitempty"`
}

// DefaultMaxOutputBytes is what an exec answered as one JSON document keeps of each stream
// when its request names no MaxOutputBytes.
const DefaultMaxOutputBytes = 128 << 20

// Output encodings of ExecResult's streams. EncodingRaw is never in JSON: it names a stream
// that is not text in the result of a framed answer (EventFrames), where the output came as
// raw bytes, and in the Go SDK's results built from one, whose Stdout or Stderr then holds
// those bytes as they are.
const (
	EncodingUTF8   = "utf-8"
	EncodingBase64 = "base64"
	EncodingRaw    = "raw"
)

// ExecResult is the answer to an exec. Stdout and Stderr carry the bytes exactly, each in its
// own encoding: a stream that is valid UTF-8 is a plain JSON string (NUL and control bytes
// escaped by JSON) and its encoding is "utf-8"; otherwise it is base64 and its encoding is
// "base64" (or, in a result the Go SDK read from frames, the bytes themselves: "raw").
type ExecResult struct {
	ExitCode       int    `json:"exitCode"`
	Stdout         string `json:"stdout"`
	Stderr         string `json:"stderr"`
	StdoutEncoding string `json:"stdoutEncoding"`
	StderrEncoding string `json:"stderrEncoding"`
	TimedOut       bool   `json:"timedOut"`
	Canceled       bool   `json:"canceled"`
	// StdoutTruncated and StderrTruncated: the stream had more than MaxOutputBytes; the
	// result keeps its first bytes (at most that many, cut before a UTF-8 character that
	// would not fit whole). Truncated is either of them.
	StdoutTruncated bool   `json:"stdoutTruncated"`
	StderrTruncated bool   `json:"stderrTruncated"`
	Truncated       bool   `json:"truncated"`
	DurationMs      int64  `json:"durationMs"`
	SessionID       string `json:"sessionId"`
	// SessionEnded: the command ended the session's shell (exit, exec); the session is over.
	SessionEnded bool `json:"sessionEnded"`
	// SessionReset: after a timeout or cancel the shell did not come back and was replaced; the
	// session keeps its id and working directory but lost its variables, functions and aliases.
	// Also set on the first result of the default session after its shell ended while idle
	// (killed from elsewhere) and it was started again, in the sandbox's working directory.
	SessionReset bool `json:"sessionReset"`
	// OOMKilled: the command was killed by the kernel for lack of memory (the sandbox's memory
	// limit): it died of SIGKILL (exit code 137) while the sandbox's count of OOM kills rose.
	OOMKilled bool `json:"oomKilled,omitempty"`
}

// NewExecResult encodes raw output into an ExecResult, each stream in its own encoding.
func NewExecResult(exitCode int, stdout, stderr []byte) ExecResult {
	r := ExecResult{ExitCode: exitCode}
	r.Stdout, r.StdoutEncoding = EncodeData(stdout)
	r.Stderr, r.StderrEncoding = EncodeData(stderr)
	return r
}

// Output decodes Stdout and Stderr back to bytes.
func (r *ExecResult) Output() (stdout, stderr []byte, err error) {
	return decodeOutput(r.Stdout, r.StdoutEncoding, r.Stderr, r.StderrEncoding)
}

// decodeOutput decodes a result's stdout and stderr, each in its encoding, back to bytes.
func decodeOutput(stdoutData, stdoutEncoding, stderrData, stderrEncoding string) (stdout, stderr []byte, err error) {
	if stdout, err = DecodeData(stdoutData, stdoutEncoding); err != nil {
		return nil, nil, fmt.Errorf("decode stdout: %w", err)
	}
	if stderr, err = DecodeData(stderrData, stderrEncoding); err != nil {
		return nil, nil, fmt.Errorf("decode stderr: %w", err)
	}
	return stdout, stderr, nil
}

// CutOutput is the part of b that fits in room bytes (room ≥ 0): all of it when it fits, else
// its first room bytes, less the start of a UTF-8 character that the cut would split, so that
// text cut short stays text.
func CutOutput(b []byte, room int64) []byte {
	if int64(len(b)) <= room {
		return b
	}
	cut := int(room)
	if utf8.RuneStart(b[cut]) {
		return b[:cut]
	}
	// b[cut] may continue a character: cut before it when a valid one spans the cut.
	for i := cut - 1; i >= 0 && i > cut-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if r, size := utf8.DecodeRune(b[i:]); (r != utf8.RuneError || size > 1) && i+size > cut {
				return b[:i]
			}
			break
		}
	}
	return b[:cut]
}

// OutputLimit keeps at most Max bytes of one output stream (Max 0: all of it), cut by
// CutOutput; once a chunk was cut short, every later one is dropped.
type OutputLimit struct {
	Max       int64
	kept      int64
	Truncated bool
}

// Keep returns the part of the next chunk b that the stream keeps.
func (l *OutputLimit) Keep(b []byte) []byte {
	if l.Max <= 0 {
		return b
	}
	if l.Truncated {
		return nil
	}
	kept := CutOutput(b, l.Max-l.kept)
	l.Truncated = len(kept) < len(b)
	l.kept += int64(len(kept))
	return kept
}

// StdinBytes decodes the request's stdin.
func (r *ExecRequest) StdinBytes() ([]byte, error) {
	switch r.StdinEncoding {
	case "", EncodingUTF8:
		return []byte(r.Stdin), nil
	case EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(r.Stdin)
		if err != nil {
			return nil, Errorf(CodeInvalidArgument, "stdin is not valid base64: %v", err)
		}
		return b, nil
	}
	return nil, Errorf(CodeInvalidArgument, "stdinEncoding must be %q or %q, not %q", EncodingUTF8, EncodingBase64, r.StdinEncoding)
}

// Exec event types, in the order a stream carries them.
const (
	EventStart  = "start"
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventExit   = "exit"
)

// ExecEvent is one event of a streamed exec (Server-Sent Events: the SSE event name is Type and
// the data is this object as JSON). Data is text when valid UTF-8, else base64 (Encoding says
// which). The exit event carries the result, with empty Stdout and Stderr.
type ExecEvent struct {
	Type      string      `json:"type"`
	Data      string      `json:"data,omitempty"`
	Encoding  string      `json:"encoding,omitempty"`
	SessionID string      `json:"sessionId,omitempty"`
	Result    *ExecResult `json:"result,omitempty"`
}

// EncodeData carries bytes in a JSON string: as text when they are valid UTF-8, else as base64.
func EncodeData(b []byte) (data, encoding string) {
	if utf8.Valid(b) {
		return string(b), EncodingUTF8
	}
	return base64.StdEncoding.EncodeToString(b), EncodingBase64
}

// DecodeData reverses EncodeData; data in any other encoding (utf-8, raw) is its bytes.
func DecodeData(data, encoding string) ([]byte, error) {
	if encoding == EncodingBase64 {
		return base64.StdEncoding.DecodeString(data)
	}
	return []byte(data), nil
}

// OutputEvent makes a stdout or stderr event from raw bytes.
func OutputEvent(stream string, b []byte) ExecEvent {
	data, encoding := EncodeData(b)
	return ExecEvent{Type: stream, Data: data, Encoding: encoding}
}

// Bytes decodes an output event's data.
func (e *ExecEvent) Bytes() ([]byte, error) { return DecodeData(e.Data, e.Encoding) }

// CreateSessionRequest is the body of POST /v1/sandboxes/{id}/sessions.
type CreateSessionRequest struct {
	ID    string            `json:"id,omitempty"`
	Shell string            `json:"shell,omitempty"` // bash (default when present), sh, or a path
	User  string            `json:"user,omitempty"`  // name, uid, uid:gid or name:group inside the sandbox; default the sandbox's user (root unless the image or create names one)
	Cwd   string            `json:"cwd,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	// Permission is write (default) or read: a read session runs nothing and changes no file
	// (exec, terminal input, file writes, processes in it are refused with 403).
	Permission string `json:"permission,omitempty"`
	// Permissions are per-path rules for this session only, narrower than its sandbox's (a
	// rule that would widen them is refused): its shell and everything it starts, and file
	// calls made on its behalf, get the lower of the two levels. The sandbox must have been
	// created with permissions.
	Permissions []PermissionRule `json:"permissions,omitempty"`
}

// Session states.
const (
	SessionIdle  = "idle"
	SessionBusy  = "busy"
	SessionEnded = "ended"
)

// Session is a session as the API shows it.
type Session struct {
	ID        string    `json:"id"`
	Shell     string    `json:"shell"`
	User      string    `json:"user"`
	UID       int       `json:"uid"` // the user's ids in the sandbox: files the session writes get them
	GID       int       `json:"gid"`
	Cwd       string    `json:"cwd"`
	Status    string    `json:"status"`
	ExitCode  int       `json:"exitCode"`
	PID       int       `json:"pid"`
	CreatedAt time.Time `json:"createdAt"`
	// Permission is read or write (see CreateSessionRequest).
	Permission string `json:"permission"`
	// PrivateDir is the session's private folder, ~/.private of its user ("" without one):
	// only the session's processes, and file calls made on its behalf, reach what is in it.
	PrivateDir string `json:"privateDir,omitempty"`
}

// Terminal event types: what a terminal stream carries besides output.
const (
	TerminalOutput  = "output"
	TerminalSkipped = "skipped" // output fell off the scrollback ring before it could be sent
	TerminalEnded   = "ended"   // the session ended
	TerminalResize  = "resize"  // a client's request to resize the terminal
	// TerminalLive follows the replayed scrollback: what came before it was written before
	// the client attached, what follows is live. A terminal emulator should not send input
	// (key presses, focus and mouse reports) until it has drawn the replay: modes the replay
	// turns on and off again would otherwise report into the shell.
	TerminalLive = "live"
	// TerminalReadOnly is the first notice of a terminal the client watches but cannot type
	// into (a read token, or a read-only session); its data says why.
	TerminalReadOnly = "readonly"
)

// TerminalEvent is one event of a session's terminal stream (agent to daemon). On the
// WebSocket, output goes as binary frames and the other events as text frames of this JSON.
type TerminalEvent struct {
	Type     string `json:"type"`
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	Cursor   int64  `json:"cursor"`
	Skipped  int64  `json:"skipped,omitempty"`
}

// Bytes decodes an output event's data.
func (e *TerminalEvent) Bytes() ([]byte, error) { return DecodeData(e.Data, e.Encoding) }

// TerminalControl is a text frame a terminal client sends; binary frames are typed input.
type TerminalControl struct {
	Type string `json:"type"` // "resize"
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// FileInfo describes one file as the sandbox sees it (the file API's answers).
type FileInfo struct {
	Name string `json:"name"`
	Path string `json:"path"` // absolute, in the sandbox
	// Type is "file", "dir", "symlink" or "other" (device, FIFO, socket).
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode is the permission bits with setuid, setgid and sticky, in octal ("0644").
	Mode string `json:"mode"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	// Owner and Group are the names the sandbox's /etc/passwd and /etc/group give UID
	// and GID; empty when they have none.
	Owner      string    `json:"owner,omitempty"`
	Group      string    `json:"group,omitempty"`
	MTime      time.Time `json:"mtime"`
	LinkTarget string    `json:"linkTarget,omitempty"` // a symlink's target, as written
}

// IsDir reports whether the entry is a directory.
func (f *FileInfo) IsDir() bool { return f.Type == "dir" }

// FileEvent is a change under a watched directory: Type is "create", "modify", "delete",
// "move" (with OldPath), "attrib" or "overflow" (events were lost).
type FileEvent struct {
	Type    string `json:"type"`
	Path    string `json:"path"` // in the sandbox
	OldPath string `json:"oldPath,omitempty"`
	IsDir   bool   `json:"isDir"`
}

// Version is the answer to GET /v1/version.
type Version struct {
	Version string `json:"version"`
	// Checkpoint says whether hibernate's memory: true (CRIU) works on this host, and why not.
	Checkpoint Checkpoint `json:"checkpoint"`
}

// Image is an entry of GET /v1/images.
type Image struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Warm        int    `json:"warm"` // started containers ready to become sandboxes
	// ID and Size are set for OCI images (see ImageInfo).
	ID   string `json:"id,omitempty"`
	Size int64  `json:"size,omitempty"`
}

// ImageInfo is an OCI image as GET /v1/images/{name} shows it; the daemon records images in
// the same form.
type ImageInfo struct {
	// Names are its references with a tag, e.g. docker.io/library/alpine:3.20; an image
	// whose names all moved to other images or were removed has none ("dangling").
	Names []string `json:"names"`
	// RepoDigests are its references by the digest the registry served (for a multi-arch
	// image, the index's), e.g. docker.io/library/alpine@sha256:….
	RepoDigests []string `json:"repoDigests,omitempty"`
	// Digest is its manifest's (for this platform); images imported from a `docker save`
	// archive without an OCI layout have no manifest, and no digest.
	Digest string `json:"digest,omitempty"`
	ID     string `json:"id"` // the digest of its config
	// Layers are the digests of its uncompressed layers (diff IDs), base first.
	Layers   []string    `json:"layers"`
	Size     int64       `json:"size"`     // its layers' bytes as stored (0 when unknown)
	Platform string      `json:"platform"` // os/architecture[/variant]
	Created  time.Time   `json:"created,omitzero"`
	Stored   time.Time   `json:"stored"` // when it was pulled or imported
	Config   ImageConfig `json:"config"`
}

// ImageConfig is what an OCI image's config says about the processes run from it.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"` // KEY=VALUE
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// PullImageRequest is the body of POST /v1/images/pull.
type PullImageRequest struct {
	Ref string `json:"ref"` // e.g. alpine:3.20, ghcr.io/org/app@sha256:…
	// Auth are credentials for the registry; without them the daemon's docker config.json
	// (and credential helpers) are used, and then anonymous access.
	Auth *RegistryAuth `json:"auth,omitempty"`
}

// RegistryAuth are credentials for a registry: a username and password, or a token.
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identityToken,omitempty"` // an OAuth2 refresh token
	RegistryToken string `json:"registryToken,omitempty"` // a bearer token sent as is
}

// Layer statuses in ImageProgress.
const (
	LayerExists      = "exists"      // already stored
	LayerDownloading = "downloading" // Current of Total bytes read
	LayerDone        = "done"        // stored
)

// ImageProgress is the state of one layer of a pull or import.
type ImageProgress struct {
	Layer   string `json:"layer"` // its digest as the registry or archive stores it
	Status  string `json:"status"`
	Current int64  `json:"current"`
	Total   int64  `json:"total"`
}

// Image pull events, streamed with Accept: text/event-stream.
const (
	EventProgress = "progress"
	EventDone     = "done"
)

// ImagePullEvent is an event of POST /v1/images/pull's stream: "progress" for a layer, then
// "done" with the image (or an "error" event).
type ImagePullEvent struct {
	Type string `json:"type"`
	*ImageProgress
	Image *ImageInfo `json:"image,omitempty"`
}

// ImportImagesResult is the answer to POST /v1/images/import.
type ImportImagesResult struct {
	Images []ImageInfo `json:"images"`
}

// PruneImagesResult is the answer to POST /v1/images/prune.
type PruneImagesResult struct {
	Images []string `json:"images"` // IDs of the images removed
	Layers []string `json:"layers"` // digests of the layers removed
}

// Error codes, each with one HTTP status.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeNotFound        = "not_found"
	CodeConflict        = "conflict"
	// CodeTerminalBusy: a command for a bash session whose terminal runs an interactive
	// program (vi, top) that did not give the prompt back in time.
	CodeTerminalBusy = "terminal_busy"
	CodeTooLarge     = "payload_too_large"
	CodeInternal     = "internal"
	CodeUnavailable  = "unavailable"
	// CodeUnauthenticated: a TCP request without a valid token (missing, unknown, expired,
	// revoked); a valid token outside its scope is CodePermissionDenied.
	CodeUnauthenticated = "unauthenticated"
	// CodePermissionDenied and CodeInsufficientStorage come from file operations in a sandbox.
	CodePermissionDenied    = "permission_denied"
	CodeInsufficientStorage = "insufficient_storage"
	// CodeRangeNotSatisfiable and CodePreconditionFailed come from conditional file reads.
	CodeRangeNotSatisfiable = "range_not_satisfiable"
	CodePreconditionFailed  = "precondition_failed"
)

var codeStatus = map[string]int{
	CodeInvalidArgument: 400,
	CodeNotFound:        404,
	CodeConflict:        409,
	CodeTerminalBusy:    409,
	CodeTooLarge:        413,
	CodeInternal:        500,
	CodeUnavailable:     503,
	CodeUnauthenticated: 401,

	CodePermissionDenied:    403,
	CodeInsufficientStorage: 507,
	CodeRangeNotSatisfiable: 416,
	CodePreconditionFailed:  412,
}

// Error is an API error; on the wire it is {"error": {"code": …, "message": …}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorBody is the JSON envelope of an Error.
type ErrorBody struct {
	Error *Error `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// HTTPStatus is the status code that goes with the error's code.
func (e *Error) HTTPStatus() int {
	if s, ok := codeStatus[e.Code]; ok {
		return s
	}
	return 500
}

// Errorf makes an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is, or wraps, an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// SandboxEnv is a sandbox's whole environment: the answer of GET …/env and the body of the
// agent's PUT /v1/env.
type SandboxEnv struct {
	Env map[string]string `json:"env"`
}

// PatchEnvRequest is the body of PATCH /v1/sandboxes/{id}/env: Set adds or replaces
// variables, Unset removes them (a name may not be in both).
type PatchEnvRequest struct {
	Set   map[string]string `json:"set,omitempty"`
	Unset []string          `json:"unset,omitempty"`
}

// Network modes of a sandbox.
const (
	NetworkNone   = "none"   // loopback only
	NetworkEgress = "egress" // the world beyond the host (not other sandboxes, the host or 169.254.0.0/16)
	NetworkAllow  = "allow"  // only the listed IPv4 networks
)

// NetworkSpec is a sandbox's requested network: the network part of a create and the body of
// PATCH /v1/sandboxes/{id}/network. Allow lists IPv4 CIDRs: in mode allow the only networks
// the sandbox reaches; in mode egress the private networks (RFC 1918, 100.64.0.0/10, the
// host's LAN) it may reach besides the internet. Link-local and metadata addresses are never
// reachable and cannot be listed.
type NetworkSpec struct {
	Mode  string   `json:"mode,omitempty"` // default egress
	Allow []string `json:"allow,omitempty"`
}

// SandboxNetwork is a sandbox's network as the API shows it. IP is its IPv4 address (none in
// mode none until it has had a networked mode).
type SandboxNetwork struct {
	Mode  string   `json:"mode"`
	IP    string   `json:"ip,omitempty"`
	Allow []string `json:"allow,omitempty"`
}

// Port protocols.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// ExposePortRequest is the body of POST /v1/sandboxes/{id}/ports. HostPort 0 means: choose one
// from the daemon's range. HostIP empty means 127.0.0.1 (the host alone), or every host address
// when Public; 0.0.0.0 means every host address.
type ExposePortRequest struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol,omitempty"` // tcp (default) or udp
	HostPort int    `json:"hostPort,omitempty"`
	HostIP   string `json:"hostIP,omitempty"`
	// Public: the port is for anyone: on every host address unless HostIP says otherwise, and
	// served by the preview proxy without a token.
	Public bool `json:"public,omitempty"`
}

// ExposedPort is a sandbox port exposed on a host port. Token is what the preview proxy
// requires for a TCP port that is not public. URL reaches the port: through the preview
// proxy when the daemon has one, else on the host port.
type ExposedPort struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	HostPort int    `json:"hostPort"`
	HostIP   string `json:"hostIP"`
	URL      string `json:"url"`
	Public   bool   `json:"public"`
	Token    string `json:"token,omitempty"`
}

// StartProcessRequest is the body of POST /v1/sandboxes/{id}/processes. Exactly one of Command
// (run by /bin/sh -c) and Argv (run directly, the program looked up in PATH) is set.
type StartProcessRequest struct {
	Command   string   `json:"command,omitempty"`
	Argv      []string `json:"argv,omitempty"`
	ID        string   `json:"id,omitempty"`        // default: generated ("p-1", "p-2", …)
	SessionID string   `json:"sessionId,omitempty"` // inherit this session's cwd, environment and user at start
	// Env overlays the sandbox's environment (or the session's, with SessionID).
	Env  map[string]string `json:"env,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`  // relative to the session's or sandbox's directory
	User string            `json:"user,omitempty"` // name, uid, uid:gid or name:group inside the sandbox; default the session's user, else the sandbox's
	// Stdin is "null" (default: /dev/null) or "pipe" (written with POST …/stdin).
	Stdin string `json:"stdin,omitempty"`
	// LogBytes is the size of the output ring; default 4 MiB, at most 256 MiB, and at most the
	// sandbox's log budget (a quarter of its memory limit), to which a larger one is reduced.
	LogBytes int64 `json:"logBytes,omitempty"`
	// Restart "on-resume" starts the process again when its sandbox resumes from hibernation
	// while it ran; default "" (it stays stopped by hibernation).
	Restart string `json:"restart,omitempty"`
}

// RestartOnResume is the restart policy of a process started again after a hibernation.
const RestartOnResume = "on-resume"

// Process stdin modes.
const (
	StdinNull = "null"
	StdinPipe = "pipe"
)

// Process statuses.
const (
	ProcessRunning = "running" // it, or a process of its group (a child it left), still runs
	ProcessExited  = "exited"  // ended by itself: see ExitCode
	ProcessKilled  = "killed"  // ended by a signal: see Signal
	ProcessFailed  = "failed"  // could not be started: see Error
	ProcessStopped = "stopped" // was running when its sandbox hibernated: see Error
)

// Process is a long-running process of a sandbox as the API shows it.
type Process struct {
	ID        string    `json:"id"`
	PID       int       `json:"pid"` // inside the sandbox; 0 when it failed to start
	Status    string    `json:"status"`
	Command   string    `json:"command,omitempty"`
	Argv      []string  `json:"argv,omitempty"`
	SessionID string    `json:"sessionId,omitempty"`
	User      string    `json:"user"`
	Cwd       string    `json:"cwd"`
	Stdin     string    `json:"stdin"`
	ExitCode  int       `json:"exitCode"`         // exited: its code; killed: 128+signal; else 0
	Signal    string    `json:"signal,omitempty"` // killed: the signal's name, e.g. "SIGTERM"
	Error     string    `json:"error,omitempty"`  // failed: why it could not start
	StartedAt time.Time `json:"startedAt"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
	LogBytes  int64     `json:"logBytes"` // size of its output ring (as asked, or the log budget)
	LogEnd    int64     `json:"logEnd"`   // cursor after the last byte of output so far
	// OOMKilled: killed (SIGKILL) by the kernel for lack of memory (the sandbox's memory limit),
	// or, for a command, its shell reported so (exit code 137).
	OOMKilled bool `json:"oomKilled,omitempty"`
}

// SignalName is a signal in a request: a name ("TERM", "SIGKILL") or a number. A JSON number
// is accepted and kept as its decimal text.
type SignalName string

// UnmarshalJSON accepts a JSON string or number.
func (s *SignalName) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		*s = SignalName(name)
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("signal must be a name such as \"TERM\" or a number, not %s", b)
	}
	*s = SignalName(strconv.Itoa(n))
	return nil
}

// KillProcessRequest is the body of POST …/processes/{pid}/kill and …/processes/kill.
type KillProcessRequest struct {
	Signal SignalName `json:"signal,omitempty"` // default TERM
	// GraceMs: after TERM or INT, how long the process group gets before SIGKILL; default 5000.
	GraceMs *int64 `json:"graceMs,omitempty"`
}

// Process event types besides EventStdout, EventStderr and EventExit.
const EventSkipped = "skipped"

// ProcessEvent is one piece of a process's output log: a stdout or stderr chunk (Data, text when
// valid UTF-8, else base64), bytes that fell off the ring before they were read (skipped), or,
// last in a followed stream, exit with the process. Cursor is the log offset after the event.
type ProcessEvent struct {
	Type     string   `json:"type"`
	Data     string   `json:"data,omitempty"`
	Encoding string   `json:"encoding,omitempty"`
	Cursor   int64    `json:"cursor"`
	Skipped  int64    `json:"skipped,omitempty"`
	Process  *Process `json:"process,omitempty"`
}

// Bytes decodes an output event's data.
func (e *ProcessEvent) Bytes() ([]byte, error) { return DecodeData(e.Data, e.Encoding) }

// ProcessLogs is the answer to GET …/processes/{pid}/logs without follow.
type ProcessLogs struct {
	Chunks  []ProcessEvent `json:"chunks"`  // stdout and stderr chunks in the order they were read
	Skipped int64          `json:"skipped"` // bytes between the asked cursor and the oldest kept byte
	Cursor  int64          `json:"cursor"`  // where the next read starts
	Status  string         `json:"status"`  // the process's status
	// Done: the process has ended and its output has been read up to Cursor; nothing more comes.
	Done bool `json:"done"`
}

// WaitProcessRequest is the body of POST …/processes/{pid}/wait: with no condition it waits
// for the process to end; Log waits for an output line matching a regular expression (read
// from Cursor); Port waits until 127.0.0.1:Port in the sandbox accepts connections, and with
// HTTPPath until an HTTP GET of that path answers a status below 400.
type WaitProcessRequest struct {
	TimeoutMs int64  `json:"timeoutMs,omitempty"` // default 30000
	Log       string `json:"log,omitempty"`
	Cursor    int64  `json:"cursor,omitempty"`
	Port      int    `json:"port,omitempty"`
	HTTPPath  string `json:"httpPath,omitempty"`
}

// WaitProcessResult is the answer to a wait.
type WaitProcessResult struct {
	Condition string `json:"condition"` // exit, log, port or http
	Met       bool   `json:"met"`
	TimedOut  bool   `json:"timedOut"`
	Reason    string `json:"reason,omitempty"` // why it was not met
	Match     string `json:"match,omitempty"`  // log: the line that matched
	// Cursor: log: the log offset after the matched line, to wait for the next match from.
	Cursor  int64   `json:"cursor"`
	Process Process `json:"process"`
}
