package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// pullLayers are the trees the pull benchmark's image is made of, one
// layer each, each cut at pullLayerBudget bytes of file contents: this
// machine's own files, so nothing is downloaded.
var pullLayers = []string{"/usr/share", "/usr/lib", "/usr/include:/usr/bin:/usr/sbin"}

const pullLayerBudget = 45 << 20

// pullImage is the benchmark image, cached on disk between runs.
type pullImage struct {
	Manifest registry.Blob
	Config   registry.Blob
	Layers   []registry.Blob
	Files    int
	RawSize  int64
}

// BenchmarkFigurePull: fetch only, unpack only and cold pull+unpack of a
// 3-layer image of this machine's files (about 52 MiB gzip, 130 MiB
// unpacked; see buildPullImage) from a loopback docker-registry onto
// overlay, through each side's CLI, ms:
//
//   - fetch only (registry → store): `keel image pull --no-unpack` vs
//     `ctr content fetch`, each into a fresh, empty daemon; the floor is
//     curl of the same blobs (manifest, config, layers), all at once,
//     to /dev/null;
//   - unpack only: then, on the same daemons, `keel image unpack` vs
//     `ctr images pull` (every blob is stored: it resolves the tag on the
//     registry and unpacks; ctr 1.6 has no unpack command); the floor is
//     GNU `tar -xzf` of the three layers in order into an empty directory
//     on the same disk;
//   - cold pull+unpack: `keel image pull` vs `ctr images pull` into
//     another fresh, empty daemon.
//
// keel runs keeld with the docker resolver, the local content store and
// the overlay snapshotter; containerd its default plugins (CRI off), the
// overlayfs snapshotter. The registry's blobs are in the page cache for
// both sides; dirty pages are written back before each timing.
func BenchmarkFigurePull(b *testing.B) {
	ctrBins(b)
	ctx := context.Background()
	img, err := loadPullImage(b)
	if err != nil {
		b.Fatal(err)
	}
	var gz int64
	for _, l := range img.Layers {
		gz += l.Desc.Size
	}
	b.Logf("image: %d layers, %.1f MiB gzip, %.1f MiB unpacked, %d files", len(img.Layers), float64(gz)/(1<<20), float64(img.RawSize)/(1<<20), img.Files)
	reg, err := registry.Start(b, registry.Options{})
	if errors.Is(err, registry.ErrNoRegistry) {
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	const repo = "bench/pull"
	for _, l := range append([]registry.Blob{img.Config}, img.Layers...) {
		if err := reg.PutBlob(ctx, repo, l); err != nil {
			b.Fatal(err)
		}
	}
	if err := reg.PutManifest(ctx, repo, "v1", img.Manifest); err != nil {
		b.Fatal(err)
	}
	ref := reg.Host + "/" + repo + ":v1"
	// curl's URLs, which also warm the registry's page cache for both
	// sides alike; GNU tar's layer files.
	curlArgs := []string{"-sSf", "--parallel", "--parallel-max", "16", "-H", "Accept: " + ocispec.MediaTypeImageManifest, reg.URL() + "/v2/" + repo + "/manifests/v1", "-o", "/dev/null"}
	work := b.TempDir()
	var layerFiles []string
	for i, l := range append([]registry.Blob{img.Config}, img.Layers...) {
		curlArgs = append(curlArgs, reg.URL()+"/v2/"+repo+"/blobs/"+l.Desc.Digest.String(), "-o", "/dev/null")
		if i > 0 {
			f := filepath.Join(work, fmt.Sprintf("layer-%d.tar.gz", i))
			if err := os.WriteFile(f, l.Data, 0o644); err != nil {
				b.Fatal(err)
			}
			layerFiles = append(layerFiles, f)
		}
	}
	if out, err := exec.CommandContext(ctx, "curl", curlArgs...).CombinedOutput(); err != nil {
		b.Fatalf("curl (apt-get install curl): %v: %s", err, out)
	}

	resolver := fmt.Sprintf("plugin \"resolver\" \"docker\" {\n  path = \"keel-resolver-docker\"\n  config {\n    host %q { plain_http = true }\n  }\n}\n", reg.Host)
	keelDaemon := func(ctx context.Context) (*daemon, error) {
		return startDaemonPlugins(ctx, false, benchSnapshotter{name: "overlay"}, resolver)
	}
	figs := []figure{
		{order: 20, name: fmt.Sprintf("fetch only (registry → store), 3-layer %.0f MiB image", float64(gz)/(1<<20)), unit: "ms", ref: "curl"},
		{order: 80, name: fmt.Sprintf("cold pull+unpack, 3-layer %.0f MiB image", float64(img.RawSize)/(1<<20)), unit: "ms"},
		{order: 90, name: "unpack only", unit: "ms", ref: "GNU tar -xzf"},
	}
	comparePairs(b, figs, sides{
		keel: func(ctx context.Context, _ int) (_ []float64, err error) {
			d, err := keelDaemon(ctx)
			if err != nil {
				return nil, err
			}
			fetch, err := timed(func() error { _, err := d.keel(ctx, "image", "pull", "-q", "--no-unpack", ref); return err })
			if err != nil {
				d.stop()
				return nil, err
			}
			unpack, err := timed(func() error { _, err := d.keel(ctx, "image", "unpack", ref); return err })
			d.stop()
			if err != nil {
				return nil, err
			}
			if d, err = keelDaemon(ctx); err != nil {
				return nil, err
			}
			defer d.stop()
			pull, err := timed(func() error { _, err := d.keel(ctx, "image", "pull", "-q", ref); return err })
			return []float64{fetch, pull, unpack}, err
		},
		containerd: func(ctx context.Context, _ int) ([]float64, error) {
			c, err := startContainerd(ctx, ctrdOptions{})
			if err != nil {
				return nil, err
			}
			fetch, err := timed(func() error { _, err := c.ctr(ctx, "content", "fetch", "--plain-http", ref); return err })
			if err != nil {
				c.stop()
				return nil, err
			}
			unpack, err := timed(func() error {
				_, err := c.ctr(ctx, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref)
				return err
			})
			c.stop()
			if err != nil {
				return nil, err
			}
			if c, err = startContainerd(ctx, ctrdOptions{}); err != nil {
				return nil, err
			}
			defer c.stop()
			pull, err := timed(func() error {
				_, err := c.ctr(ctx, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref)
				return err
			})
			return []float64{fetch, pull, unpack}, err
		},
		ref: func(ctx context.Context, _ int) ([]float64, error) {
			curl, err := timed(func() error {
				out, err := exec.CommandContext(ctx, "curl", curlArgs...).CombinedOutput()
				if err != nil {
					return fmt.Errorf("curl: %v: %s", err, out)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			dir, err := benchDir("tar-bench-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			tar, err := timed(func() error {
				for _, f := range layerFiles {
					if out, err := exec.CommandContext(ctx, "tar", "-xzf", f, "-C", dir).CombinedOutput(); err != nil {
						return fmt.Errorf("tar -xzf %s: %v: %s", f, err, out)
					}
				}
				return nil
			})
			return []float64{curl, math.NaN(), tar}, err
		},
	})
}

// timed runs f after writing back dirty pages (so one timing's writeback
// does not land in the next) and returns how long f took, in ms.
func timed(f func() error) (float64, error) {
	syncDisks()
	start := time.Now()
	err := f()
	return ms(time.Since(start)), err
}

// syncDisks writes back dirty pages so one round's writeback does not
// land in the next; the registry's blobs stay cached (both sides read
// them from memory).
func syncDisks() { syscall.Sync() }

// loadPullImage reads the cached image, or builds and caches it.
func loadPullImage(b *testing.B) (*pullImage, error) {
	cache := os.Getenv("KEEL_BENCH_CACHE")
	if cache == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, err
		}
		cache = filepath.Join(d, "keel-bench")
	}
	dir := filepath.Join(cache, "pull-image-v1")
	var img pullImage
	if data, err := os.ReadFile(filepath.Join(dir, "image.json")); err == nil && json.Unmarshal(data, &img) == nil {
		ok := true
		for _, bl := range append([]*registry.Blob{&img.Config, &img.Manifest}, ptrs(img.Layers)...) {
			d, err := os.ReadFile(filepath.Join(dir, bl.Desc.Digest.Encoded()))
			if err != nil || digest.FromBytes(d) != bl.Desc.Digest {
				ok = false
				break
			}
			bl.Data = d
		}
		if ok {
			return &img, nil
		}
	}
	b.Logf("building the pull image in %s (cached for next runs)", dir)
	built, err := buildPullImage()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, bl := range append([]registry.Blob{built.Config, built.Manifest}, built.Layers...) {
		if err := os.WriteFile(filepath.Join(dir, bl.Desc.Digest.Encoded()), bl.Data, 0o644); err != nil {
			return nil, err
		}
	}
	meta := *built
	meta.Config.Data, meta.Manifest.Data = nil, nil
	meta.Layers = nil
	for _, l := range built.Layers {
		meta.Layers = append(meta.Layers, registry.Blob{Desc: l.Desc})
	}
	data, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	return built, os.WriteFile(filepath.Join(dir, "image.json"), data, 0o644)
}

func ptrs(bs []registry.Blob) []*registry.Blob {
	out := make([]*registry.Blob, len(bs))
	for i := range bs {
		out[i] = &bs[i]
	}
	return out
}

// buildPullImage tars pullLayers (regular files, dirs, symlinks; up to
// pullLayerBudget bytes of contents each), gzips them, and makes the
// config and manifest.
func buildPullImage() (*pullImage, error) {
	img := &pullImage{}
	var diffIDs []digest.Digest
	for _, roots := range pullLayers {
		var raw bytes.Buffer
		tw := tar.NewWriter(&raw)
		var budget int64 = pullLayerBudget
		for _, root := range filepath.SplitList(roots) {
			err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil // unreadable: left out
				}
				if budget <= 0 {
					return filepath.SkipAll
				}
				info, err := d.Info()
				if err != nil {
					return nil
				}
				h, err := tar.FileInfoHeader(info, "")
				if err != nil {
					return nil // sockets and the like
				}
				if info.Mode()&fs.ModeSymlink != 0 {
					if h.Linkname, err = os.Readlink(path); err != nil {
						return nil
					}
				}
				if !info.Mode().IsRegular() && !info.IsDir() && info.Mode()&fs.ModeSymlink == 0 {
					return nil
				}
				h.Name = path[1:]
				if info.IsDir() {
					h.Name += "/"
				}
				h.Uname, h.Gname = "", ""
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				if info.Mode().IsRegular() {
					f, err := os.Open(path)
					if err != nil {
						return err
					}
					n, err := io.Copy(tw, f)
					f.Close()
					if err != nil {
						return err
					}
					budget -= n
					img.Files++
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		diffIDs = append(diffIDs, digest.FromBytes(raw.Bytes()))
		img.RawSize += int64(raw.Len())
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(raw.Bytes()); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		img.Layers = append(img.Layers, registry.NewBlob(ocispec.MediaTypeImageLayerGzip, gz.Bytes()))
	}
	cfg, err := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	if err != nil {
		return nil, err
	}
	img.Config = registry.NewBlob(ocispec.MediaTypeImageConfig, cfg)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: img.Config.Desc}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, l.Desc)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img.Manifest = registry.NewBlob(ocispec.MediaTypeImageManifest, mb)
	return img, nil
}
