package api

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidIDs checks the hand-written checks against the regular expressions they replace.
func TestValidIDs(t *testing.T) {
	ids := []string{"", "a", "A9", "default", "s-120000.123456", "_x", ".x", "-x", "x_y.z-1", "x:y", "ab-", "Ab",
		"a b", "a/b", "é", "a\x00", "x\n", strings.Repeat("a", 63), strings.Repeat("a", 64), "a" + strings.Repeat("-", 62),
		strings.Repeat("Z.", 64), strings.Repeat("Z.", 64) + "x"}
	for _, c := range []struct {
		name  string
		check func(string) bool
		re    string
	}{
		{"ValidAgentID", ValidAgentID, `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`},
		{"ValidSandboxID", ValidSandboxID, `^[a-z0-9][a-z0-9-]{0,62}$`},
		{"ValidRequestID", ValidRequestID, `^[A-Za-z0-9._:-]{1,128}$`},
	} {
		re := regexp.MustCompile(c.re)
		for _, id := range ids {
			if got, want := c.check(id), re.MatchString(id); got != want {
				t.Errorf("%s(%q) = %t, want %t", c.name, id, got, want)
			}
		}
	}
}
