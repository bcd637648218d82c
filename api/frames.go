package api

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Frames are how the agent streams an exec to the daemon: the same events as the API's
// Server-Sent Events (start, stdout, stderr, exit, error), but an output event's payload is
// the output's raw bytes, so that neither side encodes, escapes or parses them on the way
// (the daemon encodes them once, for its client). Every other event's payload is the JSON
// its SSE data would be. A frame is: the event name's length (1 byte), the name, the
// payload's length (4 bytes, big-endian), the payload.

// EventFrames is the media type of a stream of frames. An exec's client may ask for it too
// (Accept): the answer is then its output as raw stdout and stderr frames as they come, each
// stream within maxOutputBytes when the request gives it (no bound otherwise, as for a
// stream), then the exit frame, whose result names each stream "utf-8" (text) or "raw"; or
// an error frame.
const EventFrames = "application/x-nsbox-frames"

// AcceptsFrames reports whether a request's Accept header asks for its answer as frames.
func AcceptsFrames(accept string) bool { return strings.Contains(accept, EventFrames) }

// maxFrame bounds one frame's payload.
const maxFrame = 16 << 20

// FrameWriter writes frames, each one flushed at once (but see SendSoon), from any goroutine.
// The first frame sends the 200 header.
type FrameWriter struct {
	mu      sync.Mutex
	w       AnswerWriter
	started bool
	failed  error
	head    [1 + 255 + 4]byte // a frame's head, before its payload
	// pending flushes what SendSoon wrote unless a frame flushed (or the stream ended) first.
	pending *time.Timer
	ended   bool // SendLast or End was called: w is the handler's again
}

// NewFrameWriter returns a writer of frames to w.
func NewFrameWriter(w AnswerWriter) *FrameWriter { return &FrameWriter{w: w} }

// How a frame goes out: flushed at once, within a while, or with the end of the answer.
type frameFlush int

const (
	flushNow frameFlush = iota
	flushSoon
	flushLast
)

// Send writes one frame. After the client went away every send fails (with the first error).
func (f *FrameWriter) Send(event string, payload []byte) error {
	return f.send(event, payload, flushNow, 0)
}

// SendSoon writes one frame and flushes it with the next frame that is flushed, or within d
// if none comes by then. A command that ends (or speaks) within d then answers in one write
// instead of two: its reader wakes once, and so does every hop after it on its way to the
// client, each a few context switches (on this project's VMs, 10 µs each and more for a
// sandbox that idled). The stream must end with SendLast, a Send or End.
func (f *FrameWriter) SendSoon(event string, payload []byte, d time.Duration) error {
	return f.send(event, payload, flushSoon, d)
}

// SendLast writes the stream's last frame but leaves it to the handler, which returns next,
// to send it: it then goes out in one write with the end of the chunked answer, so the reader
// sees both at once and has its connection back (for its next request) without waiting for
// the end to come on its own.
func (f *FrameWriter) SendLast(event string, payload []byte) error {
	return f.send(event, payload, flushLast, 0)
}

// End gives the ResponseWriter back to the handler (which is about to return): a frame sent
// with SendSoon and not flushed yet is left to the handler's return.
func (f *FrameWriter) End() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.end()
}

// end stops the pending flush and marks the stream ended. f.mu must be held.
func (f *FrameWriter) end() {
	f.ended = true
	f.stopPending()
}

// stopPending stops the flush SendSoon scheduled, if any. f.mu must be held.
func (f *FrameWriter) stopPending() {
	if f.pending != nil {
		f.pending.Stop()
		f.pending = nil
	}
}

// flushPending is the flush SendSoon scheduled, unless something flushed or ended the
// stream meanwhile.
func (f *FrameWriter) flushPending() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil || f.ended || f.failed != nil {
		return
	}
	f.pending = nil
	if err := f.w.Flush(); err != nil {
		f.failed = err
	}
}

func (f *FrameWriter) send(event string, payload []byte, how frameFlush, within time.Duration) error {
	if len(event) > 255 || len(payload) > maxFrame {
		return fmt.Errorf("frame %s of %d bytes is too large", event, len(payload))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed != nil {
		return f.failed
	}
	if f.ended {
		return errors.New("frame after the stream's end")
	}
	if !f.started {
		f.started = true
		f.w.SetHeader("Content-Type", EventFrames)
		f.w.WriteHeader(200)
	}
	head := append(append(append(f.head[:0], byte(len(event))), event...), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(head[len(head)-4:], uint32(len(payload)))
	if _, err := f.w.Write(head); err != nil {
		f.failed = err
		return err
	}
	if _, err := f.w.Write(payload); err != nil {
		f.failed = err
		return err
	}
	switch how {
	case flushLast:
		f.end()
		return nil
	case flushSoon:
		if f.pending == nil {
			f.pending = time.AfterFunc(within, f.flushPending)
		}
		return nil
	}
	f.stopPending()
	if err := f.w.Flush(); err != nil {
		f.failed = err
	}
	return f.failed
}

// SendJSON writes one frame whose payload is v as JSON.
func (f *FrameWriter) SendJSON(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return f.Send(event, data)
}

// SendError ends a stream with an "error" frame carrying err as an *Error.
func (f *FrameWriter) SendError(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	return f.SendJSON(EventError, ErrorBody{Error: e})
}

// FrameReader reads frames as FrameWriter writes them.
type FrameReader struct {
	src   io.Reader
	r     *bufio.Reader // on src
	out   []byte        // the payload of the last output frame Next returned
	head  [255 + 4]byte // a frame's head after its first byte
	large largeBuffers  // the output buffers it made large (NextOutput)
}

// NewFrameReader returns a reader of the frames in r. Its buffer holds frames' heads and small
// payloads; large payloads are read past it, so it is small: a reader is made per exec, and
// Go allocates a buffer of 32 KiB or more as a large object, pages of its own zeroed (and
// faulted in) every time.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{src: r, r: bufio.NewReaderSize(r, 16<<10)}
}

// Next returns the next frame's event name and payload. An "error" frame is returned as its
// *Error; the end of the stream as io.EOF. The payload of a stdout or stderr frame is valid
// until the next call only: its buffer is reused.
func (f *FrameReader) Next() (event string, payload []byte, err error) {
	return f.NextOutput(nil, nil)
}

// NextOutput is Next, except that the payload of a stdout frame is appended to *stdout and
// that of a stderr frame to *stderr (when those are not nil), read into them straight from the
// stream, and not returned. At the exit (or error) frame, a buffer it made large gives the
// memory of its capacity past its length back (it reads as zeros).
func (f *FrameReader) NextOutput(stdout, stderr *[]byte) (event string, payload []byte, err error) {
	n, err := f.r.ReadByte()
	if err == io.EOF {
		return "", nil, io.EOF
	}
	head := f.head[:int(n)+4]
	if err == nil {
		_, err = io.ReadFull(f.r, head)
	}
	if err != nil {
		return "", nil, fmt.Errorf("read frame: %w", unexpectedEOF(err))
	}
	event = eventName(head[:n])
	size := binary.BigEndian.Uint32(head[n:])
	if size > maxFrame {
		return "", nil, fmt.Errorf("read frame: %s of %d bytes is too large", event, size)
	}
	dst := &payload
	switch {
	case event == EventStdout && stdout != nil:
		dst = stdout
	case event == EventStderr && stderr != nil:
		dst = stderr
	case event == EventStdout || event == EventStderr:
		f.out = f.out[:0]
		dst = &f.out
	}
	if err := f.readPayload(dst, int(size)); err != nil {
		return "", nil, fmt.Errorf("read frame: %w", unexpectedEOF(err))
	}
	switch dst {
	case stdout, stderr:
		return event, nil, nil
	case &f.out:
		return event, f.out, nil
	}
	if event == EventExit || event == EventError {
		// The output is whole: its buffers no longer need their spare capacity in memory.
		for _, out := range []*[]byte{stdout, stderr} {
			if out != nil {
				f.large.settle(*out)
			}
		}
	}
	if event == EventError {
		var eb ErrorBody
		if json.Unmarshal(payload, &eb) == nil && eb.Error != nil {
			return event, payload, eb.Error
		}
		return event, payload, fmt.Errorf("event stream failed: %s", payload)
	}
	return event, payload, nil
}

// eventName is name as a string, without an allocation for the names output frames carry.
func eventName(name []byte) string {
	switch string(name) {
	case EventStdout:
		return EventStdout
	case EventStderr:
		return EventStderr
	}
	return string(name)
}

// readPayload appends the next size bytes of the stream to *dst: what the buffer holds, then
// the rest read from the stream itself, not copied through the buffer. *dst at least doubles
// when it grows (append grows a large slice by a quarter: 100 MB in 64 KiB frames were
// copied four times over). A large buffer it makes is advised huge, and a large buffer's
// pages are made resident ahead of each write (prefault): faulted in one at a time, they
// cost more than the bytes.
func (f *FrameReader) readPayload(dst *[]byte, size int) error {
	b := *dst
	if cap(b)-len(b) < size {
		grown := make([]byte, 0, max(2*cap(b), len(b)+size))
		f.large.adopt(b, grown)
		prefault(grown, len(b)+size)
		b = append(grown, b...)
	} else {
		prefault(b, len(b)+size)
	}
	at := len(b)
	b = b[:at+size]
	n, _ := f.r.Read(b[at : at+min(size, f.r.Buffered())])
	if _, err := io.ReadFull(f.src, b[at+n:]); err != nil {
		return err
	}
	*dst = b
	return nil
}

// unexpectedEOF is err, with a stream that ends inside a frame an io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// NextJSON reads the next frame and decodes its payload into v.
func (f *FrameReader) NextJSON(v any) (event string, err error) {
	event, data, err := f.Next()
	if err != nil {
		return event, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return event, fmt.Errorf("decode %s event: %w", event, err)
	}
	return event, nil
}

// jsonEscape is, for each byte value, what stands for it inside a JSON string ("": itself),
// and jsonPlain whether that is itself.
var jsonEscape, jsonPlain = func() (t [256]string, plain [256]bool) {
	for c := range 0x20 {
		t[c] = fmt.Sprintf(`\u%04x`, c)
	}
	t['\n'], t['\r'], t['\t'], t['"'], t['\\'] = `\n`, `\r`, `\t`, `\"`, `\\`
	for c := range t {
		plain[c] = t[c] == ""
	}
	return t, plain
}()

// AppendJSONText appends valid UTF-8 text b to dst as the inside of a JSON string (without
// the quotes). Only ASCII bytes are escaped, so b may be a piece of text that splits a
// character. It is much faster than encoding/json, which checks every character.
func AppendJSONText(dst, b []byte) []byte {
	for len(b) > 0 {
		i := 0
		for i < len(b) && jsonPlain[b[i]] {
			i++
		}
		dst = append(dst, b[:i]...)
		if i < len(b) {
			dst = append(dst, jsonEscape[b[i]]...)
			i++
		}
		b = b[i:]
	}
	return dst
}

// AppendOutputEvent appends the JSON of the ExecEvent that carries one output chunk (what
// OutputEvent makes, as encoding/json would write it, but faster).
func AppendOutputEvent(dst []byte, stream string, b []byte) []byte {
	dst = append(append(append(dst, `{"type":"`...), stream...), `","data":"`...)
	if !utf8.Valid(b) {
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, `","encoding":"base64"}`...)
	}
	dst = AppendJSONText(dst, b)
	return append(dst, `","encoding":"utf-8"}`...)
}

// streamSendBuffer is the send buffer (SO_SNDBUF) of every connection a StreamListener
// accepts. A unix socket's default (net.core.wmem_default, 208 KiB) holds a fifth of a 1 MiB
// output frame: the writer stops several times a frame, waiting for the reader to wake. The
// kernel grants at most net.core.wmem_max (and counts twice the value asked for); it uses the
// memory only for bytes in flight.
const streamSendBuffer = 1 << 20

// StreamListener returns ln, its unix socket connections with a send buffer large enough to
// stream exec output without stopping at every chunk. (TCP connections are left to the
// kernel's autotuning, which a fixed buffer would turn off.)
func StreamListener(ln net.Listener) net.Listener { return streamListener{ln} }

type streamListener struct{ net.Listener }

func (l streamListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.SetWriteBuffer(streamSendBuffer)
	}
	return c, err
}
