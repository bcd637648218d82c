package spectest

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ValidateSSE checks a whole Server-Sent Events body, read to its end, against the event
// stream documented for the operation and status: every event must be documented, its data
// must match the event's schema, an object's "type" property must equal the event's name,
// and the stream must end right after one of its final events (x-sse endsWith). path is a
// template or a concrete request path, as for ValidateResponse.
func (s *Spec) ValidateSSE(method, path string, status int, body []byte) error {
	stream, err := s.NewSSEStream(method, path, status)
	if err != nil {
		return err
	}
	if _, err := stream.Write(body); err != nil {
		return err
	}
	return stream.Close()
}

// SSEStream checks an event stream as its bytes arrive, so a test can check a stream it is
// reading without waiting for its end: Write checks each event as soon as its blank line has
// arrived, and Close checks that the stream ended properly. A stream its reader abandons
// early is checked by never calling Close. Lines may end in "\n" or "\r\n".
type SSEStream struct {
	spec   *Spec
	prefix string // "METHOD /template: status N"
	sse    *sseSpec
	buf    []byte   // the start of a line whose end has not arrived yet
	lines  []string // the lines of the event being read
	n      int      // events seen
	last   string   // a final event, once seen
	err    error    // the first problem; every later call returns it
}

// NewSSEStream starts checking an event stream answered by the operation with the status.
func (s *Spec) NewSSEStream(method, path string, status int) (*SSEStream, error) {
	key, resp, err := s.response(method, path, status)
	if err != nil {
		return nil, err
	}
	media := resp.Content[eventStream]
	if media == nil || media.SSE == nil {
		return nil, fmt.Errorf("%s: status %d is not documented as an event stream (%s)", key, status, eventStream)
	}
	return &SSEStream{spec: s, prefix: fmt.Sprintf("%s: status %d", key, status), sse: media.SSE}, nil
}

// Write takes the next bytes of the stream and checks every event they complete. It returns
// the first problem found, and returns it again on every later call.
func (st *SSEStream) Write(p []byte) (int, error) {
	if st.err != nil {
		return 0, st.err
	}
	st.buf = append(st.buf, p...)
	for {
		i := bytes.IndexByte(st.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSuffix(string(st.buf[:i]), "\r")
		st.buf = st.buf[i+1:]
		if line != "" {
			st.lines = append(st.lines, line)
			continue
		}
		lines := st.lines
		st.lines = nil
		if err := st.event(lines); err != nil {
			st.err = fmt.Errorf("%s: %w", st.prefix, err)
			return 0, st.err
		}
	}
	return len(p), nil
}

// Close reports whether the stream, now at its end, ended properly: not inside an event, and
// right after a final event.
func (st *SSEStream) Close() error {
	switch {
	case st.err != nil:
		return st.err
	case len(st.buf) > 0 || len(st.lines) > 0:
		st.err = fmt.Errorf("%s: the stream ends inside an event (no blank line after it): %q", st.prefix, strings.Join(append(st.lines, string(st.buf)), "\n"))
	case len(st.sse.EndsWith) > 0 && st.last == "":
		st.err = fmt.Errorf("%s: the stream ended after %d events without a final event (one of %q)", st.prefix, st.n, st.sse.EndsWith)
	}
	return st.err
}

// event checks one event, given as its lines.
func (st *SSEStream) event(lines []string) error {
	name, named, data, hasData := "message", false, []string(nil), false // "message": SSE's default name
	for _, line := range lines {
		if strings.HasPrefix(line, ":") {
			continue // a comment
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			name, named = value, true
		case "data":
			data, hasData = append(data, value), true
		default:
			return fmt.Errorf("event %d: field %q is not used by this API (only event and data)", st.n+1, field)
		}
	}
	switch {
	case !hasData && named:
		return fmt.Errorf("event %d (%s): no data", st.n+1, name)
	case !hasData:
		return nil // only comments: not an event
	}
	st.n++
	return st.spec.checkEvent(st.sse, st.n, &st.last, name, []byte(strings.Join(data, "\n")))
}

// checkEvent checks the nth event of a stream that events documents, given its name and data
// (JSON, or raw bytes for an event documented as a binary string), and notes a final event in
// last (which must still be empty).
func (s *Spec) checkEvent(events *sseSpec, n int, last *string, name string, data []byte) error {
	at := fmt.Sprintf("event %d (%s)", n, name)
	if *last != "" {
		return fmt.Errorf("%s: comes after the final %q event", at, *last)
	}
	sc := events.Events[name]
	if sc == nil {
		return fmt.Errorf("%s: event %q is not documented (documented: %s)", at, name, strings.Join(slices.Sorted(maps.Keys(events.Events)), ", "))
	}
	if sc.Type == "string" && sc.Format == "binary" {
		return nil // raw bytes: anything goes
	}
	v, err := decodeJSON(data)
	if err != nil {
		return fmt.Errorf("%s: data %w", at, err)
	}
	if err := s.validate(sc, v, "$", 0); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	if obj, ok := v.(map[string]any); ok {
		if typ, ok := obj["type"]; ok && typ != name {
			return fmt.Errorf("%s: $.type is %s, but the event is named %q", at, short(typ), name)
		}
	}
	if slices.Contains(events.EndsWith, name) {
		*last = name
	}
	return nil
}
