package api

// ValidName reports whether s can name a session or a process: 1 to 63 letters, digits, '_',
// '.' and '-', starting with a letter or digit ([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}). It is a
// loop, not a regexp: the compiled regexp's 62 repeats were 59 KB of every agent's heap.
func ValidName(s string) bool {
	if s == "" || len(s) > 63 || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
