package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// WriteFileOptions tune WriteFile.
type WriteFileOptions struct {
	// Mode of the file as Unix bits (0o644, 0o4755: setuid is 0o4000 here, not
	// os.ModeSetuid); 0 keeps the mode of the file replaced, or 0644 for a new one.
	Mode os.FileMode
	// MakeParents creates missing parent directories.
	MakeParents bool
	// UID and GID own the file (default: the session's user for a client made by
	// InSession, else 0, the sandbox's root).
	UID, GID int
	// MaxBytes, when positive, makes the daemon refuse a larger upload.
	MaxBytes int64
	// Size, when positive, is sent as the Content-Length (the daemon can then refuse a too
	// large upload before it starts).
	Size int64
}

// filesPath is the URL of a file operation; a client made by InSession names its session.
func (c *Client) filesPath(id, op string, q url.Values) string {
	if c.fileSession != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("sessionId", c.fileSession)
	}
	p := "/v1/sandboxes/" + url.PathEscape(id) + "/files"
	if op != "" {
		p += "/" + op
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// ReadFile opens a file of the sandbox for reading; close the reader when done. A relative
// path is relative to the sandbox's working directory.
func (c *Client) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	return c.ReadFileRange(ctx, id, path, 0, -1)
}

// ReadFileRange reads length bytes of a file from offset (length < 0: to the end). Reading
// past the end is an error (range_not_satisfiable) unless the file is empty and offset 0.
func (c *Client) ReadFileRange(ctx context.Context, id, path string, offset, length int64) (io.ReadCloser, error) {
	header := http.Header{}
	switch {
	case offset < 0 || length == 0:
		return nil, fmt.Errorf("read %s: invalid range: offset %d, length %d", path, offset, length)
	case length > 0:
		header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.sendRaw(ctx, http.MethodGet, c.filesPath(id, "", url.Values{"path": {path}}), nil, -1, header)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteFile streams r into a file of the sandbox, replacing it atomically, and returns the
// new file's description.
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader, opts WriteFileOptions) (*api.FileInfo, error) {
	q := url.Values{"path": {path}}
	if opts.MakeParents {
		q.Set("mkdir", "true")
	}
	if opts.Mode != 0 {
		q.Set("mode", fmt.Sprintf("%04o", uint32(opts.Mode&0o7777)))
	}
	if opts.UID != 0 {
		q.Set("uid", strconv.Itoa(opts.UID))
	}
	if opts.GID != 0 {
		q.Set("gid", strconv.Itoa(opts.GID))
	}
	if opts.MaxBytes > 0 {
		q.Set("maxBytes", strconv.FormatInt(opts.MaxBytes, 10))
	}
	size := int64(-1)
	if opts.Size > 0 {
		size = opts.Size
	}
	if r == nil {
		r, size = strings.NewReader(""), 0
	}
	resp, err := c.sendRaw(ctx, http.MethodPut, c.filesPath(id, "", q), r, size, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info api.FileInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("decode write answer: %w", err)
	}
	return &info, nil
}

// StatFile describes a file without following a symlink in its last component. A missing
// file is an *api.Error with code not_found.
func (c *Client) StatFile(ctx context.Context, id, path string) (*api.FileInfo, error) {
	var info api.FileInfo
	return &info, c.do(ctx, http.MethodGet, c.filesPath(id, "stat", url.Values{"path": {path}}), nil, &info)
}

// ListOptions are what a directory listing shows.
type ListOptions struct {
	Depth  int  // levels to list (0 or 1: the directory's entries only)
	Hidden bool // list names starting with "." too
}

// ListFiles lists a directory.
func (c *Client) ListFiles(ctx context.Context, id, path string, opts ListOptions) ([]api.FileInfo, error) {
	q := url.Values{"path": {path}}
	if opts.Depth > 0 {
		q.Set("depth", strconv.Itoa(opts.Depth))
	}
	if opts.Hidden {
		q.Set("hidden", "true")
	}
	return list[api.FileInfo](ctx, c, http.MethodGet, c.filesPath(id, "list", q), nil)
}

// MkdirOptions are how a directory is made.
type MkdirOptions struct {
	Parents bool        // make missing ancestors too, and answer the directory when it exists
	Mode    os.FileMode // its permission bits (0: 0755)
}

// Mkdir creates a directory.
func (c *Client) Mkdir(ctx context.Context, id, path string, opts MkdirOptions) (*api.FileInfo, error) {
	body := struct {
		Path    string `json:"path"`
		Parents bool   `json:"parents,omitempty"`
		Mode    string `json:"mode,omitempty"`
	}{Path: path, Parents: opts.Parents}
	if opts.Mode != 0 {
		body.Mode = fmt.Sprintf("%04o", uint32(opts.Mode&0o7777))
	}
	var info api.FileInfo
	return &info, c.do(ctx, http.MethodPost, c.filesPath(id, "mkdir", nil), body, &info)
}

// MoveOptions are how a file is moved.
type MoveOptions struct {
	Overwrite bool // replace an existing destination (without it: a conflict)
}

// MoveFile renames from to to.
func (c *Client) MoveFile(ctx context.Context, id, from, to string, opts MoveOptions) (*api.FileInfo, error) {
	body := struct {
		From      string `json:"from"`
		To        string `json:"to"`
		Overwrite bool   `json:"overwrite,omitempty"`
	}{from, to, opts.Overwrite}
	var info api.FileInfo
	return &info, c.do(ctx, http.MethodPost, c.filesPath(id, "move", nil), body, &info)
}

// RemoveFileOptions are how a file is removed.
type RemoveFileOptions struct {
	Recursive bool // a directory and everything in it (without it: only an empty one)
}

// RemoveFile removes a file, symlink or directory.
func (c *Client) RemoveFile(ctx context.Context, id, path string, opts RemoveFileOptions) error {
	q := url.Values{"path": {path}}
	if opts.Recursive {
		q.Set("recursive", "true")
	}
	return c.do(ctx, http.MethodDelete, c.filesPath(id, "", q), nil, nil)
}

// FileWatch is a running watch of a directory; read its events with Next, end it with Close.
type FileWatch struct {
	body  io.ReadCloser
	lines *bufio.Scanner
}

// WatchOptions are what a watch reports.
type WatchOptions struct {
	Recursive bool // changes below the directory too, not only its entries
}

// OpenWatch starts watching a directory. It returns once the watch is in place: every change
// after that is reported.
func (c *Client) OpenWatch(ctx context.Context, id, path string, opts WatchOptions) (*FileWatch, error) {
	q := url.Values{"path": {path}}
	if opts.Recursive {
		q.Set("recursive", "true")
	}
	resp, err := c.send(ctx, http.MethodGet, c.filesPath(id, "watch", q), nil, "text/event-stream")
	if err != nil {
		return nil, err
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	return &FileWatch{body: resp.Body, lines: lines}, nil
}

// Next waits for the next event. It returns io.EOF when the watch has ended (the directory
// was removed, or the sandbox stopped).
func (w *FileWatch) Next() (api.FileEvent, error) {
	event := ""
	for w.lines.Scan() {
		line := w.lines.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var ev api.FileEvent
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				return api.FileEvent{}, fmt.Errorf("decode %s event: %w", event, err)
			}
			return ev, nil
		}
	}
	if err := w.lines.Err(); err != nil {
		return api.FileEvent{}, fmt.Errorf("read watch stream: %w", err)
	}
	return api.FileEvent{}, io.EOF
}

// Close ends the watch.
func (w *FileWatch) Close() error { return w.body.Close() }

// WatchFiles calls onEvent with each change under a directory until ctx ends (then it
// returns nil), the watch ends, or onEvent returns an error (then it returns that).
func (c *Client) WatchFiles(ctx context.Context, id, path string, opts WatchOptions, onEvent func(api.FileEvent) error) error {
	w, err := c.OpenWatch(ctx, id, path, opts)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := onEvent(ev); err != nil {
			return err
		}
	}
}

// sendRaw sends a request with a raw body (size < 0: unknown) and returns a 2xx response;
// anything else comes back as *api.Error.
func (c *Client) sendRaw(ctx context.Context, method, path string, body io.Reader, size int64, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c.authorize(req.Header)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
		if size >= 0 {
			req.ContentLength = size
		}
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, httpapi.ReadError(resp)
	}
	return resp, nil
}
