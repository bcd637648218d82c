// Package httpapi is package api's HTTP idiom on net/http, for the daemon, its clients and the
// proxy: handlers that return their error, JSON bodies, Server-Sent Events and frames written
// to an http.ResponseWriter, the API's endpoints with what they ask of callers, and the
// terminal's WebSocket frames. (The agent serves the same idiom without net/http:
// agent/httpd.)
package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/nsbox/nsbox/api"
)

// HandlerFunc is an HTTP handler that returns its error instead of answering it. A handler
// returns an error only before it has written anything; once it has started an answer (a
// stream), it deals with later errors itself.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h to net/http: an error h returns is answered by ServeError.
func Handle(log *slog.Logger, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			ServeError(log, w, err)
		}
	}
}

// Endpoint is one endpoint of the daemon's API with what it asks of callers.
type Endpoint struct {
	Method, Pattern string
	Access          api.Access
	Session         api.SessionFrom
	Handle          HandlerFunc
}

// Check decides, before an endpoint's handler runs, whether the request's caller may use it:
// it returns the request to serve (its context perhaps marked api.WithReadOnly) or the error
// to answer (401, 403).
type Check func(req *http.Request, access api.Access, session api.SessionFrom) (*http.Request, error)

// answer is a ResponseWriter as an api.AnswerWriter.
type answer struct{ http.ResponseWriter }

func (a answer) SetHeader(key, value string) { a.Header().Set(key, value) }
func (a answer) Flush() error                { return http.NewResponseController(a.ResponseWriter).Flush() }

// ServeError answers err as api.ServeError does.
func ServeError(log *slog.Logger, w http.ResponseWriter, err error) {
	api.ServeError(log, answer{w}, err)
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) { api.WriteJSON(answer{w}, status, v) }

// WriteError writes err as an error envelope, as api.WriteError does.
func WriteError(w http.ResponseWriter, err error) { api.WriteError(answer{w}, err) }

// ReadError turns a non-2xx response into an *api.Error, keeping the server's code and
// message.
func ReadError(resp *http.Response) *api.Error {
	return api.ReadError(resp.Body, resp.StatusCode, resp.Status)
}

// DecodeJSON decodes r's JSON body into v as api.DecodeBody does.
func DecodeJSON(r *http.Request, v any, optional bool) error {
	return api.DecodeBody(r.Body, v, optional)
}

// WantsEventStream reports whether a request asks for its answer as Server-Sent Events.
func WantsEventStream(r *http.Request) bool { return api.AcceptsEventStream(r.Header.Get("Accept")) }

// WantsFrames reports whether a request asks for its answer as frames.
func WantsFrames(r *http.Request) bool { return api.AcceptsFrames(r.Header.Get("Accept")) }

// NewSSEWriter returns a writer of Server-Sent Events to w.
func NewSSEWriter(w http.ResponseWriter) *api.SSEWriter { return api.NewSSEWriter(answer{w}) }

// NewFrameWriter returns a writer of frames to w.
func NewFrameWriter(w http.ResponseWriter) *api.FrameWriter { return api.NewFrameWriter(answer{w}) }
