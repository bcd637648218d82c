package session

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRingMatchesAModel writes random amounts (smaller and larger than the ring) and reads
// random ranges, comparing with the plain tail of everything written.
func TestRingMatchesAModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 7, 64, 1000} {
		r := NewRing(size)
		var all []byte
		for i := range 300 {
			p := make([]byte, rng.IntN(3*size+2))
			for j := range p {
				p[j] = byte(rng.IntN(256))
			}
			r.Write(p)
			all = append(all, p...)
			end := int64(len(all))
			start := max(0, end-int64(size))
			cursor := rng.Int64N(end + 2)
			limit := rng.IntN(2*size+2) - 1
			data, skipped, next, _ := r.ReadAt(cursor, limit)
			from := max(min(cursor, end), start)
			want := all[from:end]
			if limit >= 0 && len(want) > limit {
				want = want[:limit]
			}
			wantSkipped := max(0, start-cursor)
			if !bytes.Equal(data, want) || skipped != wantSkipped || next != from+int64(len(want)) || r.End() != end {
				t.Fatalf("size %d step %d: ReadAt(%d, %d) = %d bytes skipped %d next %d; want %d bytes skipped %d next %d",
					size, i, cursor, limit, len(data), skipped, next, len(want), wantSkipped, from+int64(len(want)))
			}
		}
	}
}
