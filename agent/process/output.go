package process

import (
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/session"
)

// output is a process's log: stdout and stderr in one ring, in the order they were read, with
// one cursor space. The ring keeps bytes only; runs remembers where each run of one stream
// starts, so a read can say which stream each byte came from. Runs are bounded too: when a
// process switches streams so often that they would outgrow maxRuns, the oldest run is
// dropped, and its bytes count as fallen off the ring (floor).
type output struct {
	mu      sync.Mutex // a write and its run are recorded together
	ring    *session.Ring
	size    int64
	runs    []run
	maxRuns int
	floor   int64 // bytes before it are gone, even if the ring still holds them

	// reading is held from a read of a pipe until its bytes are in the log (drain), so that
	// settle can tell an empty pipe from one whose last bytes are on their way into the log.
	reading sync.Mutex
	pipes   []syscall.RawConn // the pipes being drained (under reading)
}

type run struct {
	off    int64 // log offset of the run's first byte
	stream string
}

// newOutput makes a log of size bytes that begins with the earlier chunks (their data as
// encoded in events; undecodable ones are skipped).
func newOutput(size int64, earlier []api.ProcessEvent) *output {
	o := &output{ring: session.NewRing(int(size)), size: size, maxRuns: int(max(64, size/32))}
	for _, ev := range earlier {
		if b, err := ev.Bytes(); err == nil && (ev.Type == api.EventStdout || ev.Type == api.EventStderr) {
			o.write(ev.Type, b)
		}
	}
	return o
}

func (o *output) write(stream string, p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	end := o.ring.End()
	if len(o.runs) == 0 || o.runs[len(o.runs)-1].stream != stream {
		o.runs = append(o.runs, run{off: end, stream: stream})
	}
	_, _ = o.ring.Write(p)
	// Forget runs that ended before the oldest byte the ring still keeps.
	start, drop := max(0, end+int64(len(p))-o.size), 0
	for drop+1 < len(o.runs) && o.runs[drop+1].off <= start {
		drop++
	}
	if over := len(o.runs) - o.maxRuns; over > drop {
		drop = over
	}
	if drop > 0 {
		o.runs = append(o.runs[:0], o.runs[drop:]...)
		o.floor = max(o.floor, o.runs[0].off)
	}
}

// read returns the chunks after cursor (at most limit bytes; all when limit < 0), how many
// bytes fell off the ring between cursor and the first chunk, the next cursor, and a channel
// closed at the next write.
func (o *output) read(cursor int64, limit int) (chunks []api.ProcessEvent, skipped, next int64, changed <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	from := max(cursor, o.floor)
	data, skipped, next, changed := o.ring.ReadAt(from, limit)
	skipped += from - cursor
	off := next - int64(len(data))
	j := 0 // the run that holds off
	for j+1 < len(o.runs) && o.runs[j+1].off <= off {
		j++
	}
	for ; len(data) > 0; j++ {
		n := int64(len(data))
		if j+1 < len(o.runs) { // run j ends where run j+1 starts
			n = min(n, o.runs[j+1].off-off)
		}
		ev := api.OutputEvent(o.runs[j].stream, data[:n])
		chunks = append(chunks, api.ProcessEvent{Type: ev.Type, Data: ev.Data, Encoding: ev.Encoding, Cursor: off + n})
		data, off = data[n:], off+n
	}
	return chunks, skipped, next, changed
}

func (o *output) end() int64 { return o.ring.End() }

// drain copies a pipe into the log until it ends.
func (o *output) drain(stream string, r *os.File) {
	defer r.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		return // only a closed file has none
	}
	o.reading.Lock()
	o.pipes = append(o.pipes, rc)
	o.reading.Unlock()
	defer func() {
		o.reading.Lock()
		o.pipes = slices.DeleteFunc(o.pipes, func(c syscall.RawConn) bool { return c == rc })
		o.reading.Unlock()
	}()
	buf := make([]byte, 64<<10)
	var end error
	for end == nil {
		err := rc.Read(func(fd uintptr) bool {
			o.reading.Lock()
			defer o.reading.Unlock()
			n, err := unix.Read(int(fd), buf)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false // wait until the pipe is readable
			case errors.Is(err, unix.EINTR):
			case err != nil:
				end = err
			case n == 0:
				end = io.EOF
			default:
				o.write(stream, buf[:n])
			}
			return true
		})
		if err != nil {
			end = err
		}
	}
}

// settle waits until the process's pipes hold nothing that is not in its log yet — what it
// wrote before the call is then in the log — or until deadline (a process that goes on
// writing).
func (o *output) settle(deadline time.Time) {
	for !o.pipesEmpty() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

func (o *output) pipesEmpty() bool {
	o.reading.Lock()
	defer o.reading.Unlock()
	for _, rc := range o.pipes {
		queued := 0 // TIOCINQ is FIONREAD: the bytes a pipe holds
		if err := rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err == nil && queued > 0 {
			return false
		}
	}
	return true
}
