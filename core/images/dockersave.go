package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// dockerManifestFile lists the images of a `docker save` tar.
const dockerManifestFile = "manifest.json"

// dockerManifest is one entry of a `docker save` manifest.json: paths in
// the tar of the image config and of the layers (uncompressed tars in the
// legacy <id>/layer.tar layout, blobs/sha256/<hex> since Docker 25).
type dockerManifest struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[digest.Digest]ocispec.Descriptor `json:",omitempty"`
}

// convertDocker makes a Docker schema2 manifest for each entry of a's
// manifest.json (stored in cs), as containerd's importer does: the config
// as it is, each layer with the media type its leading bytes say
// (uncompressed, gzip or zstd), and the platform of the config on the
// manifest's descriptor. Each repo tag, normalized (busybox:latest is
// docker.io/library/busybox:latest), names an image; an entry without
// tags is named base@<digest>.
func convertDocker(ctx context.Context, cs content.Store, a *archive, base string) ([]Named, error) {
	var out []Named
	for i, m := range a.docker {
		cfg, ok := a.file(m.Config)
		if !ok {
			return nil, fmt.Errorf("manifest.json entry %d: config %q is not in the archive: %w", i, m.Config, errdefs.ErrInvalidArgument)
		}
		cfg.MediaType = MediaTypeDockerConfig
		data, err := ReadBlob(ctx, cs, cfg)
		if err != nil {
			return nil, fmt.Errorf("manifest.json entry %d: config: %w", i, err)
		}
		var config ocispec.Image
		if err := json.Unmarshal(data, &config); err != nil {
			return nil, fmt.Errorf("manifest.json entry %d: config: %v: %w", i, err, errdefs.ErrInvalidArgument)
		}
		if len(config.RootFS.DiffIDs) != len(m.Layers) {
			return nil, fmt.Errorf("manifest.json entry %d: %d layers, the config lists %d diff ids: %w", i, len(m.Layers), len(config.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
		}
		manifest := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: MediaTypeDockerManifest, Config: cfg}
		for j, l := range m.Layers {
			desc, ok := a.file(l)
			if !ok {
				// A foreign layer the archive names but does not hold.
				src, ok := m.LayerSources[config.RootFS.DiffIDs[j]]
				if !ok {
					return nil, fmt.Errorf("manifest.json entry %d: layer %q is not in the archive: %w", i, l, errdefs.ErrInvalidArgument)
				}
				manifest.Layers = append(manifest.Layers, src)
				continue
			}
			if desc.MediaType, err = layerMediaType(ctx, cs, desc); err != nil {
				return nil, fmt.Errorf("manifest.json entry %d: layer %q: %w", i, l, err)
			}
			manifest.Layers = append(manifest.Layers, desc)
		}
		mb, err := json.MarshalIndent(manifest, "", "   ")
		if err != nil {
			return nil, err
		}
		desc := ocispec.Descriptor{MediaType: MediaTypeDockerManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
		if err := content.WriteBlob(ctx, cs, "import-manifest-"+desc.Digest.String(), bytes.NewReader(mb), desc); err != nil {
			return nil, fmt.Errorf("manifest.json entry %d: store its manifest: %w", i, err)
		}
		desc.Platform = &ocispec.Platform{OS: config.OS, Architecture: config.Architecture, Variant: config.Variant, OSVersion: config.OSVersion}
		if len(m.RepoTags) == 0 {
			out = append(out, Named{Name: base + "@" + desc.Digest.String(), Target: desc})
		}
		for _, tag := range m.RepoTags {
			named, err := reference.ParseDockerRef(tag)
			if err != nil {
				return nil, fmt.Errorf("manifest.json entry %d: repo tag %q: %v: %w", i, tag, err, errdefs.ErrInvalidArgument)
			}
			out = append(out, Named{Name: named.String(), Target: desc})
		}
	}
	return out, nil
}

// layerMediaType names a docker layer by its compression, read from its
// leading bytes.
func layerMediaType(ctx context.Context, p content.Provider, desc ocispec.Descriptor) (string, error) {
	ra, err := p.ReaderAt(ctx, desc)
	if err != nil {
		return "", err
	}
	defer ra.Close()
	head := make([]byte, 4)
	n, err := ra.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return MediaTypeDockerLayerGzip, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return MediaTypeDockerLayerZstd, nil
	}
	return MediaTypeDockerLayer, nil
}
