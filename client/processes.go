package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nsbox/nsbox/api"
)

func processesPath(id, pid, sub string, q url.Values) string {
	p := "/v1/sandboxes/" + url.PathEscape(id) + "/processes"
	if pid != "" {
		p += "/" + url.PathEscape(pid)
	}
	if sub != "" {
		p += "/" + sub
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// StartProcess starts a long-running process in a sandbox. A program that cannot be started
// still answers a process, with status "failed" and the reason in Error.
func (c *Client) StartProcess(ctx context.Context, id string, req api.StartProcessRequest) (*api.Process, error) {
	var p api.Process
	return &p, c.do(ctx, http.MethodPost, processesPath(id, "", "", nil), req, &p)
}

// ListProcesses lists a sandbox's processes, filtered by status and session when not "".
func (c *Client) ListProcesses(ctx context.Context, id, status, sessionID string) ([]api.Process, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if sessionID != "" {
		q.Set("sessionId", sessionID)
	}
	return list[api.Process](ctx, c, http.MethodGet, processesPath(id, "", "", q), nil)
}

// GetProcess returns one process.
func (c *Client) GetProcess(ctx context.Context, id, pid string) (*api.Process, error) {
	var p api.Process
	return &p, c.do(ctx, http.MethodGet, processesPath(id, pid, "", nil), nil, &p)
}

// KillProcess signals a process's group (see api.KillProcessRequest) and returns it.
func (c *Client) KillProcess(ctx context.Context, id, pid string, req api.KillProcessRequest) (*api.Process, error) {
	var p api.Process
	return &p, c.do(ctx, http.MethodPost, processesPath(id, pid, "kill", nil), req, &p)
}

// KillAllProcesses signals every running process and returns them.
func (c *Client) KillAllProcesses(ctx context.Context, id string, req api.KillProcessRequest) ([]api.Process, error) {
	return list[api.Process](ctx, c, http.MethodPost, processesPath(id, "kill", "", nil), req)
}

// RemoveProcess forgets a process that has ended.
func (c *Client) RemoveProcess(ctx context.Context, id, pid string) error {
	return c.do(ctx, http.MethodDelete, processesPath(id, pid, "", nil), nil, nil)
}

// RemoveFinishedProcesses forgets every process that has ended and returns them.
func (c *Client) RemoveFinishedProcesses(ctx context.Context, id string) ([]api.Process, error) {
	return list[api.Process](ctx, c, http.MethodDelete, processesPath(id, "", "", nil), nil)
}

// LogsOptions are which part of a process's output to read.
type LogsOptions struct {
	Cursor int64 // read after this cursor (0: from the oldest byte kept)
	Limit  int   // at most this many bytes (0: the daemon's default of 4 MiB); not for a follow
}

// ProcessLogs reads a process's output.
func (c *Client) ProcessLogs(ctx context.Context, id, pid string, opts LogsOptions) (*api.ProcessLogs, error) {
	q := url.Values{"cursor": {strconv.FormatInt(opts.Cursor, 10)}}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	var logs api.ProcessLogs
	return &logs, c.do(ctx, http.MethodGet, processesPath(id, pid, "logs", q), nil, &logs)
}

// FollowProcessLogs streams a process's output from opts.Cursor: onEvent gets each stdout,
// stderr and skipped event as it comes. It returns the process once it has ended and its
// output has been delivered, or an error when ctx ends, the stream breaks or onEvent returns
// one.
func (c *Client) FollowProcessLogs(ctx context.Context, id, pid string, opts LogsOptions, onEvent func(api.ProcessEvent) error) (*api.Process, error) {
	q := url.Values{"cursor": {strconv.FormatInt(opts.Cursor, 10)}, "follow": {"1"}}
	resp, err := c.send(ctx, http.MethodGet, processesPath(id, pid, "logs", q), nil, "text/event-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ended *api.Process
	err = readSSE(resp.Body, func(event string, data []byte) (bool, error) {
		var ev api.ProcessEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return false, fmt.Errorf("decode %s event: %w", event, err)
		}
		if ev.Type == api.EventExit {
			ended = ev.Process
			return true, nil
		}
		return false, onEvent(ev)
	})
	if err != nil {
		return nil, err
	}
	if ended == nil {
		return nil, errors.New("log stream ended before the process did")
	}
	return ended, nil
}

// StdinOptions are what happens to a process's stdin after a write.
type StdinOptions struct {
	Close bool // close it afterwards: the process reads end-of-file
}

// WriteProcessStdin appends data to a process's stdin (started with stdin "pipe").
func (c *Client) WriteProcessStdin(ctx context.Context, id, pid string, data io.Reader, opts StdinOptions) error {
	var q url.Values
	if opts.Close {
		q = url.Values{"close": {"true"}}
	}
	resp, err := c.sendRaw(ctx, http.MethodPost, processesPath(id, pid, "stdin", q), data, -1, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// CloseProcessStdin closes a process's stdin: it reads end-of-file.
func (c *Client) CloseProcessStdin(ctx context.Context, id, pid string) error {
	return c.do(ctx, http.MethodDelete, processesPath(id, pid, "stdin", nil), nil, nil)
}

// WaitProcess waits for a process to end, for a log line, or for a port (see
// api.WaitProcessRequest). A condition not met (timeout, the process ended first) is a result
// with Met false, not an error.
func (c *Client) WaitProcess(ctx context.Context, id, pid string, req api.WaitProcessRequest) (*api.WaitProcessResult, error) {
	var res api.WaitProcessResult
	return &res, c.do(ctx, http.MethodPost, processesPath(id, pid, "wait", nil), req, &res)
}
