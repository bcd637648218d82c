package session

import "sync"

// Ring is a bounded byte buffer addressed by absolute offsets ("cursors"): offset 0 is the
// first byte ever written. Readers ask for what came after a cursor; bytes that fell off the
// front are reported as skipped, never silently lost. The buffer grows up to its size and is
// then written circularly: the byte at offset o is at buf[o % size].
type Ring struct {
	mu   sync.Mutex
	buf  []byte
	size int
	end  int64 // absolute offset after the last byte written
	wake chan struct{}
}

// NewRing returns a ring that keeps the last size bytes.
func NewRing(size int) *Ring {
	return &Ring{size: size, wake: make(chan struct{})}
}

// Write appends p, dropping the oldest bytes beyond the ring's size. It never fails.
func (r *Ring) Write(p []byte) (int, error) {
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	r.mu.Lock()
	end := r.end
	if len(p) > r.size {
		end += int64(len(p) - r.size)
		p = p[len(p)-r.size:]
		r.buf = append(r.buf, make([]byte, r.size-len(r.buf))...)
	}
	for len(p) > 0 {
		pos := int(end % int64(r.size))
		k := 0
		if pos == len(r.buf) && len(r.buf) < r.size { // still growing
			k = min(len(p), r.size-len(r.buf))
			r.buf = append(r.buf, p[:k]...)
		} else {
			k = copy(r.buf[pos:], p)
		}
		p, end = p[k:], end+int64(k)
	}
	r.end = end
	close(r.wake)
	r.wake = make(chan struct{})
	r.mu.Unlock()
	return n, nil
}

// ReadFrom returns the bytes after cursor, how many bytes between cursor and the oldest kept
// byte were dropped, the next cursor, and a channel closed at the next write.
func (r *Ring) ReadFrom(cursor int64) (data []byte, skipped, next int64, changed <-chan struct{}) {
	return r.ReadAt(cursor, -1)
}

// ReadAt is ReadFrom returning at most limit bytes (all when limit < 0); next is then the
// cursor after the last byte returned.
func (r *Ring) ReadAt(cursor int64, limit int) (data []byte, skipped, next int64, changed <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start, end := r.end-int64(len(r.buf)), r.end
	if cursor < start {
		skipped, cursor = start-cursor, start
	}
	if cursor > end {
		cursor = end
	}
	if limit >= 0 && end-cursor > int64(limit) {
		end = cursor + int64(limit)
	}
	data = make([]byte, end-cursor)
	if len(data) > 0 {
		pos := int(cursor % int64(r.size))
		k := copy(data, r.buf[pos:])
		copy(data[k:], r.buf)
	}
	return data, skipped, end, r.wake
}

// End is the cursor after the last byte written.
func (r *Ring) End() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.end
}
