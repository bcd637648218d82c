package api

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestLargeOutputKeptWholeHoldsItsLength: 48 MiB of output kept whole (1 MiB frames, some
// stderr between them; its buffer prefaulted in huge pages as it grows) arrive intact, and
// once the exit came hold no more memory than their length, though the buffer's capacity is
// larger (it doubles as it grows, and Go zeroes, so makes resident, memory it reuses). How
// much faster the prefaulting is is measured by the benchmark (`-only output`), not here: how
// many faults it saves depends on which memory Go hands out.
func TestLargeOutputKeptWholeHoldsItsLength(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	var want []byte
	for i := range 48 {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 1<<20)
		want = append(want, chunk...)
		if err := fw.Send(EventStdout, chunk); err != nil {
			t.Fatal(err)
		}
		if err := fw.Send(EventStderr, []byte("e")); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.SendJSON(EventExit, ExecEvent{Type: EventExit}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr []byte
	readOutput(t, rec.Body.Bytes(), &stdout, &stderr)
	if !bytes.Equal(stdout, want) || string(stderr) != strings.Repeat("e", 48) {
		t.Fatalf("stdout %d bytes (equal: %v), stderr %q", len(stdout), bytes.Equal(stdout, want), stderr)
	}
	if resident := residentBytes(t, stdout[:cap(stdout)]); resident > len(stdout)+2<<20 {
		t.Errorf("%d bytes resident for %d of output (capacity %d)", resident, len(stdout), cap(stdout))
	}
}

// residentBytes is how much of b (which starts on a page) is in memory.
func residentBytes(t *testing.T, b []byte) int {
	page := unix.Getpagesize()
	vec := make([]byte, (len(b)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n * page
}

// TestCallersOutputBufferIsLeftAlone: a buffer the caller gave NextOutput, large enough for
// its output, keeps what its capacity holds past the output (only buffers the reader made give
// their spare memory back).
func TestCallersOutputBufferIsLeftAlone(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	if err := fw.Send(EventStdout, []byte("out")); err != nil {
		t.Fatal(err)
	}
	if err := fw.SendJSON(EventExit, ExecEvent{Type: EventExit}); err != nil {
		t.Fatal(err)
	}
	mine := bytes.Repeat([]byte("x"), 8<<20)
	stdout, stderr := mine[:0], []byte(nil)
	readOutput(t, rec.Body.Bytes(), &stdout, &stderr)
	if string(stdout) != "out" || !bytes.Equal(mine[3:], bytes.Repeat([]byte("x"), len(mine)-3)) {
		t.Fatalf("stdout %q; the caller's buffer past it changed", stdout)
	}
}

// readOutput reads the frames in answer with NextOutput into *stdout and *stderr, up to the
// exit frame.
func readOutput(t *testing.T, answer []byte, stdout, stderr *[]byte) {
	t.Helper()
	fr := NewFrameReader(bytes.NewReader(answer))
	for {
		event, _, err := fr.NextOutput(stdout, stderr)
		if err != nil {
			t.Fatal(err)
		}
		if event == EventExit {
			return
		}
	}
}
