package nsbox

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"unicode/utf8"

	"github.com/nsbox/nsbox/api"
)

func TestUTF8CheckAcrossChunks(t *testing.T) {
	text := []byte("aé€😀\x00\n\"\\ plain")
	binary := append([]byte("ok"), 0xff, 'x')
	split := []byte("é")[:1] // a character's first byte, and nothing after it
	for _, tc := range []struct {
		name string
		data []byte
	}{{"text", text}, {"binary", binary}, {"ends inside a character", append(bytes.Clone(text), split...)}} {
		// Every way of cutting the data in two and in single bytes gives utf8.Valid's answer.
		want := utf8.Valid(tc.data)
		for cut := range len(tc.data) + 1 {
			var u utf8Check
			u.add(tc.data[:cut])
			u.add(tc.data[cut:])
			if u.valid() != want {
				t.Errorf("%s cut at %d: valid %v, want %v", tc.name, cut, u.valid(), want)
			}
		}
		var u utf8Check
		for i := range tc.data {
			u.add(tc.data[i : i+1])
		}
		if u.valid() != want {
			t.Errorf("%s byte by byte: valid %v, want %v", tc.name, u.valid(), want)
		}
	}
}

// answer spools stdout and stderr in chunks the way an exec's events bring them and returns
// the answer writeAnswer gives, decoded.
func answer(t *testing.T, max int64, stdout, stderr []byte) (*api.ExecResult, *output) {
	t.Helper()
	r := &Runtime{cfg: Config{DataDir: t.TempDir(), MaxExecOutput: DefaultMaxExecOutput}, log: slog.Default()}
	if err := r.resetSpoolDir(); err != nil {
		t.Fatal(err)
	}
	out := r.newOutput(max)
	defer out.close()
	for _, s := range []struct {
		stream string
		data   []byte
	}{{api.EventStdout, stdout}, {api.EventStderr, stderr}} {
		for b := s.data; len(b) > 0; {
			n := min(len(b), 1+rand.IntN(96<<10))
			ev := api.OutputEvent(s.stream, b[:n])
			if err := out.add(s.stream, ev.Data, ev.Encoding); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
	}
	// The files are unlinked: the spool dir is empty while the answer is pending.
	if left, _ := os.ReadDir(r.spoolDir()); len(left) > 0 {
		t.Errorf("spool dir holds %d files", len(left))
	}
	res := api.ExecResult{ExitCode: 3, SessionID: "default", StdoutEncoding: out.stdout.encoding(), StderrEncoding: out.stderr.encoding()}
	rec := httptest.NewRecorder()
	if err := r.writeAnswer(rec, &res, out, res.StdoutEncoding, res.StderrEncoding); err != nil {
		t.Fatal(err)
	}
	var back api.ExecResult
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("answer is not an ExecResult: %v", err)
	}
	return &back, out
}

func TestSpooledAnswerIsByteExact(t *testing.T) {
	var every []byte
	for i := range 256 {
		every = append(every, byte(i))
	}
	text := bytes.Repeat([]byte("line \"quoted\" \\ tab\t é€😀 \x00\x1f\x7f <&>\n"), 3<<20/40) // > spoolMemory
	binary := make([]byte, 3<<20)
	for i := range binary {
		binary[i] = byte(rand.Uint32())
	}
	for _, tc := range []struct {
		name           string
		stdout, stderr []byte
	}{
		{"small text", []byte("hello\n"), nil},
		{"large text, binary stderr", text, every},
		{"binary stdout, text stderr", binary, []byte("warning: é\n")},
		{"large text both", text, text},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := answer(t, 0, tc.stdout, tc.stderr)
			stdout, stderr, err := res.Output()
			if err != nil || !bytes.Equal(stdout, tc.stdout) || !bytes.Equal(stderr, tc.stderr) {
				t.Fatalf("output differs (%v): %d/%d and %d/%d bytes", err, len(stdout), len(tc.stdout), len(stderr), len(tc.stderr))
			}
			for _, s := range []struct {
				enc  string
				data []byte
			}{{res.StdoutEncoding, tc.stdout}, {res.StderrEncoding, tc.stderr}} {
				want := api.EncodingUTF8
				if !utf8.Valid(s.data) {
					want = api.EncodingBase64
				}
				if s.enc != want {
					t.Errorf("encoding %s, want %s", s.enc, want)
				}
			}
			if res.ExitCode != 3 || res.SessionID != "default" {
				t.Errorf("the rest of the result changed: %+v", res)
			}
		})
	}
}

func TestSpoolKeepsToTheCap(t *testing.T) {
	text := bytes.Repeat([]byte("é"), 2<<20) // 4 MiB of 2-byte characters
	_, out := answer(t, 3<<20+1, text, []byte("short"))
	if !out.stdout.limit.Truncated || out.stderr.limit.Truncated {
		t.Fatalf("truncated: stdout %v stderr %v", out.stdout.limit.Truncated, out.stderr.limit.Truncated)
	}
	// Cut before the character that would not fit whole: still text.
	if got := int64(len(out.stdout.mem)) + out.stdout.size; got != 3<<20 || out.stdout.encoding() != api.EncodingUTF8 {
		t.Fatalf("kept %d bytes (%s), want %d of text", got, out.stdout.encoding(), 3<<20)
	}
}

// TestSmallAnswerAllocatesLittle: the buffers an answer is written through are sized to its
// output. They were 768 KiB for every exec, whatever it printed, which at 1,000 sandboxes
// made the daemon's garbage collector, walking every sandbox's state each cycle, a
// millisecond of each exec (docs/benchmarks.md, "Session 22").
func TestSmallAnswerAllocatesLittle(t *testing.T) {
	r := &Runtime{cfg: Config{DataDir: t.TempDir(), MaxExecOutput: DefaultMaxExecOutput}, log: slog.Default()}
	out := r.newOutput(DefaultMaxExecOutput)
	defer out.close()
	if err := out.write(api.EventStdout, []byte("hello \"world\"\n")); err != nil {
		t.Fatal(err)
	}
	res := api.ExecResult{SessionID: "default", StdoutEncoding: api.EncodingUTF8, StderrEncoding: api.EncodingUTF8}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const answers = 10
	for range answers {
		if err := r.writeAnswer(httptest.NewRecorder(), &res, out, res.StdoutEncoding, res.StderrEncoding); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / answers; per > 32<<10 {
		t.Errorf("an answer with 15 bytes of output allocated %d bytes", per)
	}
}
