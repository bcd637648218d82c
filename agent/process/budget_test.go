package process

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

func TestLogBudget(t *testing.T) {
	for _, c := range []struct{ limit, want int64 }{
		{0, maxLogBudget},               // no limit
		{16 << 20, 4 << 20},             // the smallest sandbox: a quarter, the floor
		{8 << 20, minLogBudget},         // below: the floor
		{64 << 20, 16 << 20},            // the user's trial
		{64 << 30, maxLogBudget},        // a very large sandbox
		{2 << 30, 512 << 20},            // a quarter
		{1 << 62, maxLogBudget},         // a huge one is capped
		{-1, maxLogBudget},              // cannot happen; read as none
		{4*maxLogBudget - 1, 1<<30 - 1}, // just under the cap
	} {
		if got := LogBudget(c.limit); got != c.want {
			t.Errorf("LogBudget(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}

// TestBudgetOfAFailedRead: a limit that cannot be read gives the least budget until one was
// read, and the last one read after.
func TestBudgetOfAFailedRead(t *testing.T) {
	reads := []struct {
		limit int64
		ok    bool
	}{{0, false}, {64 << 20, true}, {0, false}, {128 << 20, true}}
	budget := budgetOf(func() (int64, bool) {
		r := reads[0]
		reads = reads[1:]
		return r.limit, r.ok
	})
	for i, want := range []int64{minLogBudget, 16 << 20, 16 << 20, 32 << 20} {
		if got := budget(); got != want {
			t.Errorf("read %d: budget %d, want %d", i, got, want)
		}
	}
}

// held is the memory all of a budget's logs hold, counted from the logs.
func held(logs ...*output) int64 {
	var n int64
	for _, o := range logs {
		n += o.held()
	}
	return n
}

// readAll reads a log from cursor 0: what it keeps and how many bytes it reports skipped.
func readAll(o *output) (data []byte, skipped int64) {
	chunks, skipped, _, _ := o.read(0, -1)
	var b bytes.Buffer
	for _, c := range chunks {
		d, _ := c.Bytes()
		b.Write(d)
	}
	return b.Bytes(), skipped
}

// pattern is n bytes of lines that say where they are, ending with last.
func pattern(n int, last string) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n-len(last); i++ {
		fmt.Fprintf(&b, "%08d\n", i)
	}
	b.Truncate(n - len(last))
	b.WriteString(last)
	return b.Bytes()
}

func TestOutputsKeepToTheBudget(t *testing.T) {
	const budget = 8 * logBlock
	b := newLogBudget(func() int64 { return budget })
	check := func(logs ...*output) {
		t.Helper()
		if used, sum := b.inUse(), held(logs...); used > budget || used != sum {
			t.Fatalf("budget counts %d bytes, the logs hold %d, budget %d", used, sum, budget)
		}
	}
	// An ended process's log of 3 blocks, then another's of 3 blocks.
	old := newOutput(b, 1<<20, nil)
	oldData := pattern(3*logBlock, "OLD-END\n")
	old.write(api.EventStdout, oldData)
	b.ended(old)
	mid := newOutput(b, 1<<20, nil)
	midData := pattern(3*logBlock, "MID-END\n")
	mid.write(api.EventStdout, midData)
	b.ended(mid)
	check(old, mid)

	// A running process writes 3 blocks' worth: the older ended log gives up its oldest
	// blocks first, and keeps its newest bytes; the other keeps everything.
	run := newOutput(b, 1<<20, nil)
	runData := pattern(3*logBlock, "RUN-1\n")
	run.write(api.EventStdout, runData)
	check(old, mid, run)
	if got, skipped := readAll(mid); !bytes.Equal(got, midData) || skipped != 0 {
		t.Fatalf("the newer ended log lost bytes before the older one: %d kept, %d skipped", len(got), skipped)
	}
	got, skipped := readAll(old)
	if len(got) == 0 || len(got) >= len(oldData) || skipped != int64(len(oldData)-len(got)) || !bytes.HasSuffix(oldData, got) {
		t.Fatalf("the older ended log: %d of %d bytes kept, %d skipped", len(got), len(oldData), skipped)
	}
	if got, skipped := readAll(run); !bytes.Equal(got, runData) || skipped != 0 {
		t.Fatalf("the running log: %d of %d bytes, %d skipped", len(got), len(runData), skipped)
	}

	// It goes on writing: the ended logs give up everything, then its ring stops growing and
	// keeps the newest bytes of the size it has.
	more := pattern(20*logBlock, "RUN-LAST\n")
	for i := 0; i < len(more); i += 5000 {
		run.write([]string{api.EventStdout, api.EventStderr}[i/5000%2], more[i:min(len(more), i+5000)])
		check(old, mid, run)
	}
	for _, o := range []*output{old, mid} {
		if got, skipped := readAll(o); len(got) != 0 || skipped != o.end() || o.held() != 0 {
			t.Fatalf("an ended log after all its memory was needed: %d bytes kept, %d skipped of %d, holds %d", len(got), skipped, o.end(), o.held())
		}
	}
	all := append(runData, more...)
	got, skipped = readAll(run)
	if !bytes.HasSuffix(got, []byte("RUN-LAST\n")) || !bytes.HasSuffix(all, got) || skipped != int64(len(all)-len(got)) || run.end() != int64(len(all)) {
		t.Fatalf("the running log: %d bytes kept (ends %q), %d skipped, end %d of %d", len(got), got[max(0, len(got)-20):], skipped, run.end(), len(all))
	}
	if len(got) < budget-3*logBlock { // all but the block the run list takes, the partly overwritten one, a dropped run
		t.Fatalf("the running log kept only %d bytes of a %d budget", len(got), budget)
	}

	// A second running process finds no free memory: it takes its fair share from the one
	// that holds it all, which keeps its newest bytes.
	late := newOutput(b, 1<<20, nil)
	late.write(api.EventStdout, []byte("hello\n"))
	check(old, mid, run, late)
	if got, skipped := readAll(late); string(got) != "hello\n" || skipped != 0 {
		t.Fatalf("a second running log: %q, %d skipped", got, skipped)
	}
	if got, _ := readAll(run); !bytes.HasSuffix(got, []byte("RUN-LAST\n")) {
		t.Fatalf("the first running log lost its newest bytes: ends %q", got[max(0, len(got)-20):])
	}
	// Removing the running process's log frees it for the other.
	b.forget(run)
	late.write(api.EventStdout, []byte("world\n"))
	if got, _ := readAll(late); string(got) != "hello\nworld\n" {
		t.Fatalf("after memory was freed: %q", got)
	}
	if got, skipped := readAll(run); len(got) != 0 || skipped != run.end() {
		t.Fatalf("a removed log: %d bytes, %d skipped", len(got), skipped)
	}
	run.write(api.EventStdout, []byte("after removal\n")) // a child left holding its pipe
	check(old, mid, run, late)
	if run.held() != 0 {
		t.Fatalf("a removed log took memory again: %d", run.held())
	}
}

func TestOutputsShareTheBudgetConcurrently(t *testing.T) {
	const budget = 20 * logBlock
	b := newLogBudget(func() int64 { return budget })
	logs := make([]*output, 12)
	var wg sync.WaitGroup
	for i := range logs {
		logs[i] = newOutput(b, int64(1+i%3)*4*logBlock, nil)
		wg.Add(1)
		go func(o *output, i int) {
			defer wg.Done()
			data := pattern(10*logBlock+i*777, fmt.Sprintf("END-%d\n", i))
			for j := 0; j < len(data); j += 3000 + i {
				o.write([]string{api.EventStdout, api.EventStderr}[j%2], data[j:min(len(data), j+3000+i)])
				if used := b.inUse(); used > budget {
					t.Errorf("budget exceeded: %d", used)
				}
				_, _ = readAll(o)
			}
			if i%2 == 0 {
				b.ended(o)
			}
		}(logs[i], i)
	}
	wg.Wait()
	if used, sum := b.inUse(), held(logs...); used > budget || used != sum {
		t.Fatalf("budget counts %d bytes, the logs hold %d, budget %d", used, sum, budget)
	}
	for _, o := range logs {
		b.forget(o)
	}
	if used := b.inUse(); used != 0 {
		t.Fatalf("%d bytes counted after every log was removed", used)
	}
}

// TestManagerKeepsLogsToItsBudget: processes' output, however much, stays in the manager's
// budget; ended processes' logs give up their memory first; logBytes is at most the budget;
// the last process's newest output is there, and what was dropped is reported as skipped.
func TestManagerKeepsLogsToItsBudget(t *testing.T) {
	m := newTestManager(t)
	const budget = 256 << 10
	m.setLogBudget(budget)
	check := func() {
		t.Helper()
		if used := m.logs.inUse(); used > budget {
			t.Fatalf("the logs hold %d bytes, budget %d", used, budget)
		}
	}
	// A logBytes beyond the budget is clamped to it.
	if p := start(t, m, api.StartProcessRequest{Argv: []string{"true"}, LogBytes: 60_000_000}); p.Info().LogBytes != budget {
		t.Fatalf("logBytes beyond the budget: %d", p.Info().LogBytes)
	}
	var procs []*Process
	for i := range 6 {
		// 100 KB each, last line "last i".
		p := start(t, m, api.StartProcessRequest{Command: fmt.Sprintf("seq 1 18000; echo last %d", i)})
		finish(t, p)
		check()
		procs = append(procs, p)
	}
	// The first ones gave up memory, oldest first; the last keeps everything.
	first, firstSkipped := readProcess(procs[0])
	last, lastSkipped := readProcess(procs[5])
	if lastSkipped != 0 || !strings.HasSuffix(last, "\nlast 5\n") || int64(len(last)) != procs[5].Info().LogEnd {
		t.Fatalf("the last process: %d bytes, %d skipped, log end %d", len(last), lastSkipped, procs[5].Info().LogEnd)
	}
	if firstSkipped == 0 || int64(len(first))+firstSkipped != procs[0].Info().LogEnd {
		t.Fatalf("the first process: %d bytes, %d skipped, log end %d", len(first), firstSkipped, procs[0].Info().LogEnd)
	}
	for i := 1; i < 5; i++ {
		older, _ := readProcess(procs[i-1])
		newer, _ := readProcess(procs[i])
		if len(older) > len(newer) {
			t.Fatalf("process %d kept %d bytes, the newer %d kept %d", i-1, len(older), i, len(newer))
		}
	}
	// A running process that writes far more than the budget.
	p := start(t, m, api.StartProcessRequest{Command: "seq 1 200000; echo newest; exec sleep 100"})
	deadline := time.Now().Add(30 * time.Second)
	for p.Info().LogEnd < 1288895+7 && time.Now().Before(deadline) { // seq 1 200000 is 1288895 bytes
		time.Sleep(10 * time.Millisecond)
		check()
	}
	check()
	out, skipped := readProcess(p)
	if !strings.HasSuffix(out, "\n199999\n200000\nnewest\n") || skipped == 0 || int64(len(out))+skipped != p.Info().LogEnd {
		t.Fatalf("a running process beyond the budget: %d bytes (ends %q), %d skipped, log end %d", len(out), out[max(0, len(out)-30):], skipped, p.Info().LogEnd)
	}
	for _, q := range procs {
		if kept, _ := readProcess(q); len(kept) != 0 {
			t.Fatalf("an ended process kept %d bytes while a running one needed them", len(kept))
		}
	}
	// Removing ended processes frees their memory.
	m.RemoveFinished()
	if used, kept := m.logs.inUse(), p.out.held(); used != kept {
		t.Fatalf("after removing the ended processes, %d bytes are counted, the running one holds %d", used, kept)
	}
}

func readProcess(p *Process) (string, int64) {
	stdout, stderr, skipped := allOutput(p, -1)
	return string(stdout) + string(stderr), skipped
}
