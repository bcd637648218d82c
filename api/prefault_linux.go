package api

import (
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Output kept whole (NextOutput) grows a buffer to its size. On a VM a page fault costs tens
// of microseconds: 100 MiB faulted in 4 KiB at a time took 58,000 faults and 1.5–2.5 s of
// CPU (60–90 MB/s); in huge pages populated ahead of the writes, 0.07–0.16 s (0.6–1.9 GB/s).
// A kernel without these madvises (populate before 5.14, THP set to never) refuses or
// ignores them, and the pages fault in as before.

// prefaultFrom is the capacity from which an output buffer gets huge pages and is
// prefaulted: a smaller one faults little, and is likely made of pages already resident.
const prefaultFrom = 4 << 20

// largeBuffers are the output buffers of prefaultFrom or more that a FrameReader made (their
// first bytes) and still fills. Each is advised huge (MADV_HUGEPAGE, granted under the
// kernel's default transparent_hugepage=madvise: one fault, or one populated page, per 2
// MiB). The advice stays on that memory after the buffer is gone, as it would under
// transparent_hugepage=always: Go zeroes memory it reuses before it can be advised again, and
// a repeated 100 MiB exec took as much CPU as with no advice at all (0.92 s) when it was taken
// back (MADV_NOHUGEPAGE) at the exit. A caller's own buffers are not advised, and keep what
// their capacity holds past the output.
type largeBuffers struct{ made []*byte }

// adopt records grown, which replaces b (whose bytes it is about to receive).
func (l *largeBuffers) adopt(b, grown []byte) {
	l.forget(b)
	if cap(grown) >= prefaultFrom {
		_ = unix.Madvise(grown[:cap(grown)], unix.MADV_HUGEPAGE)
		l.made = append(l.made, unsafe.SliceData(grown[:cap(grown)]))
	}
}

// settle is called once b holds its whole output: if it is one of l's, the memory of its
// whole pages past its length goes back to the kernel (MADV_DONTNEED: they held zeros and
// read as zeros again, but are no longer resident), so the output holds its length, not its
// buffer's capacity (up to twice as much, which Go zeroes, and so makes resident, when it
// reuses memory).
func (l *largeBuffers) settle(b []byte) {
	if !l.forget(b) {
		return
	}
	if from, to := pages(b, len(b), cap(b), true); from < to {
		_ = unix.Madvise(b[from:to], unix.MADV_DONTNEED)
	}
}

// forget drops b from l, and reports whether it was there.
func (l *largeBuffers) forget(b []byte) bool {
	if cap(b) == 0 {
		return false
	}
	i := slices.Index(l.made, unsafe.SliceData(b[:cap(b)]))
	if i < 0 {
		return false
	}
	l.made = slices.Delete(l.made, i, i+1)
	return true
}

// prefault makes b's pages from len(b) up to n resident in one call (MADV_POPULATE_WRITE)
// before they are written, when b is large.
func prefault(b []byte, n int) {
	if from, to := pages(b, len(b), min(n, cap(b)), false); from < to {
		_ = unix.Madvise(b[from:to], unix.MADV_POPULATE_WRITE)
	}
}

// pages returns, as offsets in b, the whole pages of b's capacity that [from, to) touches
// (outward) or that lie within it (inward); an empty range for a buffer smaller than
// prefaultFrom. A Go object that large starts on a page.
func pages(b []byte, from, to int, inward bool) (int, int) {
	page := unix.Getpagesize()
	if cap(b) < prefaultFrom || uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)])))%uintptr(page) != 0 {
		return 0, 0
	}
	if inward {
		from, to = (from+page-1)/page*page, to/page*page
	} else {
		from = from / page * page // madvise rounds the end up itself
	}
	return from, max(from, to)
}
