package httpd

import (
	"errors"
	"strconv"
	"strings"
	"sync"
)

// holdBack is how much of a body is held back, while nothing flushes it, to answer with a
// Content-Length if the handler returns before it has written more; a longer body, or one
// flushed before the end, is sent chunked.
const holdBack = 4 << 10

// ErrHandlerDone is what a write after the handler returned gets.
var ErrHandlerDone = errors.New("the request's handler has returned")

// ErrBodyNotAllowed is what a write of a body gets after a status that has none (204, 304).
var ErrBodyNotAllowed = errors.New("the answer's status allows no body")

// ResponseWriter writes a request's answer: package api's AnswerWriter. Its methods may be
// called from several goroutines.
type ResponseWriter struct {
	mu      sync.Mutex
	c       *conn
	head    bool     // the request is a HEAD: the answer has no body
	close   bool     // the connection closes after the answer
	header  []string // name, value, name, value…
	status  int      // 0 until WriteHeader
	sent    bool     // the status line and headers are in c.bw
	chunked bool
	held    []byte // the body held back, until sent
	done    bool   // the handler has returned
	err     error  // the first write to the connection that failed
}

// SetHeader sets a header of the answer (it replaces one of the same name); it has no effect
// once the status is written.
func (w *ResponseWriter) SetHeader(key, value string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status != 0 {
		return
	}
	for i := 0; i < len(w.header); i += 2 {
		if strings.EqualFold(w.header[i], key) {
			w.header[i+1] = value
			return
		}
	}
	w.header = append(w.header, key, value)
}

// WriteHeader sets the answer's status; the first call counts.
func (w *ResponseWriter) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = status
	}
}

// bodyless reports whether the answer has no body, whatever is written.
func (w *ResponseWriter) bodyless() bool {
	return w.head || w.status == StatusNoContent || w.status == 304 || w.status < 200
}

// Write adds p to the answer's body (after a 200 if no status was written).
func (w *ResponseWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0, ErrHandlerDone
	}
	if w.status == 0 {
		w.status = StatusOK
	}
	switch {
	case w.err != nil:
		return 0, w.err
	case w.head:
		return len(p), nil
	case w.bodyless():
		return 0, ErrBodyNotAllowed
	case !w.sent && len(w.held)+len(p) <= holdBack:
		w.held = append(w.held, p...)
		return len(p), nil
	}
	w.sendHead(-1)
	w.writeChunk(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends the answer so far to the client: its status and headers, and its body, chunked.
func (w *ResponseWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ErrHandlerDone
	}
	if w.status == 0 {
		w.status = StatusOK
	}
	w.sendHead(-1)
	w.setErr(w.c.bw.Flush())
	return w.err
}

// sendContinue tells a client that waits for it (Expect: 100-continue) to send the body,
// unless the answer has begun.
func (w *ResponseWriter) sendContinue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent || w.done || w.err != nil {
		return
	}
	w.write("HTTP/1.1 100 Continue\r\n\r\n")
	w.setErr(w.c.bw.Flush())
}

// closeAfter has the connection close after the answer (its head says so, if it has not gone
// out yet).
func (w *ResponseWriter) closeAfter() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.close = true
}

// finish ends the answer as the handler returns: with its status and body and a
// Content-Length if nothing was sent yet, with the last chunk if it was sent chunked.
func (w *ResponseWriter) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	if w.status == 0 {
		w.status = StatusOK
	}
	w.sendHead(len(w.held))
	if w.chunked {
		w.write("0\r\n\r\n")
	}
	w.setErr(w.c.bw.Flush())
}

// sendHead writes the status line and headers to the connection's buffer, and the body held
// back. contentLength is the body's whole length, or -1 if it is not known yet (chunked).
func (w *ResponseWriter) sendHead(contentLength int) {
	if w.sent {
		return
	}
	w.sent = true
	b := make([]byte, 0, 256)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(append(append(b, ' '), statusText(w.status)...), "\r\n"...)
	for i := 0; i < len(w.header); i += 2 {
		b = append(append(append(append(b, w.header[i]...), ": "...), w.header[i+1]...), "\r\n"...)
	}
	switch {
	case w.bodyless(): // HEAD, 204, 304: no body, so no framing
	case contentLength >= 0:
		b = strconv.AppendInt(append(b, "Content-Length: "...), int64(contentLength), 10)
		b = append(b, "\r\n"...)
	default:
		w.chunked = true
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.close {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	_, err := w.c.bw.Write(b)
	w.setErr(err)
	if w.chunked {
		w.writeChunk(w.held)
	} else if !w.bodyless() {
		_, err := w.c.bw.Write(w.held)
		w.setErr(err)
	}
	w.held = nil
}

// writeChunk writes p as one chunk (nothing if it is empty: the empty chunk ends the body).
func (w *ResponseWriter) writeChunk(p []byte) {
	if len(p) == 0 {
		return
	}
	var size [20]byte
	w.write(string(append(strconv.AppendInt(size[:0], int64(len(p)), 16), "\r\n"...)))
	_, err := w.c.bw.Write(p)
	w.setErr(err)
	w.write("\r\n")
}

func (w *ResponseWriter) write(s string) {
	_, err := w.c.bw.WriteString(s)
	w.setErr(err)
}

func (w *ResponseWriter) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// statusText is the reason phrase of the statuses the agent answers with.
func statusText(status int) string {
	switch status {
	case 100:
		return "Continue"
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 202:
		return "Accepted"
	case 204:
		return "No Content"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 409:
		return "Conflict"
	case 412:
		return "Precondition Failed"
	case 413:
		return "Request Entity Too Large"
	case 416:
		return "Requested Range Not Satisfiable"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 505:
		return "HTTP Version Not Supported"
	case 507:
		return "Insufficient Storage"
	}
	return "Status " + strconv.Itoa(status)
}
