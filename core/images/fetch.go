// Package images holds keeld's image operations over its plugins. Fetch
// moves one blob from a registry, through the resolver plugin, into the
// content store; pull (the images issue) builds on it.
package images

import (
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// IngestRef is the content ingest a fetch of desc writes to: the same for
// every fetch of one blob, so an interrupted one is resumed.
func IngestRef(desc ocispec.Descriptor) string {
	return "fetch-" + desc.Digest.String()
}

// Fetch copies desc, which belongs to ref, from r into cs: it resumes the
// blob's ingest where a previous fetch stopped (asking the resolver from
// that offset) and commits it, which checks size and digest. A blob that
// is stored already is success, with nothing fetched. A fetch of a blob
// another fetch is writing waits for that one (and then finds the blob
// stored, or resumes where it stopped). Bytes found wrong (a digest or
// size mismatch at commit, a layer that does not decode) are discarded,
// so the next fetch starts again from 0 rather than from them.
func Fetch(ctx context.Context, r resolver.Resolver, cs content.Ingester, ref string, desc ocispec.Descriptor, opts ...content.Opt) error {
	return fetch(ctx, r, cs, ref, desc, fetchHooks{}, opts...)
}

// fetchHooks let a pull watch a fetch and tee its bytes.
type fetchHooks struct {
	// exists is called when the blob is stored already.
	exists func()
	// start is called with the offset the fetch starts from; a writer it
	// returns receives every byte fetched after the store took it.
	start func(offset int64) io.Writer
	// wrote is called with the bytes stored so far, after each chunk.
	wrote func(offset int64)
}

func fetch(ctx context.Context, r resolver.Resolver, cs content.Ingester, ref string, desc ocispec.Descriptor, hooks fetchHooks, opts ...content.Opt) error {
	w, err := content.OpenWriter(ctx, cs, content.WithRef(IngestRef(desc)), content.WithDescriptor(desc))
	if errdefs.IsAlreadyExists(err) {
		if hooks.exists != nil {
			hooks.exists()
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("fetch %s of %s: %w", desc.Digest, ref, err)
	}
	defer w.Close()
	err = fetchInto(ctx, r, w, ref, desc, hooks, opts...)
	if err != nil && badBytes(err) {
		discard(ctx, cs, w, IngestRef(desc))
	}
	return err
}

// badBytes tells whether a fetch failed on the bytes themselves (their
// digest or size, or a layer they do not make), not on the way they came.
func badBytes(err error) bool {
	return errdefs.IsFailedPrecondition(err) || errdefs.IsDataLoss(err)
}

// discard empties the ingest w holds, while still holding it so that no
// other fetch resumes from the bad bytes, then aborts it. Failures leave
// at worst an empty ingest.
func discard(ctx context.Context, cs content.Ingester, w content.Writer, ref string) {
	ctx = context.WithoutCancel(ctx)
	_ = w.Truncate(0)
	_ = w.Close()
	if im, ok := cs.(content.IngestManager); ok {
		_ = im.Abort(ctx, ref)
	}
}

// fetchInto fetches desc from the offset w holds on and commits it. When
// w writes into the store's ingest file and the resolver can write files
// (FileFetcher), the resolver puts the bytes there itself; otherwise they
// come over its stream and go through w.
func fetchInto(ctx context.Context, r resolver.Resolver, w content.Writer, ref string, desc ocispec.Descriptor, hooks fetchHooks, opts ...content.Opt) error {
	st, err := w.Status()
	if err != nil {
		return err
	}
	if st.Offset > desc.Size {
		if err := w.Truncate(0); err != nil {
			return err
		}
		st.Offset = 0
	}
	var tee io.Writer
	if hooks.start != nil {
		tee = hooks.start(st.Offset)
	}
	var teeErr error
	// feed hands fetched bytes to the tee. Bytes that do not decode stop
	// the tee, not the fetch, so that bytes not matching their digest are
	// named as such.
	feed := func(p []byte) error {
		if tee == nil {
			return nil
		}
		if _, err := tee.Write(p); err != nil {
			teeErr = fmt.Errorf("fetch %s of %s: apply: %w", desc.Digest, ref, err)
			if !errdefs.IsDataLoss(err) {
				return teeErr
			}
			tee = nil
		}
		return nil
	}
	err = errdefs.ErrNotImplemented
	ff, canFile := r.(resolver.FileFetcher)
	if f, ok := content.AsIngestFile(w); ok && canFile {
		err = fetchToFile(ctx, ff, f, ref, desc, st.Offset, func() bool { return tee != nil }, feed, hooks.wrote)
	}
	if errdefs.IsNotImplemented(err) {
		err = fetchStream(ctx, r, w, ref, desc, st.Offset, feed, hooks.wrote)
	}
	if err != nil {
		if teeErr != nil && errors.Is(err, teeErr) {
			return teeErr
		}
		// The ingest keeps what came: the next Fetch resumes there.
		return fmt.Errorf("fetch %s of %s: %w", desc.Digest, ref, err)
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest, opts...); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("fetch %s of %s: %w", desc.Digest, ref, err)
	}
	return teeErr
}

// fetchToFile has the resolver write desc from offset on into w's file,
// reading back what it wrote for feed only while feeding says a tee takes
// the bytes (a fetch without unpack reads nothing back).
func fetchToFile(ctx context.Context, ff resolver.FileFetcher, w content.IngestFile, ref string, desc ocispec.Descriptor, offset int64, feeding func() bool, feed func([]byte) error, wrote func(int64)) error {
	var buf []byte
	pos := offset
	return ff.FetchToFile(ctx, ref, desc, offset, w.Path(), func(at int64) error {
		if err := w.Wrote(at); err != nil {
			return err
		}
		if !feeding() {
			pos = at
		}
		for pos < at {
			if buf == nil {
				buf = make([]byte, sdk.ChunkSize)
			}
			n := int(min(int64(len(buf)), at-pos))
			if _, err := w.ReadAt(buf[:n], pos); err != nil {
				return fmt.Errorf("read back %s: %w", w.Path(), err)
			}
			if err := feed(buf[:n]); err != nil {
				return err
			}
			pos += int64(n)
		}
		if wrote != nil {
			wrote(at)
		}
		return nil
	})
}

// fetchStream reads desc from offset on from the resolver's stream into w.
func fetchStream(ctx context.Context, r resolver.Resolver, w content.Writer, ref string, desc ocispec.Descriptor, offset int64, feed func([]byte) error, wrote func(int64)) error {
	rc, err := r.Fetch(ctx, ref, desc, offset)
	if err != nil {
		return fmt.Errorf("from %d: %w", offset, err)
	}
	defer rc.Close()
	// Whole chunks make whole messages on the way to the content plugin.
	buf := make([]byte, sdk.ChunkSize)
	for {
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			if err := feed(buf[:n]); err != nil {
				return err
			}
			offset += int64(n)
			if wrote != nil {
				wrote(offset)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
