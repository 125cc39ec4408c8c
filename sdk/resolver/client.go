package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// client is a Resolver reached over gRPC.
type client struct {
	c pluginv1.ResolverClient
}

var _ Resolver = (*client)(nil)

func (c *client) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	resp, err := c.c.Resolve(ctx, &pluginv1.ResolveRequest{Ref: ref, Credentials: CredentialsToProto(ctx)})
	if err != nil {
		return "", ocispec.Descriptor{}, err
	}
	return resp.Name, descriptor.FromProto(resp.Descriptor_), nil
}

var _ Explainer = (*client)(nil)

func (c *client) ResolveExplain(ctx context.Context, ref string) (string, ocispec.Descriptor, []Attempt, error) {
	resp, err := c.c.Resolve(ctx, &pluginv1.ResolveRequest{Ref: ref, Explain: true, Credentials: CredentialsToProto(ctx)})
	if err != nil {
		return "", ocispec.Descriptor{}, nil, err
	}
	var attempts []Attempt
	for _, a := range resp.Attempts {
		attempts = append(attempts, Attempt{Host: a.Host, Role: a.Role, Used: a.Used, Reason: a.Reason})
	}
	return resp.Name, descriptor.FromProto(resp.Descriptor_), attempts, nil
}

func (c *client) Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	// The stream lives on a child context that Close cancels, so a reader
	// dropped half way never leaves the stream or its goroutines behind.
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.c.Fetch(ctx, &pluginv1.FetchRequest{Ref: ref, Descriptor_: descriptor.ToProto(desc), Offset: offset, Credentials: CredentialsToProto(ctx)})
	if err != nil {
		cancel()
		return nil, err
	}
	rc := &fetchReader{stream: stream, cancel: cancel}
	// Receive the first message now so that a missing blob fails Fetch
	// rather than the first Read.
	if err := rc.next(); err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, err
	}
	return rc, nil
}

var _ FileFetcher = (*client)(nil)

// FetchToFile asks the plugin to write the bytes into path. A plugin
// without the capability answers NotImplemented before any byte is
// written, and so does one built before it (its first answer is data).
//
// It returns only once the plugin has stopped writing the file (see
// holdFile), waiting at most fileReleaseWait for that after a failure.
func (c *client) FetchToFile(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64, path string, progress func(offset int64) error) (err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		if err == nil {
			return // the plugin's call has returned: it sent its status
		}
		wctx, stop := context.WithTimeout(context.WithoutCancel(ctx), fileReleaseWait)
		defer stop()
		if werr := waitFileReleased(wctx, path); werr != nil {
			err = fmt.Errorf("%w (and %v)", err, werr)
		}
	}()
	return c.fetchToFile(sctx, ref, desc, offset, path, progress)
}

// fileReleaseWait bounds how long a failed FetchToFile waits for the
// plugin to see that it was cancelled.
const fileReleaseWait = 30 * time.Second

func (c *client) fetchToFile(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64, path string, progress func(offset int64) error) error {
	stream, err := c.c.Fetch(ctx, &pluginv1.FetchRequest{Ref: ref, Descriptor_: descriptor.ToProto(desc), Offset: offset, Path: path, Credentials: CredentialsToProto(ctx)})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(msg.Data) > 0 {
			return fmt.Errorf("fetch to a file: the plugin sends the bytes instead: %w", errdefs.ErrNotImplemented)
		}
		if err := progress(msg.Offset); err != nil {
			return err
		}
	}
}

// fetchReader reads a Fetch stream.
type fetchReader struct {
	stream pluginv1.Resolver_FetchClient
	cancel context.CancelFunc
	buf    []byte
	err    error
}

// next receives the next message into buf, or records why there is none.
func (f *fetchReader) next() error {
	msg, err := f.stream.Recv()
	if err != nil {
		f.err = err
		f.cancel()
		return err
	}
	f.buf = msg.Data
	return nil
}

func (f *fetchReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for len(f.buf) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.next()
	}
	n := copy(b, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// Close ends the stream. It may be called from another goroutine to stop a
// Read, which then fails with context.Canceled.
func (f *fetchReader) Close() error {
	f.cancel()
	return nil
}

func (c *client) Push(ctx context.Context, ref string, desc ocispec.Descriptor, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.Push(ctx)
	if err != nil {
		return err
	}
	header := &pluginv1.PushRequest{Ref: ref, Descriptor_: descriptor.ToProto(desc), Credentials: CredentialsToProto(ctx)}
	if err := stream.Send(header); err != nil {
		return c.pushResult(stream, desc, err)
	}
	for {
		buf := make([]byte, sdk.ChunkSize)
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&pluginv1.PushRequest{Data: buf[:n]}); err != nil {
				return c.pushResult(stream, desc, err)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			// cancel (deferred) aborts the push on the far side.
			return fmt.Errorf("push %s: read: %w", desc.Digest, rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	return alreadyExists(resp, desc)
}

// pushResult gets the outcome of a push whose Send failed: io.EOF means the
// server ended the call (it needed no more data, or failed), and the real
// result is in the status.
func (c *client) pushResult(stream pluginv1.Resolver_PushClient, desc ocispec.Descriptor, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return sendErr
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	return alreadyExists(resp, desc)
}

func alreadyExists(resp *pluginv1.PushResponse, desc ocispec.Descriptor) error {
	if resp.AlreadyExists {
		return fmt.Errorf("push %s: %w", desc.Digest, errdefs.ErrAlreadyExists)
	}
	return nil
}

// Close does nothing: the connection belongs to whoever made it.
func (c *client) Close() error { return nil }
