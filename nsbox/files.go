package nsbox

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	sandboxfs "github.com/nsbox/nsbox/fs"
)

// The file API works on a sandbox's files as the sandbox sees them: the daemon has its
// container's backend open the root of the agent's mount namespace for each request and hands
// it to package sandboxfs, which resolves every path inside it (no host file can be reached).

const (
	// maxUploadBytes bounds one PUT …/files body; ?maxBytes= can lower it per request.
	// Uploads are streamed to a temporary file in the target directory, so this is not a
	// memory bound but a guard against filling the host's disk by mistake.
	maxUploadBytes = 16 << 30
	// maxListDepth and maxListEntries bound a listing (it is answered as one JSON array).
	maxListDepth   = 32
	maxListEntries = 100_000
)

// openFileRequest opens the sandbox's root and resolves the query parameter "path" (which
// must be there).
func (r *Runtime) openFileRequest(req *http.Request) (*fileRequest, error) {
	p := req.URL.Query().Get("path")
	if p == "" {
		return nil, api.Errorf(api.CodeInvalidArgument, "the query parameter path is required (absolute, or relative to the working directory of the session named by sessionId, or of the sandbox)")
	}
	return r.openFileCaller(req, p)
}

// queryBool parses an optional boolean query parameter.
func queryBool(req *http.Request, name string, def bool) (bool, error) {
	v := req.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, api.Errorf(api.CodeInvalidArgument, "%s must be true or false, got %q", name, v)
	}
	return b, nil
}

// queryInt parses an optional integer query parameter between lo and hi.
func queryInt(req *http.Request, name string, def, lo, hi int64) (int64, error) {
	v := req.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, api.Errorf(api.CodeInvalidArgument, "%s must be an integer from %d to %d, got %q", name, lo, hi, v)
	}
	return n, nil
}

// parseMode parses a permission mode in octal ("0644", "644", "4755"); "" is 0.
func parseMode(name, v string) (os.FileMode, error) {
	if v == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
	if err != nil || m > 0o7777 || m == 0 {
		return 0, api.Errorf(api.CodeInvalidArgument, "%s must be a non-zero octal mode from 1 to 7777 (e.g. 0644), got %q", name, v)
	}
	return os.FileMode(m), nil
}

// handleReadFile answers a file's bytes; Range, If-Modified-Since and the other conditional
// headers work as for any static file (206, 304, 412, 416).
func (r *Runtime) handleReadFile(w http.ResponseWriter, req *http.Request) error {
	fr, err := r.openFileRequest(req)
	if err != nil {
		return err
	}
	f, info, err := fr.root.Open(fr.paths[0])
	fr.root.Close()
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(&serveContentErrors{ResponseWriter: w, path: fr.shown(fr.paths[0])}, req, "", info.MTime, f)
	return nil
}

// serveContentErrors turns the plain-text errors http.ServeContent writes (a bad Range, a
// failed precondition) into the API's JSON error envelope.
type serveContentErrors struct {
	http.ResponseWriter
	path    string
	swallow bool
}

func (w *serveContentErrors) WriteHeader(status int) {
	var code, msg string
	switch status {
	case http.StatusRequestedRangeNotSatisfiable:
		code, msg = api.CodeRangeNotSatisfiable, "read "+w.path+": the Range header is malformed or no range overlaps the file"
		if cr := w.Header().Get("Content-Range"); cr != "" {
			msg += " (the file's size is in Content-Range: " + cr + ")"
		}
	case http.StatusPreconditionFailed:
		code, msg = api.CodePreconditionFailed, "read "+w.path+": the file does not meet the request's If-Match or If-Unmodified-Since"
	default:
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.swallow = true
	h := w.Header()
	h.Del("X-Content-Type-Options")
	h.Del("Content-Length")
	httpapi.WriteError(w.ResponseWriter, &api.Error{Code: code, Message: msg})
}

func (w *serveContentErrors) Write(p []byte) (int, error) {
	if w.swallow {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *serveContentErrors) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// handleWriteFile streams the request body into a file: 201 when it is new, 200 when it
// replaced one. The body is not held in memory.
func (r *Runtime) handleWriteFile(w http.ResponseWriter, req *http.Request) error {
	mkdir, err := queryBool(req, "mkdir", false)
	if err != nil {
		return err
	}
	mode, err := parseMode("mode", req.URL.Query().Get("mode"))
	if err != nil {
		return err
	}
	uid, err := queryInt(req, "uid", -1, 0, 1<<32-2)
	if err != nil {
		return err
	}
	gid, err := queryInt(req, "gid", -1, 0, 1<<32-2)
	if err != nil {
		return err
	}
	maxBytes, err := queryInt(req, "maxBytes", maxUploadBytes, 1, maxUploadBytes)
	if err != nil {
		return err
	}
	if req.ContentLength > maxBytes {
		return api.Errorf(api.CodeTooLarge, "the upload (%d bytes) is larger than the limit of %d bytes", req.ContentLength, maxBytes)
	}
	fr, err := r.openFileRequest(req)
	if err != nil {
		return err
	}
	defer fr.root.Close()
	opts := sandboxfs.WriteOptions{Mode: mode, MakeParents: mkdir, UID: int(uid), GID: int(gid), MaxBytes: maxBytes,
		ExplicitUID: uid >= 0, ExplicitGID: gid >= 0}
	if uid < 0 { // no explicit owner: the calling session's user, or root (a replaced file keeps its own)
		opts.UID = fr.who.uid
	}
	if gid < 0 {
		opts.GID = fr.who.gid
	}
	status := http.StatusOK
	if _, err := fr.root.Stat(fr.paths[0]); api.IsCode(err, api.CodeNotFound) {
		status = http.StatusCreated
	}
	info, err := fr.root.Write(fr.paths[0], req.Body, opts)
	if removed := fr.sandbox.removed(); removed != nil { // an upload outlasts a remove
		return removed
	}
	if err != nil {
		return err
	}
	fr.showInfo(info)
	httpapi.WriteJSON(w, status, info)
	return nil
}

func (r *Runtime) handleStatFile(w http.ResponseWriter, req *http.Request) error {
	fr, err := r.openFileRequest(req)
	if err != nil {
		return err
	}
	defer fr.root.Close()
	info, err := fr.root.Stat(fr.paths[0])
	if err != nil {
		return err
	}
	fr.showInfo(info)
	httpapi.WriteJSON(w, http.StatusOK, info)
	return nil
}

func (r *Runtime) handleListFiles(w http.ResponseWriter, req *http.Request) error {
	depth, err := queryInt(req, "depth", 1, 1, maxListDepth)
	if err != nil {
		return err
	}
	hidden, err := queryBool(req, "hidden", false)
	if err != nil {
		return err
	}
	fr, err := r.openFileRequest(req)
	if err != nil {
		return err
	}
	defer fr.root.Close()
	list, err := fr.root.List(fr.paths[0], int(depth), hidden, maxListEntries)
	if err != nil {
		return err
	}
	if list == nil {
		list = []api.FileInfo{}
	}
	for i := range list {
		fr.showInfo(&list[i])
	}
	httpapi.WriteJSON(w, http.StatusOK, list)
	return nil
}

// mkdirRequest is the body of POST …/files/mkdir.
type mkdirRequest struct {
	Path    string `json:"path"`
	Parents bool   `json:"parents,omitempty"`
	Mode    string `json:"mode,omitempty"`
}

// moveRequest is the body of POST …/files/move.
type moveRequest struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

// handleMkdir creates a directory: 201 when it made it, 200 when parents is set and it was
// already there.
func (r *Runtime) handleMkdir(w http.ResponseWriter, req *http.Request) error {
	var body mkdirRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	if body.Path == "" {
		return api.Errorf(api.CodeInvalidArgument, "path is required")
	}
	mode, err := parseMode("mode", body.Mode)
	if err != nil {
		return err
	}
	fr, err := r.openFileCaller(req, body.Path)
	if err != nil {
		return err
	}
	defer fr.root.Close()
	p := fr.paths[0]
	status := http.StatusCreated
	if info, err := fr.root.Stat(p); err == nil && info.Type == sandboxfs.TypeDir && body.Parents {
		status = http.StatusOK
	}
	if err := fr.root.Mkdir(p, body.Parents, mode, fr.who.uid, fr.who.gid); err != nil {
		return err
	}
	info, err := fr.root.Stat(p)
	if err != nil {
		return err
	}
	fr.showInfo(info)
	httpapi.WriteJSON(w, status, info)
	return nil
}

// handleMove renames a file or directory and answers what is at the destination now.
func (r *Runtime) handleMove(w http.ResponseWriter, req *http.Request) error {
	var body moveRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	if body.From == "" || body.To == "" {
		return api.Errorf(api.CodeInvalidArgument, "from and to are required")
	}
	fr, err := r.openFileCaller(req, body.From, body.To)
	if err != nil {
		return err
	}
	defer fr.root.Close()
	if err := fr.root.Move(fr.paths[0], fr.paths[1], body.Overwrite); err != nil {
		return err
	}
	info, err := fr.root.Stat(fr.paths[1])
	if err != nil {
		return err
	}
	fr.showInfo(info)
	httpapi.WriteJSON(w, http.StatusOK, info)
	return nil
}

func (r *Runtime) handleRemoveFile(w http.ResponseWriter, req *http.Request) error {
	recursive, err := queryBool(req, "recursive", false)
	if err != nil {
		return err
	}
	fr, err := r.openFileRequest(req)
	if err != nil {
		return err
	}
	defer fr.root.Close()
	if err := fr.root.Remove(fr.paths[0], recursive); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleWatchFiles streams changes under a directory as Server-Sent Events until the client
// goes away, the directory is removed, or the sandbox stops. The answer's headers are sent
// once the watch is in place: what changes after that is reported.
func (r *Runtime) handleWatchFiles(w http.ResponseWriter, req *http.Request) error {
	recursive, err := queryBool(req, "recursive", false)
	if err != nil {
		return err
	}
	fr, err := r.openFileRequest(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel() // ends the watch
	events, err := fr.root.Watch(ctx, fr.paths[0], recursive)
	fr.root.Close() // the watch holds its own reference
	if err != nil {
		return err
	}
	stream := httpapi.NewSSEWriter(w)
	if stream.Start() != nil {
		return nil
	}
	for ev := range events {
		ev.Path = fr.shown(ev.Path)
		if ev.OldPath != "" {
			ev.OldPath = fr.shown(ev.OldPath)
		}
		if stream.Send(ev.Type, ev) != nil {
			return nil // the client went away
		}
	}
	endOfStream(ctx, stream)
	return nil
}
