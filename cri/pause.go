package cri

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	goruntime "runtime"
	"time"

	digest "github.com/opencontainers/go-digest"
	specsgo "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// PauseBinary is the pause image's only file, its entrypoint.
const PauseBinary = "/pause"

// pauseImage is an OCI image of one uncompressed layer holding the pause
// executable as /pause: its manifest, config and layer, each as stored.
type pauseImage struct {
	manifest, config, layer []byte
	desc                    ocispec.Descriptor // the manifest's
}

// buildPauseImage makes the pause image from the executable's bytes. The
// same bytes give the same digests (no timestamps), so a restart of
// keel-cri finds its image unchanged.
func buildPauseImage(pause []byte) (*pauseImage, error) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	hdr := &tar.Header{Name: PauseBinary[1:], Mode: 0o755, Size: int64(len(pause)), Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(pause); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerDesc := descOf(ocispec.MediaTypeImageLayer, layer.Bytes())
	config, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: goruntime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Entrypoint: []string{PauseBinary}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return nil, err
	}
	configDesc := descOf(ocispec.MediaTypeImageConfig, config)
	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specsgo.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return nil, err
	}
	return &pauseImage{manifest: manifest, config: config, layer: layer.Bytes(),
		desc: descOf(ocispec.MediaTypeImageManifest, manifest)}, nil
}

func descOf(mediaType string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// EnsurePauseImage records the pause image made from the executable at
// path as name in c's namespace, unless name already holds it: blobs are
// written under a lease (so no collection takes them before the record
// names them), the manifest's gc.ref labels keeping config and layer.
// A name that holds another image is pointed at this one.
func EnsurePauseImage(ctx context.Context, c *client.Client, name, path string) (client.Image, error) {
	pause, err := os.ReadFile(path)
	if err != nil {
		return client.Image{}, fmt.Errorf("pause executable: %w", err)
	}
	pi, err := buildPauseImage(pause)
	if err != nil {
		return client.Image{}, err
	}
	cur, err := c.GetImage(ctx, name)
	if err == nil && cur.Target.Digest == pi.desc.Digest {
		return cur, nil
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return client.Image{}, err
	}
	l, err := c.CreateLease(ctx, client.WithLeaseExpiration(time.Hour), client.WithLeaseLabels(map[string]string{"io.keel.cri/pause-image": name}))
	if err != nil {
		return client.Image{}, err
	}
	defer c.DeleteLease(context.WithoutCancel(ctx), l.ID)
	lctx := client.WithLease(ctx, l.ID)
	cs := c.ContentStore()
	var m ocispec.Manifest
	if err := json.Unmarshal(pi.manifest, &m); err != nil {
		return client.Image{}, err
	}
	for _, b := range []struct {
		data   []byte
		desc   ocispec.Descriptor
		labels map[string]string
	}{
		{pi.layer, m.Layers[0], nil},
		{pi.config, m.Config, nil},
		{pi.manifest, pi.desc, map[string]string{
			"containerd.io/gc.ref.content.config": m.Config.Digest.String(),
			"containerd.io/gc.ref.content.l.0":    m.Layers[0].Digest.String(),
		}},
	} {
		ref := "pause-" + b.desc.Digest.Encoded()[:12]
		if err := content.WriteBlob(lctx, cs, ref, bytes.NewReader(b.data), b.desc, content.WithLabels(b.labels)); err != nil {
			return client.Image{}, fmt.Errorf("pause image: blob %s: %w", b.desc.Digest, err)
		}
	}
	img := client.Image{Name: name, Target: pi.desc}
	out, err := c.CreateImage(lctx, img)
	if errdefs.IsAlreadyExists(err) {
		out, err = c.UpdateImage(lctx, img, "target")
	}
	return out, err
}
