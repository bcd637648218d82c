package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestSplitRef checks splitRef's hand-written id check against the regular expression it
// replaced.
func TestSplitRef(t *testing.T) {
	re := regexp.MustCompile(`^([a-z0-9][a-z0-9-]{0,62}):(.*)$`)
	for _, arg := range []string{"box:/etc/hosts", "box:", "box", "my-box-1:a:b", "Box:/x", "-box:/x", "box_1:/x", "/abs:x", "./rel:x",
		"box:line\nbreak", ":x", strings.Repeat("a", 63) + ":x", strings.Repeat("a", 64) + ":x", "a:b\n"} {
		id, p, ok := splitRef(arg)
		wantID, wantP, wantOK := "", arg, false
		if m := re.FindStringSubmatch(arg); m != nil && !strings.HasPrefix(arg, "/") && !strings.HasPrefix(arg, ".") {
			wantID, wantP, wantOK = m[1], m[2], true
			if wantP == "" {
				wantP = "."
			}
		}
		if id != wantID || p != wantP || ok != wantOK {
			t.Errorf("splitRef(%q) = %q, %q, %t; want %q, %q, %t", arg, id, p, ok, wantID, wantP, wantOK)
		}
	}
}
