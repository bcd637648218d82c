package api

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidAgentID checks the hand-written check against the regular expression it replaces.
func TestValidAgentID(t *testing.T) {
	re := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	for _, id := range []string{"", "a", "A9", "default", "s-120000.123456", "_x", ".x", "-x", "x_y.z-1",
		"a b", "a/b", "é", "a\x00", "x\n", strings.Repeat("a", 63), strings.Repeat("a", 64), "a" + strings.Repeat("-", 62)} {
		if got, want := ValidAgentID(id), re.MatchString(id); got != want {
			t.Errorf("ValidAgentID(%q) = %t, want %t", id, got, want)
		}
	}
}
