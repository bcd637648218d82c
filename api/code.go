package api

import "time"

// Code contexts: long-lived Python or JavaScript interpreters in a sandbox that keep their
// state (variables, imports, functions, working directory) between runs, as Jupyter kernels
// do, without Jupyter.

// Code context languages.
const (
	LanguagePython     = "python"
	LanguageJavaScript = "javascript"
)

// CreateCodeContextRequest is the body of POST /v1/sandboxes/{id}/contexts.
type CreateCodeContextRequest struct {
	Language string            `json:"language"`
	Cwd      string            `json:"cwd,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	// SessionID: the context starts with that session's user, working directory and
	// exported environment.
	SessionID string `json:"sessionId,omitempty"`
}

// CodeContext is a code context as the API shows it.
type CodeContext struct {
	ID        string    `json:"id"`
	Language  string    `json:"language"`
	Cwd       string    `json:"cwd"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"createdAt"`
}

// RunCodeRequest is the body of POST /v1/sandboxes/{id}/contexts/{cid}/run.
type RunCodeRequest struct {
	Code      string `json:"code"`
	TimeoutMs int64  `json:"timeoutMs,omitempty"`
}

// CodeError is the exception a run ended with; the context goes on.
type CodeError struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback"`
}

// RunCodeResult is the answer of a run: its output (each stream text when it is valid UTF-8,
// else base64, as its StdoutEncoding or StderrEncoding says, as in ExecResult), its results as
// MIME bundles (`text/plain`, `text/html`, `image/png` as base64, `application/json`, …), and
// its error.
type RunCodeResult struct {
	Stdout         string           `json:"stdout"`
	Stderr         string           `json:"stderr"`
	StdoutEncoding string           `json:"stdoutEncoding"`
	StderrEncoding string           `json:"stderrEncoding"`
	Results        []map[string]any `json:"results"`
	Error          *CodeError       `json:"error,omitempty"`
	DurationMs     int64            `json:"durationMs"`
	// TimedOut: the run was interrupted when timeoutMs passed; the context keeps its state
	// unless Restarted.
	TimedOut bool `json:"timedOut"`
	// Restarted: the interpreter did not come back (or exited) and was started anew: the
	// context's state is gone.
	Restarted bool `json:"restarted"`
	// Truncated: a stream exceeded what one JSON answer keeps (see ExecResult).
	Truncated bool `json:"truncated"`
}

// Output decodes Stdout and Stderr back to bytes.
func (r *RunCodeResult) Output() (stdout, stderr []byte, err error) {
	return decodeOutput(r.Stdout, r.StdoutEncoding, r.Stderr, r.StderrEncoding)
}

// Code run event types besides EventStdout and EventStderr.
// (An exception is not named "error": that name ends a stream that failed, see EventError.)
const (
	EventResult    = "result"
	EventException = "exception"
	EventEnd       = "end"
)

// CodeEvent is one event of a streamed run (Server-Sent Events, named by Type): a stdout or
// stderr chunk (Data and Encoding, as in ExecEvent), a result (Result, a MIME bundle), the
// exception the run ended with (CodeError), and last `end` with the run's result (without
// its output).
type CodeEvent struct {
	Type      string         `json:"type"`
	Data      string         `json:"data,omitempty"`
	Encoding  string         `json:"encoding,omitempty"`
	Result    map[string]any `json:"result,omitempty"`
	CodeError *CodeError     `json:"error,omitempty"`
	End       *RunCodeResult `json:"end,omitempty"`
}

// Bytes decodes an output event's data.
func (e *CodeEvent) Bytes() ([]byte, error) { return DecodeData(e.Data, e.Encoding) }

// GitCheckoutRequest is the body of POST /v1/sandboxes/{id}/git/checkout.
type GitCheckoutRequest struct {
	URL string `json:"url"`
	// Branch to check out (a branch or tag); default the remote's default branch.
	Branch string `json:"branch,omitempty"`
	// TargetDir is where the clone goes (relative: to the session's or sandbox's working
	// directory); it must be missing, empty, or a clone of the same URL (then fetched).
	TargetDir string `json:"targetDir"`
	Depth     int    `json:"depth,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
	// Token authenticates HTTPS: given to git through a credential helper for this call only,
	// never on disk, in the environment, the process list or the logs.
	Token string `json:"token,omitempty"`
}

// GitCheckoutResult is what a checkout left in the target directory.
type GitCheckoutResult struct {
	Dir    string `json:"dir"`
	Branch string `json:"branch"`
	Commit string `json:"commit"`
	// Cloned is false when the target was a clone already and was fetched.
	Cloned bool `json:"cloned"`
}

// GitProgressEvent is a streamed checkout's event: `progress` (git's own progress lines),
// then `done` with the result (SSE, named by Type: EventProgress, EventDone).
type GitProgressEvent struct {
	Type   string             `json:"type"`
	Line   string             `json:"line,omitempty"`
	Result *GitCheckoutResult `json:"result,omitempty"`
}
