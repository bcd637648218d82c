package nsbox

import (
	"testing"

	"github.com/nsbox/nsbox/api"
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
