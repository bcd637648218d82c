package code

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// A driver whose fds 1 and 2 the agent reads (Node's) fences every event it sends on fd 3:
// first it writes a marker into fds 1 and 2 — "\x00nsbox-fence:TOKEN:SEQ\x00", TOKEN the
// agent's for this interpreter, SEQ the event's 8 hex digits — then the event, naming SEQ. The
// agent strips the markers from the output; it passes the event on only once it has read both
// markers, and what follows a marker only once the event has been passed on (fenceWait at
// most, each): output and events reach the cell in the order they were written.

// fenceWait bounds how long an event waits for its markers (a driver that wrote them always
// gets them read; this only keeps a lost one from stalling the cell).
const fenceWait = 2 * time.Second

// fences is what the agent has read of one interpreter's fds 1 and 2. Its fields are guarded
// by the context's mu.
type fences struct {
	c     *Context
	token string
	head  []byte // a marker's start: "\x00nsbox-fence:TOKEN:"
	pipes []*fencedPipe
	// delivered is the last fence whose event was passed on.
	delivered uint64
	cond      *sync.Cond // on c.mu: a pipe passed a marker or ended, or an event was passed on
}

// fencedPipe is one of the interpreter's fds 1 and 2, as the agent reads it.
type fencedPipe struct {
	stream  string
	pipe    syscall.RawConn
	pending []byte // read, not delivered yet: the start of a marker, maybe
	passed  uint64 // the last fence whose marker was read
	ended   bool
}

// markerTail is what follows a marker's head: 8 hex digits and a NUL.
const markerTail = 9

func newFences(c *Context) (*fences, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(b[:])
	return &fences{c: c, token: token, head: []byte("\x00nsbox-fence:" + token + ":"), cond: sync.NewCond(&c.mu)}, nil
}

// read reads p's pipe until it ends, delivering what comes (readOutput).
func (f *fences) read(p *fencedPipe) {
	buf := make([]byte, 32<<10)
	_ = p.pipe.Read(func(fd uintptr) bool {
		f.c.mu.Lock()
		defer f.c.mu.Unlock()
		for {
			n, err := unix.Read(int(fd), buf)
			if n > 0 {
				f.take(p, buf[:n])
			}
			switch {
			case errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN):
				return false
			case err != nil || n == 0:
				f.deliver(p.stream, p.pending)
				p.pending, p.ended = nil, true
				f.cond.Broadcast()
				return true
			}
		}
	})
}

// take delivers what was read of p, the markers in it taken out and noted. c.mu is held.
func (f *fences) take(p *fencedPipe, data []byte) {
	b := append(p.pending, data...)
	for {
		i := bytes.Index(b, f.head)
		if i < 0 {
			keep := f.markerStart(b)
			f.deliver(p.stream, b[:len(b)-keep])
			b = b[len(b)-keep:]
			break
		}
		end := i + len(f.head) + markerTail
		if len(b) < end {
			f.deliver(p.stream, b[:i])
			b = b[i:]
			break
		}
		seq, err := strconv.ParseUint(string(b[end-markerTail:end-1]), 16, 64)
		if err != nil || b[end-1] != 0 {
			// Not one of ours after all: its first byte is output.
			f.deliver(p.stream, b[:i+1])
			b = b[i+1:]
			continue
		}
		f.deliver(p.stream, b[:i])
		p.passed = max(p.passed, seq)
		f.cond.Broadcast()
		f.waitFor(func() bool { return f.delivered >= seq }) // what follows comes after the event
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

// deliver hands output to the running cell (dropped between runs). c.mu is held.
func (f *fences) deliver(stream string, b []byte) {
	if len(b) > 0 && f.c.sink != nil {
		f.c.sink(driverEvent{Type: stream, output: append([]byte(nil), b...)})
	}
}

// await waits until every pipe has passed fence seq, or ended, or fenceWait has gone by.
// c.mu is held.
func (f *fences) await(seq uint64) {
	f.waitFor(func() bool {
		for _, p := range f.pipes {
			if p.passed < seq && !p.ended {
				return false
			}
		}
		return true
	})
}

// passedOn notes that the event of fence seq was passed on. c.mu is held.
func (f *fences) passedOn(seq uint64) {
	f.delivered = max(f.delivered, seq)
	f.cond.Broadcast()
}

// waitFor waits until done holds, at most fenceWait. c.mu is held.
func (f *fences) waitFor(done func() bool) {
	if done() {
		return
	}
	deadline := time.Now().Add(fenceWait)
	timer := time.AfterFunc(fenceWait, func() {
		f.c.mu.Lock()
		f.cond.Broadcast()
		f.c.mu.Unlock()
	})
	defer timer.Stop()
	for !done() && time.Now().Before(deadline) {
		f.cond.Wait()
	}
}

// outputStreams are the streams of the interpreter's fds 1 and 2.
var outputStreams = [2]string{api.EventStdout, api.EventStderr}
