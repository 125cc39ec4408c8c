// Package diff applies image layers onto mounted snapshots.
//
// Apply reads a layer blob (gzip, zstd or plain tar), applies it onto a
// directory — the mount of an active snapshot — and returns the layer's diff
// id (the sha256 of the uncompressed tar stream), computed while applying.
//
// # Whiteouts through the mount
//
// keel applies a layer through the mounted snapshot, whatever the
// snapshotter: an overlay mount whose upper dir is the new layer, a native
// copy, a btrfs subvolume. An OCI whiteout `.wh.<name>` is therefore applied
// by deleting <name> through the mount, and an opaque directory
// (`.wh..wh..opq`) by deleting, through the mount, every entry of the
// directory that this layer did not itself write. On overlayfs the kernel
// then records the deletions in the upper dir itself (a 0/0 character device
// per deleted name; a directory removed and made again is marked opaque), and
// on a plain directory the deletion is the result. containerd's overlay
// applier instead writes 0/0 devices and the opaque xattr straight into the
// upper dir, which only works when it knows the snapshotter is overlay and
// holds its upper dir; writing through the mount needs neither and gives the
// same view for every snapshotter.
//
// # Safety
//
// No entry may write outside the root. Every parent directory is resolved
// with openat2(2) RESOLVE_BENEATH from a descriptor of the root, so a symlink
// (absolute, or relative with enough `..`) leading out of the root fails the
// entry instead of being followed, and the last component is never followed:
// files are made with O_EXCL|O_NOFOLLOW, and every other call works on the
// name itself (AT_SYMLINK_NOFOLLOW, unlinkat, linkat without
// AT_SYMLINK_FOLLOW). Names with a `..` component are refused; absolute names
// are taken relative to the root, as containerd does. A refused entry fails
// the whole layer with InvalidArgument naming it; the caller drops the
// snapshot, so nothing is undone here.
//
// # Compared with containerd
//
// test/difftest applies generated layer stacks with this package and with
// containerd's applier (pkg/archive) and compares the trees; they agree,
// but for what follows. Like containerd, keel sets no trusted.* xattr from
// a layer (the administrator's namespace, where overlayfs keeps its
// markers), skips user.* xattrs on nodes other than files and dirs (the
// kernel refuses them), sets a hardlink entry's owner, mode, xattrs and
// times on the linked inode, and makes the parents of a whiteout. Unlike
// containerd, an opaque dir keeps the dirs leading to what the layer wrote
// in it even when the layer has no entry for them (containerd removes
// them, with what the layer put there), and:
//
// containerd resolves symlinks in parent paths as if the root were `/`
// (chroot-like), so `l -> /` followed by `l/etc/x` writes root/etc/x there.
// keel refuses such a layer instead: image builders never emit entries below
// a symlink, and a layer that does is almost certainly crafted.
package diff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Result describes an applied layer.
type Result struct {
	// DiffID is the sha256 digest of the uncompressed tar stream.
	DiffID digest.Digest
	// Compression is the layer's compression, as detected or given.
	Compression Compression
	// CompressedSize counts the bytes read from the layer blob.
	CompressedSize int64
	// Size counts the bytes of the uncompressed stream.
	Size int64
	// Entries counts the tar entries, whiteouts included.
	Entries int
	// Files, Dirs, Symlinks, Hardlinks and Specials (devices and fifos)
	// count the nodes made; Whiteouts the whiteout and opaque entries.
	Files, Dirs, Symlinks, Hardlinks, Specials, Whiteouts int
	// FileBytes counts the bytes of regular files' contents.
	FileBytes int64
}

// applyConfig holds Apply's options.
type applyConfig struct {
	compression Compression
	expected    digest.Digest
	workers     int
	maxSize     int64
}

// ErrTooLarge is what Apply fails with when a layer's uncompressed stream
// goes over WithMaxSize: FailedPrecondition.
var ErrTooLarge = fmt.Errorf("layer too large: %w", errdefs.ErrFailedPrecondition)

// WithMaxSize bounds the layer's uncompressed bytes: past n, Apply stops
// (nothing past n is written) and fails with ErrTooLarge. The caller drops
// the snapshot, with what was written.
func WithMaxSize(n int64) ApplyOpt {
	return func(c *applyConfig) error {
		if n < 0 {
			return fmt.Errorf("max size %d: %w", n, errdefs.ErrInvalidArgument)
		}
		c.maxSize = n
		return nil
	}
}

// ApplyOpt sets an option of Apply.
type ApplyOpt func(*applyConfig) error

// WithMediaType takes the layer's compression from its OCI or Docker media
// type instead of detecting it from the stream's first bytes. An unknown
// media type is InvalidArgument; a known one keel cannot decompress
// NotImplemented.
func WithMediaType(mediaType string) ApplyOpt {
	return func(c *applyConfig) error {
		comp, err := compressionOf(mediaType)
		if err != nil {
			return err
		}
		c.compression = comp
		return nil
	}
}

// WithCompression sets the layer's compression (Auto detects it).
func WithCompression(comp Compression) ApplyOpt {
	return func(c *applyConfig) error {
		c.compression = comp
		return nil
	}
}

// WithExpectedDiffID makes Apply fail with FailedPrecondition when the
// layer's diff id is not want (the class containerd's content store gives a
// digest that does not match; the image config's rootfs.diff_ids are what
// pull passes).
func WithExpectedDiffID(want digest.Digest) ApplyOpt {
	return func(c *applyConfig) error {
		if err := want.Validate(); err != nil {
			return fmt.Errorf("expected diff id %q: %v: %w", want, err, errdefs.ErrInvalidArgument)
		}
		c.expected = want
		return nil
	}
}

// WithWorkers sets how many goroutines write regular files' contents and
// metadata while the tar stream moves on; 0 writes everything in the
// applying goroutine. The default is GOMAXPROCS, at most 8.
func WithWorkers(n int) ApplyOpt {
	return func(c *applyConfig) error {
		if n < 0 {
			return fmt.Errorf("workers %d: %w", n, errdefs.ErrInvalidArgument)
		}
		c.workers = n
		return nil
	}
}

// Apply applies the layer blob read from r onto the directory root (see the
// package doc) and returns what it applied.
//
// Decompression and hashing run in one goroutine, the tar stream is applied
// in the caller's, and regular files' contents are written by a small pool
// of workers. Nothing is synced: the snapshotter's Commit does that once.
//
// Errors: InvalidArgument for an entry refused (its name in the message) or
// a bad option; DataLoss for a corrupt or truncated compressed stream or tar;
// FailedPrecondition when the diff id is not the expected one;
// NotImplemented for a compression keel does not read (bzip2, xz);
// ErrTooLarge (FailedPrecondition) past WithMaxSize. An error
// reading r is returned as it is, wrapped.
func Apply(ctx context.Context, root string, r io.Reader, opts ...ApplyOpt) (Result, error) {
	cfg := applyConfig{workers: min(runtime.GOMAXPROCS(0), 8)}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return Result{}, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	cr := &countingReader{r: r}
	br := bufio.NewReaderSize(cr, 128<<10)
	comp := cfg.compression
	if comp == Auto {
		var err error
		if comp, err = detect(br); err != nil {
			return Result{}, cr.classify(err, comp)
		}
	}
	dec, err := newDecompressor(comp, br)
	if err != nil {
		return Result{}, cr.classify(err, comp)
	}
	s := newStream(ctx, dec, cfg.maxSize)
	defer s.stop()

	res := Result{Compression: comp}
	a, err := newApplier(root, cfg.workers, &res)
	if err != nil {
		return Result{}, err
	}
	err = a.run(ctx, s)
	if err == nil {
		// The diff id covers the whole stream, padding after the tar's end
		// included.
		if _, derr := io.Copy(io.Discard, s); derr != nil {
			err = &tarError{derr}
		}
	}
	if cerr := a.close(); err == nil {
		err = cerr
	}
	if err != nil {
		var te *tarError
		switch serr := s.err(); {
		case serr != nil: // the stream's own failure explains the tar's
			err = cr.classify(serr, comp)
		case ctx.Err() != nil:
			err = ctx.Err()
		case errors.As(err, &te):
			err = fmt.Errorf("layer tar: %v: %w", te.err, errdefs.ErrDataLoss)
		}
		return Result{}, err
	}
	res.DiffID, res.Size = s.digest()
	res.CompressedSize = cr.n
	if cfg.expected != "" && cfg.expected != res.DiffID {
		return Result{}, fmt.Errorf("layer diff id %s, expected %s: %w", res.DiffID, cfg.expected, errdefs.ErrFailedPrecondition)
	}
	return res, nil
}

// countingReader counts the bytes read from the layer blob and keeps the
// blob reader's own error apart from the decompressor's.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// classify names err: the blob reader's own failure passes through, any
// other is the layer's bytes being wrong (DataLoss).
func (c *countingReader) classify(err error, comp Compression) error {
	if c.err != nil && errors.Is(err, c.err) {
		return fmt.Errorf("read layer: %w", c.err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return fmt.Errorf("zstd window over %d bytes: %w", maxZstdWindow, ErrTooLarge)
	}
	if errors.Is(err, errdefs.ErrNotImplemented) || errors.Is(err, errdefs.ErrInvalidArgument) || errors.Is(err, errdefs.ErrDataLoss) || errors.Is(err, ErrTooLarge) {
		return err
	}
	return fmt.Errorf("layer %s stream: %v: %w", comp, err, errdefs.ErrDataLoss)
}
