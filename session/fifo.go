package session

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fifoReader streams one output FIFO of a command to a sink while the command runs. When the
// command has finished (its status arrived), finish stops the streaming, delivers what is
// still buffered, and hands the FIFO to a background drain into the session's ring: a
// background job that keeps the write end never blocks on a full pipe and never writes into a
// later command's result.
//
// The reader also holds a write end of its own until finish: a FIFO read with no writer reads
// as end-of-file, and the shell opens its end only when the command starts.
type fifoReader struct {
	f     *os.File
	keep  int // our own write end: a bare descriptor, only ever closed (os would register it with the poller)
	sink  func([]byte)
	chunk *chunkBuffer // what f is read into, by pump and then by finish
	done  chan struct{}
}

// openFifoReader makes a FIFO at path owned by uid/gid and starts streaming it to sink.
func openFifoReader(path string, uid, gid int, sink func([]byte)) (*fifoReader, error) {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("make fifo: %w", err)
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return nil, fmt.Errorf("chown fifo: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo: %w", err)
	}
	keep, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open fifo: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		unix.Close(keep)
		return nil, fmt.Errorf("open fifo: %w", err)
	}
	r := &fifoReader{f: f, keep: keep, sink: sink, chunk: newChunkBuffer(rc), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		pump(f, r.chunk, r.sink)
	}()
	return r, nil
}

// smallChunk and largeChunk are the sizes of the buffers a FIFO is read with: small first,
// large once a read filled the small one (a command with much to say), so that a command
// with little output costs no large buffer, and a large output moves in few chunks (the
// fewer, the fewer frames, writes and wake-ups on its way to the client).
//
// The FIFO grows with its buffer: a pipe holds 64 KiB (smallChunk) by default, so a command
// that writes fast would wait for the agent at every 64 KiB; it then holds largeChunk (within
// the kernel's fs/pipe-max-size, 1 MiB by default). Only then: a pipe's capacity counts toward
// its user's quota of pipe memory (fs/pipe-user-pages-soft, 64 MiB), past which the sandbox's
// new pipes get two pages, so execs with little output keep the default.
const smallChunk, largeChunk = 64 << 10, 1 << 20

// chunkBuffer is the buffer a file is read into: small, and large once a read filled it if
// it grows (an exec's FIFO; not a terminal, which lives as long as its session). An exec's
// buffers are mapped apart from the heap and unmapped when the FIFO ends: the agent's resident
// memory is back where it was as soon as the command is, and an exec leaves no garbage (two
// 64 KiB heap buffers per exec made an agent collect every few execs, and fault its freed
// pages in again after each collection).
type chunkBuffer struct {
	b      []byte
	mapped bool            // b is a mapping of its own
	pipe   syscall.RawConn // the FIFO, which grows with the buffer; nil: neither grows
}

func newChunkBuffer(pipe syscall.RawConn) *chunkBuffer {
	c := &chunkBuffer{pipe: pipe}
	if pipe != nil {
		if b, err := mapBuffer(smallChunk); err == nil {
			c.b, c.mapped = b, true
			return c
		}
	}
	c.b = make([]byte, smallChunk)
	return c
}

// mapBuffer maps size bytes of anonymous memory: only the pages a read touches become resident.
func mapBuffer(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

// grow makes the buffer, and the pipe, large after a read of n bytes filled the buffer (if
// the mapping fails, both stay small; if the pipe cannot grow, it stays as it is). It returns
// the small buffer when it was a mapping, which holds the bytes read: unmap it once they are
// delivered.
func (c *chunkBuffer) grow(n int) (replaced []byte) {
	if c.pipe == nil || len(c.b) == largeChunk || n < len(c.b) {
		return nil
	}
	b, err := mapBuffer(largeChunk)
	if err != nil {
		return nil
	}
	if c.mapped {
		replaced = c.b
	}
	c.b, c.mapped = b, true
	_ = c.pipe.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, largeChunk) })
	return replaced
}

// unmap unmaps a buffer grow replaced (nil: nothing).
func unmap(b []byte) {
	if b != nil {
		_ = unix.Munmap(b)
	}
}

// deliver hands the n bytes a read put in the buffer to sink, growing the buffer (and the
// pipe) first when they filled it, so that the pipe holds more while sink works.
func (c *chunkBuffer) deliver(n int, sink func([]byte)) {
	b := c.b
	replaced := c.grow(n)
	sink(b[:n])
	unmap(replaced)
}

// release unmaps a mapped buffer; the buffer is not used again.
func (c *chunkBuffer) release() {
	if c.mapped {
		unmap(c.b)
		c.b, c.mapped = nil, false
	}
}

// pump reads f into chunk until it fails (end of file, a deadline, a close) and hands each
// chunk to sink.
func pump(f *os.File, chunk *chunkBuffer, sink func([]byte)) {
	for {
		n, err := f.Read(chunk.b)
		if n > 0 {
			chunk.deliver(n, sink)
		}
		if err != nil {
			return
		}
	}
}

// finish delivers everything the command wrote, then moves the FIFO to a background drain
// into rest (nil: close it).
func (r *fifoReader) finish(rest io.Writer) {
	_ = r.f.SetReadDeadline(time.Now())
	<-r.done
	// Raw reads honour the deadline too: clear it, then take only what is already there.
	_ = r.f.SetReadDeadline(time.Time{})
	_ = r.chunk.pipe.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Read(int(fd), r.chunk.b)
			if n <= 0 || err != nil {
				return true
			}
			r.chunk.deliver(n, r.sink)
		}
	})
	if r.keep >= 0 {
		unix.Close(r.keep)
		r.keep = -1 // a bare descriptor closed twice could close another file's
	}
	if rest == nil {
		r.chunk.release()
		r.f.Close()
		return
	}
	drain := r.chunk // what background jobs write later is little: a large buffer goes
	if len(drain.b) != smallChunk {
		drain.release()
		drain = newChunkBuffer(drain.pipe)
	}
	drain.pipe = nil // and it stays small
	go func() {
		defer r.f.Close()
		defer drain.release()
		pump(r.f, drain, func(b []byte) { _, _ = rest.Write(b) })
	}()
}
