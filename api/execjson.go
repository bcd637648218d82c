package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// An exec's request and its events as JSON, coded without reflection, for the agent: what an
// exec to a sandbox that idled costs is mostly the pages its agent touches again (hosts that
// watch memory, such as the kernel's DAMON, clear their accessed bits, and where page tables
// are shadowed, as on a PVM guest, setting one again exits to the host: 5–15 µs a page), and
// encoding/json's decoder and encoder, with the reflection under them, were a sixth of the
// agent's pages in an exec (docs/benchmarks.md, "Session 21"). Both mirror encoding/json, and
// are tested against it; the daemon's side keeps encoding/json.

// DecodeExecRequest decodes a request body read by ReadBody into req as DecodeBody would: a
// JSON object (or null, which leaves req as it is) whose keys match ExecRequest's fields as
// encoding/json matches them, unknown fields refused, nothing but whitespace after it.
func DecodeExecRequest(data []byte, req *ExecRequest) error {
	d := jsonReader{data: data}
	if err := d.execRequest(req); err != nil {
		return Errorf(CodeInvalidArgument, "malformed JSON body: %v", err)
	}
	return nil
}

// jsonReader reads JSON values from data, from offset i.
type jsonReader struct {
	data []byte
	i    int
}

var errJSONEnd = errors.New("unexpected end of JSON input")

// syntaxError says what was found where something else was expected.
func (d *jsonReader) syntaxError(want string) error {
	if d.i >= len(d.data) {
		return errJSONEnd
	}
	return fmt.Errorf("invalid character %q at offset %d, looking for %s", d.data[d.i], d.i, want)
}

// next skips whitespace and returns the byte there (0 at the end of data, or a NUL byte: 0
// is none of the bytes the reader looks for).
func (d *jsonReader) next() byte {
	for ; d.i < len(d.data); d.i++ {
		switch c := d.data[d.i]; c {
		case ' ', '\t', '\n', '\r':
		default:
			return c
		}
	}
	return 0
}

// literal consumes word (null, true or false), which starts at the next byte.
func (d *jsonReader) literal(word string) error {
	if string(d.data[d.i:min(len(d.data), d.i+len(word))]) != word {
		return d.syntaxError(word)
	}
	d.i += len(word)
	return nil
}

// null consumes a null if that is what comes next.
func (d *jsonReader) null() (bool, error) {
	if d.next() != 'n' {
		return false, nil
	}
	return true, d.literal("null")
}

// execRequest reads the whole of data as an ExecRequest.
func (d *jsonReader) execRequest(req *ExecRequest) error {
	if null, err := d.null(); err != nil {
		return err
	} else if null {
		return d.end()
	}
	if d.next() != '{' {
		return d.typeError("an exec request (an object)")
	}
	d.i++
	err := d.object(func(key string) error {
		switch {
		case strings.EqualFold(key, "argv"):
			return d.stringSlice(&req.Argv)
		case strings.EqualFold(key, "command"):
			return d.string(&req.Command)
		case strings.EqualFold(key, "sessionId"):
			return d.string(&req.SessionID)
		case strings.EqualFold(key, "env"):
			return d.stringMap(&req.Env)
		case strings.EqualFold(key, "cwd"):
			return d.string(&req.Cwd)
		case strings.EqualFold(key, "stdin"):
			return d.string(&req.Stdin)
		case strings.EqualFold(key, "stdinEncoding"):
			return d.string(&req.StdinEncoding)
		case strings.EqualFold(key, "timeoutMs"):
			return d.int64(&req.TimeoutMs)
		case strings.EqualFold(key, "killOnDisconnect"):
			return d.bool(&req.KillOnDisconnect)
		case strings.EqualFold(key, "maxOutputBytes"):
			return d.int64(&req.MaxOutputBytes)
		}
		return fmt.Errorf("json: unknown field %q", key)
	})
	if err != nil {
		return err
	}
	return d.end()
}

// end checks that nothing but whitespace is left.
func (d *jsonReader) end() error {
	if d.next(); d.i < len(d.data) { // next's 0 may be a NUL byte
		return errors.New("data after the object")
	}
	return nil
}

// typeError is a value of another kind than want.
func (d *jsonReader) typeError(want string) error {
	if d.i >= len(d.data) {
		return errJSONEnd
	}
	return fmt.Errorf("json: cannot read the value at offset %d as %s", d.i, want)
}

// object reads the members of an object whose '{' was consumed, each value by member.
func (d *jsonReader) object(member func(key string) error) error {
	if d.next() == '}' {
		d.i++
		return nil
	}
	for {
		key, err := d.quoted()
		if err != nil {
			return err
		}
		if d.next() != ':' {
			return d.syntaxError("':' after an object key")
		}
		d.i++
		if err := member(key); err != nil {
			return err
		}
		switch d.next() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.syntaxError("',' or '}' after an object's value")
		}
	}
}

// string reads a string into p; null leaves p as it is.
func (d *jsonReader) string(p *string) error {
	if null, err := d.null(); err != nil || null {
		return err
	}
	s, err := d.quoted()
	if err == nil {
		*p = s
	}
	return err
}

// stringSlice reads an array of strings into p (null elements are ""); null makes p nil.
func (d *jsonReader) stringSlice(p *[]string) error {
	if null, err := d.null(); err != nil || null {
		if null {
			*p = nil
		}
		return err
	}
	if d.next() != '[' {
		return d.typeError("an array of strings")
	}
	d.i++
	var out []string
	if d.next() == ']' {
		d.i++
		*p = []string{}
		return nil
	}
	for {
		var s string
		if err := d.string(&s); err != nil {
			return err
		}
		out = append(out, s)
		switch d.next() {
		case ',':
			d.i++
		case ']':
			d.i++
			*p = out
			return nil
		default:
			return d.syntaxError("',' or ']' after an array element")
		}
	}
}

// stringMap reads an object of strings into p, adding to what it holds (null values are "");
// null makes p nil.
func (d *jsonReader) stringMap(p *map[string]string) error {
	if null, err := d.null(); err != nil || null {
		if null {
			*p = nil
		}
		return err
	}
	if d.next() != '{' {
		return d.typeError("an object of strings")
	}
	d.i++
	if *p == nil {
		*p = map[string]string{}
	}
	return d.object(func(key string) error {
		var s string
		if err := d.string(&s); err != nil {
			return err
		}
		(*p)[key] = s
		return nil
	})
}

// int64 reads an integer into p; null leaves p as it is. A number with a fraction or an
// exponent, or out of int64's range, is an error, as in encoding/json.
func (d *jsonReader) int64(p *int64) error {
	if null, err := d.null(); err != nil || null {
		return err
	}
	start := d.i
	for d.i < len(d.data) && strings.IndexByte("+-0123456789.eE", d.data[d.i]) >= 0 {
		d.i++
	}
	num := string(d.data[start:d.i])
	digits := strings.TrimPrefix(num, "-")
	if digits == "" || (len(digits) > 1 && digits[0] == '0') || strings.ContainsAny(digits, "+-.eE") {
		d.i = start
		return d.typeError("an integer")
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return fmt.Errorf("json: number %s does not fit in an int64", num)
	}
	*p = n
	return nil
}

// bool reads true or false into p; null leaves p as it is.
func (d *jsonReader) bool(p *bool) error {
	switch d.next() {
	case 'n':
		return d.literal("null")
	case 't':
		*p = true
		return d.literal("true")
	case 'f':
		*p = false
		return d.literal("false")
	}
	return d.typeError("true or false")
}

// quoted reads a string: its escapes decoded, and each byte that is not UTF-8 read as U+FFFD,
// as encoding/json reads them.
func (d *jsonReader) quoted() (string, error) {
	if d.next() != '"' {
		return "", d.typeError("a string")
	}
	d.i++
	start := d.i
	for d.i < len(d.data) { // plain ASCII needs no copy
		c := d.data[d.i]
		if c == '"' {
			d.i++
			return string(d.data[start : d.i-1]), nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		d.i++
	}
	b := append([]byte(nil), d.data[start:d.i]...)
	for d.i < len(d.data) {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return string(b), nil
		case c < 0x20:
			return "", d.syntaxError("a string's next character (control characters must be escaped)")
		case c == '\\':
			var err error
			if b, err = d.escape(b); err != nil {
				return "", err
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			d.i++
		default:
			r, size := utf8.DecodeRune(d.data[d.i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, d.data[d.i:d.i+size]...)
			}
			d.i += size
		}
	}
	return "", errJSONEnd
}

// escape appends the character of the escape at d.i to b. A \u escape of half a UTF-16
// surrogate pair takes the other half from the escape after it, if it is one; else it is
// U+FFFD.
func (d *jsonReader) escape(b []byte) ([]byte, error) {
	if d.i+1 >= len(d.data) {
		return b, errJSONEnd
	}
	if c := unescape(d.data[d.i+1]); c != 0 {
		d.i += 2
		return append(b, c), nil
	}
	r, ok := d.hex4(d.i)
	if !ok {
		d.i++
		return b, d.syntaxError("an escape")
	}
	d.i += 6
	if utf16.IsSurrogate(r) {
		r2, ok := d.hex4(d.i)
		if pair := utf16.DecodeRune(r, r2); ok && pair != utf8.RuneError {
			d.i += 6
			r = pair
		} else {
			r = utf8.RuneError
		}
	}
	return utf8.AppendRune(b, r), nil
}

// unescape returns what the one-letter escape c (after a backslash) stands for, 0 if c is
// not one.
func unescape(c byte) byte {
	switch c {
	case '"', '\\', '/':
		return c
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return 0
}

// hex4 reads the \uXXXX escape at i, if there is one.
func (d *jsonReader) hex4(i int) (rune, bool) {
	if i+6 > len(d.data) || d.data[i] != '\\' || d.data[i+1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(d.data[i+2:i+6]), 16, 16)
	return rune(n), err == nil
}

// AppendExecEvent appends e as JSON, as json.Marshal writes it.
func AppendExecEvent(b []byte, e *ExecEvent) []byte {
	b = appendJSONString(append(b, `{"type":`...), e.Type)
	for _, f := range [...]struct{ key, value string }{{"data", e.Data}, {"encoding", e.Encoding}, {"sessionId", e.SessionID}} {
		if f.value != "" {
			b = appendJSONString(appendKey(b, f.key), f.value)
		}
	}
	if r := e.Result; r != nil {
		b = strconv.AppendInt(append(appendKey(b, "result"), `{"exitCode":`...), int64(r.ExitCode), 10)
		for _, f := range [...]struct{ key, value string }{{"stdout", r.Stdout}, {"stderr", r.Stderr},
			{"stdoutEncoding", r.StdoutEncoding}, {"stderrEncoding", r.StderrEncoding}} {
			b = appendJSONString(appendKey(b, f.key), f.value)
		}
		b = strconv.AppendBool(appendKey(b, "timedOut"), r.TimedOut)
		b = strconv.AppendBool(appendKey(b, "canceled"), r.Canceled)
		b = strconv.AppendBool(appendKey(b, "stdoutTruncated"), r.StdoutTruncated)
		b = strconv.AppendBool(appendKey(b, "stderrTruncated"), r.StderrTruncated)
		b = strconv.AppendBool(appendKey(b, "truncated"), r.Truncated)
		b = strconv.AppendInt(appendKey(b, "durationMs"), r.DurationMs, 10)
		b = appendJSONString(appendKey(b, "sessionId"), r.SessionID)
		b = strconv.AppendBool(appendKey(b, "sessionEnded"), r.SessionEnded)
		b = strconv.AppendBool(appendKey(b, "sessionReset"), r.SessionReset)
		if r.OOMKilled {
			b = append(appendKey(b, "oomKilled"), "true"...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendKey appends the comma and the key of an object's member after its first.
func appendKey(b []byte, key string) []byte {
	return append(append(append(b, `,"`...), key...), `":`...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json escapes it: quotes,
// backslashes and control characters, the HTML characters <, > and &, U+2028 and U+2029; each
// byte that is not UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, `\ufffd`...)
			case r == '\u2028' || r == '\u2029':
				b = append(b, `\u202`...)
				b = append(b, hex[r&0xf])
			default:
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		case '<', '>', '&':
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
		}
		i++
	}
	return append(b, '"')
}
