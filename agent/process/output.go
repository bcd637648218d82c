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
)

// output is a process's log: stdout and stderr in one ring, in the order they were read, with
// one cursor space. The ring keeps bytes only; runs remembers where each run of one stream
// starts, so a read can say which stream each byte came from. Runs are bounded too: when a
// process switches streams so often that they would outgrow maxRuns, the oldest run is
// dropped, and its bytes count as fallen off the ring.
//
// The ring is a list of blocks of bs bytes (see logBlock), taken from the manager's budget as
// it fills: blocks[i] holds the log's bytes from (first+i)*bs. It keeps at most the newest
// size bytes, and fewer when the budget has no more blocks for it, or took some of its blocks
// back (its process ended): then its oldest block is reused for the newest bytes.
type output struct {
	budget *logBudget // nil: no budget (tests)
	wmu    sync.Mutex // one write at a time (the stdout and stderr drains), across its budget calls
	// Under wmu: the budget refused this log a block at its freed count refused (0: it did
	// not), at refusedAt; the log does not ask again until that may have changed.
	refused   uint64
	refusedAt time.Time

	mu        sync.Mutex // a write and its run are recorded together
	size      int64      // at most the newest size bytes are kept
	bs        int        // the blocks' size: logBlock, or size when smaller
	maxBlocks int        // enough for size bytes wherever they start in a block
	blocks    [][]byte
	first     int64 // the block index (offset/bs) of blocks[0]
	start     int64 // bytes before it are gone
	written   int64 // the offset after the last byte written
	wake      chan struct{}
	runs      []run
	maxRuns   int
	dead      bool // its process was removed: nothing is kept any more

	// reading is held from a read of a pipe until its bytes are in the log (drain), so that
	// settle can tell an empty pipe from one whose last bytes are on their way into the log.
	reading sync.Mutex
	pipes   []syscall.RawConn // the pipes being drained (under reading)
}

type run struct {
	off    int64 // log offset of the run's first byte
	stream string
}

// newOutput makes a log of size bytes whose memory is counted in budget (nil: none), that
// begins with the earlier chunks (their data as encoded in events; undecodable ones are
// skipped).
func newOutput(budget *logBudget, size int64, earlier []api.ProcessEvent) *output {
	bs := int(min(size, logBlock))
	o := &output{budget: budget, size: size, bs: bs, maxBlocks: int((size+int64(bs)-1)/int64(bs)) + 1,
		maxRuns: int(max(64, size/32)), wake: make(chan struct{})}
	budget.started(o)
	for _, ev := range earlier {
		if b, err := ev.Bytes(); err == nil && (ev.Type == api.EventStdout || ev.Type == api.EventStderr) {
			o.write(ev.Type, b)
		}
	}
	return o
}

// write appends p, a read of stream. The blocks and the run list room it needs are taken from
// the budget first, without o.mu (the budget may take memory back from other logs).
func (o *output) write(stream string, p []byte) {
	if len(p) == 0 {
		return
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	o.mu.Lock()
	blocks, runBytes := o.wants(stream, int64(len(p)))
	noRuns := len(o.runs) == 0
	o.mu.Unlock()
	// The run list first: a log that gets no room for its first run keeps nothing, and must
	// not have taken blocks (from other logs, which lose them) for nothing.
	if runBytes > 0 && !o.budget.reserve(o, runBytes) {
		runBytes = 0
		if noRuns {
			blocks = 0
		}
	}
	if blocks > 0 && o.budget.refuses(o.refused, o.refusedAt) {
		blocks = 0 // a capped log reuses its oldest block without asking the budget again
	}
	var spare [][]byte
	if blocks > 0 {
		var refused uint64
		spare, refused = o.budget.take(o, blocks, o.bs)
		if o.refused = refused; refused != 0 {
			o.refusedAt = time.Now()
		}
	}
	o.mu.Lock()
	spare, runBytes = o.put(stream, p, spare, runBytes)
	o.mu.Unlock()
	o.budget.release(spare, runBytes) // taken but not needed after all
}

// wants says how many blocks more, and how many bytes more of run list, a write of n bytes of
// stream would use. Under o.mu.
func (o *output) wants(stream string, n int64) (blocks int, runBytes int64) {
	if o.dead {
		return 0, 0
	}
	// Only the blocks this write crosses into: those after the last one the log holds.
	end := o.written + n
	bs := int64(o.bs)
	from := o.written / bs
	if n >= o.size { // it replaces everything: its blocks are reused first (put)
		from = (end - o.size) / bs
		need := int((end-1)/bs - from + 1)
		return max(0, min(need, o.maxBlocks)-len(o.blocks)), o.wantsRuns(stream)
	}
	if len(o.blocks) > 0 {
		from = o.first + int64(len(o.blocks))
	}
	need := int(max(0, (end-1)/bs-from+1))
	return min(need, o.maxBlocks-len(o.blocks)), o.wantsRuns(stream)
}

// wantsRuns is how many bytes more of run list a write of stream would use. Under o.mu.
func (o *output) wantsRuns(stream string) (runBytes int64) {
	if (len(o.runs) == 0 || o.runs[len(o.runs)-1].stream != stream) && len(o.runs) == cap(o.runs) && cap(o.runs) < o.maxRuns {
		runBytes = int64(min(o.maxRuns, max(8, 2*cap(o.runs)))-cap(o.runs)) * runSize
	}
	return runBytes
}

// put writes p into the log with the spare blocks and runBytes more of run list it was given,
// and returns what it did not use. Under o.mu.
func (o *output) put(stream string, p []byte, spare [][]byte, runBytes int64) ([][]byte, int64) {
	if o.dead {
		return spare, runBytes
	}
	defer o.changed()
	if len(o.runs) == 0 || o.runs[len(o.runs)-1].stream != stream {
		if len(o.runs) == cap(o.runs) {
			switch {
			case runBytes > 0:
				runs := make([]run, len(o.runs), int64(cap(o.runs))+runBytes/runSize)
				copy(runs, o.runs)
				o.runs, runBytes = runs, 0
			case len(o.runs) > 0: // no room for one more: the oldest run goes
				o.dropRuns(1)
			default: // no room for any: nothing can be kept
				o.written += int64(len(p))
				o.start = o.written
				return spare, runBytes
			}
		}
		o.runs = append(o.runs, run{off: o.written, stream: stream})
	}
	bs := int64(o.bs)
	if int64(len(p)) >= o.size { // only its last size bytes are kept: everything before goes
		o.written += int64(len(p)) - o.size
		p = p[int64(len(p))-o.size:]
		spare = append(spare, o.blocks...)
		o.blocks = nil
	}
	if len(o.blocks) == 0 {
		o.first, o.start = o.written/bs, o.written
	}
	for len(p) > 0 {
		if int(o.written/bs-o.first) == len(o.blocks) { // past the last block
			switch {
			case len(spare) > 0 && len(o.blocks) < o.maxBlocks:
				o.blocks = append(o.blocks, spare[len(spare)-1])
				spare = spare[:len(spare)-1]
			case len(o.blocks) > 0: // the oldest block is reused
				blk := o.blocks[0]
				o.blocks[0] = nil
				o.blocks = append(o.blocks[1:], blk)
				o.first++
			default: // no memory at all: nothing is kept
				o.written += int64(len(p))
				o.first, o.start = o.written/bs, o.written
				p = nil
				continue
			}
		}
		k := copy(o.blocks[o.written/bs-o.first][o.written%bs:], p)
		p, o.written = p[k:], o.written+int64(k)
	}
	o.start = max(o.start, o.first*bs, o.written-o.size)
	o.trimRuns()
	return spare, runBytes
}

// changed wakes those waiting for the log to change. Under o.mu.
func (o *output) changed() {
	close(o.wake)
	o.wake = make(chan struct{})
}

// trimRuns forgets the runs that ended before start, and those beyond maxRuns. Under o.mu.
func (o *output) trimRuns() {
	drop := 0
	for drop+1 < len(o.runs) && o.runs[drop+1].off <= o.start {
		drop++
	}
	o.dropRuns(max(drop, len(o.runs)-o.maxRuns))
}

// dropRuns forgets the n oldest runs; their bytes are gone. Under o.mu.
func (o *output) dropRuns(n int) {
	if n <= 0 {
		return
	}
	o.runs = append(o.runs[:0], o.runs[n:]...)
	if len(o.runs) == 0 {
		o.start = o.written
	} else {
		o.start = max(o.start, o.runs[0].off)
	}
}

// giveUp takes the oldest block off the log (nil: it has none) for the budget to hand on;
// once it has none left, it frees its run list too (freed bytes).
func (o *output) giveUp() (blk []byte, freed int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.blocks) > 0 {
		blk = o.blocks[0]
		o.blocks[0] = nil
		o.blocks = o.blocks[1:]
		o.first++
		o.start = max(o.start, o.first*int64(o.bs))
		if len(o.blocks) == 0 {
			o.start = o.written
		}
		o.trimRuns()
		o.changed()
	}
	if len(o.blocks) == 0 {
		freed, o.runs = int64(cap(o.runs))*runSize, nil
	}
	return blk, freed
}

// free drops everything the log holds and returns how many bytes that was; it keeps nothing
// after.
func (o *output) free() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	freed := int64(len(o.blocks)*o.bs) + int64(cap(o.runs))*runSize
	o.blocks, o.runs, o.dead, o.start = nil, nil, true, o.written
	o.changed()
	return freed
}

// holding is how many bytes the log holds, and in how many blocks.
func (o *output) holding() (bytes int64, blocks int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int64(len(o.blocks)*o.bs) + int64(cap(o.runs))*runSize, len(o.blocks)
}

// isDead says whether the log was freed for good (its process removed).
func (o *output) isDead() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dead
}

// read returns the chunks after cursor (at most limit bytes; all when limit < 0), how many
// bytes fell off the ring between cursor and the first chunk, the next cursor, and a channel
// closed at the next write.
func (o *output) read(cursor int64, limit int) (chunks []api.ProcessEvent, skipped, next int64, changed <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cursor = min(cursor, o.written)
	from := max(cursor, o.start)
	skipped, next = from-cursor, o.written
	if limit >= 0 && next-from > int64(limit) {
		next = from + int64(limit)
	}
	data := make([]byte, next-from)
	bs := int64(o.bs)
	for off := from; off < next; {
		off += int64(copy(data[off-from:], o.blocks[off/bs-o.first][off%bs:]))
	}
	off := from
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
	return chunks, skipped, next, o.wake
}

func (o *output) end() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.written
}

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
