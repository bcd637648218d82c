package nsbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/nsbox/nsbox/api"
)

// maxRequestBody bounds a JSON request body (exec stdin included).
const maxRequestBody = 64 << 20

// Route is one endpoint of the API.
type Route struct {
	Method, Pattern string
	handle          func(*Runtime, http.ResponseWriter, *http.Request)
}

// Routes are the daemon's API endpoints; api/openapi.json describes the same set.
var Routes = []Route{
	{"GET", "/v1/version", (*Runtime).handleVersion},
	{"GET", "/v1/images", (*Runtime).handleImages},
	{"POST", "/v1/images/pull", (*Runtime).handlePullImage},
	{"POST", "/v1/images/import", (*Runtime).handleImportImages},
	{"POST", "/v1/images/prune", (*Runtime).handlePruneImages},
	{"GET", "/v1/images/{name}", (*Runtime).handleGetImage},
	{"DELETE", "/v1/images/{name}", (*Runtime).handleRemoveImage},
	{"POST", "/v1/sandboxes", (*Runtime).handleCreate},
	{"GET", "/v1/sandboxes", (*Runtime).handleList},
	{"GET", "/v1/sandboxes/{id}", (*Runtime).handleGet},
	{"DELETE", "/v1/sandboxes/{id}", (*Runtime).handleRemove},
	{"POST", "/v1/sandboxes/{id}/exec", (*Runtime).handleExec},
	{"POST", "/v1/sandboxes/{id}/sessions", (*Runtime).handleSessionCall},
	{"GET", "/v1/sandboxes/{id}/sessions", (*Runtime).handleSessionCall},
	{"GET", "/v1/sandboxes/{id}/sessions/{sid}", (*Runtime).handleSessionCall},
	{"DELETE", "/v1/sandboxes/{id}/sessions/{sid}", (*Runtime).handleSessionCall},
	{"POST", "/v1/sandboxes/{id}/sessions/{sid}/exec", (*Runtime).handleExec},
	{"POST", "/v1/sandboxes/{id}/sessions/{sid}/cancel", (*Runtime).handleSessionCall},
	{"GET", "/v1/sandboxes/{id}/sessions/{sid}/terminal", (*Runtime).handleTerminal},
	{"GET", "/v1/sandboxes/{id}/files", (*Runtime).handleReadFile},
	{"PUT", "/v1/sandboxes/{id}/files", (*Runtime).handleWriteFile},
	{"DELETE", "/v1/sandboxes/{id}/files", (*Runtime).handleRemoveFile},
	{"GET", "/v1/sandboxes/{id}/files/stat", (*Runtime).handleStatFile},
	{"GET", "/v1/sandboxes/{id}/files/list", (*Runtime).handleListFiles},
	{"POST", "/v1/sandboxes/{id}/files/mkdir", (*Runtime).handleMkdir},
	{"POST", "/v1/sandboxes/{id}/files/move", (*Runtime).handleMove},
	{"GET", "/v1/sandboxes/{id}/files/watch", (*Runtime).handleWatchFiles},
	{"GET", "/v1/sandboxes/{id}/workspace/diff", (*Runtime).handleWorkspaceDiff},
	{"GET", "/v1/sandboxes/{id}/workspace/export", (*Runtime).handleWorkspaceExport},
	{"PATCH", "/v1/sandboxes/{id}/env", (*Runtime).handlePatchEnv},
	{"PATCH", "/v1/sandboxes/{id}/network", (*Runtime).handleSetNetwork},
	{"POST", "/v1/sandboxes/{id}/ports", (*Runtime).handleExposePort},
	{"GET", "/v1/sandboxes/{id}/ports", (*Runtime).handleListPorts},
	{"DELETE", "/v1/sandboxes/{id}/ports/{port}", (*Runtime).handleUnexposePort},
	{"POST", "/v1/sandboxes/{id}/processes", (*Runtime).handleStartProcess},
	{"GET", "/v1/sandboxes/{id}/processes", (*Runtime).handleProcessCall},
	{"DELETE", "/v1/sandboxes/{id}/processes", (*Runtime).handleProcessCall},
	{"POST", "/v1/sandboxes/{id}/processes/kill", (*Runtime).handleKillProcess},
	{"GET", "/v1/sandboxes/{id}/processes/{pid}", (*Runtime).handleProcessCall},
	{"DELETE", "/v1/sandboxes/{id}/processes/{pid}", (*Runtime).handleProcessCall},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/kill", (*Runtime).handleKillProcess},
	{"GET", "/v1/sandboxes/{id}/processes/{pid}/logs", (*Runtime).handleProcessLogs},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/stdin", (*Runtime).handleProcessStdin},
	{"DELETE", "/v1/sandboxes/{id}/processes/{pid}/stdin", (*Runtime).handleProcessStdin},
	{"POST", "/v1/sandboxes/{id}/processes/{pid}/wait", (*Runtime).handleWaitProcess},
}

// Handler returns the daemon's HTTP API.
func (r *Runtime) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range Routes {
		mux.HandleFunc(rt.Method+" "+rt.Pattern, func(w http.ResponseWriter, req *http.Request) { rt.handle(r, w, req) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		api.WriteError(w, api.Errorf(api.CodeNotFound, "no such endpoint: %s %s", req.Method, req.URL.Path))
	})
	return r.logRequests(mux)
}

func (r *Runtime) handleVersion(w http.ResponseWriter, _ *http.Request) {
	api.WriteJSON(w, http.StatusOK, api.Version{Version: r.cfg.Version})
}

func (r *Runtime) handleImages(w http.ResponseWriter, _ *http.Request) {
	api.WriteJSON(w, http.StatusOK, r.Images())
}

func (r *Runtime) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, req)
		r.log.Debug("api", "method", req.Method, "path", req.URL.Path, "status", sw.status, "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

// Hijack hands the connection to a WebSocket upgrade.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.status = http.StatusSwitchingProtocols
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the real writer (to flush streams).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// decodeBody decodes a JSON request body strictly: unknown fields and trailing data are errors.
func decodeBody(w http.ResponseWriter, req *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return api.Errorf(api.CodeTooLarge, "request body is larger than %d bytes", maxRequestBody)
		}
		if errors.Is(err, io.EOF) {
			return api.Errorf(api.CodeInvalidArgument, "request body is empty; send a JSON object")
		}
		return api.Errorf(api.CodeInvalidArgument, "malformed JSON body: %v", err)
	}
	if dec.More() {
		return api.Errorf(api.CodeInvalidArgument, "malformed JSON body: data after the object")
	}
	// Read to the end: only then does the server watch the connection and cancel the request
	// when the client goes away.
	_, _ = io.Copy(io.Discard, req.Body)
	return nil
}

func (r *Runtime) handleCreate(w http.ResponseWriter, req *http.Request) {
	var body api.CreateSandboxRequest
	if err := decodeBody(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	sb, err := r.Create(req.Context(), body)
	if err != nil {
		r.writeError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusCreated, sb)
}

func (r *Runtime) handleList(w http.ResponseWriter, _ *http.Request) {
	list, err := r.List()
	if err != nil {
		r.writeError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, list)
}

func (r *Runtime) handleGet(w http.ResponseWriter, req *http.Request) {
	sb, err := r.Get(req.PathValue("id"))
	if err != nil {
		r.writeError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, sb)
}

func (r *Runtime) handleRemove(w http.ResponseWriter, req *http.Request) {
	force := false
	if v := req.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "force must be true or false, got %q", v))
			return
		}
	}
	if err := r.Remove(req.PathValue("id"), force); err != nil {
		r.writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeError answers with err. Errors that are not API errors mean something failed inside
// the daemon: they are logged and answered as "internal" with their whole message.
func (r *Runtime) writeError(w http.ResponseWriter, err error) {
	var e *api.Error
	if errors.As(err, &e) && e.Code != api.CodeInternal {
		api.WriteError(w, e)
		return
	}
	r.log.Error("request failed", "err", err)
	api.WriteError(w, &api.Error{Code: api.CodeInternal, Message: err.Error()})
}
