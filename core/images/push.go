package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// PushProgress is one step of a push, for one blob or manifest.
type PushProgress struct {
	Desc   ocispec.Descriptor
	State  BlobState // BlobPushing, BlobExists or BlobDone
	Offset int64     // bytes sent so far
}

// PushOptions tune Push.
type PushOptions struct {
	// Progress, when set, is called (from several goroutines, never at
	// once) as blobs start, advance (at most every ProgressInterval) and end.
	Progress func(PushProgress)
	// Concurrency bounds the blobs pushed at once (3 when 0).
	Concurrency int
}

// ProgressInterval is the least time between two progress reports of one
// blob.
const ProgressInterval = 100 * time.Millisecond

// pushPlan is an image graph in push order.
type pushPlan struct {
	blobs     []ocispec.Descriptor // configs and layers, once each
	manifests []ocispec.Descriptor // children before their index, target last
}

// planPush walks target's graph in p. Every manifest and index must be
// stored; blobs are checked when they are read.
func planPush(ctx context.Context, p content.Provider, target ocispec.Descriptor) (pushPlan, error) {
	var plan pushPlan
	seen := map[digest.Digest]bool{}
	var walk func(desc ocispec.Descriptor) error
	walk = func(desc ocispec.Descriptor) error {
		if seen[desc.Digest] {
			return nil
		}
		seen[desc.Digest] = true
		if !IsManifest(desc.MediaType) && !IsIndex(desc.MediaType) {
			plan.blobs = append(plan.blobs, desc)
			return nil
		}
		children, err := Children(ctx, p, desc)
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("%s %s is not stored: %w", desc.MediaType, desc.Digest, errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			return err
		}
		for _, c := range children {
			if err := walk(c); err != nil {
				return err
			}
		}
		plan.manifests = append(plan.manifests, desc)
		return nil
	}
	return plan, walk(target)
}

// Push uploads target, an image of p, to ref through r: what the registry
// lacks (the resolver answers AlreadyExists for the rest), configs and
// layers first and concurrently, then child manifests by digest, target
// under ref last. Content missing from p is FailedPrecondition.
func Push(ctx context.Context, r resolver.Resolver, p content.Provider, ref string, target ocispec.Descriptor, opts PushOptions) error {
	named, err := resolver.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if d, ok := named.(reference.Digested); ok && d.Digest() != target.Digest {
		return fmt.Errorf("push %s: the image is %s: %w", ref, target.Digest, errdefs.ErrInvalidArgument)
	}
	plan, err := planPush(ctx, p, target)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	var mu sync.Mutex
	report := func(pp PushProgress) {
		if opts.Progress != nil {
			mu.Lock()
			defer mu.Unlock()
			opts.Progress(pp)
		}
	}
	limit := opts.Concurrency
	if limit <= 0 {
		limit = 3
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, b := range plan.blobs {
		g.Go(func() error { return pushOne(gctx, r, p, ref, b, report) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	repo := reference.TrimNamed(named)
	for _, m := range plan.manifests {
		to := ref
		if m.Digest != target.Digest {
			byDigest, err := reference.WithDigest(repo, m.Digest)
			if err != nil {
				return fmt.Errorf("push %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
			}
			to = byDigest.String()
		}
		if err := pushOne(ctx, r, p, to, m, report); err != nil {
			return err
		}
	}
	return nil
}

// pushOne pushes desc, read from p, to ref.
func pushOne(ctx context.Context, r resolver.Resolver, p content.Provider, ref string, desc ocispec.Descriptor, report func(PushProgress)) error {
	ra, err := p.ReaderAt(ctx, desc)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("push %s: %s %s is not stored: %w", ref, desc.MediaType, desc.Digest, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	defer ra.Close()
	report(PushProgress{Desc: desc, State: BlobPushing})
	cr := &countingReader{r: io.NewSectionReader(ra, 0, ra.Size()), desc: desc, report: report}
	err = r.Push(ctx, ref, desc, cr)
	switch {
	case errdefs.IsAlreadyExists(err):
		report(PushProgress{Desc: desc, State: BlobExists, Offset: desc.Size})
		return nil
	case err != nil:
		return fmt.Errorf("push %s: %s %s: %w", ref, desc.MediaType, desc.Digest, err)
	}
	report(PushProgress{Desc: desc, State: BlobDone, Offset: desc.Size})
	return nil
}

// countingReader reports how far a blob's upload has got.
type countingReader struct {
	r      io.Reader
	desc   ocispec.Descriptor
	report func(PushProgress)
	n      int64
	last   time.Time
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if now := time.Now(); n > 0 && now.Sub(c.last) >= ProgressInterval && !errors.Is(err, io.EOF) {
		c.last = now
		c.report(PushProgress{Desc: c.desc, State: BlobPushing, Offset: c.n})
	}
	return n, err
}
