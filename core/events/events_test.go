package events

import (
	"context"
	"fmt"
	"testing"
)

// take reads n envelopes from ch.
func take(t *testing.T, ch <-chan Envelope, n int) []Envelope {
	t.Helper()
	out := make([]Envelope, 0, n)
	for len(out) < n {
		ev, ok := <-ch
		if !ok {
			t.Fatalf("channel closed after %d of %d envelopes", len(out), n)
		}
		out = append(out, ev)
	}
	return out
}

func publishN(e *Exchange, n int) {
	for i := 0; i < n; i++ {
		e.Publish(fmt.Sprintf("ns%d", i%2), TopicImageCreate, Image{Name: fmt.Sprint(i)})
	}
}

func TestSequenceNumbersIncrease(t *testing.T) {
	e := NewExchange(32) // more than published: a slow reader loses none
	ch := e.Subscribe(t.Context(), nil)
	publishN(e, 20)
	for i, ev := range take(t, ch, 20) {
		if ev.Sequence != uint64(i+1) || ev.IsMarker() || ev.Epoch != e.Epoch() {
			t.Fatalf("envelope %d: %+v", i, ev)
		}
		if ev.Event.(Image).Name != fmt.Sprint(i) {
			t.Fatalf("envelope %d carries %+v", i, ev.Event)
		}
	}
	if e.Last() != 20 {
		t.Fatalf("Last = %d", e.Last())
	}
}

func TestReplay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		window    int
		published int
		pos       Position
		wantFirst uint64 // first event's sequence
		missed    uint64 // 0: no marker
		restarted bool
	}{
		{name: "within the window", window: 10, published: 8, pos: Position{Since: 3}, wantFirst: 4},
		{name: "from the start", window: 10, published: 8, pos: Position{}, wantFirst: 1},
		{name: "nothing missed at the edge", window: 10, published: 15, pos: Position{Since: 5}, wantFirst: 6},
		{name: "left the window", window: 10, published: 25, pos: Position{Since: 3}, wantFirst: 16, missed: 12},
		{name: "from zero after wrap", window: 10, published: 25, pos: Position{}, wantFirst: 16, missed: 15},
		{name: "other epoch", window: 10, published: 5, pos: Position{Since: 99, Epoch: "before"}, wantFirst: 1, restarted: true},
		{name: "other epoch after wrap", window: 10, published: 25, pos: Position{Since: 3, Epoch: "before"}, wantFirst: 16, missed: 15, restarted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewExchange(tc.window)
			publishN(e, tc.published)
			if tc.pos.Epoch == "" {
				tc.pos.Epoch = e.Epoch()
			}
			ch := e.SubscribeFrom(t.Context(), tc.pos, nil)
			if tc.missed > 0 || tc.restarted {
				m := take(t, ch, 1)[0]
				if !m.IsMarker() || m.Missed != tc.missed || m.Restarted != tc.restarted || m.Sequence != tc.wantFirst {
					t.Fatalf("marker %+v, want missed %d restarted %v at %d", m, tc.missed, tc.restarted, tc.wantFirst)
				}
			}
			want := uint64(tc.published) - tc.wantFirst + 1
			for i, ev := range take(t, ch, int(want)) {
				if ev.IsMarker() || ev.Sequence != tc.wantFirst+uint64(i) {
					t.Fatalf("envelope %d: %+v", i, ev)
				}
			}
			// Exactly those: the next is live.
			e.Publish("", TopicGCRun, GCRun{})
			if ev := take(t, ch, 1)[0]; ev.Sequence != uint64(tc.published)+1 || ev.Topic != TopicGCRun {
				t.Fatalf("after replay: %+v", ev)
			}
		})
	}
}

// A subscriber that never reads does not hold Publish up, and then learns
// exactly how many events it lost.
func TestSlowSubscriberNeverBlocksPublish(t *testing.T) {
	const window, n = 16, 100_000
	e := NewExchange(window)
	stalled := e.Subscribe(t.Context(), nil)
	reader := e.Subscribe(t.Context(), nil)
	read := make(chan uint64)
	go func() { // a subscriber that keeps up, or learns what it lost
		var got uint64
		for ev := range reader {
			if ev.IsMarker() {
				got += ev.Missed
				continue
			}
			if got++; got == n {
				read <- got
				return
			}
		}
	}()
	publishN(e, n) // completes: nobody reads stalled
	if got := <-read; got != n {
		t.Fatalf("reader accounted for %d of %d", got, n)
	}
	// stalled's goroutine may hold a batch it took before the ring moved
	// on; each gap after it is a marker counting exactly what it skipped.
	next, markers := uint64(1), 0
	for next <= n {
		ev := take(t, stalled, 1)[0]
		if ev.IsMarker() {
			markers++
			next += ev.Missed
		}
		if ev.Sequence != next {
			t.Fatalf("envelope %+v, want sequence %d", ev, next)
		}
		if !ev.IsMarker() {
			next++
		}
	}
	if markers == 0 {
		t.Fatal("the stalled subscriber got no marker")
	}
}

func TestMatch(t *testing.T) {
	e := NewExchange(0)
	ctx, cancel := context.WithCancel(t.Context())
	onlyNS0 := e.Subscribe(ctx, func(ev Envelope) bool { return ev.Namespace == "ns0" })
	publishN(e, 6)
	for i, ev := range take(t, onlyNS0, 3) {
		if ev.Namespace != "ns0" || ev.Sequence != uint64(2*i+1) {
			t.Fatalf("envelope %d: %+v", i, ev)
		}
	}
	cancel()
	for range onlyNS0 { // closed once ctx ends
	}
	e.Publish("a", TopicGCRun, nil) // no subscriber left: must not block or panic
}

// A marker reaches a subscriber whatever its match says.
func TestMarkerBypassesMatch(t *testing.T) {
	e := NewExchange(4)
	publishN(e, 10)
	ch := e.SubscribeFrom(t.Context(), Position{Since: 1}, func(Envelope) bool { return false })
	if m := take(t, ch, 1)[0]; !m.IsMarker() || m.Missed != 5 { // 2..6: 7..10 are kept
		t.Fatalf("marker %+v", m)
	}
}
