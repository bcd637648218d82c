package session

import (
	"bytes"
	"slices"
	"strconv"
)

// Replay is terminal output written before a client attached, made safe to show it: without
// the sequences that ask the terminal to answer (device attributes, status and cursor
// reports, mode, setting and capability requests, color queries, window reports, ENQ). A
// program asked them of the terminal it ran on; replayed into another, they would make it
// answer, and the answers would arrive in the shell as typed input (issue 17: `1RR84;0;0c`
// after re-attaching to a terminal that had run vi or top). Everything else — text, colors,
// cursor moves, modes — is kept, so the replay draws the same screen. A sequence cut by the
// end of b is kept as it is.
func Replay(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		switch {
		case b[i] == 0x05: // ENQ: the terminal sends its answerback message
			i++
		case b[i] == 0x1b && i+1 < len(b):
			n, query := escape(b[i:])
			if !query {
				out = append(out, b[i:i+n]...)
			}
			i += n
		default:
			out = append(out, b[i])
			i++
		}
	}
	return out
}

// escape measures the escape sequence at the start of b (which starts with ESC and has one byte
// more at least) and says whether it asks for an answer. An unterminated sequence is all of b,
// and not a query.
func escape(b []byte) (n int, query bool) {
	switch b[1] {
	case '[':
		return csi(b)
	case ']', 'P':
		end := stringEnd(b[2:])
		if end < 0 {
			return len(b), false
		}
		body := b[2 : 2+end]
		if b[1] == ']' {
			return 2 + end + stringTerminator(b[2+end:]), oscQuery(body)
		}
		return 2 + end + stringTerminator(b[2+end:]), dcsQuery(body)
	case 'Z': // DECID: the old form of a device attributes request
		return 2, true
	}
	return 2, false
}

// csi measures a control sequence: ESC [ parameters (0x30–0x3F) intermediates (0x20–0x2F)
// final (0x40–0x7E).
func csi(b []byte) (int, bool) {
	i := 2
	for i < len(b) && b[i] >= 0x30 && b[i] <= 0x3f {
		i++
	}
	params := b[2:i]
	for i < len(b) && b[i] >= 0x20 && b[i] <= 0x2f {
		i++
	}
	inter := b[2+len(params) : i]
	if i >= len(b) || b[i] < 0x40 || b[i] > 0x7e {
		return min(i, len(b)), false // unterminated or malformed: not ours to judge
	}
	var prefix byte
	if len(params) > 0 && bytes.IndexByte([]byte("<=>?"), params[0]) >= 0 {
		prefix, params = params[0], params[1:]
	}
	return i + 1, csiQuery(prefix, params, string(inter), b[i])
}

// reportWindowOps are the window operations (CSI Ps t) that answer with a report.
var reportWindowOps = []int{11, 13, 14, 15, 16, 18, 19, 20, 21}

func csiQuery(prefix byte, params []byte, inter string, final byte) bool {
	first, _ := strconv.Atoi(string(bytes.SplitN(params, []byte(";"), 2)[0]))
	switch {
	case inter == "$" && (final == 'p' || final == 'w'): // DECRQM, DECRQPSR
		return true
	case inter == "*" && final == 'y', inter == "#" && final == '|': // DECRQCRA, XTREPORTSGR
		return true
	case inter != "":
		return false
	case final == 'c': // DA1, DA2 (>), DA3 (=)
		return true
	case final == 'n': // DSR, CPR, DECXCPR and the other ?-reports
		return prefix == 0 || prefix == '?'
	case final == 'q': // XTVERSION
		return prefix == '>'
	case final == 'x': // DECREQTPARM
		return prefix == 0
	case final == 'u', final == 'm', final == 'S': // kitty keyboard flags, XTQMODKEYS, XTSMGRAPHICS
		return prefix == '?'
	case final == 't':
		return prefix == 0 && slices.Contains(reportWindowOps, first)
	}
	return false
}

// oscQuery: an operating system command asks for a value when one of its arguments is "?"
// (colors: OSC 4;N;?, 10;?, 11;?, 12;?…; the clipboard: 52;c;?). Titles (0, 1, 2) are text.
func oscQuery(body []byte) bool {
	fields := bytes.Split(body, []byte(";"))
	if len(fields) < 2 || slices.Contains([]string{"0", "1", "2"}, string(fields[0])) {
		return false
	}
	return slices.ContainsFunc(fields[1:], func(f []byte) bool { return string(f) == "?" })
}

// dcsQuery: DECRQSS (DCS $ q …) and XTGETTCAP (DCS + q …) request settings and capabilities.
func dcsQuery(body []byte) bool {
	body = bytes.TrimLeft(body, "0123456789;")
	return bytes.HasPrefix(body, []byte("$q")) || bytes.HasPrefix(body, []byte("+q"))
}

// stringEnd finds the end of a control string's body: BEL or ESC \ (-1: not in b).
func stringEnd(b []byte) int {
	for i, c := range b {
		if c == 0x07 || (c == 0x1b && i+1 < len(b) && b[i+1] == '\\') {
			return i
		}
	}
	return -1
}

// stringTerminator is the length of the terminator at the start of b: BEL or ESC \.
func stringTerminator(b []byte) int {
	if b[0] == 0x07 {
		return 1
	}
	return 2
}
