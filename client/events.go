package client

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// Event is one event of keeld's exchange, or a marker of events lost.
type Event struct {
	// Sequence numbers the events of one keeld process (Epoch) from 1.
	Sequence  uint64
	Epoch     string
	Timestamp time.Time
	// Namespace is empty for keeld's own events (/plugins/*, /gc/run).
	Namespace string
	Topic     string
	// Payload is the typed event: *keelv1.ImageEvent, *keelv1.TaskEvent,
	// *keelv1.SnapshotEvent… (nil on a marker).
	Payload proto.Message
	// Missed is set on a marker (Topic empty): how many events, of any
	// topic, the subscriber lost before Sequence, or that keeld restarted
	// since the epoch asked for.
	Missed *keelv1.Missed
}

// SubscribeOpt changes a subscription.
type SubscribeOpt func(*keelv1.SubscribeRequest)

// WithEventFilters selects events with containerd's filter syntax over
// topic, namespace and event.<payload field> (any filter may match):
// `topic~="^/images/"`, `namespace==default,event.id==web`.
func WithEventFilters(filters ...string) SubscribeOpt {
	return func(r *keelv1.SubscribeRequest) { r.Filters = append(r.Filters, filters...) }
}

// WithEventsSince replays the events keeld still keeps after sequence number
// seq (0: all it keeps) of epoch (empty: keeld's current one) before the
// live ones. Events no longer kept are reported by a marker; a changed
// epoch (keeld restarted) too, with Missed.Restarted.
func WithEventsSince(seq uint64, epoch string) SubscribeOpt {
	return func(r *keelv1.SubscribeRequest) { r.Since, r.Epoch = &seq, epoch }
}

// Subscribe streams keeld's events of every namespace until ctx ends or
// the stream fails (the error, then both channels close). It returns once
// subscribed: an event published after it returns is in the stream.
func (c *Client) Subscribe(ctx context.Context, opts ...SubscribeOpt) (<-chan Event, <-chan error, error) {
	req := &keelv1.SubscribeRequest{}
	for _, o := range opts {
		o(req)
	}
	stream, err := keelv1.NewEventsClient(c.conn).Subscribe(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return subscribed(ctx, stream, eventFromProto)
}

// subscribed hands out a server stream's messages, converted, once the
// stream is established (its header arrived), until ctx ends or the stream
// does: errs then carries why (nothing for ctx or a clean end), and both
// channels close.
func subscribed[M, E any](ctx context.Context, stream grpc.ServerStreamingClient[M], conv func(*M) E) (<-chan E, <-chan error, error) {
	md, err := stream.Header()
	if err != nil {
		return nil, nil, err
	}
	if md == nil { // no header: the call failed (a filter that does not parse…)
		_, err := stream.Recv()
		return nil, nil, err
	}
	evs, errs := make(chan E, 64), make(chan error, 1)
	go func() {
		defer close(evs)
		defer close(errs)
		for {
			m, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					errs <- err
				}
				return
			}
			select {
			case evs <- conv(m):
			case <-ctx.Done():
				return
			}
		}
	}()
	return evs, errs, nil
}

func eventFromProto(env *keelv1.Envelope) Event {
	ev := Event{
		Sequence: env.Sequence, Epoch: env.Epoch, Timestamp: env.Timestamp.AsTime(),
		Namespace: env.Namespace, Topic: env.Topic, Missed: env.GetMissed(),
	}
	if ev.Missed == nil {
		ev.Payload = eventPayload(env)
	}
	return ev
}

// eventPayload is the message in env's event oneof.
func eventPayload(env *keelv1.Envelope) proto.Message {
	m := env.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("event"))
	if fd == nil {
		return nil
	}
	return m.Get(fd).Message().Interface()
}
