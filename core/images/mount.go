package images

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/containerd/platforms"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// LabelMountTarget, on a view made by View, is the directory it is for.
const LabelMountTarget = "keel.io/image-mount.target"

// ViewKey is the snapshot key of the view View makes for the directory
// target, so that the unmount of target finds it.
func ViewKey(target string) string { return "keel-image-mount:" + target }

// Manifest returns the manifest of desc, an image's target: desc itself,
// or the manifest of an index platform matches best.
func Manifest(ctx context.Context, p content.Provider, desc ocispec.Descriptor, platform platforms.MatchComparer) (ocispec.Descriptor, ocispec.Manifest, error) {
	for depth := 0; IsIndex(desc.MediaType); depth++ {
		if depth > 4 {
			return desc, ocispec.Manifest{}, fmt.Errorf("index %s: nested too deep: %w", desc.Digest, errdefs.ErrInvalidArgument)
		}
		children, err := Children(ctx, p, desc)
		if err != nil {
			return desc, ocispec.Manifest{}, err
		}
		var matches []ocispec.Descriptor
		for _, c := range children {
			if c.Platform == nil || platform.Match(*c.Platform) {
				matches = append(matches, c)
			}
		}
		if len(matches) == 0 {
			return desc, ocispec.Manifest{}, fmt.Errorf("index %s: no manifest for the platform: %w", desc.Digest, errdefs.ErrNotFound)
		}
		sort.SliceStable(matches, func(i, j int) bool {
			if matches[i].Platform == nil || matches[j].Platform == nil {
				return matches[i].Platform != nil
			}
			return platform.Less(*matches[i].Platform, *matches[j].Platform)
		})
		desc = matches[0]
	}
	if !IsManifest(desc.MediaType) {
		return desc, ocispec.Manifest{}, fmt.Errorf("%s %s is not an image manifest: %w", desc.MediaType, desc.Digest, errdefs.ErrInvalidArgument)
	}
	data, err := ReadBlob(ctx, p, desc)
	if err != nil {
		return desc, ocispec.Manifest{}, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return desc, m, fmt.Errorf("manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	return desc, m, nil
}

// ChainID is the chain id of the top layer of the image desc (for an
// index, of the manifest platform matches): the key unpack commits it
// under.
func ChainID(ctx context.Context, p content.Provider, desc ocispec.Descriptor, platform platforms.MatchComparer) (string, error) {
	_, m, err := Manifest(ctx, p, desc, platform)
	if err != nil {
		return "", err
	}
	data, err := ReadBlob(ctx, p, m.Config)
	if err != nil {
		return "", err
	}
	var config ocispec.Image
	if err := json.Unmarshal(data, &config); err != nil {
		return "", fmt.Errorf("config %s: %v: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(config.RootFS.DiffIDs) == 0 {
		return "", fmt.Errorf("config %s: no layers: %w", m.Config.Digest, errdefs.ErrInvalidArgument)
	}
	for _, d := range config.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return "", fmt.Errorf("config %s: diff id %q: %v: %w", m.Config.Digest, d, err, errdefs.ErrInvalidArgument)
		}
	}
	return identity.ChainID(config.RootFS.DiffIDs).String(), nil
}

// View makes a read-only view on sn (called snName) of the unpacked image
// desc (name for messages), for the directory target, and returns its
// mounts. The view is a garbage collection root until removed (it holds
// the image's snapshots). FailedPrecondition when the image is not
// unpacked on sn; AlreadyExists when target has a view.
func View(ctx context.Context, p content.Provider, sn snapshot.Snapshotter, snName, name string, desc ocispec.Descriptor, platform platforms.MatchComparer, target string) ([]mount.Mount, error) {
	chain, err := ChainID(ctx, p, desc, platform)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	if _, err := sn.Stat(ctx, chain); errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %s not unpacked on snapshotter %s: %w", name, snName, errdefs.ErrFailedPrecondition)
	} else if err != nil {
		return nil, err
	}
	ms, err := sn.View(ctx, ViewKey(target), chain, snapshot.WithLabels(map[string]string{
		gc.LabelRoot:     "image-mount",
		LabelMountTarget: target,
	}))
	if err != nil {
		return nil, fmt.Errorf("view of image %s for %s: %w", name, target, err)
	}
	return ms, nil
}
