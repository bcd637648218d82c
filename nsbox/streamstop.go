package nsbox

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/nsbox/nsbox/api"
)

// When the daemon stops, the requests in flight get a grace to finish (cmd/nsbox's daemon),
// but a stream that follows something — events, stats, a process's log, a file watch — never
// finishes by itself: it would hold the stop for the whole grace and then break off without
// a word. BeginStop ends every such stream at once with a last "error" event (unavailable:
// the daemon is stopping), which tells its client to reconnect to the next daemon. A stream
// is a GET whose answer is Server-Sent Events; plain reads (a file download) keep their grace.
// A terminal's WebSocket gets that error as a notice and closes at once too (terminal.go); what
// is still in flight when the grace is over (a long exec) CutRequests ends with the same error.

// errDaemonStopping is what a stream ended by BeginStop says in its last event.
var errDaemonStopping = api.Errorf(api.CodeUnavailable, "the daemon is stopping; reconnect when it is back (sandboxes keep running)")

// BeginStop tells the API the daemon is stopping: the streams being followed end with an
// "error" event (unavailable). Call it as the listeners close, before the runtime's Close.
func (r *Runtime) BeginStop() { r.endStopping() }

// RequestContext is the context the API's requests are made under (http.Server's
// BaseContext): CutRequests ends it.
func (r *Runtime) RequestContext() context.Context { return r.requests }

// CutRequests ends the requests still in flight once the stop's grace is over: their contexts
// end with cause errDaemonStopping, so an exec still running answers "unavailable: the daemon
// is stopping" — a last "error" event when it streams — instead of being cut off when the
// daemon exits. The commands themselves are the agent's to end or keep, as when any client
// goes away.
func (r *Runtime) CutRequests() { r.cutRequests(errDaemonStopping) }

// stopCause is errDaemonStopping when that is why ctx ended, else err.
func stopCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errDaemonStopping) {
		return cause
	}
	return err
}

// endStreamAtStop serves a GET with handle, ending its request's context with cause
// errDaemonStopping once the daemon begins to stop, if its answer is an event stream (or
// as soon as it becomes one, when the stop came first).
func (r *Runtime) endStreamAtStop(w http.ResponseWriter, req *http.Request, handle func(http.ResponseWriter, *http.Request) error) error {
	ctx, cancel := context.WithCancelCause(req.Context())
	defer cancel(nil)
	sw := &streamWriter{ResponseWriter: w, stopping: r.stopping, cancel: cancel}
	defer context.AfterFunc(sw.stopping, func() {
		if sw.streaming.Load() {
			cancel(errDaemonStopping)
		}
	})()
	return handle(sw, req.WithContext(ctx))
}

// streamWriter notices when an answer becomes an event stream.
type streamWriter struct {
	http.ResponseWriter
	stopping  context.Context
	cancel    context.CancelCauseFunc
	streaming atomic.Bool
}

func (w *streamWriter) WriteHeader(code int) {
	if strings.HasPrefix(w.Header().Get("Content-Type"), api.EventStream) {
		w.streaming.Store(true)
		if w.stopping.Err() != nil {
			w.cancel(errDaemonStopping)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the real writer (to flush).
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection to a WebSocket upgrade (which asks the writer itself).
func (w *streamWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// endOfStream ends a stream whose request's context ended: with errDaemonStopping's event
// when the daemon's stop ended it, with nothing when its client went away.
func endOfStream(ctx context.Context, out *api.SSEWriter) {
	if err := stopCause(ctx, nil); err != nil {
		_ = out.SendError(err)
	}
}
