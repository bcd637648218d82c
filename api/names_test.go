package api

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestValidName: ValidName accepts exactly what the pattern it replaced did.
func TestValidName(t *testing.T) {
	pattern := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	cases := []string{"", "a", "default", "s-1.2_3", "-a", "_a", ".a", "a b", "a/b", "é", "a\n", "\na",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "A" + strings.Repeat("-", 62), "a" + strings.Repeat(".", 63)}
	alphabet := "aZ09_.-/ \x00é"
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for range r.IntN(66) {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		cases = append(cases, b.String())
	}
	for _, s := range cases {
		if got, want := ValidName(s), pattern.MatchString(s); got != want {
			t.Errorf("ValidName(%q) = %v, the pattern says %v", s, got, want)
		}
	}
}
