package session

import "testing"

func TestReplayDropsQueries(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text\r\n", "plain text\r\n"},
		{"a\x1b[31mred\x1b[0m\x1b[2J\x1b[10;5H\x1b[?1049h\x1b[?25lb", "a\x1b[31mred\x1b[0m\x1b[2J\x1b[10;5H\x1b[?1049h\x1b[?25lb"},
		{"\x1b[c\x1b[0c\x1b[>c\x1b[=c", ""},                                    // device attributes
		{"x\x1b[6ny\x1b[5n\x1b[?6n\x1b[?996n", "xy"},                           // status, cursor position
		{"\x1b[>4;1n", "\x1b[>4;1n"},                                           // XTMODKEYS reset: not a query
		{"\x1b[?2004$p\x1b[4$p", ""},                                           // DECRQM
		{"\x1b[>q\x1b[>0q", ""},                                                // XTVERSION
		{"\x1b[14t\x1b[18t\x1b[22;0t\x1b[8;24;80t", "\x1b[22;0t\x1b[8;24;80t"}, // window reports vs ops
		{"\x1b[?u\x1b[>1u\x1b[?4m", "\x1b[>1u"},                                // kitty keyboard query vs push
		{"\x1b]11;?\x07\x1b]10;?\x1b\\\x1b]4;1;?\x07\x1b]52;c;?\x07", ""},      // color, clipboard queries
		{"\x1b]0;title?\x07\x1b]2;?\x07\x1b]8;;http://x\x1b\\", "\x1b]0;title?\x07\x1b]2;?\x07\x1b]8;;http://x\x1b\\"},
		{"\x1bP$qm\x1b\\\x1bP+q544e\x1b\\\x1bPq#0;2;0;0;0\x1b\\", "\x1bPq#0;2;0;0;0\x1b\\"}, // DECRQSS, XTGETTCAP vs sixel
		{"\x05ok\x1bZ", "ok"},                    // ENQ, DECID
		{"\x1b7\x1b8\x1b(B", "\x1b7\x1b8\x1b(B"}, // two-byte sequences stay
		{"cut \x1b[6", "cut \x1b[6"},             // unterminated: kept
		{"cut \x1b]11;?", "cut \x1b]11;?"},
		{"end\x1b", "end\x1b"},
	} {
		if got := string(Replay([]byte(c.in))); got != c.want {
			t.Errorf("Replay(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
