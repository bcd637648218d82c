package nsbox

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/nsbox/backend"
)

func TestEventLogReplayAndLag(t *testing.T) {
	l := newEventLog()
	for range eventHistory + 10 {
		l.publish(api.EventSandboxCreated, "a", "image", "host", "error", "")
	}
	// The ring keeps the latest eventHistory: seq 11 to eventHistory+10.
	past, sub, err := l.subscribe(10, true)
	if err != nil {
		t.Fatal(err)
	}
	l.unsubscribe(sub)
	if len(past) != eventHistory || past[0].Seq != 11 || past[len(past)-1].Seq != eventHistory+10 {
		t.Fatalf("replay after 10: %d events, %d..%d", len(past), past[0].Seq, past[len(past)-1].Seq)
	}
	if past[0].Details["image"] != "host" || len(past[0].Details) != 1 {
		t.Errorf("details %v: empty values are left out", past[0].Details)
	}
	if _, _, err := l.subscribe(9, true); !api.IsCode(err, api.CodeConflict) {
		t.Errorf("replay after an event no longer kept: %v", err)
	}
	if _, _, err := l.subscribe(eventHistory+11, true); !api.IsCode(err, api.CodeConflict) {
		t.Errorf("replay after the last event: %v", err)
	}
	past, sub, err = l.subscribe(eventHistory+10, true)
	if err != nil || len(past) != 0 {
		t.Fatalf("replay after the last event: %v, %d", err, len(past))
	}

	// A subscriber gets new events in order; one that falls eventHistory behind is cut off.
	l.publish(api.EventSandboxRemoved, "a")
	if ev := <-sub.ch; ev.Type != api.EventSandboxRemoved || ev.Seq != eventHistory+11 {
		t.Errorf("new event %+v", ev)
	}
	for range eventHistory + 1 {
		l.publish(api.EventSandboxStarted, "a")
	}
	select {
	case <-sub.lagged:
	default:
		t.Fatal("a subscriber that fell behind was not cut off")
	}
	if len(l.subs) != 0 {
		t.Errorf("%d subscribers left", len(l.subs))
	}
}

// TestEventsOfTheStateMachine checks that every move of a sandbox's life is one event, in
// order, with the agent's exit before the failure it causes; and that a removed sandbox's
// stats are gone.
func TestEventsOfTheStateMachine(t *testing.T) {
	c := newTestCore(t, 0)
	_, sub, err := c.ops.events.subscribe(0, false)
	if err != nil {
		t.Fatal(err)
	}
	c.create(api.CreateSandboxRequest{ID: "box"})
	if st, err := c.Stats(context.Background(), "box"); err != nil || st.Status != api.StatusRunning || st.CPUSeconds != 1 || st.MemoryLimitBytes != 64<<20 {
		t.Errorf("stats: %+v, %v", st, err)
	}
	if _, err := c.Pause("box"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resume("box"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("box", true); err != nil {
		t.Fatal(err)
	}
	c.create(api.CreateSandboxRequest{ID: "dies"})
	s, _ := c.lookup("dies")
	c.backend.get(s.snapshot().container()).exit()
	want := []string{api.EventSandboxCreated, api.EventSandboxStarted, api.EventSandboxPaused, api.EventSandboxResumed,
		api.EventSandboxStopping, api.EventSandboxRemoved, api.EventSandboxCreated, api.EventSandboxStarted,
		api.EventSandboxAgentExited, api.EventSandboxFailed}
	for i, typ := range want {
		select {
		case ev := <-sub.ch:
			if ev.Type != typ || ev.Seq != uint64(i+1) {
				t.Fatalf("event %d: %+v, want %s", i+1, ev, typ)
			}
		case <-time.After(10 * time.Second): // a bound for a broken core, not a speed check
			t.Fatalf("no event %d (%s)", i+1, typ)
		}
	}
	if _, err := c.Stats(context.Background(), "box"); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("stats of a removed sandbox: %v", err)
	}
}

// oomCounts is a container whose OOM kill count the test sets; it counts the reads.
type oomCounts struct {
	backend.Instance
	kills, reads atomic.Uint64
}

func (c *oomCounts) OOMKills() (uint64, error) {
	c.reads.Add(1)
	return c.kills.Load(), nil
}

// TestOOMNotificationsCoalesce: a kill counted after its notification (cgroup v1 notifies as
// the OOM begins) is published once the count has grown; a burst of notifications makes one
// look at a time, not one per notification, and each kill is published once.
func TestOOMNotificationsCoalesce(t *testing.T) {
	saved := oomRechecks
	oomRechecks = []time.Duration{0, 20 * time.Millisecond, 200 * time.Millisecond}
	t.Cleanup(func() { oomRechecks = saved })
	r := &Runtime{log: slog.New(slog.DiscardHandler)}
	r.ops = newOps(r)
	_, sub, err := r.ops.events.subscribe(0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.ops.events.unsubscribe(sub)
	sb := &sandbox{id: "oom"}
	c := &oomCounts{}

	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { r.oomNotified(sb, c) })
	}
	time.AfterFunc(50*time.Millisecond, func() { c.kills.Store(2) }) // the kills come after
	wg.Wait()
	select {
	case ev := <-sub.ch:
		if ev.Type != api.EventSandboxOOMKilled || ev.Details["count"] != "2" || ev.Details["total"] != "2" {
			t.Errorf("event %+v, want 2 OOM kills", ev)
		}
	default:
		t.Fatal("no event for the kills counted after their notification")
	}
	if n := c.reads.Load(); n > 10 {
		t.Errorf("100 notifications at once read the count %d times: they do not wait for the look under way", n)
	}
	// Once more, the count unchanged: nothing new to publish.
	r.oomNotified(sb, c)
	select {
	case ev := <-sub.ch:
		t.Errorf("an event without a new kill: %+v", ev)
	default:
	}
}
