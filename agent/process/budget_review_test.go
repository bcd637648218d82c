package process

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// checkBudget fails when the budget counts other than what the logs hold, or more than limit.
func checkBudget(t *testing.T, b *logBudget, limit int64, logs ...*output) {
	t.Helper()
	if used, sum := b.inUse(), held(logs...); used > limit || used != sum {
		t.Fatalf("budget counts %d bytes, the logs hold %d, budget %d", used, sum, limit)
	}
}

// A read of a large log answers at most an eighth of the budget, and a cursor to go on from:
// a reader that follows it gets everything.
func TestLogReadsKeepToAShareOfTheBudget(t *testing.T) {
	m := newTestManager(t)
	const budget = 1 << 20
	m.setLogBudget(budget)
	p := start(t, m, api.StartProcessRequest{Command: "seq 1 100000"}) // 588895 bytes
	finish(t, p)
	end := p.Info().LogEnd
	first := p.Logs(0, 64<<20)
	n := 0
	for _, c := range first.Chunks {
		d, _ := c.Bytes()
		n += len(d)
	}
	if n > budget/readShare || first.Cursor != int64(n) || first.Done || first.Cursor >= end {
		t.Fatalf("a read of a %d-byte log with a %d budget: %d bytes, cursor %d, done %v", end, budget, n, first.Cursor, first.Done)
	}
	stdout, _, skipped := allOutput(p, 64<<20)
	var want bytes.Buffer
	for i := 1; i <= 100000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	if skipped != 0 || !bytes.Equal(stdout, want.Bytes()) {
		t.Fatalf("reading on from the cursors: %d bytes of %d, %d skipped", len(stdout), want.Len(), skipped)
	}
}

// The reviewer's scenario: in a 16 MiB sandbox's budget, a running process that wrote 6 MB
// must leave room for a new one's line, which a Wait for it sees.
func TestRunningLogDoesNotStarveANewOne(t *testing.T) {
	m := newTestManager(t)
	m.setLogBudget(4 << 20)
	big := start(t, m, api.StartProcessRequest{Command: "yes 0123456789abcdef | head -c 6000000; exec sleep 100"})
	t.Cleanup(func() { _ = big.Kill(context.Background(), unix.SIGKILL, 0) })
	deadline := time.Now().Add(30 * time.Second)
	for big.Info().LogEnd < 6000000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	small := start(t, m, api.StartProcessRequest{Command: "echo listening on 8080; exec sleep 100"})
	t.Cleanup(func() { _ = small.Kill(context.Background(), unix.SIGKILL, 0) })
	res, err := small.Wait(context.Background(), api.WaitProcessRequest{Log: "listening on", TimeoutMs: 5000})
	if err != nil || !res.Met {
		t.Fatalf("waiting for the new process's line: %+v %v", res, err)
	}
	if out, skipped := readProcess(small); out != "listening on 8080\n" || skipped != 0 {
		t.Fatalf("the new process's log: %q, %d skipped", out, skipped)
	}
	if out, _ := readProcess(big); !strings.HasSuffix(out, "0123456789abcdef\n012") {
		t.Fatalf("the big process's log lost its newest bytes: ends %q", out[max(0, len(out)-20):])
	}
	if used := m.logs.inUse(); used > 4<<20 {
		t.Fatalf("the logs hold %d bytes", used)
	}
}

// endedLogIn is a budget of size bytes and the log of an ended process that wrote data in it.
func endedLogIn(size int64, data []byte) (*logBudget, *output) {
	b := newLogBudget(func() int64 { return size })
	ended := newOutput(b, 1<<20, nil)
	ended.write(api.EventStdout, data)
	b.ended(ended)
	return b, ended
}

// The reviewer's scenario: an 8-block budget filled by an ended log, and a new log's first
// write of 8 blocks: it must keep its newest bytes, not destroy the ended log's for nothing.
func TestNewLogsFirstWriteKeepsWhatItTakes(t *testing.T) {
	const budget = 8 * logBlock
	b, old := endedLogIn(budget, pattern(8*logBlock, "OLD\n"))
	checkBudget(t, b, budget, old)
	fresh := newOutput(b, 1<<20, nil)
	data := pattern(8*logBlock, "NEW-END\n")
	fresh.write(api.EventStdout, data)
	checkBudget(t, b, budget, old, fresh)
	got, skipped := readAll(fresh)
	if len(got) < 6*logBlock || !bytes.HasSuffix(data, got) || skipped != int64(len(data)-len(got)) {
		t.Fatalf("the new log kept %d of %d bytes, %d skipped", len(got), len(data), skipped)
	}
}

// An ended log whose process's child writes after its memory was given up must give back
// what it takes again.
func TestLateWritesOfAnEndedLogAreReclaimed(t *testing.T) {
	const budget = 8 * logBlock
	b, ended := endedLogIn(budget, pattern(3*logBlock, "A\n"))
	run := newOutput(b, 1<<20, nil)
	run.write(api.EventStdout, pattern(20*logBlock, "B\n")) // takes all the ended log had
	if ended.held() != 0 {
		t.Fatalf("the ended log still holds %d", ended.held())
	}
	b.forget(run)
	ended.write(api.EventStdout, pattern(2*logBlock, "LATE\n")) // a child still holds its pipe
	if ended.held() == 0 {
		t.Fatalf("the late write kept nothing")
	}
	next := newOutput(b, 1<<20, nil)
	next.write(api.EventStdout, pattern(20*logBlock, "C\n"))
	checkBudget(t, b, budget, ended, run, next)
	if ended.held() != 0 {
		t.Fatalf("an ended log's late output holds %d bytes a running log needed", ended.held())
	}
}

// A log removed before its end is counted (Remove racing the end of the process) stays out
// of the budget: it does not come back among the ended logs.
func TestEndedAfterForgetIsIgnored(t *testing.T) {
	b := newLogBudget(func() int64 { return 8 * logBlock })
	o := newOutput(b, 1<<20, nil)
	o.write(api.EventStdout, []byte("x\n"))
	b.forget(o)
	b.ended(o)
	if len(b.done) != 0 || len(b.live) != 0 || b.inUse() != 0 {
		t.Fatalf("after forget then ended: %d ended, %d live, %d bytes", len(b.done), len(b.live), b.inUse())
	}
}

// When the limit is lowered, ended logs give up memory down to the new budget.
func TestLoweredLimitShrinksEndedLogs(t *testing.T) {
	var limit atomic.Int64
	limit.Store(16 * logBlock)
	b := newLogBudget(func() int64 { return limit.Load() })
	o := newOutput(b, 1<<20, nil)
	o.write(api.EventStdout, pattern(12*logBlock, "END\n"))
	b.ended(o)
	limit.Store(4 * logBlock)
	b.mu.Lock()
	b.readAt = time.Time{} // as if a second has gone by
	b.mu.Unlock()
	b.size(1)
	checkBudget(t, b, 4*logBlock, o)
	if got, _ := readAll(o); len(got) == 0 || !bytes.HasSuffix(got, []byte("END\n")) {
		t.Fatalf("the ended log after the limit was lowered: %d bytes", len(got))
	}
}

// A capped log's writes do not ask the budget (and allocate) again and again: a write that
// stays in its ring allocates no more than the wake-up channel.
func TestCappedWritesDoNotAllocate(t *testing.T) {
	b := newLogBudget(func() int64 { return 8 * logBlock })
	o := newOutput(b, 1<<20, nil)
	chunk := make([]byte, 4<<10)
	for range 64 {
		o.write(api.EventStdout, chunk)
	}
	if allocs := testing.AllocsPerRun(200, func() { o.write(api.EventStdout, chunk) }); allocs > 1 {
		t.Fatalf("a capped write allocates %.1f times", allocs)
	}
}

// TestWaitDoesNotMatchALineCutByARead: a read of a log for a Wait stops at its share of the
// budget; a line it stops inside ("ready" of "ready-not") is not matched as if it had ended.
func TestWaitDoesNotMatchALineCutByARead(t *testing.T) {
	m := newTestManager(t)
	m.setLogBudget(minLogBudget)
	limit := m.logs.readLimit(1 << 20)
	// A first line that ends six bytes before the read stops, then "ready-not".
	p := start(t, m, api.StartProcessRequest{Command: "head -c " + strconv.Itoa(limit-6) + " /dev/zero | tr '\\0' x; echo; echo ready-not"})
	finish(t, p)
	matcher := &lineMatcher{re: regexp.MustCompile(`^ready$`), partial: map[string][]byte{}}
	if r := (&api.WaitProcessResult{}); matcher.scan(p, r) {
		t.Errorf("^ready$ matched %q at %d in a log whose line is ready-not (reads of %d bytes)", r.Match, r.Cursor, limit)
	}
	matcher = &lineMatcher{re: regexp.MustCompile(`^ready-not$`), partial: map[string][]byte{}}
	if r := (&api.WaitProcessResult{}); !matcher.scan(p, r) {
		t.Errorf("^ready-not$ did not match the line across the reads")
	}
}
