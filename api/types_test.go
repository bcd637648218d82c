package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestExecResultRoundTripsAnyBytes(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, tc := range []struct {
		name                           string
		stdout, stderr                 []byte
		stdoutEncoding, stderrEncoding string
	}{
		{"text", []byte("héllo\x00\r\n"), []byte("warn"), EncodingUTF8, EncodingUTF8},
		{"binary stdout", all, []byte("ok"), EncodingBase64, EncodingUTF8},
		{"binary stderr", []byte("ok"), []byte{0xff, 0xfe}, EncodingUTF8, EncodingBase64},
		{"empty", nil, nil, EncodingUTF8, EncodingUTF8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(NewExecResult(0, tc.stdout, tc.stderr))
			if err != nil {
				t.Fatal(err)
			}
			var back ExecResult
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := back.Output()
			if err != nil || string(stdout) != string(tc.stdout) || string(stderr) != string(tc.stderr) ||
				back.StdoutEncoding != tc.stdoutEncoding || back.StderrEncoding != tc.stderrEncoding {
				t.Fatalf("got %q %q %s %s %v", stdout, stderr, back.StdoutEncoding, back.StderrEncoding, err)
			}
		})
	}
}

func TestCutOutputKeepsCharactersWhole(t *testing.T) {
	for _, tc := range []struct {
		in   string
		room int64
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abc", 2, "ab"},
		{"abc", 0, ""},
		{"aé", 2, "a"},                  // é is 2 bytes: not split
		{"a€b", 3, "a"},                 // € is 3 bytes
		{"a€b", 4, "a€"},                // fits whole
		{"a😀", 4, "a"},                  // 4-byte character
		{"\xff\x80\x80", 2, "\xff\x80"}, // not text: cut where asked
		{"a\x80\x80\x80\x80", 3, "a\x80\x80"},
	} {
		if got := string(CutOutput([]byte(tc.in), tc.room)); got != tc.want {
			t.Errorf("CutOutput(%q, %d) = %q, want %q", tc.in, tc.room, got, tc.want)
		}
	}
}

func TestOutputLimit(t *testing.T) {
	all := OutputLimit{}
	if got := all.Keep([]byte("anything")); string(got) != "anything" || all.Truncated {
		t.Fatalf("no limit: %q %v", got, all.Truncated)
	}
	l := OutputLimit{Max: 4}
	var kept []byte
	for _, chunk := range []string{"ab", "cé", "d", "e"} {
		kept = append(kept, l.Keep([]byte(chunk))...)
	}
	// "ab" + "c", then é would end past the cap: cut before it, and nothing after.
	if string(kept) != "abc" || !l.Truncated {
		t.Fatalf("kept %q truncated %v", kept, l.Truncated)
	}
	exact := OutputLimit{Max: 4}
	if got := exact.Keep([]byte("abcd")); string(got) != "abcd" || exact.Truncated {
		t.Fatalf("exactly the cap: %q %v", got, exact.Truncated)
	}
}

func TestStdinBytes(t *testing.T) {
	if b, err := (&ExecRequest{Stdin: "aGk=", StdinEncoding: "base64"}).StdinBytes(); err != nil || string(b) != "hi" {
		t.Fatalf("base64: %q %v", b, err)
	}
	if b, err := (&ExecRequest{Stdin: "hi"}).StdinBytes(); err != nil || string(b) != "hi" {
		t.Fatalf("text: %q %v", b, err)
	}
	if _, err := (&ExecRequest{Stdin: "!", StdinEncoding: "base64"}).StdinBytes(); !IsCode(err, CodeInvalidArgument) {
		t.Fatalf("bad base64: %v", err)
	}
}

func TestErrorsOnTheWire(t *testing.T) {
	for code, status := range codeStatus {
		rec := httptest.NewRecorder()
		WriteError(answer{rec}, Errorf(code, "it broke: %d", 42))
		if rec.Code != status {
			t.Errorf("%s: status %d, want %d", code, rec.Code, status)
		}
		got := readError(rec.Result())
		if got.Code != code || got.Message != "it broke: 42" {
			t.Errorf("%s: read back %+v", code, got)
		}
	}
	// A plain error is internal; a body that is not our envelope still maps by status.
	rec := httptest.NewRecorder()
	WriteError(answer{rec}, http.ErrHandlerTimeout)
	if rec.Code != http.StatusInternalServerError || readError(rec.Result()).Code != CodeInternal {
		t.Errorf("plain error: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	http.Error(rec, "nope", http.StatusNotFound)
	if got := readError(rec.Result()); got.Code != CodeNotFound {
		t.Errorf("foreign 404: %+v", got)
	}
}

// TestCheckLabels: labels with control characters (issue 11: NUL, ESC and newlines were
// stored and printed raw by `nsbox ls`) or beyond the limits are refused.
func TestCheckLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[strconv.Itoa(i)] = "x"
	}
	for name, labels := range map[string]map[string]string{
		"NUL in a value":    {"team": "ml\x00"},
		"ESC in a value":    {"team": "\x1b[2Jml"},
		"newline in a name": {"te\nam": "ml"},
		"C1 in a value":     {"team": "ml\u0085"},
		"not UTF-8":         {"team": "\xff"},
		"empty name":        {"": "x"},
		"long name":         {strings.Repeat("n", MaxLabelNameBytes+1): "x"},
		"long value":        {"team": strings.Repeat("v", MaxLabelValueBytes+1)},
		"too many":          many,
	} {
		if err := CheckLabels(labels); !IsCode(err, CodeInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
	}
	if err := CheckLabels(map[string]string{"team": "ml", "owner": "Zoë Ünal", "note": "a b/c=d"}); err != nil {
		t.Errorf("plain labels: %v", err)
	}
}

// An agent notice is written as encoding/json writes its fields by themselves, whatever it
// holds.
func TestAgentNoticeJSON(t *testing.T) {
	type plain AgentNotice // the same fields, without the MarshalJSON method
	for _, n := range []AgentNotice{
		{},
		{Sessions: 3, Processes: -1},
		{Sessions: 1, SessionEnded: &SessionEnd{ID: "a\"b", Reason: SessionDeleted}},
		{Processes: 2, ProcessExited: &Process{ID: "p", Status: "exited", ExitCode: 7, Argv: []string{"sh", "-c", "<&>"}}},
		{SessionEnded: &SessionEnd{ID: "s"}, ProcessExited: &Process{ID: "q"}},
	} {
		got, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(plain(n))
		if string(got) != string(want) {
			t.Errorf("notice %+v:\n got %s\nwant %s", n, got, want)
		}
	}
}
