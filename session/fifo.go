package session

import (
	"fmt"
	"io"
	"os"
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
	f    *os.File
	keep *os.File // our own write end
	sink func([]byte)
	done chan struct{}
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
	keep, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open fifo: %w", err)
	}
	r := &fifoReader{f: f, keep: keep, sink: sink, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		pump(f, r.sink)
	}()
	return r, nil
}

// pump reads f until it fails (end of file, a deadline, a close) and hands each chunk to sink.
func pump(f *os.File, sink func([]byte)) {
	chunk := make([]byte, 64<<10)
	for {
		n, err := f.Read(chunk)
		if n > 0 {
			sink(chunk[:n])
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
	if rc, err := r.f.SyscallConn(); err == nil {
		chunk := make([]byte, 64<<10)
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.Read(int(fd), chunk)
				if n <= 0 || err != nil {
					return true
				}
				r.sink(chunk[:n])
			}
		})
	}
	r.keep.Close()
	if rest == nil {
		r.f.Close()
		return
	}
	go func() {
		defer r.f.Close()
		_, _ = io.Copy(rest, r.f)
	}()
}
