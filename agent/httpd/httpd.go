// Package httpd is the agent's HTTP/1.1 server: what the agent's API needs of one — requests
// with a Content-Length or chunked body, answers with a Content-Length or chunked and flushed
// as they go, connections kept alive between requests, and a request's context cancelled
// when its client goes away — without net/http, whose package initialisation and first
// request were ~3 ms of every sandbox's start, on the sandbox's one CPU, before its default
// shell could run (docs/benchmarks.md, "Session 15"). Its one client is the daemon's
// net/http transport, over a unix socket.
package httpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"
)

// Handler serves one request. It may write its answer from other goroutines too, until it
// returns; the answer ends when it returns.
type Handler func(w *ResponseWriter, r *Request)

// The status codes and methods the agent's handlers name.
const (
	StatusOK                 = 200
	StatusCreated            = 201
	StatusAccepted           = 202
	StatusNoContent          = 204
	StatusNotFound           = 404
	StatusMethodNotAllowed   = 405
	StatusServiceUnavailable = 503

	MethodGet    = "GET"
	MethodHead   = "HEAD"
	MethodPost   = "POST"
	MethodPut    = "PUT"
	MethodDelete = "DELETE"
)

// Limits of a request's head: a line, the number of header lines, and all of them together.
const (
	maxLine        = 64 << 10
	maxHeaderLines = 1000
	maxHeader      = 1 << 20
)

// unreadBodyLimit is how much of a body its handler left unread is read past to serve the
// connection's next request; a longer rest closes the connection instead.
const unreadBodyLimit = 256 << 10

// Serve accepts connections on ln and serves each on a goroutine of its own with h, until ln
// fails (it is closed). A panic in a handler is logged to log and closes its connection only.
func Serve(ln net.Listener, h Handler, log *slog.Logger) error {
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			var temp interface{ Temporary() bool }
			if errors.As(err, &temp) && temp.Temporary() { // out of descriptors, say
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10), log: log}
		go c.serve(h)
	}
}

// conn is one client connection, serving its requests one after another.
type conn struct {
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	log *slog.Logger
	// watching is closed when the watch for the client's going away, started once a request's
	// body has been read, has ended; nil when none was started.
	watching chan struct{}
}

func (c *conn) serve(h Handler) {
	defer c.nc.Close()
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("panic serving a request", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	for {
		r, err := c.readRequest()
		if err != nil {
			var bad *badRequest
			if errors.As(err, &bad) {
				fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
					bad.status, statusText(bad.status), len(bad.msg), bad.msg)
				_ = c.bw.Flush()
			}
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		r.ctx = ctx
		w := &ResponseWriter{c: c, head: r.Method == MethodHead, close: r.close}
		r.body.cancel, r.body.w = cancel, w
		if r.body.done() {
			c.watch(cancel)
		}
		h(w, r)
		// What the handler left of the body is read past, if it can be, before the answer's
		// head goes out (if it has not), so that the head says whether the connection stays.
		kept := r.body.drain()
		if !kept {
			w.closeAfter()
		}
		w.finish()
		c.stopWatching()
		cancel()
		if !kept {
			c.closeLingering()
			return
		}
		if w.close || w.err != nil {
			return
		}
	}
}

// closeLingering ends a connection whose client may still be sending a body (one too long to
// read past): it stops writing and reads what comes for up to half a second before the close,
// which would otherwise reset the connection and could lose the answer before the client read
// it (net/http's server does the same).
func (c *conn) closeLingering() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, c.nc)
}

// watch cancels the request's context if the client goes away (or its connection fails)
// while the request is served: a read of the connection, once the request's body has been
// read, ends only then — or when the next request comes, or stopWatching stops it.
func (c *conn) watch(cancel context.CancelFunc) {
	done := make(chan struct{})
	c.watching = done
	go func() {
		defer close(done)
		if _, err := c.br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
}

// stopWatching ends the watch, if one runs (a read deadline in the past, the only deadline
// the connection ever has), and waits for it: the connection's reader is the next request's
// again.
func (c *conn) stopWatching() {
	if c.watching == nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	<-c.watching
	c.watching = nil
	_ = c.nc.SetReadDeadline(time.Time{})
}
