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
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// pullLayers are the trees the pull benchmark's image is made of, one
// layer each, each cut at pullLayerBudget bytes of file contents: this
// machine's own files, so nothing is downloaded.
var pullLayers = []string{"/usr/share", "/usr/lib", "/usr/include:/usr/bin:/usr/sbin"}

const pullLayerBudget = 45 << 20

// pullRounds cold pulls are timed for each side; the median is reported.
const pullRounds = 3

// pullImage is the benchmark image, cached on disk between runs.
type pullImage struct {
	Manifest registry.Blob
	Config   registry.Blob
	Layers   []registry.Blob
	Files    int
	RawSize  int64
}

// BenchmarkPullUnpack: a cold pull and unpack (empty stores every round)
// of a 3-layer image of this machine's files (≥ 100 MiB unpacked, gzip),
// from a loopback docker-registry onto overlay: keel (keeld, the docker
// resolver, the local content store, the overlay snapshotter) and, when
// installed, containerd with ctr (its overlayfs snapshotter) in the same
// run, with the ratio. Median of pullRounds rounds each.
func BenchmarkPullUnpack(b *testing.B) {
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
	// Warm the registry's page cache for both sides alike.
	for _, l := range img.Layers {
		if _, err := reg.GetBlob(ctx, repo, l.Desc.Digest); err != nil {
			b.Fatal(err)
		}
	}

	plugin := fmt.Sprintf("plugin \"resolver\" \"docker\" {\n  path = \"keel-resolver-docker\"\n  config {\n    host %q { plain_http = true }\n  }\n}\n", reg.Host)
	var keel []time.Duration
	for range pullRounds {
		d, err := startDaemonPlugins(ctx, false, benchSnapshotter{name: "overlay"}, plugin)
		if err != nil {
			b.Fatal(err)
		}
		syncDisks()
		start := time.Now()
		_, err = d.client.Pull(ctx, ref, client.WithPullUnpack)
		el := time.Since(start)
		if err != nil {
			d.stop()
			b.Fatalf("keel pull: %v\n%s", err, d.logTail())
		}
		keel = append(keel, el)
		d.stop()
	}
	k := median(keel)
	b.ReportMetric(k.Seconds(), "keel-s")
	b.Logf("keel: cold pull+unpack on overlay %v (rounds %v)", k.Round(time.Millisecond), keel)

	ctrd, err := exec.LookPath("containerd")
	ctrBin, err2 := exec.LookPath("ctr")
	if err != nil || err2 != nil {
		b.Logf("containerd or ctr not installed (apt-get install containerd): the comparison is skipped")
		return
	}
	var ctd []time.Duration
	for range pullRounds {
		el, err := containerdPull(ctx, ctrd, ctrBin, ref)
		if err != nil {
			b.Fatalf("containerd: %v", err)
		}
		ctd = append(ctd, el)
	}
	c := median(ctd)
	b.ReportMetric(c.Seconds(), "containerd-s")
	b.ReportMetric(k.Seconds()/c.Seconds(), "keel/containerd")
	b.Logf("containerd 1.6: cold pull+unpack on overlayfs %v (rounds %v); keel/containerd = %.2f (target ≤ 0.8)", c.Round(time.Millisecond), ctd, k.Seconds()/c.Seconds())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// syncDisks writes back dirty pages so one round's writeback does not
// land in the next; the registry's blobs stay cached (both sides read
// them from memory).
func syncDisks() { syscall.Sync() }

// containerdPull starts containerd in a fresh root, times `ctr images
// pull` (which unpacks into overlayfs), and stops it.
func containerdPull(ctx context.Context, ctrd, ctr, ref string) (time.Duration, error) {
	dir, err := benchDir("ctrd-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		return 0, err
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return 0, err
	}
	defer log.Close()
	cmd := exec.Command(ctrd, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		// Its overlay mounts are gone with the pull's end; unmount
		// anything left before the root is removed.
		exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := exec.CommandContext(ctx, ctr, "-a", sock, "version").Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			return 0, fmt.Errorf("containerd did not answer: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	syncDisks()
	start := time.Now()
	out, err := exec.CommandContext(ctx, ctr, "-a", sock, "-n", "bench", "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref).CombinedOutput()
	el := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("ctr images pull: %v\n%s", err, out)
	}
	return el, nil
}

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
