package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
)

// TestSystemdUnitVerifies checks scripts/nsbox.service with systemd-analyze verify (pointed at
// the binary under test), which must not even warn.
func TestSystemdUnitVerifies(t *testing.T) {
	unit, err := os.ReadFile("../../scripts/nsbox.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "KillMode=process", "Restart=on-failure", "ExecStart=/usr/bin/nsbox daemon"} {
		if !strings.Contains(string(unit), "\n"+want+"\n") {
			t.Errorf("the unit has no %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "nsbox.service")
	if err := os.WriteFile(path, []byte(strings.Replace(string(unit), "ExecStart=/usr/bin/nsbox", "ExecStart="+nsboxBin, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdNotify checks that the daemon tells $NOTIFY_SOCKET READY=1 once it serves, and
// STOPPING=1 when it stops, as a Type=notify service must.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	d := startDaemon(t)
	read := func() string {
		// A bound for a daemon that never says it, not a speed check.
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Errorf("first notification %q, want READY=1", got)
	}
	d.stop()
	if got := read(); got != "STOPPING=1" {
		t.Errorf("notification on SIGTERM %q, want STOPPING=1", got)
	}
}

// TestStopLetsRequestsInFlightFinish: a SIGTERM while an exec runs lets the exec answer (the
// runtime is not closed under it), and the daemon exits after it.
func TestStopLetsRequestsInFlightFinish(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "inflight", Image: "busybox"})
	type result struct {
		res *api.ExecResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := d.client.Exec(context.Background(), "inflight", api.ExecRequest{Command: "touch /tmp/started; sleep 1; echo finished"})
		done <- result{res, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := d.client.StatFile(context.Background(), "inflight", "/tmp/started"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exec did not start")
		}
	}
	d.stop()
	r := <-done
	if r.err != nil || r.res.ExitCode != 0 || string(r.res.Stdout) != "finished\n" {
		t.Fatalf("the exec in flight when the daemon was stopped: %+v, %v", r.res, r.err)
	}
}

// TestStopAnswersTheExecsItCuts: an exec still running when the stop's grace is over gets an
// answer that says the daemon is stopping — an error event when it streams, a 503 when it
// waits for one result — instead of a connection cut when the daemon exits.
func TestStopAnswersTheExecsItCuts(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "cut", Image: "busybox"})
	if _, err := d.client.CreateSession(context.Background(), "cut", api.CreateSessionRequest{ID: "other"}); err != nil {
		t.Fatal(err)
	}
	ends := make(chan error, 2)
	go func() {
		_, err := d.client.ExecStream(context.Background(), "cut", api.ExecRequest{Command: "touch /tmp/streams; sleep 100"},
			func(api.ExecEvent) error { return nil })
		ends <- err
	}()
	go func() {
		// Output first: the answer (frames) has begun when the stop comes.
		_, err := d.client.Exec(context.Background(), "cut", api.ExecRequest{Command: "echo begun; touch /tmp/waits; sleep 100", SessionID: "other"})
		ends <- err
	}()
	for _, started := range []string{"/tmp/streams", "/tmp/waits"} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := d.client.StatFile(context.Background(), "cut", started); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the exec that makes %s did not start", started)
			}
		}
	}
	d.stop()
	for range 2 {
		var e *api.Error
		if err := <-ends; !errors.As(err, &e) || e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "daemon is stopping") {
			t.Errorf("an exec running past the stop's grace ended with %v, want unavailable: the daemon is stopping", err)
		}
	}
}

// TestStopEndsFollowedStreams: a daemon's stop ends every stream a client follows (events,
// stats, a file watch, a process's log) with a last "error" event that says the daemon is
// stopping, instead of holding the stop and then breaking off without a word; a terminal gets
// that notice and a close frame, 1001 (going away).
func TestStopEndsFollowedStreams(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "follow", Image: "busybox"})
	status, body := d.call("POST", "/v1/sandboxes/follow/processes", api.StartProcessRequest{Command: "sleep 100"})
	var proc api.Process
	if err := json.Unmarshal(body, &proc); status != http.StatusCreated || err != nil {
		t.Fatalf("start a process: %d %s", status, body)
	}
	streams := map[string]string{
		"events":  "/v1/events",
		"stats":   "/v1/sandboxes/follow/stats?stream=true",
		"watch":   "/v1/sandboxes/follow/files/watch?path=/tmp",
		"logs":    "/v1/sandboxes/follow/processes/" + proc.ID + "/logs?follow=true",
		"allstat": "/v1/stats?stream=true",
	}
	type ending struct {
		stream string
		err    error // how the stream ended: an "error" event is its *api.Error
	}
	last := make(chan ending, len(streams))
	for name, path := range streams {
		req, err := http.NewRequest(http.MethodGet, "http://nsbox"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", api.EventStream)
		resp, err := d.http.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("open %s: %v %v", name, resp, err)
		}
		go func() {
			defer resp.Body.Close()
			events := api.NewSSEReader(resp.Body)
			for {
				if _, _, err := events.Next(); err != nil {
					last <- ending{name, err}
					return
				}
			}
		}()
	}
	d.create(api.CreateSandboxRequest{ID: "term"}) // the host's image: bash, whose sessions have a terminal
	d.sh("term", "true")
	ws := dialTerminal(t, d, "term", "default")
	defer ws.Close()
	terminalEnd := make(chan string, 1)
	go func() {
		var notices []string
		for {
			fr, err := ws.NewFrameReader()
			if err != nil {
				terminalEnd <- fmt.Sprintf("no close frame (%v) after %q", err, notices)
				return
			}
			payload, err := io.ReadAll(fr)
			switch {
			case err != nil:
				terminalEnd <- err.Error()
				return
			case fr.PayloadType() == websocket.TextFrame:
				notices = append(notices, string(payload))
			case fr.PayloadType() == websocket.CloseFrame && len(payload) >= 2:
				terminalEnd <- fmt.Sprintf("close %d after %q", binary.BigEndian.Uint16(payload), notices)
				return
			}
		}
	}()
	d.stop()
	if got := <-terminalEnd; !strings.HasPrefix(got, "close 1001 after ") || !strings.Contains(got, "daemon is stopping") {
		t.Errorf("the terminal's end when the daemon stopped: %s (want an error notice, then close 1001)", got)
	}
	for range streams {
		got := <-last
		var e *api.Error
		if !errors.As(got.err, &e) || e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "daemon is stopping") {
			t.Errorf("the %s stream's end when the daemon stopped: %v (want an error event: unavailable, the daemon is stopping)", got.stream, got.err)
		}
	}
}
