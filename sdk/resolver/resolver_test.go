package resolver

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// fake is a Resolver whose methods are its fields.
type fake struct {
	resolve func(ctx context.Context, ref string) (string, ocispec.Descriptor, error)
	fetch   func(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error)
	push    func(ctx context.Context, ref string, desc ocispec.Descriptor, r io.Reader) error
}

var _ Resolver = (*fake)(nil)

func (f *fake) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	return f.resolve(ctx, ref)
}

func (f *fake) Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	return f.fetch(ctx, ref, desc, offset)
}

func (f *fake) Push(ctx context.Context, ref string, desc ocispec.Descriptor, r io.Reader) error {
	return f.push(ctx, ref, desc, r)
}

func (f *fake) Close() error { return nil }

// sizes records the data sizes of the stream messages that cross the wire.
type sizes struct {
	mu sync.Mutex
	n  []int
}

func (s *sizes) add(n int) {
	s.mu.Lock()
	s.n = append(s.n, n)
	s.mu.Unlock()
}

func (s *sizes) get() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.n...)
}

type recvSizes struct {
	grpc.ServerStream
	s *sizes
}

func (r recvSizes) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if p, ok := m.(*pluginv1.PushRequest); ok && err == nil {
		r.s.add(len(p.Data))
	}
	return err
}

type clientSizes struct {
	grpc.ClientStream
	s *sizes
}

func (c clientSizes) RecvMsg(m any) error {
	err := c.ClientStream.RecvMsg(m)
	if p, ok := m.(*pluginv1.FetchResponse); ok && err == nil {
		c.s.add(len(p.Data))
	}
	return err
}

// serve serves impl over a real gRPC connection and returns the client side
// and the sizes of the Fetch messages received and Push messages served.
func serve(t *testing.T, impl Resolver) (Resolver, *sizes, *sizes) {
	t.Helper()
	fetched, pushed := &sizes{}, &sizes{}
	lis := bufconn.Listen(4 << 20)
	s := grpc.NewServer(append(wire.ServerOptions(),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, recvSizes{ss, pushed})
		}),
	)...)
	RegisterServer(s, func(context.Context) (Resolver, error) { return impl, nil })
	go s.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn", append(wire.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cs, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return clientSizes{cs, fetched}, nil
		}),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
	})
	return NewClient(conn), fetched, pushed
}

func randomBlob(t *testing.T, n int) ([]byte, ocispec.Descriptor) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(n)}
}

func TestResolve(t *testing.T) {
	want := ocispec.Descriptor{
		MediaType:   ocispec.MediaTypeImageIndex,
		Digest:      digest.FromString("index"),
		Size:        123,
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "v1"},
	}
	r, _, _ := serve(t, &fake{resolve: func(_ context.Context, ref string) (string, ocispec.Descriptor, error) {
		switch ref {
		case "example.com/app:v1":
			return "example.com/app:v1", want, nil
		case "UPPER/Case::bad":
			return "", ocispec.Descriptor{}, fmt.Errorf("reference %q: %w", ref, errdefs.ErrInvalidArgument)
		case "example.com/app:gone":
			return "", ocispec.Descriptor{}, fmt.Errorf("reference %q: %w", ref, errdefs.ErrNotFound)
		case "example.com/app:private":
			return "", ocispec.Descriptor{}, fmt.Errorf("reference %q: %w", ref, errdefs.ErrPermissionDenied)
		}
		return "", ocispec.Descriptor{}, errors.New("unclassified")
	}})

	tests := []struct {
		ref   string
		class func(error) bool
	}{
		{"example.com/app:v1", nil},
		{"UPPER/Case::bad", errdefs.IsInvalidArgument},
		{"example.com/app:gone", errdefs.IsNotFound},
		{"example.com/app:private", errdefs.IsPermissionDenied},
		{"other", errdefs.IsUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			name, desc, err := r.Resolve(t.Context(), tt.ref)
			if tt.class != nil {
				if !tt.class(err) {
					t.Fatalf("Resolve(%q): wrong error class: %v", tt.ref, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if name != tt.ref || desc.Digest != want.Digest || desc.Size != want.Size || desc.MediaType != want.MediaType ||
				desc.Annotations["org.opencontainers.image.ref.name"] != "v1" {
				t.Fatalf("Resolve: got %q %+v", name, desc)
			}
		})
	}
}

func TestFetchChunks(t *testing.T) {
	blob, desc := randomBlob(t, 20<<20)
	r, fetched, _ := serve(t, &fake{fetch: func(_ context.Context, ref string, d ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
		if d.Digest != desc.Digest {
			return nil, fmt.Errorf("blob %s: %w", d.Digest, errdefs.ErrNotFound)
		}
		return io.NopCloser(bytes.NewReader(blob[offset:])), nil
	}})

	rc, err := r.Fetch(t.Context(), "example.com/app:v1", desc, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Fatalf("fetched %d bytes, not the blob's %d", len(got), len(blob))
	}
	ns := fetched.get()
	if len(ns) != 20 {
		t.Fatalf("20 MiB arrived in %d messages, want 20", len(ns))
	}
	for i, n := range ns {
		if n != sdk.ChunkSize {
			t.Fatalf("message %d holds %d bytes, want %d", i, n, sdk.ChunkSize)
		}
	}

	t.Run("Offset", func(t *testing.T) {
		rc, err := r.Fetch(t.Context(), "example.com/app:v1", desc, int64(len(blob))-10)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, blob[len(blob)-10:]) {
			t.Fatalf("fetch from offset: %q, %v", got, err)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		// The class arrives at Fetch, not at the first Read.
		_, err := r.Fetch(t.Context(), "example.com/app:v1", ocispec.Descriptor{Digest: digest.FromString("x")}, 0)
		if !errdefs.IsNotFound(err) {
			t.Fatalf("fetch of a missing blob: %v, want NotFound", err)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		rc, err := r.Fetch(t.Context(), "example.com/app:v1", desc, int64(len(blob)))
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got, err := io.ReadAll(rc); err != nil || len(got) != 0 {
			t.Fatalf("fetch at the end: %d bytes, %v", len(got), err)
		}
	})
}

// endless is a blob that never ends; done is closed when its fetch's
// context ends.
type endless struct {
	ctx  context.Context
	done chan struct{}
}

func (e *endless) Read(b []byte) (int, error) {
	select {
	case <-e.ctx.Done():
		return 0, e.ctx.Err()
	default:
	}
	return len(b), nil
}

func (e *endless) Close() error { return nil }

func TestFetchEnds(t *testing.T) {
	started := make(chan *endless, 1)
	r, _, _ := serve(t, &fake{fetch: func(ctx context.Context, _ string, _ ocispec.Descriptor, _ int64) (io.ReadCloser, error) {
		e := &endless{ctx: ctx, done: make(chan struct{})}
		go func() {
			<-ctx.Done()
			close(e.done)
		}()
		started <- e
		return e, nil
	}})
	desc := ocispec.Descriptor{Digest: digest.FromString("endless"), Size: 1 << 40}

	tests := []struct {
		name string
		stop func(cancel context.CancelFunc, rc io.ReadCloser)
	}{
		{"Cancel", func(cancel context.CancelFunc, _ io.ReadCloser) { cancel() }},
		{"Close", func(_ context.CancelFunc, rc io.ReadCloser) { rc.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rc, err := r.Fetch(ctx, "example.com/app:v1", desc, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			e := <-started
			if _, err := io.ReadFull(rc, make([]byte, 3<<20)); err != nil {
				t.Fatal(err)
			}
			tt.stop(cancel, rc)
			select {
			case <-e.done:
			case <-time.After(10 * time.Second):
				t.Fatal("the plugin side of the fetch did not end")
			}
			// The reader ends too, with the cancellation.
			if _, err := io.Copy(io.Discard, rc); !errdefs.IsCanceled(err) {
				t.Fatalf("read after stop: %v, want context.Canceled", err)
			}
		})
	}
}

func TestPush(t *testing.T) {
	blob, desc := randomBlob(t, 20<<20)
	var (
		mu       sync.Mutex
		received = map[digest.Digest]bool{}
	)
	r, _, pushed := serve(t, &fake{push: func(_ context.Context, ref string, d ocispec.Descriptor, rd io.Reader) error {
		mu.Lock()
		seen := received[d.Digest]
		mu.Unlock()
		if seen {
			return fmt.Errorf("blob %s: %w", d.Digest, errdefs.ErrAlreadyExists)
		}
		if ref != "example.com/app:v1" {
			return fmt.Errorf("reference %q: %w", ref, errdefs.ErrInvalidArgument)
		}
		dg := digest.Canonical.Digester()
		n, err := io.Copy(dg.Hash(), rd)
		if err != nil {
			return err
		}
		if n != d.Size || dg.Digest() != d.Digest {
			return fmt.Errorf("blob %s: got %d bytes of %s: %w", d.Digest, n, dg.Digest(), errdefs.ErrFailedPrecondition)
		}
		mu.Lock()
		received[d.Digest] = true
		mu.Unlock()
		return nil
	}})

	if err := r.Push(t.Context(), "example.com/app:v1", desc, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	ns := pushed.get()
	// The header message, then 20 data messages of one chunk each.
	if len(ns) != 21 || ns[0] != 0 {
		t.Fatalf("push sent %d messages (%v), want a header and 20 chunks", len(ns), ns)
	}
	for i, n := range ns[1:] {
		if n != sdk.ChunkSize {
			t.Fatalf("message %d holds %d bytes, want %d", i+1, n, sdk.ChunkSize)
		}
	}

	tests := []struct {
		name  string
		ref   string
		desc  ocispec.Descriptor
		body  io.Reader
		class func(error) bool
	}{
		{"AlreadyExists", "example.com/app:v1", desc, bytes.NewReader(blob), errdefs.IsAlreadyExists},
		{"InvalidArgument", "UPPER/Case::bad", ocispec.Descriptor{Digest: digest.FromString("a"), Size: 1}, bytes.NewReader(blob), errdefs.IsInvalidArgument},
		{"WrongDigest", "example.com/app:v1", ocispec.Descriptor{Digest: digest.FromString("b"), Size: 5}, bytes.NewReader([]byte("hello")), errdefs.IsFailedPrecondition},
		{"Small", "example.com/app:v1", ocispec.Descriptor{Digest: digest.FromString("hello"), Size: 5}, bytes.NewReader([]byte("hello")), nil},
		{"BrokenReader", "example.com/app:v1", ocispec.Descriptor{Digest: digest.FromString("c"), Size: 5}, io.MultiReader(bytes.NewReader([]byte("he")), errReader{}), isBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Push(t.Context(), tt.ref, tt.desc, tt.body)
			if tt.class == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !tt.class(err) {
				t.Fatalf("push: wrong error: %v", err)
			}
		})
	}
}

var errBroken = errors.New("broken reader")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }

func isBroken(err error) bool { return errors.Is(err, errBroken) }
