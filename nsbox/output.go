package nsbox

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
)

// The output of a command answered as one JSON document (an exec, a code run) cannot go out
// as it comes: each stream's encoding (text or base64) is known only at its end. So the daemon
// spools it: each stream keeps its first spoolMemory bytes in memory and the rest in a file
// of its own in the spool dir (<data>/spool, on the host, counted toward nothing a sandbox
// controls), unlinked as soon as it is made, so that it goes away with the answer or a crash.
// When the command has ended the answer is written from the spools, encoding as it reads
// them: the daemon's memory stays bounded whatever the size, which a stream's cap
// (api.ExecRequest.MaxOutputBytes, at most Config.MaxExecOutput) bounds on disk.

// spoolMemory is how much of each stream stays in memory before it goes to a file.
const spoolMemory = 1 << 20

// answerBuffer bounds the buffers an answer with a command's whole output is written through
// (docs/benchmarks.md, "Larger chunks").
const answerBuffer = 256 << 10

// DefaultMaxExecOutput is Config.MaxExecOutput when the config names none.
const DefaultMaxExecOutput = 1 << 30

// spoolDir is where the files of spooled output go.
func (r *Runtime) spoolDir() string { return filepath.Join(r.cfg.DataDir, "spool") }

// resetSpoolDir makes an empty spool dir: what is left in it is what a crash left between
// making a file and unlinking it.
func (r *Runtime) resetSpoolDir() error {
	if err := errors.Join(os.RemoveAll(r.spoolDir()), os.Mkdir(r.spoolDir(), 0o700)); err != nil {
		return fmt.Errorf("make spool dir: %w", err)
	}
	return nil
}

// outputCap is the cap on each stream of a call answered as one JSON document that asked for
// asked bytes (0: the default; never negative).
func (r *Runtime) outputCap(asked int64) (int64, error) {
	limit := r.cfg.MaxExecOutput
	switch {
	case asked == 0:
		return min(api.DefaultMaxOutputBytes, limit), nil
	case asked > limit:
		return 0, api.Errorf(api.CodeInvalidArgument, "maxOutputBytes %d is more than this daemon keeps of a stream for one answer (%d, its --max-exec-output); ask for less, or stream the output (Accept: text/event-stream), which has no bound", asked, limit)
	}
	return asked, nil
}

// output is a command's stdout and stderr, spooled.
type output struct {
	stdout, stderr spool
}

// newOutput returns an empty output that keeps at most max bytes of each stream.
func (r *Runtime) newOutput(max int64) *output {
	o := &output{}
	for _, s := range []*spool{&o.stdout, &o.stderr} {
		s.dir, s.limit.Max = r.spoolDir(), max
	}
	return o
}

// add appends one output event's data, encoded, to its stream.
func (o *output) add(stream, data, encoding string) error {
	b, err := api.DecodeData(data, encoding)
	if err != nil {
		return fmt.Errorf("decode %s event: %w", stream, err)
	}
	return o.write(stream, b)
}

// write appends output bytes to a stream (api.EventStdout or api.EventStderr).
func (o *output) write(stream string, b []byte) error {
	if stream == api.EventStderr {
		return o.stderr.write(b)
	}
	return o.stdout.write(b)
}

// close lets go of the spools' files.
func (o *output) close() {
	o.stdout.close()
	o.stderr.close()
}

// emptyOutput is how a result struct with empty Stdout and Stderr (declared one after the
// other, before any field that could hold this text) looks in JSON.
const emptyOutput = `"stdout":"","stderr":""`

// writeAnswer answers 200 with v (a result whose Stdout and Stderr are empty) as JSON, its
// "stdout" and "stderr" written from the spools in the encodings given. Errors once the answer
// has started (the client went away) are only logged.
func (r *Runtime) writeAnswer(w http.ResponseWriter, v any, o *output, stdoutEnc, stderrEnc string) error {
	head, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	at := bytes.Index(head, []byte(emptyOutput))
	if at < 0 {
		return fmt.Errorf("encode result: %T has no empty stdout and stderr", v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// Sized to the answer (escaping and base64 may grow the output by half, or more), at most
	// answerBuffer: a buffer of that size for every exec, whatever its output, was most of
	// what the daemon allocated, and with 1,000 sandboxes its garbage collector, which then
	// walks every sandbox's state each cycle, took a millisecond of each exec
	// (docs/benchmarks.md, "Session 22").
	size := min(int64(len(head))+(o.stdout.len()+o.stderr.len())*3/2+64, answerBuffer)
	bw := bufio.NewWriterSize(w, int(size))
	_, _ = bw.Write(head[:at])
	_, _ = bw.WriteString(`"stdout":`)
	err = o.stdout.writeJSON(bw, stdoutEnc)
	if err == nil {
		_, _ = bw.WriteString(`,"stderr":`)
		err = o.stderr.writeJSON(bw, stderrEnc)
	}
	if err == nil {
		_, _ = bw.Write(head[at+len(emptyOutput):])
		_ = bw.WriteByte('\n')
		err = bw.Flush()
	}
	if err != nil {
		r.log.Warn("answer with a command's output", "err", err)
	}
	return nil
}

// streamCheck is what the daemon follows of one output stream on its way to a client that
// gets it whole: the stream's cap, and whether it is text.
type streamCheck struct {
	limit api.OutputLimit
	text  utf8Check
}

// keep returns the part of the next chunk b that the stream keeps, noted as text or not.
func (c *streamCheck) keep(b []byte) []byte {
	b = c.limit.Keep(b)
	c.text.add(b)
	return b
}

// encoding is the encoding the stream needs in JSON: utf-8 when it is text, else base64.
func (c *streamCheck) encoding() string {
	if c.text.valid() {
		return api.EncodingUTF8
	}
	return api.EncodingBase64
}

// rawEncoding is how a framed answer (as it is, api.EventFrames) names the stream: utf-8 when
// it is text, else raw.
func (c *streamCheck) rawEncoding() string {
	if c.text.valid() {
		return api.EncodingUTF8
	}
	return api.EncodingRaw
}

// spool is one output stream: its first spoolMemory bytes in mem, the rest in file.
type spool struct {
	streamCheck
	dir  string
	mem  []byte
	file *os.File // unlinked; nil until mem is full
	size int64    // bytes in file
}

// write appends b, or what the stream's cap keeps of it.
func (s *spool) write(b []byte) error {
	if b = s.keep(b); len(b) == 0 {
		return nil
	}
	if s.file == nil && len(s.mem)+len(b) <= spoolMemory {
		s.mem = append(s.mem, b...)
		return nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "output-")
		if err != nil {
			return spoolError(err)
		}
		// Unlinked at once: the file lives as long as the answer needs it.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return fmt.Errorf("unlink spool file: %w", err)
		}
		s.file = f
	}
	n, err := s.file.Write(b)
	s.size += int64(n)
	if err != nil {
		return spoolError(err)
	}
	return nil
}

// noSpace reports whether err says a file system of the host is full.
func noSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// spoolError is a failure to write spooled output; a full host disk says so.
func spoolError(err error) error {
	if noSpace(err) {
		return api.Errorf(api.CodeInsufficientStorage, "the command's output does not fit on the host: the disk of nsbox's data dir, where output beyond %d bytes waits for the answer, is full (%v); free space on the host, ask for less (maxOutputBytes), or stream the output (Accept: text/event-stream)", spoolMemory, err)
	}
	return fmt.Errorf("spool output: %w", err)
}

// len is how many bytes the stream holds.
func (s *spool) len() int64 { return int64(len(s.mem)) + s.size }

// writeJSON writes the stream as one JSON string in encoding enc.
func (s *spool) writeJSON(w *bufio.Writer, enc string) error {
	var rd io.Reader = bytes.NewReader(s.mem)
	if s.file != nil {
		rd = io.MultiReader(rd, io.NewSectionReader(s.file, 0, s.size))
	}
	_ = w.WriteByte('"')
	if enc == api.EncodingBase64 {
		b64 := base64.NewEncoder(base64.StdEncoding, w)
		if _, err := io.Copy(b64, rd); err != nil {
			return fmt.Errorf("read spooled output: %w", err)
		}
		_ = b64.Close()
	} else if err := copyEscaped(w, rd, s.len()); err != nil {
		return err
	}
	return w.WriteByte('"')
}

func (s *spool) close() {
	if s.file != nil {
		s.file.Close()
	}
}

// copyEscaped copies the n bytes of valid UTF-8 text rd holds to w as the inside of a JSON
// string, answerBuffer bytes at a time at most.
func copyEscaped(w *bufio.Writer, rd io.Reader, n int64) error {
	if n == 0 {
		return nil
	}
	chunk := make([]byte, min(n, answerBuffer))
	var escaped []byte
	for {
		n, err := rd.Read(chunk)
		escaped = api.AppendJSONText(escaped[:0], chunk[:n])
		_, _ = w.Write(escaped)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read spooled output: %w", err)
		}
	}
}

// utf8Check tells whether a stream that comes in chunks is valid UTF-8; a chunk may end
// inside a character, which the next one completes.
type utf8Check struct {
	invalid bool
	partial []byte // the start of a character the last chunk ended in
}

func (u *utf8Check) add(b []byte) {
	if u.invalid {
		return
	}
	if len(u.partial) > 0 {
		// Complete the pending character with b's first bytes.
		take := min(len(b), utf8.UTFMax-len(u.partial))
		c := append(u.partial, b[:take]...)
		if !utf8.FullRune(c) {
			u.partial = c
			return
		}
		r, size := utf8.DecodeRune(c)
		if r == utf8.RuneError && size <= 1 {
			u.invalid = true
			return
		}
		b = b[size-len(u.partial):]
		u.partial = nil
	}
	// Keep back a character that b ends inside of.
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				u.partial = append([]byte(nil), b[i:]...)
				b = b[:i]
			}
			break
		}
	}
	u.invalid = !utf8.Valid(b)
}

// valid reports whether the whole stream so far is valid UTF-8.
func (u *utf8Check) valid() bool { return !u.invalid && len(u.partial) == 0 }
