package process

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nsbox/nsbox/agent/cgroup"
)

// The processes' logs live in the agent's memory, which the sandbox's memory cgroup charges
// like any other: logs that outgrow the sandbox's memory limit get the agent — PID 1, whose
// end is the sandbox's — killed by the OOM killer, once the processes that wrote them have
// ended and nothing else is left to kill. So all the logs of a sandbox together hold at most
// a budget tied to its memory limit (LogBudget), counted in the memory they really hold: the
// blocks of their rings and their lists of runs.
//
// When a log would grow past the budget, the logs of ended processes give up their memory
// first, oldest first (the one that ended first), block by block from their oldest bytes;
// when none is left, a running process's log that holds less than its fair share (the budget
// divided among the running processes' logs) takes the oldest block of the running log that
// holds the most above it, so no running process can starve the others; otherwise it stops
// growing and keeps the newest bytes of the size it has. Bytes given up are reported to
// readers as skipped, as bytes that fell off a ring are.
const (
	// logBlock is the unit in which a log's memory is allocated, reused and given up: a log
	// takes a block when it has written into the last one, so a process that writes little
	// holds little; one whose ring is full reuses its oldest block; a block a log gives up
	// goes to the log that needs it, not to the garbage collector.
	logBlock = 16 << 10
	// minLogBudget: at least one default log (a 16 MiB sandbox, the smallest the daemon
	// makes, has a quarter of its limit: this).
	minLogBudget = DefaultLogBytes
	// maxLogBudget bounds the budget of a sandbox without a memory limit, and of a very large
	// one: four logs of the largest size.
	maxLogBudget = 4 * MaxLogBytes
	// budgetRead is how long a memory limit read from the cgroup is used: the daemon may
	// change the limit while the sandbox runs, and a log that grows asks at every block.
	budgetRead = time.Second
)

// A read of a log copies its bytes, which its answer then holds again, encoded, and once more
// in the JSON buffer: one read is at most an eighth of the budget (at least readMinimum), so
// that a read of a log as large as the budget does not take the agent past the sandbox's
// limit; the reader goes on from the cursor it is given.
const (
	readShare   = 8
	readMinimum = 4 * logBlock
)

// runSize is what one entry of a log's run list holds.
const runSize = int64(unsafe.Sizeof(run{}))

// LogBudget is how many bytes the logs of a sandbox with a memory limit of limit bytes (0: none)
// may hold together: a quarter of the limit, at least minLogBudget, at most maxLogBudget.
// Decision: a quarter leaves the rest to the sandbox's own processes and to the agent's
// other memory, and room for what the garbage collector has not collected yet (the agent runs
// with GOGC 50: its heap may grow half as much again as what it holds before a collection),
// so that the logs alone can never bring the sandbox to its limit.
func LogBudget(limit int64) int64 {
	if limit <= 0 {
		return maxLogBudget
	}
	return min(max(limit/4, minLogBudget), maxLogBudget)
}

// logBudget counts the memory the logs of a manager's processes hold, against its limit. Lock
// order: a log's wmu, then the budget's mu, then a log's mu; nothing that holds a log's mu
// takes the budget's.
type logBudget struct {
	mu     sync.Mutex
	limit  func() int64 // the budget now
	used   int64        // bytes the logs' blocks and run lists hold
	live   []*output    // the logs of running processes, which share the budget fairly
	done   []*output    // the logs of ended processes, in the order they ended: the first to give up memory
	cached int64        // the limit as last read, at readAt
	readAt time.Time
	// freed counts the events after which a log the budget refused may get memory: memory
	// given back, a process ended or removed. A log refused at one count does not ask again
	// (and lock the budget at every write) until it changes, or the limit is read again.
	freed atomic.Uint64
}

// sandboxLogBudget reads the budget of the sandbox the agent runs in from its cgroup.
func sandboxLogBudget() func() int64 { return budgetOf(cgroup.MemoryLimit) }

// budgetOf is the budget for the memory limit read reads, each time it is called; when a read
// fails, the last one read (a read that fails once must not take ended logs' memory back for
// good), or the least budget when none was ever read, since the sandbox may well have a small
// limit. Called under the budget's lock.
func budgetOf(read func() (int64, bool)) func() int64 {
	var last int64
	return func() int64 {
		limit, ok := read()
		switch {
		case ok:
			last = LogBudget(limit)
		case last == 0:
			return minLogBudget
		}
		return last
	}
}

func newLogBudget(limit func() int64) *logBudget {
	b := &logBudget{limit: limit}
	b.freed.Store(1) // 0 is "not refused" (see refuses)
	return b
}

// now is the budget; under b.mu. When the limit was lowered, the ended processes' logs give
// up memory down to the new budget (running ones keep what they hold, and stop growing).
func (b *logBudget) now() int64 {
	if t := time.Now(); b.readAt.IsZero() || t.Sub(b.readAt) >= budgetRead {
		b.cached, b.readAt = b.limit(), t
		for b.used > b.cached {
			blk := b.reclaim(nil)
			if blk == nil {
				break
			}
			b.used -= int64(len(blk))
		}
	}
	return b.cached
}

// size is the ring size a process asking for logBytes gets: at most the whole budget.
func (b *logBudget) size(logBytes int64) int64 {
	if b == nil {
		return logBytes
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(1, min(logBytes, b.now()))
}

// readLimit is the most bytes one read of a log returns when limit are asked for (see readShare).
func (b *logBudget) readLimit(limit int) int {
	if b == nil {
		return limit
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	most := int(max(b.now()/readShare, readMinimum))
	if limit < 0 {
		return most
	}
	return min(limit, most)
}

// started counts o among the running processes' logs.
func (b *logBudget) started(o *output) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live = append(b.live, o)
}

// take returns up to n blocks of size bytes for o: new ones while the budget has room, then
// those other logs give up (see spare). Fewer than n, or none, when there is no more; then
// refused is the count of b.freed it was refused at.
func (b *logBudget) take(o *output, n, size int) (blocks [][]byte, refused uint64) {
	if b == nil {
		for range n {
			blocks = append(blocks, make([]byte, size))
		}
		return blocks, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := b.now()
	for len(blocks) < n {
		if b.used+int64(size) <= limit {
			b.used += int64(size)
			blocks = append(blocks, make([]byte, size))
			continue
		}
		blk := b.spare(o, limit)
		switch {
		case blk == nil:
			return blocks, b.freed.Load()
		case len(blk) == size:
			blocks = append(blocks, blk) // still counted: it changes hands
		default:
			b.used -= int64(len(blk)) // a block of another size: left to the garbage collector
		}
	}
	return blocks, 0
}

// refuses says whether the budget would refuse a block to a log it refused at count refused
// (0: it was not), asked at: nothing was freed since, and the limit is not due to be read again.
func (b *logBudget) refuses(refused uint64, at time.Time) bool {
	return b != nil && refused != 0 && b.freed.Load() == refused && time.Since(at) < budgetRead
}

// reserve counts bytes more for o's run list, once other logs have given up what it takes
// (see spare); false when they cannot.
func (b *logBudget) reserve(o *output, bytes int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := b.now()
	for b.used+bytes > limit {
		blk := b.spare(o, limit)
		if blk == nil {
			return false
		}
		b.used -= int64(len(blk))
	}
	b.used += bytes
	return true
}

// spare takes a block from another log for o: the oldest block of the ended processes' logs
// first (see reclaim); else, when o is a running process's log that holds less than its fair
// share of limit, the oldest block of the running log that holds the most above it. nil when
// there is none. Under b.mu.
func (b *logBudget) spare(o *output, limit int64) []byte {
	if blk := b.reclaim(o); blk != nil {
		return blk
	}
	if !slices.Contains(b.live, o) {
		return nil
	}
	fair := limit / int64(len(b.live))
	if held, _ := o.holding(); held+int64(o.bs) > fair {
		return nil
	}
	// The one it takes from keeps a block at least: its newest bytes.
	var most *output
	var mostHeld int64
	for _, x := range b.live {
		if h, n := x.holding(); x != o && n > 1 && h > fair && h > mostHeld {
			most, mostHeld = x, h
		}
	}
	if most == nil {
		return nil
	}
	blk, freed := most.giveUp()
	b.used -= freed
	return blk
}

// reclaim takes the oldest block of the log of the process that ended first and still holds
// one, other than except; nil when none is left. Under b.mu.
func (b *logBudget) reclaim(except *output) []byte {
	for _, o := range b.done {
		if o == except {
			continue
		}
		// An ended log left without blocks stays on the list: a child that still holds its
		// process's pipes may write into it again, and what it takes must be given back.
		blk, freed := o.giveUp()
		b.used -= freed
		if blk != nil {
			return blk
		}
	}
	return nil
}

// release uncounts what a log took and did not use.
func (b *logBudget) release(blocks [][]byte, runBytes int64) {
	if b == nil || (len(blocks) == 0 && runBytes == 0) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, blk := range blocks {
		b.used -= int64(len(blk))
	}
	b.used -= runBytes
	b.freed.Add(1)
}

// ended puts o among the logs that give up memory first: its process has ended. A log that
// was removed already (forget) stays out of the budget.
func (b *logBudget) ended(o *output) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live = slices.DeleteFunc(b.live, func(x *output) bool { return x == o })
	if !o.isDead() {
		b.done = append(b.done, o)
	}
	b.freed.Add(1)
}

// forget frees everything o holds: its process was removed. A write into it after (a child
// that left the process's group may still hold its pipes) keeps nothing.
func (b *logBudget) forget(o *output) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= o.free()
	b.live = slices.DeleteFunc(b.live, func(x *output) bool { return x == o })
	b.done = slices.DeleteFunc(b.done, func(x *output) bool { return x == o })
	b.freed.Add(1)
}
