package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// ReadBlob reads a whole blob into memory: for small blobs (manifests,
// configs), never layers.
func ReadBlob(ctx context.Context, p Provider, desc ocispec.Descriptor) ([]byte, error) {
	ra, err := p.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	buf := make([]byte, ra.Size())
	n, err := ra.ReadAt(buf, 0)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == ra.Size()) {
		return nil, err
	}
	return buf[:n], nil
}

// NewReader reads ra from its start to its end.
func NewReader(ra ReaderAt) io.Reader {
	return io.NewSectionReader(ra, 0, ra.Size())
}

// OpenWriter opens an ingest as Ingester.Writer does, but waits while
// another writer holds the ref (Unavailable), retrying with a growing,
// jittered delay until ctx ends. A second fetch of a blob thus waits for
// the first and, once that one has committed, gets AlreadyExists.
func OpenWriter(ctx context.Context, ing Ingester, opts ...WriterOpt) (Writer, error) {
	delay := 10 * time.Millisecond
	for {
		w, err := ing.Writer(ctx, opts...)
		if err == nil || !errdefs.IsUnavailable(err) {
			return w, err
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (waited for the writer holding it: %v)", err, ctx.Err())
		}
		delay = min(2*delay, time.Second)
	}
}

// WriteBlob writes r into the ingest ref and commits it as desc, with the
// labels opts set. It waits while another writer holds ref (OpenWriter).
// It resumes a partial ingest at Status().Offset, seeking
// r forward from where it stands when it is an io.Seeker and discarding
// what is already there otherwise. A blob that is already stored is success.
func WriteBlob(ctx context.Context, ing Ingester, ref string, r io.Reader, desc ocispec.Descriptor, opts ...Opt) error {
	w, err := OpenWriter(ctx, ing, WithRef(ref), WithDescriptor(desc))
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	defer w.Close()
	st, err := w.Status()
	if err != nil {
		return err
	}
	if desc.Size > 0 && st.Offset > desc.Size {
		// More than the blob holds: not this blob, start over.
		if err := w.Truncate(0); err != nil {
			return err
		}
		st.Offset = 0
	}
	if st.Offset > 0 {
		if s, ok := r.(io.Seeker); ok {
			if _, err := s.Seek(st.Offset, io.SeekCurrent); err != nil {
				return fmt.Errorf("write %q: resume at %d: %w", ref, st.Offset, err)
			}
		} else if _, err := io.CopyN(io.Discard, r, st.Offset); err != nil {
			return fmt.Errorf("write %q: resume at %d: %w", ref, st.Offset, err)
		}
	}
	// Full ChunkSize writes make full messages, however r splits its data.
	buf := make([]byte, sdk.ChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("write %q: read: %w", ref, err)
		}
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest, opts...); err != nil && !errdefs.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// OpenFile opens a blob's file as a ReaderAt; reads are preads. A missing
// file is NotFound.
func OpenFile(path string) (ReaderAt, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("blob file %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileReaderAt{File: f, size: fi.Size()}, nil
}

type fileReaderAt struct {
	*os.File
	size int64
}

func (r fileReaderAt) Size() int64 { return r.size }
