package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BusyboxPath is the static busybox the test images carry.
const BusyboxPath = "/bin/busybox"

// Docker media types (schema2 and its manifest list).
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerZstd    = "application/vnd.docker.image.rootfs.diff.tar.zstd"
)

// Blob is content with its descriptor.
type Blob struct {
	Desc ocispec.Descriptor
	Data []byte
}

func newBlob(mediaType string, data []byte) Blob {
	return Blob{Desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, Data: data}
}

// NewBlob returns data as a blob of mediaType.
func NewBlob(mediaType string, data []byte) Blob { return newBlob(mediaType, data) }

// Image is a single-platform image: manifest, config and layers.
type Image struct {
	Manifest Blob
	Config   Blob
	Layers   []Blob
}

// Blobs lists config and layers (not the manifest), in push order.
func (i *Image) Blobs() []Blob { return append([]Blob{i.Config}, i.Layers...) }

// ImageOptions choose what BuildImage makes.
type ImageOptions struct {
	// Docker uses Docker schema2 media types instead of OCI's.
	Docker bool
	// Zstd compresses layers with zstd instead of gzip.
	Zstd bool
	// Arch is the platform architecture (default "amd64"); the layer is
	// the host's busybox whatever it says, which is all a registry test
	// needs.
	Arch string
	// Extra, when set, is added as a file /extra in a second layer (to make
	// images that differ).
	Extra []byte
	// Files, when set, are added in one more layer: path → content (mode
	// 0644, parent directories 0755), e.g. etc/passwd and etc/group.
	Files map[string]string
	// User is the config's User (e.g. "app", "app:staff", "1000:1000").
	User string
}

// BuildImage builds an image holding busybox-static (BusyboxPath) and its
// sh link.
func BuildImage(opts ImageOptions) (*Image, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox (apt-get install busybox-static): %w", err)
	}
	files := []tarFile{{name: "bin/", dir: true}, {name: "bin/busybox", data: bb, mode: 0o755}, {name: "bin/sh", link: "busybox"}}
	layers := [][]tarFile{files}
	if opts.Extra != nil {
		layers = append(layers, []tarFile{{name: "extra", data: opts.Extra, mode: 0o644}})
	}
	if len(opts.Files) > 0 {
		layers = append(layers, filesLayer(opts.Files))
	}
	var built []Layer
	for _, files := range layers {
		raw, err := makeTar(files)
		if err != nil {
			return nil, err
		}
		data, mt, err := compress(raw, opts)
		if err != nil {
			return nil, err
		}
		built = append(built, Layer{Blob: newBlob(mt, data), DiffID: digest.FromBytes(raw)})
	}
	return BuildImageFrom(built, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, User: opts.User}, opts)
}

// Layer is a compressed layer blob and the digest of its uncompressed tar.
type Layer struct {
	Blob   Blob
	DiffID digest.Digest
}

// BuildImageFrom builds an image of prebuilt layers (bottom first) with the
// runtime config cfg. Of opts only Docker and Arch count: the layers keep
// their own media types.
func BuildImageFrom(layers []Layer, cfg ocispec.ImageConfig, opts ImageOptions) (*Image, error) {
	arch := opts.Arch
	if arch == "" {
		arch = "amd64"
	}
	img := &Image{}
	var diffIDs []digest.Digest
	for _, l := range layers {
		img.Layers = append(img.Layers, l.Blob)
		diffIDs = append(diffIDs, l.DiffID)
	}
	config := ocispec.Image{
		Platform: ocispec.Platform{Architecture: arch, OS: "linux"},
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cb, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	cmt, mmt := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if opts.Docker {
		cmt, mmt = MediaTypeDockerConfig, MediaTypeDockerManifest
	}
	img.Config = newBlob(cmt, cb)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mmt, Config: img.Config.Desc}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, l.Desc)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img.Manifest = newBlob(mmt, mb)
	img.Manifest.Desc.Platform = &ocispec.Platform{Architecture: arch, OS: "linux"}
	return img, nil
}

// BuildIndex builds an index (or Docker manifest list) of images.
func BuildIndex(docker bool, images ...*Image) (Blob, error) {
	mt := ocispec.MediaTypeImageIndex
	if docker {
		mt = MediaTypeDockerManifestList
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mt}
	for _, img := range images {
		idx.Manifests = append(idx.Manifests, img.Manifest.Desc)
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return Blob{}, err
	}
	return newBlob(mt, b), nil
}

// filesLayer is the tar entries of files, each after its parent dirs.
func filesLayer(files map[string]string) []tarFile {
	names := slices.Sorted(maps.Keys(files))
	var out []tarFile
	dirs := map[string]bool{}
	for _, name := range names {
		for d := path.Dir(name); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			out = append(out, tarFile{name: d + "/", dir: true})
		}
		out = append(out, tarFile{name: name, data: []byte(files[name]), mode: 0o644})
	}
	// Parents before children: a dir's name sorts before its entries'.
	slices.SortStableFunc(out, func(a, b tarFile) int { return strings.Compare(a.name, b.name) })
	return out
}

type tarFile struct {
	name, link string
	data       []byte
	mode       int64
	dir        bool
}

func makeTar(files []tarFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(f.data))}
		switch {
		case f.dir:
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode, h.Size = tar.TypeSymlink, f.link, 0o777, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Size > 0 {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func compress(raw []byte, opts ImageOptions) ([]byte, string, error) {
	var buf bytes.Buffer
	var w io.WriteCloser
	var mt string
	var err error
	if opts.Zstd {
		w, err = zstd.NewWriter(&buf)
		mt = ocispec.MediaTypeImageLayerZstd
		if opts.Docker {
			mt = MediaTypeDockerLayerZstd
		}
	} else {
		w = gzip.NewWriter(&buf)
		mt = ocispec.MediaTypeImageLayerGzip
		if opts.Docker {
			mt = MediaTypeDockerLayerGzip
		}
	}
	if err != nil {
		return nil, "", err
	}
	if _, err := w.Write(raw); err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), mt, nil
}

// PutBlob uploads b to repo (monolithic POST with the digest), with the
// fixture's own credentials.
func (r *Registry) PutBlob(ctx context.Context, repo string, b Blob) error {
	resp, err := r.do(ctx, repo, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(b.Desc.Digest.String()), "application/octet-stream", b.Data)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted {
		// The registry wants the data in a PUT to the upload location.
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			return err
		}
		q := loc.Query()
		q.Set("digest", b.Desc.Digest.String())
		loc.RawQuery = q.Encode()
		resp2, err := r.do(ctx, repo, http.MethodPut, loc.String(), "application/octet-stream", b.Data)
		if err != nil {
			return err
		}
		defer resp2.Body.Close()
		resp = resp2
	}
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("put blob %s in %s: %s: %s", b.Desc.Digest, repo, resp.Status, body)
	}
	return nil
}

// PutManifest stores m in repo under tag (or its digest when tag is "").
func (r *Registry) PutManifest(ctx context.Context, repo, tag string, m Blob) error {
	if tag == "" {
		tag = m.Desc.Digest.String()
	}
	resp, err := r.do(ctx, repo, http.MethodPut, "/v2/"+repo+"/manifests/"+tag, m.Desc.MediaType, m.Data)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("put manifest %s:%s: %s: %s", repo, tag, resp.Status, body)
	}
	return nil
}

// PushImage uploads img's blobs and its manifest under tag ("" for by
// digest only).
func (r *Registry) PushImage(ctx context.Context, repo, tag string, img *Image) error {
	for _, b := range img.Blobs() {
		if err := r.PutBlob(ctx, repo, b); err != nil {
			return err
		}
	}
	return r.PutManifest(ctx, repo, tag, img.Manifest)
}

// PushIndex uploads every image by digest and the index under tag.
func (r *Registry) PushIndex(ctx context.Context, repo, tag string, index Blob, images ...*Image) error {
	for _, img := range images {
		if err := r.PushImage(ctx, repo, "", img); err != nil {
			return err
		}
	}
	return r.PutManifest(ctx, repo, tag, index)
}

// GetBlob reads a blob back with the fixture's own credentials (to check
// what a push stored).
func (r *Registry) GetBlob(ctx context.Context, repo string, d digest.Digest) ([]byte, error) {
	resp, err := r.do(ctx, repo, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get blob %s from %s: %s", d, repo, resp.Status)
	}
	return io.ReadAll(resp.Body)
}
