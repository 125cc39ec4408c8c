package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// server serves a Resolver over gRPC.
type server struct {
	pluginv1.UnimplementedResolverServer
	impl func(context.Context) (Resolver, error)
}

// NewServer serves the resolver impl returns for a call; impl may fail, e.g.
// before the plugin is configured.
func newServer(impl func(context.Context) (Resolver, error)) *server {
	return &server{impl: impl}
}

var _ pluginv1.ResolverServer = (*server)(nil)

func (s *server) Resolve(ctx context.Context, req *pluginv1.ResolveRequest) (*pluginv1.ResolveResponse, error) {
	ctx = CredentialsFromProto(ctx, req.Credentials)
	r, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	if req.Explain {
		name, desc, attempts, err := Explain(ctx, r, req.Ref)
		if err != nil {
			return nil, err
		}
		resp := &pluginv1.ResolveResponse{Name: name, Descriptor_: descriptor.ToProto(desc)}
		for _, a := range attempts {
			resp.Attempts = append(resp.Attempts, &pluginv1.ResolveAttempt{Host: a.Host, Role: a.Role, Used: a.Used, Reason: a.Reason})
		}
		return resp, nil
	}
	name, desc, err := r.Resolve(ctx, req.Ref)
	if err != nil {
		return nil, err
	}
	return &pluginv1.ResolveResponse{Name: name, Descriptor_: descriptor.ToProto(desc)}, nil
}

func (s *server) Fetch(req *pluginv1.FetchRequest, stream pluginv1.Resolver_FetchServer) error {
	ctx := CredentialsFromProto(stream.Context(), req.Credentials)
	r, err := s.impl(ctx)
	if err != nil {
		return err
	}
	if req.Path != "" {
		ff, ok := r.(FileFetcher)
		if !ok {
			return fmt.Errorf("fetch to a file: %w", errdefs.ErrNotImplemented)
		}
		release, err := holdFile(req.Path)
		if err != nil {
			return fmt.Errorf("fetch to a file: %w", err)
		}
		defer release()
		// A caller that gave up while this call waited for the lock
		// has stopped waiting for its writes.
		if err := ctx.Err(); err != nil {
			return err
		}
		return ff.FetchToFile(ctx, req.Ref, descriptor.FromProto(req.Descriptor_), req.Offset, req.Path, func(offset int64) error {
			return stream.Send(&pluginv1.FetchResponse{Offset: offset})
		})
	}
	rc, err := r.Fetch(ctx, req.Ref, descriptor.FromProto(req.Descriptor_), req.Offset)
	if err != nil {
		return err
	}
	defer rc.Close()
	// One buffer for every message, as the content server's Read: Send has
	// marshaled the message when it returns.
	buf := make([]byte, sdk.ChunkSize)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&pluginv1.FetchResponse{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil
		case err != nil:
			return err
		}
	}
}

func (s *server) Push(stream pluginv1.Resolver_PushServer) error {
	ctx := stream.Context()
	r, err := s.impl(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("push: no header message: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	ctx = CredentialsFromProto(ctx, first.Credentials)
	body := &pushReader{stream: stream, buf: first.Data}
	err = r.Push(ctx, first.Ref, descriptor.FromProto(first.Descriptor_), body)
	if errdefs.IsAlreadyExists(err) {
		return stream.SendAndClose(&pluginv1.PushResponse{AlreadyExists: true})
	}
	if err != nil {
		return err
	}
	return stream.SendAndClose(&pluginv1.PushResponse{})
}

// pushReader reads the data of a Push stream's messages in order.
type pushReader struct {
	stream pluginv1.Resolver_PushServer
	buf    []byte
	err    error
}

func (p *pushReader) Read(b []byte) (int, error) {
	for len(p.buf) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		msg, err := p.stream.Recv()
		if err != nil {
			p.err = err
			continue
		}
		p.buf = msg.Data
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}
