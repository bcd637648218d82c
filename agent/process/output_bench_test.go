package process

import (
	"sync"
	"testing"

	"github.com/nsbox/nsbox/api"
)

// benchWrites has n logs of size bytes, in a budget of budget bytes, each written 4 KiB at a
// time by its own goroutine; b.N rounds of one write each.
func benchWrites(b *testing.B, budget, size int64, n int) {
	lb := newLogBudget(func() int64 { return budget })
	logs := make([]*output, n)
	chunk := make([]byte, 4<<10)
	for i := range logs {
		logs[i] = newOutput(lb, size, nil)
		for range 2 * size / int64(len(chunk)) { // steady state: the ring is full, or capped
			logs[i].write(api.EventStdout, chunk)
		}
	}
	b.SetBytes(int64(len(chunk) * n))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, o := range logs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range b.N {
				o.write(api.EventStdout, chunk)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkLogWriteSteady: a log whose ring is full and that the budget leaves alone.
func BenchmarkLogWriteSteady(b *testing.B) { benchWrites(b, 1<<30, 1<<20, 1) }

// BenchmarkLogWriteCapped: a log held below its size by the budget (it reuses its oldest block).
func BenchmarkLogWriteCapped(b *testing.B) { benchWrites(b, 8*logBlock, 1<<20, 1) }

// BenchmarkLogWriteCappedParallel: 8 such logs written at once.
func BenchmarkLogWriteCappedParallel(b *testing.B) { benchWrites(b, 64*logBlock, 1<<20, 8) }
