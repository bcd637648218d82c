package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// The HTTP idiom the daemon and the agent share: handlers return their error, ServeError
// answers it (logging what failed inside the server), DecodeBody reads every JSON body, and
// streams are Server-Sent Events written by SSEWriter and read by SSEReader — from the agent
// to the daemon, and from the daemon to its clients. It is written against AnswerWriter, not
// net/http, so that the agent, which serves HTTP without net/http (agent/httpd), shares it;
// the daemon's side adapts net/http to it in package httpapi.

// AnswerWriter is where a handler writes its answer: the status and headers first, then the
// body, sent on its way by Flush.
type AnswerWriter interface {
	// SetHeader sets a header of the answer; it has no effect once the status is written.
	SetHeader(key, value string)
	// WriteHeader sends the status and the headers (Write sends 200 first if it was not).
	WriteHeader(status int)
	Write(p []byte) (int, error)
	// Flush sends what was written so far to the client.
	Flush() error
}

// MaxRequestBody bounds a JSON request body (exec stdin included).
const MaxRequestBody = 64 << 20

// ServeError answers err. An error that is not an *Error, or is one with code internal, means
// something failed inside the server: it is logged, and answered as internal with its message.
func ServeError(log *slog.Logger, w AnswerWriter, err error) {
	var e *Error
	if !errors.As(err, &e) || e.Code == CodeInternal {
		log.Error("request failed", "err", err)
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	WriteJSON(w, e.HTTPStatus(), ErrorBody{Error: e})
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w AnswerWriter, status int, v any) {
	w.SetHeader("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err as an error envelope; errors that are not *Error become "internal".
// Servers answer through ServeError, which also logs; this is for answers with no logger.
func WriteError(w AnswerWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	WriteJSON(w, e.HTTPStatus(), ErrorBody{Error: e})
}

// ReadError turns the body of a non-2xx answer with the given status code and line ("404 Not
// Found") into an *Error, keeping the server's code and message.
func ReadError(body io.Reader, statusCode int, status string) *Error {
	var eb ErrorBody
	if err := json.NewDecoder(body).Decode(&eb); err == nil && eb.Error != nil {
		return eb.Error
	}
	code := CodeInternal
	for c, s := range codeStatus {
		if s == statusCode {
			code = c
		}
	}
	return Errorf(code, "%s", status)
}

// DecodeBody decodes a JSON request body into v, strictly (unknown fields and trailing data
// are errors) and at most MaxRequestBody bytes of it. An empty body is an error unless
// optional, when it leaves v as it is. The body is read to its end: only then does the
// server watch the connection and cancel the request when the client goes away.
func DecodeBody(body io.Reader, v any, optional bool) error {
	data, err := ReadBody(body, optional)
	if err != nil || data == nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalidArgument, "malformed JSON body: %v", err)
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return Errorf(CodeInvalidArgument, "malformed JSON body: data after the object")
	}
	return nil
}

// ReadBody reads a request body to its end, for DecodeBody or a decoder of its own: at most
// MaxRequestBody bytes, and not empty (nothing but white space) unless optional, when it
// returns nil.
func ReadBody(body io.Reader, optional bool) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(body, MaxRequestBody+1))
	if err != nil {
		return nil, Errorf(CodeInvalidArgument, "read request body: %v", err)
	}
	if len(data) > MaxRequestBody {
		return nil, Errorf(CodeTooLarge, "request body is larger than %d bytes", MaxRequestBody)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if optional {
			return nil, nil
		}
		return nil, Errorf(CodeInvalidArgument, "request body is empty; send a JSON object")
	}
	return data, nil
}

// EventStream is the media type of Server-Sent Events.
const EventStream = "text/event-stream"

// AcceptsEventStream reports whether a request's Accept header asks for its answer as
// Server-Sent Events.
func AcceptsEventStream(accept string) bool { return strings.Contains(accept, EventStream) }

// SSEWriter writes Server-Sent Events, each one flushed at once, from any goroutine. The
// first event sends the 200 header.
type SSEWriter struct {
	mu      sync.Mutex
	w       AnswerWriter
	started bool
	failed  error
}

// NewSSEWriter returns a writer of events to w.
func NewSSEWriter(w AnswerWriter) *SSEWriter { return &SSEWriter{w: w} }

// Start sends the 200 and its headers now, before any event: the other side learns at once
// that the stream is open (a terminal can be upgraded, a follower answered) while it has
// nothing to say yet.
func (s *SSEWriter) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start()
	s.flush()
	return s.failed
}

func (s *SSEWriter) start() {
	if !s.started {
		s.started = true
		s.w.SetHeader("Content-Type", EventStream)
		s.w.SetHeader("Cache-Control", "no-cache")
		s.w.WriteHeader(200)
	}
}

func (s *SSEWriter) flush() {
	if err := s.w.Flush(); err != nil && s.failed == nil {
		s.failed = err
	}
}

// Send writes one event whose data is v as JSON. After the client went away every send fails
// (with the first error).
func (s *SSEWriter) Send(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return s.SendRaw(event, data)
}

// SendRaw writes one event whose data is JSON already (one line: a line break would end the
// event early, and is refused).
func (s *SSEWriter) SendRaw(event string, data []byte) error {
	if bytes.ContainsAny(data, "\r\n") {
		return fmt.Errorf("%s event: its data holds a line break", event)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	s.start()
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		s.failed = err
		return err
	}
	s.flush()
	return s.failed
}

// SendError ends a stream with an "error" event carrying err as an *Error.
func (s *SSEWriter) SendError(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	return s.Send(EventError, ErrorBody{Error: e})
}

// EventError is the event that ends a stream that failed; its data is an ErrorBody.
const EventError = "error"

// SSEReader reads Server-Sent Events as SSEWriter writes them.
type SSEReader struct {
	lines *bufio.Scanner
}

// maxEventBytes bounds one event's data line.
const maxEventBytes = 16 << 20

// NewSSEReader returns a reader of the events in r.
func NewSSEReader(r io.Reader) *SSEReader { return NewSSEReaderSize(r, 64<<10) }

// NewSSEReaderSize returns a reader of the events in r whose buffer starts at size bytes
// (and grows as an event needs): small for a stream that stays open long and carries little.
func NewSSEReaderSize(r io.Reader, size int) *SSEReader {
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, size), maxEventBytes)
	return &SSEReader{lines: lines}
}

// Next returns the next event's name and data. An "error" event is returned as its *Error;
// the end of the stream as io.EOF.
func (s *SSEReader) Next() (event string, data []byte, err error) {
	for s.lines.Scan() {
		line := s.lines.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = bytes.Clone(line[len("data: "):])
			if event == EventError {
				var eb ErrorBody
				if json.Unmarshal(data, &eb) == nil && eb.Error != nil {
					return event, data, eb.Error
				}
				return event, data, fmt.Errorf("event stream failed: %s", data)
			}
			return event, data, nil
		}
	}
	if err := s.lines.Err(); err != nil {
		return "", nil, fmt.Errorf("read event stream: %w", err)
	}
	return "", nil, io.EOF
}

// NextJSON reads the next event and decodes its data into v.
func (s *SSEReader) NextJSON(v any) (event string, err error) {
	event, data, err := s.Next()
	if err != nil {
		return event, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return event, fmt.Errorf("decode %s event: %w", event, err)
	}
	return event, nil
}
