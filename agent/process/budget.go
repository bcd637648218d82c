package process

import (
	"slices"
	"sync"
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
// when none is left, a running process's log stops growing and keeps the newest bytes of the
// size it has. Bytes given up are reported to readers as skipped, as bytes that fell off a
// ring are.
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
	done   []*output    // the logs of ended processes, in the order they ended: the first to give up memory
	cached int64        // the limit as last read, at readAt
	readAt time.Time
}

// sandboxLogBudget is the budget of the sandbox the agent runs in, read from its cgroup.
func sandboxLogBudget() int64 { return LogBudget(cgroup.MemoryLimit()) }

func newLogBudget(limit func() int64) *logBudget { return &logBudget{limit: limit} }

// now is the budget; under b.mu.
func (b *logBudget) now() int64 {
	if t := time.Now(); b.readAt.IsZero() || t.Sub(b.readAt) >= budgetRead {
		b.cached, b.readAt = b.limit(), t
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

// take returns up to n blocks of size bytes for o: new ones while the budget has room, then
// those the logs of ended processes (other than o) give up. Fewer than n, or none, when there
// is no more.
func (b *logBudget) take(o *output, n, size int) [][]byte {
	out := make([][]byte, 0, n)
	if b == nil {
		for range n {
			out = append(out, make([]byte, size))
		}
		return out
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := b.now()
	for len(out) < n {
		if b.used+int64(size) <= limit {
			b.used += int64(size)
			out = append(out, make([]byte, size))
			continue
		}
		blk := b.reclaim(o)
		switch {
		case blk == nil:
			return out
		case len(blk) == size:
			out = append(out, blk) // still counted: it changes hands
		default:
			b.used -= int64(len(blk)) // a small log's block: left to the garbage collector
		}
	}
	return out
}

// reserve counts bytes more for o's run list, once the logs of ended processes (other than o)
// have given up what it takes; false when they cannot.
func (b *logBudget) reserve(o *output, bytes int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := b.now()
	for b.used+bytes > limit {
		blk := b.reclaim(o)
		if blk == nil {
			return false
		}
		b.used -= int64(len(blk))
	}
	b.used += bytes
	return true
}

// reclaim takes the oldest block of the log of the process that ended first, other than
// except; nil when none is left. Logs left without blocks free their run lists and leave the
// list. Under b.mu.
func (b *logBudget) reclaim(except *output) []byte {
	for i := 0; i < len(b.done); {
		o := b.done[i]
		if o == except {
			i++
			continue
		}
		blk, freed, empty := o.giveUp()
		b.used -= freed
		if empty {
			b.done = slices.Delete(b.done, i, i+1)
		}
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
}

// ended puts o among the logs that give up memory first: its process has ended.
func (b *logBudget) ended(o *output) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = append(b.done, o)
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
	b.done = slices.DeleteFunc(b.done, func(x *output) bool { return x == o })
}

// inUse is how many bytes the logs hold now.
func (b *logBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
