package httpd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// Request is one request as its handler sees it.
type Request struct {
	Method string
	// Path is the target's path as sent, escaped; RawQuery what follows its "?".
	Path, RawQuery string
	// Body is the request's body; it reads io.EOF at its end, at once when it has none.
	Body io.Reader

	header    map[string]string // by lower-case name; a repeated header's values joined by ", "
	close     bool              // the client asked for the connection to close after the answer
	ctx       context.Context
	body      *body
	pathName  string
	pathValue string
}

// Context is done when the client goes away (noticed once the body has been read) or the
// handler has returned.
func (r *Request) Context() context.Context { return r.ctx }

// Header is the value of the request's header name ("" if it has none).
func (r *Request) Header(name string) string { return r.header[strings.ToLower(name)] }

// Query is the target's query, parsed (a malformed pair is left out).
func (r *Request) Query() url.Values {
	q, _ := url.ParseQuery(r.RawQuery)
	return q
}

// SetPathValue records the path's wildcard name as matched by value; PathValue returns it.
func (r *Request) SetPathValue(name, value string) { r.pathName, r.pathValue = name, value }

// PathValue is what the path's wildcard name matched (set by the router), or "".
func (r *Request) PathValue(name string) string {
	if name == r.pathName {
		return r.pathValue
	}
	return ""
}

// badRequest is a request the server answers itself, and then closes the connection.
type badRequest struct {
	status int
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &badRequest{status: 400, msg: fmt.Sprintf(format, args...)}
}

// readRequest reads the next request's head; its body is left to the handler.
func (c *conn) readRequest() (*Request, error) {
	budget := maxHeader
	line, err := readLine(c.br, &budget)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || !strings.HasPrefix(target, "/") {
		return nil, malformed("malformed request line %q", line)
	}
	r := &Request{Method: method, header: map[string]string{}}
	r.Path, r.RawQuery, _ = strings.Cut(target, "?")
	switch proto {
	case "HTTP/1.1":
	case "HTTP/1.0":
		r.close = true
	default:
		return nil, &badRequest{status: 505, msg: fmt.Sprintf("unsupported protocol %q", proto)}
	}
	for lines := 0; ; lines++ {
		line, err := readLine(c.br, &budget)
		if err != nil {
			return nil, err
		}
		if line == "" {
			break
		}
		if lines == maxHeaderLines {
			return nil, &badRequest{status: 431, msg: "too many header lines"}
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, malformed("malformed header line %q", line)
		}
		name, value = strings.ToLower(name), strings.TrimSpace(value)
		if prev, ok := r.header[name]; ok {
			if name == "content-length" {
				if prev != value {
					return nil, malformed("two different Content-Length headers")
				}
				continue // the same length twice is that length
			}
			value = prev + ", " + value
		}
		r.header[name] = value
	}
	if strings.EqualFold(r.header["connection"], "close") {
		r.close = true
	}
	r.body = &body{c: c, continueFirst: strings.EqualFold(r.header["expect"], "100-continue")}
	switch te, cl := r.header["transfer-encoding"], r.header["content-length"]; {
	case te != "" && cl != "":
		return nil, malformed("both Transfer-Encoding and Content-Length")
	case te != "":
		if !strings.EqualFold(te, "chunked") {
			return nil, &badRequest{status: 501, msg: fmt.Sprintf("unsupported Transfer-Encoding %q", te)}
		}
		r.body.chunked = true
	case cl != "":
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return nil, malformed("malformed Content-Length %q", cl)
		}
		r.body.left = n
	}
	r.Body = r.body
	return r, nil
}

// readLine reads a line ending in CRLF (or LF) and returns it without its end, charging its
// length to budget.
func readLine(br *bufio.Reader, budget *int) (string, error) {
	var long []byte
	for {
		part, err := br.ReadSlice('\n')
		*budget -= len(part)
		if *budget < 0 || len(long)+len(part) > maxLine {
			return "", &badRequest{status: 431, msg: "request header too large"}
		}
		if err == nil {
			if long != nil {
				part = append(long, part...)
			}
			return string(bytes.TrimSuffix(bytes.TrimSuffix(part, []byte("\n")), []byte("\r"))), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(part) > 0 && errors.Is(err, io.EOF) {
				return "", malformed("request head cut short")
			}
			return "", err
		}
		long = append(long, part...)
	}
}

// body is a request's body: Content-Length bytes, chunks, or nothing.
type body struct {
	c       *conn
	chunked bool
	left    int64 // bytes left: of the body, or of the current chunk
	inChunk bool  // a chunk's data was read: its CRLF comes before the next size line
	eof     bool
	err     error
	// continueFirst: the client waits for a 100 Continue before it sends the body.
	continueFirst bool
	cancel        context.CancelFunc // the request's; the watch starts at the body's end
	w             *ResponseWriter    // the request's answer
}

// done reports whether the whole body has been read.
func (b *body) done() bool { return b.eof || (!b.chunked && b.left == 0) }

func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.continueFirst {
		b.continueFirst = false
		if !b.done() {
			b.w.sendContinue()
		}
	}
	n, err := b.read(p)
	if err != nil {
		b.err = fmt.Errorf("read request body: %w", err)
		if b.cancel != nil { // the client is gone, or cannot be understood any more
			b.cancel()
		}
		return n, b.err
	}
	if b.done() {
		if b.cancel != nil && b.c.watching == nil {
			b.c.watch(b.cancel)
		}
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

func (b *body) read(p []byte) (int, error) {
	if b.chunked && b.left == 0 && !b.eof {
		if err := b.nextChunk(); err != nil {
			return 0, err
		}
	}
	if b.done() || len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && b.chunked && b.left == 0 {
		b.endIfLastChunkHere()
	}
	return n, err
}

// lastChunk is what follows a chunked body's last chunk of data, without trailers: its CRLF
// and the chunk of size 0.
const lastChunk = "\r\n0\r\n\r\n"

// endIfLastChunkHere ends the body now if the chunk just read is followed, already in the
// buffer, by the last chunk (as net/http's client sends it): a handler that reads just the
// body's bytes then sees its end, and the watch for the client's going away starts.
func (b *body) endIfLastChunkHere() {
	if b.c.br.Buffered() < len(lastChunk) {
		return
	}
	if next, err := b.c.br.Peek(len(lastChunk)); err == nil && string(next) == lastChunk {
		_, _ = b.c.br.Discard(len(lastChunk))
		b.inChunk, b.eof = false, true
	}
}

// nextChunk reads the end of the chunk before (its CRLF) and the next chunk's size line; at
// the last chunk (size 0), the trailers, and the body has ended.
func (b *body) nextChunk() error {
	budget := maxHeader
	if b.inChunk {
		if line, err := readLine(b.c.br, &budget); err != nil || line != "" {
			return chunkError(err)
		}
		b.inChunk = false
	}
	line, err := readLine(b.c.br, &budget)
	if err != nil {
		return chunkError(err)
	}
	size, _, _ := strings.Cut(line, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
	if err != nil || n < 0 {
		return chunkError(nil)
	}
	if n > 0 {
		b.left, b.inChunk = n, true
		return nil
	}
	for { // trailers, up to the empty line
		line, err := readLine(b.c.br, &budget)
		if err != nil {
			return chunkError(err)
		}
		if line == "" {
			b.eof = true
			return nil
		}
	}
}

func chunkError(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return io.ErrUnexpectedEOF
	case err != nil:
		return err
	}
	return errors.New("malformed chunked encoding")
}

// drain reads what the handler left of the body, so that the connection can serve its next
// request; it reports false if it cannot: the rest is too long or broken, or the client waits
// for a 100 Continue it was never sent.
func (b *body) drain() bool {
	b.cancel = nil // the request is over: nothing to watch for
	if b.err != nil || (b.continueFirst && !b.done()) {
		return false
	}
	n, err := io.CopyN(io.Discard, b, unreadBodyLimit)
	return errors.Is(err, io.EOF) && n < unreadBodyLimit
}
