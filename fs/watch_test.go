package fs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// watch starts a watch that ends with the test.
func watch(t *testing.T, s *sandbox, p string, recursive bool) (<-chan Event, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := s.Watch(ctx, p, recursive)
	must(t, err)
	return events, cancel
}

// expect reads events until one of each wanted event (in order, others in between are
// fine) has come, or fails after a timeout.
func expect(t *testing.T, events <-chan Event, want ...Event) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var seen []string
	for len(want) > 0 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("channel closed; still waiting for %+v after %v", want[0], seen)
			}
			seen = append(seen, fmt.Sprintf("%+v", ev))
			if ev == want[0] {
				want = want[1:]
			}
		case <-timeout:
			t.Fatalf("no %+v; got %v", want[0], seen)
		}
	}
}

// expectClosed waits for the channel to close, draining it.
func expectClosed(t *testing.T, events <-chan Event) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the channel did not close")
		}
	}
}

func TestWatchEvents(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	events, cancel := watch(t, s, "/workspace", false)
	ws := s.host("/workspace")

	must(t, os.WriteFile(ws+"/new", []byte("1"), 0o644))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/new"}, Event{Type: EventModify, Path: "/workspace/new"})
	appendHostFile(t, ws+"/a.txt", "more")
	expect(t, events, Event{Type: EventModify, Path: "/workspace/a.txt"})
	must(t, os.Chmod(ws+"/a.txt", 0o600))
	expect(t, events, Event{Type: EventAttrib, Path: "/workspace/a.txt"})
	must(t, os.Rename(ws+"/new", ws+"/renamed"))
	expect(t, events, Event{Type: EventMove, Path: "/workspace/renamed", OldPath: "/workspace/new"})
	must(t, os.Rename(ws+"/renamed", s.host("/etc/renamed"))) // out of the watched dir
	expect(t, events, Event{Type: EventDelete, Path: "/workspace/renamed"})
	must(t, os.Rename(s.host("/etc/hostname"), ws+"/hostname")) // into it
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/hostname"})
	must(t, os.Remove(ws+"/hostname"))
	expect(t, events, Event{Type: EventDelete, Path: "/workspace/hostname"})
	must(t, os.Mkdir(ws+"/newdir", 0o755))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/newdir", IsDir: true})
	must(t, os.WriteFile(ws+"/sub/not-watched", nil, 0o644)) // not recursive
	must(t, os.WriteFile(ws+"/marker", nil, 0o644))
	ev := <-events
	if ev.Path != "/workspace/marker" {
		t.Errorf("a change in a subdirectory was reported without recursive: %+v", ev)
	}

	cancel()
	expectClosed(t, events)
}

func TestWatchRecursive(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	events, _ := watch(t, s, "/workspace", true)
	ws := s.host("/workspace")

	must(t, os.WriteFile(ws+"/sub/deep/d.txt", []byte("d"), 0o644)) // existing subdir
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/sub/deep/d.txt"})
	must(t, os.MkdirAll(ws+"/n1/n2", 0o755)) // new subdirs, watched as they come
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/n1", IsDir: true},
		Event{Type: EventCreate, Path: "/workspace/n1/n2", IsDir: true})
	must(t, os.WriteFile(ws+"/n1/n2/f", []byte("f"), 0o644))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/n1/n2/f"})
	must(t, os.Rename(ws+"/n1", ws+"/m1")) // a watched dir moves: paths follow
	expect(t, events, Event{Type: EventMove, Path: "/workspace/m1", OldPath: "/workspace/n1", IsDir: true})
	must(t, os.WriteFile(ws+"/m1/n2/g", []byte("g"), 0o644))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/m1/n2/g"})
	must(t, os.Rename(ws+"/m1", s.host("/etc/m1"))) // out of the tree: no more events from it
	expect(t, events, Event{Type: EventDelete, Path: "/workspace/m1", IsDir: true})
	must(t, os.WriteFile(s.host("/etc/m1/n2/h"), nil, 0o644))
	must(t, os.RemoveAll(ws+"/sub"))
	expect(t, events, Event{Type: EventDelete, Path: "/workspace/sub/deep/c.txt"},
		Event{Type: EventDelete, Path: "/workspace/sub", IsDir: true})
	// A tree moved in is reported with what it holds.
	writeHostFile(t, s.host("/etc/tree/inner/file"), "x")
	must(t, os.Rename(s.host("/etc/tree"), ws+"/tree"))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/tree", IsDir: true},
		Event{Type: EventCreate, Path: "/workspace/tree/inner", IsDir: true},
		Event{Type: EventCreate, Path: "/workspace/tree/inner/file"})
	must(t, os.WriteFile(ws+"/tree/inner/file2", nil, 0o644))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/tree/inner/file2"})
	for ev := range drain(events) {
		if strings.HasSuffix(ev.Path, "/n2/h") || strings.HasPrefix(ev.Path, "/etc") {
			t.Errorf("event from a directory that left the tree: %+v", ev)
		}
	}
}

// drain yields the events that are already queued or come within a short while.
func drain(events <-chan Event) <-chan Event {
	out := make(chan Event)
	go func() {
		defer close(out)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				out <- ev
			case <-time.After(100 * time.Millisecond):
				return
			}
		}
	}()
	return out
}

func TestWatchEndsWhenDirRemoved(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	events, _ := watch(t, s, "/workspace/sub", true)
	must(t, os.RemoveAll(s.host("/workspace/sub")))
	expect(t, events, Event{Type: EventDelete, Path: "/workspace/sub", IsDir: true})
	expectClosed(t, events)
}

func TestWatchErrors(t *testing.T) {
	s := newSandbox(t)
	ctx := context.Background()
	_, err := s.Watch(ctx, "/workspace/nope", false)
	wantCode(t, err, api.CodeNotFound, "watch /workspace/nope")
	_, err = s.Watch(ctx, "/workspace/a.txt", false)
	wantCode(t, err, api.CodeInvalidArgument, "not a directory")
	_, err = s.Watch(ctx, "/workspace/loop1", false)
	wantCode(t, err, api.CodeInvalidArgument, "symlink loop")
}

// A watch through a link to "/" watches the sandbox's root, not the host's.
func TestWatchThroughLink(t *testing.T) {
	s := newSandbox(t)
	events, _ := watch(t, s, "/workspace/up/etc", false)
	must(t, os.WriteFile(s.host("/etc/motd"), nil, 0o644))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/up/etc/motd"})
}

func appendHostFile(t *testing.T, p, content string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString(content)
	must(t, err)
	must(t, f.Close())
}

// A watch keeps its own reference to the root: closing the Root does not break it.
func TestWatchOutlivesRootClose(t *testing.T) {
	checkNoLeaks(t)
	s := newSandbox(t)
	r, err := OpenRoot(s.dir, rootfs.IDMap{})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	events, err := r.Watch(ctx, "/workspace", true)
	must(t, err)
	must(t, r.Close())
	must(t, os.MkdirAll(s.host("/workspace/late/deeper"), 0o755))
	expect(t, events, Event{Type: EventCreate, Path: "/workspace/late", IsDir: true},
		Event{Type: EventCreate, Path: "/workspace/late/deeper", IsDir: true})
	cancel()
	expectClosed(t, events)
}
