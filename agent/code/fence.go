package code

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// A driver whose fds 1 and 2 the agent reads (Node's) fences every event it sends on fd 3:
// first it writes a marker into fds 1 and 2 — "\x00nsbox-fence:TOKEN:SEQ\x00", TOKEN the
// agent's for this interpreter, SEQ the event's in 8 hex digits — then the event, naming SEQ.
// So when the agent reads an event, its markers are in the pipes already (or read): it drains
// the pipes up to them before it passes the event on, and holds what a pipe had after a
// marker until that marker's event has been passed on. Output and events reach the cell in
// the order they were written; the markers never do.

// fences is what the agent has read of one interpreter's fds 1 and 2. It is used under the
// context's mu.
type fences struct {
	c     *Context
	token string
	head  []byte // a marker's start: "\x00nsbox-fence:TOKEN:"
	pipes []*fencedPipe
	// delivered is the last fence whose event was passed on.
	delivered uint64
	buf       []byte // for drain
}

// fencedPipe is one of the interpreter's fds 1 and 2, as the agent reads it.
type fencedPipe struct {
	stream  string
	pipe    syscall.RawConn
	pending []byte // read, not parsed yet: the start of a marker, maybe
	// held is what was read after a marker whose event has not been passed on yet: that
	// marker first, then output and later markers, in order (release).
	held []segment
}

// segment is a piece of a fenced pipe: output, or a marker (fence > 0).
type segment struct {
	output []byte
	fence  uint64
}

// markerTail is what follows a marker's head: 8 hex digits and a NUL.
const markerTail = 9

// outputStreams are the streams of the interpreter's fds 1 and 2.
var outputStreams = [2]string{api.EventStdout, api.EventStderr}

func newFences(c *Context) (*fences, error) {
	// getrandom(2) itself, not crypto/rand: the agent would initialise the crypto packages
	// at every sandbox's start for these 8 bytes.
	var b [8]byte
	if _, err := unix.Getrandom(b[:], 0); err != nil {
		return nil, fmt.Errorf("random fence token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	return &fences{c: c, token: token, head: []byte("\x00nsbox-fence:" + token + ":"), buf: make([]byte, 32<<10)}, nil
}

// read reads p's pipe as output comes, until it ends.
func (f *fences) read(p *fencedPipe) {
	_ = p.pipe.Read(func(fd uintptr) bool {
		f.c.mu.Lock()
		defer f.c.mu.Unlock()
		return f.drain(p, int(fd))
	})
}

// drain reads what p's pipe (fd) holds now; it says whether the pipe has ended. c.mu is held.
func (f *fences) drain(p *fencedPipe, fd int) (ended bool) {
	for {
		n, err := unix.Read(fd, f.buf)
		if n > 0 {
			f.take(p, f.buf[:n])
		}
		switch {
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return false
		case err != nil || n == 0:
			f.output(p, p.pending)
			p.pending = nil
			return true
		}
	}
}

// event passes an event of fence seq on with pass, after the output its markers close: the
// markers were written before the event, so they are in the pipes now, or were read. c.mu is
// held.
func (f *fences) event(seq uint64, pass func()) {
	for _, p := range f.pipes {
		_ = p.pipe.Control(func(fd uintptr) { f.drain(p, int(fd)) }) // a closed pipe has nothing
	}
	f.release(seq - 1) // output before the markers, held behind earlier ones
	pass()
	f.delivered = max(f.delivered, seq)
	f.release(seq)
}

// take parses what was read of p into output and markers. c.mu is held.
func (f *fences) take(p *fencedPipe, data []byte) {
	b := append(p.pending, data...)
	for {
		i := bytes.Index(b, f.head)
		if i < 0 {
			keep := f.markerStart(b)
			f.output(p, b[:len(b)-keep])
			b = b[len(b)-keep:]
			break
		}
		end := i + len(f.head) + markerTail
		if len(b) < end {
			f.output(p, b[:i])
			b = b[i:]
			break
		}
		seq, err := strconv.ParseUint(string(b[end-markerTail:end-1]), 16, 64)
		if err != nil || b[end-1] != 0 {
			// Not one of ours after all: its first byte is output.
			f.output(p, b[:i+1])
			b = b[i+1:]
			continue
		}
		f.output(p, b[:i])
		if seq > f.delivered { // else its event went on without it (its line was lost)
			p.held = append(p.held, segment{fence: seq})
		}
		b = b[end:]
	}
	p.pending = append([]byte(nil), b...)
}

// markerStart is how many of b's last bytes may begin a marker whose rest is yet to come.
func (f *fences) markerStart(b []byte) int {
	for k := min(len(f.head)-1, len(b)); k > 0; k-- {
		if bytes.HasPrefix(f.head, b[len(b)-k:]) {
			return k
		}
	}
	return 0
}

// output passes output of p on, or holds it behind a marker whose event has not been.
func (f *fences) output(p *fencedPipe, b []byte) {
	switch {
	case len(b) == 0:
	case len(p.held) > 0:
		p.held = append(p.held, segment{output: append([]byte(nil), b...)})
	default:
		f.deliver(p.stream, b)
	}
}

// release passes on what the pipes held behind the markers of fences up to seq. c.mu is held.
func (f *fences) release(seq uint64) {
	for _, p := range f.pipes {
		for len(p.held) > 0 && (p.held[0].fence == 0 || p.held[0].fence <= seq) {
			f.deliver(p.stream, p.held[0].output)
			p.held = p.held[1:]
		}
	}
}

// deliver hands output to the running cell (dropped between runs). c.mu is held.
func (f *fences) deliver(stream string, b []byte) {
	if len(b) > 0 && f.c.sink != nil {
		f.c.sink(driverEvent{Type: stream, output: append([]byte(nil), b...)})
	}
}
