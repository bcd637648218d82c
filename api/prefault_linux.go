package api

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Output kept whole (NextOutput) grows a buffer to its size. On a VM a page fault costs tens
// of microseconds: 100 MiB faulted in 4 KiB at a time took 58,000 faults and 1.5–2.5 s of
// CPU (60–90 MB/s); in huge pages populated ahead of the writes, 0.07–0.1 s (1.1–1.9 GB/s).
// A kernel without these madvises (populate before 5.14, THP set to never) refuses or
// ignores them, and the pages fault in as before.

// prefaultFrom is the capacity from which an output buffer gets huge pages and is
// prefaulted: a smaller one faults little, and is likely made of pages already resident.
const prefaultFrom = 4 << 20

// hugePages asks for b's capacity to be backed by transparent huge pages (MADV_HUGEPAGE,
// granted under the kernel's default transparent_hugepage=madvise): one fault, or one
// populated page, per 2 MiB.
func hugePages(b []byte) {
	if cap(b) >= prefaultFrom {
		_ = unix.Madvise(b[:cap(b)], unix.MADV_HUGEPAGE)
	}
}

// prefault makes b's pages from len(b) up to n resident in one call (MADV_POPULATE_WRITE)
// before they are written.
func prefault(b []byte, n int) {
	if from, to := pages(b, len(b), min(n, cap(b)), false); from < to {
		_ = unix.Madvise(b[from:to], unix.MADV_POPULATE_WRITE)
	}
}

// releaseSpare gives the memory of b's whole pages past its length back to the kernel
// (MADV_DONTNEED): they held zeros and read as zeros again, but are no longer resident, so
// output kept whole holds its length, not its buffer's capacity (up to twice as much, which
// Go zeroes, and so makes resident, when it reuses memory).
func releaseSpare(b []byte) {
	if from, to := pages(b, len(b), cap(b), true); from < to {
		_ = unix.Madvise(b[from:to], unix.MADV_DONTNEED)
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
