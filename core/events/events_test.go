package events

import (
	"context"
	"testing"
)

func TestExchange(t *testing.T) {
	e := NewExchange()
	ctx, cancel := context.WithCancel(t.Context())
	all := e.Subscribe(ctx, nil)
	onlyA := e.Subscribe(ctx, func(ev Envelope) bool { return ev.Namespace == "a" })
	for _, ns := range []string{"a", "b", "a"} {
		e.Publish(Envelope{Namespace: ns, Topic: "/tasks/start"})
	}
	for _, tc := range []struct {
		ch   <-chan Envelope
		want int
	}{{all, 3}, {onlyA, 2}} {
		for i := 0; i < tc.want; i++ {
			<-tc.ch
		}
		select {
		case ev := <-tc.ch:
			t.Errorf("extra event %+v", ev)
		default:
		}
	}
	cancel()
	for range all {
	}
	for range onlyA {
	}
	e.Publish(Envelope{Namespace: "a"}) // no subscriber left: must not block or panic
}
