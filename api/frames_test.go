package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFramesRoundTrip(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	big := bytes.Repeat([]byte{0, 0xff, '\n'}, 100000)
	for _, err := range []error{
		fw.SendJSON(EventStart, ExecEvent{Type: EventStart, SessionID: "s"}),
		fw.Send(EventStdout, big),
		fw.Send(EventStderr, nil),
		fw.SendError(Errorf(CodeUnavailable, "gone")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if ct := rec.Header().Get("Content-Type"); ct != EventFrames {
		t.Fatalf("content type %q", ct)
	}
	fr := NewFrameReader(rec.Body)
	var start ExecEvent
	if name, err := fr.NextJSON(&start); err != nil || name != EventStart || start.SessionID != "s" {
		t.Fatalf("start: %q %+v %v", name, start, err)
	}
	if name, data, err := fr.Next(); err != nil || name != EventStdout || !bytes.Equal(data, big) {
		t.Fatalf("stdout: %q %d bytes %v", name, len(data), err)
	}
	if name, data, err := fr.Next(); err != nil || name != EventStderr || len(data) != 0 {
		t.Fatalf("empty stderr: %q %q %v", name, data, err)
	}
	if _, _, err := fr.Next(); !IsCode(err, CodeUnavailable) {
		t.Fatalf("error frame: %v", err)
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	// A stream cut inside a frame is not a clean end.
	cut := NewFrameReader(strings.NewReader("\x06stdout\x00\x00\x00\x10abc"))
	if _, _, err := cut.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut frame: %v", err)
	}
}

// Send flushes each frame at once; SendLast leaves the last one to the handler's return, which
// sends it with the answer's chunked end in one write.
func TestSendLastIsNotFlushed(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	if err := fw.Send(EventStart, []byte("{}")); err != nil || !rec.Flushed {
		t.Fatalf("start: flushed %v, %v", rec.Flushed, err)
	}
	rec.Flushed = false
	if err := fw.SendLast(EventExit, []byte(`{"type":"exit"}`)); err != nil || rec.Flushed {
		t.Fatalf("exit: flushed %v, %v", rec.Flushed, err)
	}
	fr := NewFrameReader(rec.Body)
	for _, want := range []string{EventStart, EventExit} {
		if name, _, err := fr.Next(); err != nil || name != want {
			t.Fatalf("frame %q, %v; want %q", name, err, want)
		}
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

// SendSoon leaves its frame for the next one to flush, or for the handler's return after
// SendLast: a short command's start and exit go out in one write.
func TestSendSoonGoesOutWithTheNextFrame(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	if err := fw.SendSoon(EventStart, []byte("{}"), time.Hour); err != nil || rec.Flushed {
		t.Fatalf("start: flushed %v, %v", rec.Flushed, err)
	}
	if err := fw.SendLast(EventExit, []byte(`{"type":"exit"}`)); err != nil || rec.Flushed || fw.pending != nil {
		t.Fatalf("exit: flushed %v, pending flush %v, %v", rec.Flushed, fw.pending != nil, err)
	}
	if err := fw.Send(EventStdout, []byte("late")); err == nil {
		t.Fatal("a frame after the last one was written")
	}

	rec = httptest.NewRecorder()
	fw = NewFrameWriter(answer{rec})
	if err := fw.SendSoon(EventStart, []byte("{}"), time.Hour); err != nil || rec.Flushed {
		t.Fatalf("start: flushed %v, %v", rec.Flushed, err)
	}
	if err := fw.Send(EventStdout, []byte("out")); err != nil || !rec.Flushed || fw.pending != nil {
		t.Fatalf("stdout: flushed %v, pending flush %v, %v", rec.Flushed, fw.pending != nil, err)
	}
	fr := NewFrameReader(rec.Body)
	for _, want := range []string{EventStart, EventStdout} {
		if name, _, err := fr.Next(); err != nil || name != want {
			t.Fatalf("frame %q, %v; want %q", name, err, want)
		}
	}
}

// A frame sent with SendSoon and nothing after it reaches the reader all the same (a command
// that runs long and says nothing still reports its start).
func TestSendSoonFlushesAlone(t *testing.T) {
	read := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fw := NewFrameWriter(answer{w})
		defer fw.End()
		if err := fw.SendSoon(EventStart, []byte("{}"), time.Millisecond); err != nil {
			t.Error(err)
			return
		}
		select {
		case <-read: // the client has the start frame
		case <-r.Context().Done():
			return
		}
		_ = fw.SendLast(EventExit, []byte(`{"type":"exit"}`))
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fr := NewFrameReader(resp.Body)
	if name, _, err := fr.Next(); err != nil || name != EventStart {
		t.Fatalf("frame %q, %v; want the start", name, err)
	}
	close(read)
	if name, _, err := fr.Next(); err != nil || name != EventExit {
		t.Fatalf("frame %q, %v; want the exit", name, err)
	}
}

func TestAppendOutputEventIsTheEvent(t *testing.T) {
	for _, b := range [][]byte{
		[]byte("plain"), []byte("é € 😀 \"q\" \\ \t\r\n\x00\x1f\x7f <&> \u2028"), {0xff, 0xfe}, []byte("é")[:1], nil,
	} {
		data := AppendOutputEvent(nil, EventStderr, b)
		var ev ExecEvent
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("%q: %s is not an ExecEvent: %v", b, data, err)
		}
		got, err := ev.Bytes()
		if want := OutputEvent(EventStderr, b); err != nil || !bytes.Equal(got, b) || ev.Type != EventStderr || ev.Encoding != want.Encoding {
			t.Fatalf("%q: got %+v (%q, %v), want encoding %s", b, ev, got, err, want.Encoding)
		}
		if bytes.ContainsAny(data, "\r\n") {
			t.Fatalf("%q: the event has a line break: %s", b, data)
		}
	}
}

func BenchmarkAppendJSONText(b *testing.B) {
	text := []byte(strings.Repeat("0123456789 abcdefghijklmnopqrstuvwxyz é € \"q\" \\ \t\n", 2000))
	var dst []byte
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		dst = AppendJSONText(dst[:0], text)
	}
}

// TestFrameReaderOutput: NextOutput appends output payloads to the caller's buffers (read
// straight from the stream past what the reader had buffered), and Next reuses one buffer for
// output payloads, not for the others.
func TestFrameReaderOutput(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	big := bytes.Repeat([]byte("0123456789"), 100000) // larger than the reader's buffer
	for _, err := range []error{
		fw.SendJSON(EventStart, ExecEvent{Type: EventStart}),
		fw.Send(EventStdout, []byte("a")), fw.Send(EventStderr, []byte{0xff}), fw.Send(EventStdout, big),
		fw.SendJSON(EventExit, ExecEvent{Type: EventExit}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	stream := rec.Body.Bytes()
	var stdout, stderr []byte
	fr := NewFrameReader(bytes.NewReader(stream))
	var names []string
	for {
		name, data, err := fr.NextOutput(&stdout, &stderr)
		if err == io.EOF {
			break
		}
		if err != nil || ((name == EventStdout || name == EventStderr) && data != nil) {
			t.Fatalf("%s: %q %v", name, data, err)
		}
		names = append(names, name)
	}
	if strings.Join(names, ",") != "start,stdout,stderr,stdout,exit" || !bytes.Equal(stdout, append([]byte("a"), big...)) || !bytes.Equal(stderr, []byte{0xff}) {
		t.Fatalf("events %v, stdout %d bytes, stderr %q", names, len(stdout), stderr)
	}
	fr = NewFrameReader(bytes.NewReader(stream))
	_, start, _ := fr.Next()
	_, first, _ := fr.Next()
	first = first[:1]
	if _, second, _ := fr.Next(); second[0] != 0xff || first[0] != 0xff || string(start) != `{"type":"start"}` {
		t.Fatalf("an output payload is valid until the next call only (its buffer is reused): %q %q; start %q", first, second, start)
	}
}

func TestStreamListenerGivesUnixConnectionsLargeSendBuffers(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln = StreamListener(ln)
	go func() {
		if c, err := net.Dial("unix", ln.Addr().String()); err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size int
	if err := raw.Control(func(fd uintptr) { size, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }); err != nil {
		t.Fatal(err)
	}
	// The kernel counts twice what is asked, within net.core.wmem_max.
	wmemMax, _ := os.ReadFile("/proc/sys/net/core/wmem_max")
	limit, _ := strconv.Atoi(strings.TrimSpace(string(wmemMax)))
	if want := 2 * min(streamSendBuffer, limit); err != nil || size != want {
		t.Fatalf("SO_SNDBUF %d (%v), want %d", size, err, want)
	}
}

func TestFramesOfOutputAllocateNothing(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := NewFrameWriter(answer{rec})
	chunk := bytes.Repeat([]byte("x"), 1000)
	if err := fw.Send(EventStdout, chunk); err != nil { // the first sends the header
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = fw.Send(EventStderr, chunk) }); n > 0 {
		t.Errorf("Send: %.1f allocations a frame", n)
	}
	fr := NewFrameReader(bytes.NewReader(rec.Body.Bytes()))
	if _, _, err := fr.Next(); err != nil { // the first sizes the output buffer
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if ev, data, err := fr.Next(); err != nil || ev != EventStderr || len(data) != len(chunk) {
			t.Fatalf("%s %d %v", ev, len(data), err)
		}
	}); n > 0 {
		t.Errorf("Next: %.1f allocations a frame", n)
	}
}
