package images

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Unpack applies the layers of an image whose content is stored already
// (target, for an index the manifest opts.Platform matches best) onto
// p.Snapshotter, as Pull with Unpack does from the network: each onto a
// snapshot named by its chain id, skipping the chains committed already.
// It labels the config with the top snapshot, so that the image keeps
// it, and reports layers through opts.Progress. The caller holds a lease
// over the call. NotFound when a blob of the image is not stored or no
// manifest matches the platform.
func (p *Puller) Unpack(ctx context.Context, target ocispec.Descriptor, opts PullOptions) (PullResult, error) {
	if p.Snapshotter == nil {
		return PullResult{}, fmt.Errorf("unpack needs a snapshotter: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Platform == nil {
		opts.Platform = platforms.Default()
	}
	md, m, err := Manifest(ctx, p.Content, target, opts.Platform)
	if err != nil {
		return PullResult{}, err
	}
	limits := p.Limits.withDefaults()
	if err := limits.checkManifest(md, m); err != nil {
		return PullResult{}, err
	}
	data, err := ReadBlob(ctx, p.Content, m.Config)
	if err != nil {
		return PullResult{}, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(data, &cfg); err != nil {
		return PullResult{}, fmt.Errorf("config %s: %v: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(m.Layers) == 0 || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return PullResult{}, fmt.Errorf("manifest %s: %d layers, its config lists %d diff ids: %w", md.Digest, len(m.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	// The layers are "downloaded" already: the unpacker reads each from the
	// content store.
	pl := &pull{p: p, opts: opts, limits: limits, downloads: map[digest.Digest]*download{}}
	for _, l := range m.Layers {
		if d := pl.download(l, "layer"); d != nil {
			d.finish(nil)
		}
	}
	chain, err := pl.unpack(ctx, m.Layers, cfg.RootFS.DiffIDs)
	if err != nil {
		return PullResult{}, err
	}
	if err := pl.label(ctx, m.Config.Digest, map[string]string{gc.LabelRefSnapshotPrefix + p.SnapshotterName: chain.String()}); err != nil {
		return PullResult{}, err
	}
	return PullResult{Target: target, Manifests: []ocispec.Descriptor{md}, Unpacked: md, ChainID: chain}, nil
}
