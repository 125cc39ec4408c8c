package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"
	"time"

	ccontent "github.com/containerd/containerd/v2/core/content"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/content"
)

// ingestSize is the blob the ingest figure writes through each API.
const ingestSize = 512 << 20

// BenchmarkFigureIngest: 512 MiB content ingest through the API, MB/s.
// Each side opens a Writer on its daemon's content store through its own
// Go client — keel's client library (keeld, then the local content
// plugin) and containerd's content proxy over its gRPC API (containerd's
// local store) — with the blob's size and digest in the descriptor,
// writes 512 MiB in 1 MiB writes, and commits it (size and digest checked,
// fsync): MB/s = 512 MiB / (open + writes + commit), decimal MB. The blob
// is new to both stores (fresh random bytes each pair) and deleted after
// the round. Both daemons run for the whole comparison, roots on the same
// disk (KEEL_BENCH_DIR).
func BenchmarkFigureIngest(b *testing.B) {
	ctrBins(b)
	ctx := context.Background()
	d, err := startDaemon(ctx, false)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	c, err := startContainerd(ctx, ctrdOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.stop()
	b.Logf("roots on %s (%s)", d.dir, fsType(d.dir))

	// One blob per pair, the same bytes for both sides: a random block
	// repeated, its digest computed before the clock starts.
	type blob struct {
		block []byte
		desc  ocispec.Descriptor
	}
	blobs := make([]blob, benchRounds(b))
	for i := range blobs {
		block := randomBlock()
		h := sha256.New()
		if err := writeBlobN(h, block, ingestSize); err != nil {
			b.Fatal(err)
		}
		blobs[i] = blob{block, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Size: ingestSize, Digest: digest.NewDigest(digest.SHA256, h)}}
	}
	cs := d.client.ContentStore()
	ccs := c.contentStore()
	comparePairs(b, []figure{{order: 10, name: "512 MiB content ingest through the API", unit: "MB/s"}}, sides{
		keel: func(ctx context.Context, round int) ([]float64, error) {
			bl := blobs[round]
			return timedIngest(bl.block,
				func() (content.Writer, error) {
					return cs.Writer(ctx, content.WithRef(fmt.Sprintf("figure-ingest-%d", round)), content.WithDescriptor(bl.desc))
				},
				func(w content.Writer) error { return w.Commit(ctx, ingestSize, bl.desc.Digest) },
				func() error { return cs.Delete(ctx, bl.desc.Digest) })
		},
		containerd: func(_ context.Context, round int) ([]float64, error) {
			bl := blobs[round]
			ctx := c.ctx
			return timedIngest(bl.block,
				func() (ccontent.Writer, error) {
					return ccs.Writer(ctx, ccontent.WithRef(fmt.Sprintf("figure-ingest-%d", round)), ccontent.WithDescriptor(bl.desc))
				},
				func(w ccontent.Writer) error { return w.Commit(ctx, ingestSize, bl.desc.Digest) },
				func() error { return ccs.Delete(ctx, bl.desc.Digest) })
		},
	})
}

// timedIngest writes ingestSize bytes of block through a writer from open,
// commits it and returns the rate in MB/s from open to commit; remove then
// deletes the blob, off the clock. One body for both sides, so they are
// timed alike.
func timedIngest[W io.WriteCloser](block []byte, open func() (W, error), commit func(W) error, remove func() error) ([]float64, error) {
	syncDisks()
	start := time.Now()
	w, err := open()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := writeBlobN(w, block, ingestSize); err != nil {
		return nil, err
	}
	if err := commit(w); err != nil {
		return nil, err
	}
	rate := []float64{ingestSize / 1e6 / time.Since(start).Seconds()}
	return rate, remove()
}
