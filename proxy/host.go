package proxy

import (
	"net"
	"strconv"
	"strings"
)

// tokenLen is the length of an access token: 16 random bytes in lowercase hex.
const tokenLen = 32

// reading is one way to read a host label's sandbox part: a sandbox id and, for the
// {port}-{sandbox}-{token} form, a token.
type reading struct {
	sandbox string
	token   string
}

// splitHost lowercases a Host header and splits off its port, if any, and a trailing dot.
func splitHost(host string) (name, port string) {
	host = strings.ToLower(host)
	if h, p, err := net.SplitHostPort(host); err == nil {
		host, port = h, p
	}
	return strings.TrimSuffix(host, "."), port
}

// parseLabel reads "{port}-{rest}.{domain}". rest is a sandbox id, or a sandbox id, '-'
// and a token; when both readings are possible the tokened one comes first. ok is false
// when name is not a preview host under domain.
func parseLabel(name, domain string) (port int, readings []reading, ok bool) {
	label, found := strings.CutSuffix(name, "."+domain)
	if !found || strings.Contains(label, ".") {
		return 0, nil, false
	}
	digits, rest, found := strings.Cut(label, "-")
	if !found || !validPort(digits) {
		return 0, nil, false
	}
	port, _ = strconv.Atoi(digits)
	if i := len(rest) - tokenLen - 1; i > 0 && rest[i] == '-' && isToken(rest[i+1:]) && validID(rest[:i]) {
		readings = append(readings, reading{sandbox: rest[:i], token: rest[i+1:]})
	}
	if validID(rest) {
		readings = append(readings, reading{sandbox: rest})
	}
	return port, readings, len(readings) > 0
}

// validPort accepts 1-65535 written without leading zeros.
func validPort(s string) bool {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return false
	}
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535
}

// validID matches nsbox sandbox ids: [a-z0-9][a-z0-9-]{0,62}.
func validID(s string) bool {
	return s != "" && len(s) <= 63 && s[0] != '-' && labelChars(s)
}

// labelChars reports whether s holds only lowercase letters, digits and '-'.
func labelChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isToken reports whether s has the form of an access token: 32 lowercase hex digits.
func isToken(s string) bool {
	if len(s) != tokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validDomain accepts dot-separated labels of letters, digits and inner '-'.
func validDomain(d string) bool {
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' || !labelChars(label) {
			return false
		}
	}
	return true
}
