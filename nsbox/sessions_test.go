package nsbox

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

func TestOutputPieceCutsBetweenCharacters(t *testing.T) {
	const max = 8
	for _, c := range []struct {
		in   string
		want int
	}{
		{"short", 5},
		{"abcdefghij", 8},
		{"abcdef€x", 6},  // € (3 bytes) would straddle the cut: cut before it
		{"abcdefg€", 7},  // likewise, with one byte of it inside
		{"abcdefgh€", 8}, // it starts at the cut
		{"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80", 8}, // no character starts near the cut: binary, cut at max
	} {
		if got := outputPiece([]byte(c.in), max); got != c.want {
			t.Errorf("outputPiece(%q) = %d, want %d", c.in, got, c.want)
		}
	}
	text := bytes.Repeat([]byte("añ€😀"), 50000)
	for b := text; len(b) > 0; {
		n := outputPiece(b, sseOutput)
		if !utf8.Valid(b[:n]) || n == 0 || n > sseOutput {
			t.Fatalf("a piece of %d bytes, valid %v", n, utf8.Valid(b[:n]))
		}
		b = b[n:]
	}
}
