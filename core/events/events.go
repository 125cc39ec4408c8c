// Package events is keeld's in-process exchange of what changes: every
// service publishes an Envelope (a topic such as /images/create, the
// namespace, a typed payload), and API subscribers read them back, live or
// from a sequence number.
//
// # Sequence numbers and the window
//
// Publish numbers each event: 1, 2, 3… for the life of the Exchange (one
// keeld process). The Exchange keeps the most recent events in a ring of a
// fixed size (the window); a subscriber is a cursor into that ring, reading
// at its own pace. Publish therefore costs the same however many
// subscribers there are and however slow they are: it writes one slot and
// wakes the readers, and never waits for one.
//
// A subscriber whose cursor the ring has passed (it asked for a sequence
// that has left the window, or it read too slowly) gets one Envelope with
// Missed set to the number of events it lost, then goes on from the oldest
// event still kept. It is never dropped silently.
//
// # Restarts
//
// Sequence numbers start again at 1 in a new keeld process, which has a
// new Epoch (random, fixed for the Exchange's life, carried by every
// Envelope). A subscriber that resumes with the epoch it last saw learns of
// a restart from a Missed envelope with Restarted set; what the previous
// keeld published and nobody read is gone.
package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// DefaultWindow is how many recent events an Exchange keeps when its
// size is not given.
const DefaultWindow = 4096

// Envelope is one event.
type Envelope struct {
	// Sequence numbers events in publication order from 1, per Epoch.
	Sequence  uint64
	Epoch     string
	Timestamp time.Time
	// Namespace is empty for events of keeld itself (plugins, gc).
	Namespace string
	Topic     string
	// Event is the typed payload: one of the types of payloads.go.
	Event any
	// Missed, on a marker envelope (no Topic, no Event), counts the
	// events, of any topic, the subscriber lost before Sequence.
	Missed uint64
	// Restarted, on a marker, says the epoch the subscriber resumed from
	// is not this keeld's: its sequence numbers mean nothing here.
	Restarted bool
}

// IsMarker tells whether e reports missed events rather than one event.
func (e Envelope) IsMarker() bool { return e.Topic == "" }

// Publisher takes events in.
type Publisher interface {
	// Publish numbers and keeps an event of topic in namespace ns; it
	// never blocks on a subscriber.
	Publish(ns, topic string, event any)
}

// Subscriber hands events out.
type Subscriber interface {
	// Subscribe streams the events match accepts (every event for nil)
	// from now on until ctx ends, then closes the channel.
	Subscribe(ctx context.Context, match func(Envelope) bool) <-chan Envelope
}

// Exchange is a Publisher and Subscriber in one process: a ring of the
// latest events, read by cursors.
type Exchange struct {
	epoch string

	mu   sync.Mutex
	ring []Envelope // event n is at ring[n%len(ring)]
	next uint64     // the sequence number of the next event
	wake chan struct{}
}

var (
	_ Publisher  = (*Exchange)(nil)
	_ Subscriber = (*Exchange)(nil)
)

// NewExchange returns an empty exchange keeping the latest window events
// (DefaultWindow when window < 1).
func NewExchange(window int) *Exchange {
	if window < 1 {
		window = DefaultWindow
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return &Exchange{
		epoch: hex.EncodeToString(b[:]),
		ring:  make([]Envelope, window),
		next:  1,
		wake:  make(chan struct{}),
	}
}

// Epoch names this exchange's run of sequence numbers.
func (e *Exchange) Epoch() string { return e.epoch }

// Window is how many events e keeps.
func (e *Exchange) Window() int { return len(e.ring) }

// Last is the sequence number of the latest event, 0 before the first.
func (e *Exchange) Last() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.next - 1
}

// Publish implements Publisher in O(1).
func (e *Exchange) Publish(ns, topic string, event any) {
	now := time.Now()
	e.mu.Lock()
	seq := e.next
	e.next++
	e.ring[seq%uint64(len(e.ring))] = Envelope{
		Sequence: seq, Epoch: e.epoch, Timestamp: now, Namespace: ns, Topic: topic, Event: event,
	}
	wake := e.wake
	e.wake = make(chan struct{})
	e.mu.Unlock()
	close(wake)
}

// Subscribe implements Subscriber: live events only.
func (e *Exchange) Subscribe(ctx context.Context, match func(Envelope) bool) <-chan Envelope {
	return e.SubscribeFrom(ctx, Position{Since: e.Last()}, match)
}

// Position is where a subscription starts: after the event numbered Since
// of Epoch (0 for the first kept). An Epoch other than the exchange's (a
// keeld restarted in between) starts from the oldest kept event, after a
// marker with Restarted set; an empty Epoch is this exchange's.
type Position struct {
	Since uint64
	Epoch string
}

// SubscribeFrom streams the events after pos that match accepts, the kept
// ones first, then live ones, until ctx ends; then it closes the channel.
// Markers (Envelope.IsMarker) report what the subscriber lost and are
// sent whatever match says. The channel is unbuffered: the subscriber's
// pace is its own, and what it does not read in time it loses, learning
// how much from a marker.
func (e *Exchange) SubscribeFrom(ctx context.Context, pos Position, match func(Envelope) bool) <-chan Envelope {
	out := make(chan Envelope)
	go func() {
		defer close(out)
		c := &cursor{e: e, next: pos.Since + 1}
		if pos.Epoch != "" && pos.Epoch != e.epoch {
			c.next, c.restarted = 1, true
		}
		for ctx.Err() == nil {
			batch, wake := c.read()
			for _, ev := range batch {
				if !ev.IsMarker() && match != nil && !match(ev) {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			if wake != nil {
				select {
				case <-wake:
				case <-ctx.Done():
				}
			}
		}
	}()
	return out
}

// readBatch bounds how many events a cursor copies under the lock.
const readBatch = 256

// cursor is one subscriber's place in the ring.
type cursor struct {
	e         *Exchange
	next      uint64 // the next sequence number to read
	restarted bool
	buf       []Envelope
}

// read returns what the cursor has not read yet, led by a marker when the
// ring passed it (or the epoch changed); with nothing to read, it returns
// the channel the next Publish closes.
func (c *cursor) read() ([]Envelope, <-chan struct{}) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	c.buf = c.buf[:0]
	if c.next > e.next { // a sequence number from the future: wait for it
		c.next = e.next
	}
	oldest := uint64(1)
	if n := uint64(len(e.ring)); e.next > n {
		oldest = e.next - n
	}
	if c.next < oldest || c.restarted {
		missed := uint64(0)
		if c.next < oldest {
			missed = oldest - c.next
			c.next = oldest
		}
		c.buf = append(c.buf, Envelope{Sequence: c.next, Epoch: e.epoch, Timestamp: time.Now(), Missed: missed, Restarted: c.restarted})
		c.restarted = false
	}
	if c.next == e.next {
		if len(c.buf) > 0 {
			return c.buf, nil
		}
		return nil, e.wake
	}
	for ; c.next < e.next && len(c.buf) < readBatch; c.next++ {
		c.buf = append(c.buf, e.ring[c.next%uint64(len(e.ring))])
	}
	return c.buf, nil
}
