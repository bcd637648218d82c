package api

// The ids below are checked by hand, not with regular expressions: a counted repeat such as
// `{0,62}` compiles to a program of one state per repeat (~60 kB of heap each, kept for the
// process's life: the daemon's, an agent's, every CLI call's) and took ~1 ms of CPU to compile
// at every start.

// ValidAgentID reports whether id can name a session or a process: 1 to 63 letters, digits,
// '_', '.' and '-', starting with a letter or digit.
func ValidAgentID(id string) bool {
	return validID(id, 63, func(c byte, first bool) bool {
		return alphanumeric(c) || !first && (c == '_' || c == '.' || c == '-')
	})
}

// ValidSandboxID reports whether id can name a sandbox: 1 to 63 lowercase letters, digits and
// '-', starting with a letter or digit.
func ValidSandboxID(id string) bool {
	return validID(id, 63, func(c byte, first bool) bool {
		return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || !first && c == '-'
	})
}

// ValidRequestID reports whether id can be a caller's request id (RequestIDHeader): 1 to 128
// letters, digits, '.', '_', ':' and '-'.
func ValidRequestID(id string) bool {
	return validID(id, 128, func(c byte, _ bool) bool {
		return alphanumeric(c) || c == '.' || c == '_' || c == ':' || c == '-'
	})
}

// validID reports whether id has 1 to maxLen bytes, each of which ok allows (told whether it is
// the first).
func validID(id string, maxLen int, ok func(c byte, first bool) bool) bool {
	if len(id) == 0 || len(id) > maxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !ok(id[i], i == 0) {
			return false
		}
	}
	return true
}

func alphanumeric(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
