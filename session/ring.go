package session

import "sync"

// Ring is a bounded byte buffer addressed by absolute offsets ("cursors"): offset 0 is the
// first byte ever written. Readers ask for what came after a cursor; bytes that fell off the
// front are reported as skipped, never silently lost.
type Ring struct {
	mu    sync.Mutex
	buf   []byte
	size  int
	start int64 // absolute offset of buf[0]
	wake  chan struct{}
}

// NewRing returns a ring that keeps the last size bytes.
func NewRing(size int) *Ring {
	return &Ring{size: size, wake: make(chan struct{})}
}

// Write appends p, dropping the oldest bytes beyond the ring's size. It never fails.
func (r *Ring) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	r.buf = append(r.buf, p...)
	if over := len(r.buf) - r.size; over > 0 {
		r.buf = append(r.buf[:0], r.buf[over:]...)
		r.start += int64(over)
	}
	close(r.wake)
	r.wake = make(chan struct{})
	r.mu.Unlock()
	return len(p), nil
}

// ReadFrom returns the bytes after cursor, how many bytes between cursor and the oldest kept
// byte were dropped, the next cursor, and a channel closed at the next write.
func (r *Ring) ReadFrom(cursor int64) (data []byte, skipped, next int64, changed <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.start + int64(len(r.buf))
	if cursor < r.start {
		skipped, cursor = r.start-cursor, r.start
	}
	if cursor > end {
		cursor = end
	}
	data = append([]byte(nil), r.buf[cursor-r.start:]...)
	return data, skipped, end, r.wake
}

// End is the cursor after the last byte written.
func (r *Ring) End() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.start + int64(len(r.buf))
}
