package local_test

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// serve puts a local store behind the sdk's server and client on an
// in-memory connection, counting Read streams.
func serve(tb testing.TB, opts ...content.ClientOpt) (content.Store, *atomic.Int64) {
	tb.Helper()
	st, err := local.Open(tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return serveStore(tb, st, opts...)
}

// serveStore puts st behind the sdk's server and a client made with opts.
func serveStore(tb testing.TB, st content.Store, opts ...content.ClientOpt) (content.Store, *atomic.Int64) {
	tb.Helper()
	var reads atomic.Int64
	srv := grpc.NewServer(append(host.ServerOptions(), grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/Read") {
			reads.Add(1)
		}
		return h(srv, ss)
	}))...)
	content.RegisterServer(srv, func(context.Context) (content.Store, error) { return st, nil })
	lis := bufconn.Listen(4 << 20)
	go srv.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///content", append(host.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(); srv.Stop(); st.Close() })
	return content.NewClient(conn, opts...), &reads
}

func writeRandom(tb testing.TB, s content.Store, size int64) ocispec.Descriptor {
	tb.Helper()
	dg := digest.Canonical.Digester()
	data := make([]byte, size)
	rand.Read(data)
	dg.Hash().Write(data)
	desc := ocispec.Descriptor{Digest: dg.Digest(), Size: size}
	if err := content.WriteBlob(context.Background(), s, "blob", strings.NewReader(string(data)), desc); err != nil {
		tb.Fatal(err)
	}
	return desc
}

// A sequential read, whatever the read size, is one Read stream; a seek
// opens another.
func TestSequentialReadIsOneStream(t *testing.T) {
	s, reads := serve(t)
	desc := writeRandom(t, s, 5*sdk.ChunkSize+3)
	ra, err := s.ReaderAt(context.Background(), desc)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	for _, bufSize := range []int{4096, sdk.ChunkSize, 3*sdk.ChunkSize + 1} {
		reads.Store(0)
		dg := digest.Canonical.Digester()
		if _, err := io.CopyBuffer(dg.Hash(), struct{ io.Reader }{content.NewReader(ra)}, make([]byte, bufSize)); err != nil {
			t.Fatal(err)
		}
		if dg.Digest() != desc.Digest {
			t.Fatalf("buffer %d: digest %s, want %s", bufSize, dg.Digest(), desc.Digest)
		}
		if n := reads.Load(); n != 1 {
			t.Errorf("buffer %d: %d Read streams, want 1", bufSize, n)
		}
	}
	reads.Store(0)
	p := make([]byte, 10)
	for _, off := range []int64{100, 110, 50} {
		if _, err := ra.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if n := reads.Load(); n != 2 {
		t.Errorf("reads at 100, 110, 50: %d streams, want 2", n)
	}
}

// BenchmarkSequentialRead measures a full read through one gRPC hop.
func BenchmarkSequentialRead(b *testing.B) {
	s, _ := serve(b)
	const size = 256 << 20
	desc := writeRandom(b, s, size)
	buf := make([]byte, sdk.ChunkSize)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		ra, err := s.ReaderAt(context.Background(), desc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{content.NewReader(ra)}, buf); err != nil {
			b.Fatal(err)
		}
		ra.Close()
	}
}

// BenchmarkWrite measures WriteBlob through one gRPC hop, and through the
// store's ingest file.
func BenchmarkWrite(b *testing.B) {
	b.Run("stream", func(b *testing.B) { s, _ := serve(b); benchWrite(b, s) })
	b.Run("file", func(b *testing.B) {
		root := b.TempDir()
		st, err := local.Open(root, nil)
		if err != nil {
			b.Fatal(err)
		}
		s, _ := serveStore(b, st, content.WithIngestFiles(root))
		benchWrite(b, s)
	})
}

func benchWrite(b *testing.B, s content.Store) {
	const size = 128 << 20
	data := make([]byte, size)
	rand.Read(data)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: size}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if err := content.WriteBlob(context.Background(), s, "bench", strings.NewReader(string(data)), desc); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(context.Background(), desc.Digest); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// slowRelease is a store whose writers let go of their ingest only a
// while after they were closed, as a store busy on a slow disk does.
type slowRelease struct {
	content.Store
	lag time.Duration
}

func (s slowRelease) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	w, err := s.Store.Writer(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return slowClose{w, s.lag}, nil
}

type slowClose struct {
	content.Writer
	lag time.Duration
}

func (w slowClose) Close() error {
	time.Sleep(w.lag)
	return w.Writer.Close()
}

// TestWriterCloseAfterCancel: a writer whose context ended returns from
// Close only once the store has let go of the ingest, so that what runs
// next (a collection, another writer) finds it free.
func TestWriterCloseAfterCancel(t *testing.T) {
	st, err := local.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := serveStore(t, slowRelease{st, 300 * time.Millisecond})
	for _, wrote := range []bool{false, true} {
		ctx, cancel := context.WithCancel(t.Context())
		w, err := s.Writer(ctx, content.WithRef("cancelled"))
		if err != nil {
			t.Fatal(err)
		}
		if wrote {
			if _, err := w.Write([]byte("some bytes")); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		w.Close()
		if err := st.Abort(t.Context(), "cancelled"); err != nil && !errdefs.IsNotFound(err) {
			t.Fatalf("abort right after the cancelled writer closed (wrote %v): %v", wrote, err)
		}
	}
}
