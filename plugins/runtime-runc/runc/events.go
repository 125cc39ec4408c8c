package runc

import (
	"context"
	"sync"

	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// backlogMax bounds the events kept while nobody subscribes (between a
// plugin restart and keeld's new subscription).
const backlogMax = 4096

// broker fans events out to subscribers in the order they are published,
// each through an unbounded queue so a slow subscriber never blocks the
// shims' pollers. Events published with no subscriber wait in a backlog
// for the next one.
type broker struct {
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	backlog []keelruntime.Event
	closed  bool
}

type subscriber struct {
	mu    sync.Mutex
	queue []keelruntime.Event
	wake  chan struct{}
}

func newBroker() *broker { return &broker{subs: map[*subscriber]struct{}{}} }

func (b *broker) publish(ev keelruntime.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 {
		if len(b.backlog) == backlogMax {
			b.backlog = b.backlog[1:]
		}
		b.backlog = append(b.backlog, ev)
		return
	}
	for s := range b.subs {
		s.push(ev)
	}
}

func (s *subscriber) push(evs ...keelruntime.Event) {
	s.mu.Lock()
	s.queue = append(s.queue, evs...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (b *broker) subscribe(ctx context.Context) (<-chan keelruntime.Event, <-chan error) {
	events := make(chan keelruntime.Event)
	errs := make(chan error, 1)
	s := &subscriber{wake: make(chan struct{}, 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		close(errs)
		close(events)
		return events, errs
	}
	s.push(b.backlog...)
	b.backlog = nil
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	go func() {
		defer close(events)
		defer close(errs)
		defer func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
		}()
		for {
			s.mu.Lock()
			queue := s.queue
			s.queue = nil
			s.mu.Unlock()
			for _, ev := range queue {
				select {
				case events <- ev:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return events, errs
}

// close ends no stream by itself (each ends with its ctx) but refuses new
// subscriptions.
func (b *broker) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}
