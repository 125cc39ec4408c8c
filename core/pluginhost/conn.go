package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// exitWait bounds how long a call that failed Unavailable waits to learn
// whether the process died.
const exitWait = 2 * time.Second

// conn routes each call to the instance's current process.
type conn struct{ in *instance }

var _ grpc.ClientConnInterface = (*conn)(nil)

func (c *conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	p, release, err := c.in.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	if isPassive(ctx) {
		var cancel context.CancelFunc
		ctx, cancel = c.in.passiveContext(ctx, p)
		defer cancel()
	}
	return c.in.callError(ctx, p, p.Conn().Invoke(ctx, method, args, reply, opts...))
}

func (c *conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p, release, err := c.in.acquire(ctx)
	if err != nil {
		return nil, err
	}
	end := release
	if isPassive(ctx) {
		var cancel context.CancelFunc
		ctx, cancel = c.in.passiveContext(ctx, p)
		end = func() { cancel(); release() }
	}
	s, err := p.Conn().NewStream(ctx, desc, method, opts...)
	if err != nil {
		end()
		return nil, c.in.callError(ctx, p, err)
	}
	// The stream is in flight until it ends: RecvMsg fails (io.EOF
	// included) or brings a client stream's one reply, or its context
	// ends.
	var once sync.Once
	done := func() { once.Do(end) }
	stop := context.AfterFunc(ctx, done)
	return &stream{ClientStream: s, in: c.in, p: p, ctx: ctx, end: func() { stop(); done() }, oneReply: !desc.ServerStreams}, nil
}

// stream gives a stream's errors the plugin's name and holds the plugin
// running until it ends.
type stream struct {
	grpc.ClientStream
	in  *instance
	p   *host.Process
	ctx context.Context
	end func()
	// oneReply: the stream ends with its one reply (client streaming).
	oneReply bool
}

func (s *stream) SendMsg(m any) error {
	// io.EOF means the stream broke; RecvMsg tells why.
	return s.in.callError(s.ctx, s.p, s.ClientStream.SendMsg(m))
}

func (s *stream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil || s.oneReply {
		s.end()
	}
	return s.in.callError(s.ctx, s.p, err)
}

func (s *stream) CloseSend() error {
	return s.in.callError(s.ctx, s.p, s.ClientStream.CloseSend())
}

// callError prefixes a plugin's error with its name, keeping its class (the
// connection's errdefs interceptor has turned the status into one). A call
// that failed because the process died fails with Unavailable saying so:
// the connection breaks (Unavailable) or, once go-plugin has noticed the
// exit and closed it, the call is cancelled under a caller who did not.
func (in *instance) callError(ctx context.Context, p *host.Process, err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	died := errdefs.IsUnavailable(err) || (errdefs.IsCanceled(err) && ctx.Err() == nil)
	if died && in.exited(p) {
		return unavailable(in.id, "plugin exited during the call")
	}
	return fmt.Errorf("%s: %w", in.id, err)
}

// exited tells whether p is gone. A plugin may itself answer Unavailable (an
// ingest held by another writer), so a plugin that still answers a ping is
// taken at its word; otherwise the exit is awaited for a moment, as the
// broken connection is usually seen before the process is reaped.
func (in *instance) exited(p *host.Process) bool {
	select {
	case <-p.Done():
		return true
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitWait)
	defer cancel()
	if p.Ping(ctx) == nil {
		return false
	}
	select {
	case <-p.Done():
		return true
	case <-ctx.Done():
		return false
	}
}

func unavailable(id, msg string) error {
	return fmt.Errorf("%s: %s: %w", id, msg, errdefs.ErrUnavailable)
}
