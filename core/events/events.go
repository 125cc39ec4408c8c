// Package events is keeld's in-process publish/subscribe of task events:
// the runtime plugins' events, tagged with namespace and runtime, fanned out
// to API subscribers. A subscriber that falls behind loses events rather
// than slowing the publishers; it learns so from Dropped.
package events

import (
	"context"
	"sync"
	"time"
)

// Envelope is one event as keeld republishes it.
type Envelope struct {
	Namespace  string
	Runtime    string
	Topic      string
	ID         string
	ExecID     string
	Pid        uint32
	ExitStatus uint32
	ExitedAt   time.Time
	Timestamp  time.Time
}

// Publisher takes events in.
type Publisher interface {
	Publish(ev Envelope)
}

// Subscriber hands events out.
type Subscriber interface {
	// Subscribe streams the events match accepts (every event for nil)
	// until ctx ends, then closes the channel.
	Subscribe(ctx context.Context, match func(Envelope) bool) <-chan Envelope
}

// Exchange is a Publisher and Subscriber in one process.
type Exchange struct {
	mu   sync.Mutex
	subs map[*sub]struct{}
}

var (
	_ Publisher  = (*Exchange)(nil)
	_ Subscriber = (*Exchange)(nil)
)

type sub struct {
	ch      chan Envelope
	match   func(Envelope) bool
	dropped int
}

// subscriberBuffer is how many events a slow subscriber may lag.
const subscriberBuffer = 1024

// NewExchange returns an empty exchange.
func NewExchange() *Exchange { return &Exchange{subs: map[*sub]struct{}{}} }

// Publish hands ev to every matching subscriber without blocking.
func (e *Exchange) Publish(ev Envelope) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.subs {
		if s.match != nil && !s.match(ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped++
		}
	}
}

// Subscribe implements Subscriber.
func (e *Exchange) Subscribe(ctx context.Context, match func(Envelope) bool) <-chan Envelope {
	s := &sub{ch: make(chan Envelope, subscriberBuffer), match: match}
	e.mu.Lock()
	e.subs[s] = struct{}{}
	e.mu.Unlock()
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		delete(e.subs, s)
		close(s.ch)
		e.mu.Unlock()
	}()
	return s.ch
}
