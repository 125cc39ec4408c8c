package check

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// blobs hashes every committed blob of the content plugin and compares the
// plugin's blobs with the records of every namespace.
func (c *Checker) blobs(ctx context.Context) ([]Problem, error) {
	store, _ := c.DB.Backends()
	if store == nil {
		return nil, nil
	}
	var infos []content.Info
	if err := store.Walk(ctx, func(info content.Info) error {
		infos = append(infos, info)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing the content plugin: %w", err)
	}
	// Records are read after the plugin is listed: a commit adds the blob
	// before its record, so a blob committed meanwhile is not "missing".
	records, err := c.DB.BlobRecords()
	if err != nil {
		return nil, err
	}
	var out []Problem
	var errs []string
	have := map[digest.Digest]bool{}
	for _, info := range infos {
		dgst := info.Digest
		have[dgst] = true
		got, size, err := hashBlob(ctx, store, dgst)
		switch {
		case errdefs.IsNotFound(err):
			continue // deleted meanwhile
		case err != nil:
			errs = append(errs, fmt.Sprintf("blob %s: %v", dgst, err))
			continue
		case got != dgst || size != info.Size:
			out = append(out, Problem{Kind: KindBlob, Object: dgst.String(),
				Problem: fmt.Sprintf("its %d bytes hash to %s (size recorded %d)", size, got, info.Size),
				Fix:     "remove it and its records; pull the images that use it again",
				Safe:    true,
				repair:  func(ctx context.Context) error { return c.DB.DropBlob(ctx, dgst) },
			})
			continue
		}
		if len(records[dgst]) == 0 {
			out = append(out, Problem{Kind: KindBlob, Object: dgst.String(),
				Problem: "in the content plugin, but no namespace records it",
				Fix:     "remove it from the plugin (keel gc does too)",
				Safe:    true,
				repair:  func(ctx context.Context) error { return c.DB.RemoveOrphanBlob(ctx, dgst) },
			})
		}
	}
	var missing []digest.Digest
	for dgst := range records {
		if !have[dgst] {
			missing = append(missing, dgst)
		}
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
	for _, dgst := range missing {
		// Checked again: it may have been committed since the listing.
		if _, err := store.Info(ctx, dgst); !errdefs.IsNotFound(err) {
			continue
		}
		out = append(out, Problem{Kind: KindBlob, Object: dgst.String(),
			Problem: fmt.Sprintf("recorded in namespace %s but missing in the content plugin", strings.Join(records[dgst], ", ")),
			Fix:     "drop its records; pull the images that use it again",
			Safe:    true,
			repair:  func(ctx context.Context) error { return c.DB.DropBlob(ctx, dgst) },
		})
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// hashBlob reads the blob dgst names and returns the digest of its bytes,
// with dgst's algorithm, and their count.
func hashBlob(ctx context.Context, p content.Provider, dgst digest.Digest) (digest.Digest, int64, error) {
	if !dgst.Algorithm().Available() {
		return "", 0, fmt.Errorf("digest algorithm %q is not available", dgst.Algorithm())
	}
	ra, err := p.ReaderAt(ctx, ocispec.Descriptor{Digest: dgst})
	if err != nil {
		return "", 0, err
	}
	defer ra.Close()
	d := dgst.Algorithm().Digester()
	n, err := io.Copy(d.Hash(), io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		return "", 0, err
	}
	return d.Digest(), n, nil
}
