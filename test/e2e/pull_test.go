package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// pullPlugins: native and overlay snapshotters (native the default), the
// local content store, and a docker resolver block (appended per test).
const pullPlugins = `
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}
plugin "snapshotter" "overlay" {
  path = "keel-snapshotter-overlay"
  config {
    mount_options = ["index=off"]
  }
}
default_snapshotter = "native"
plugin "content" "local" {
  path = "keel-content-local"
}
`

// startPullKeeld starts keeld with pullPlugins and a resolver that reaches
// hosts over plain HTTP.
func startPullKeeld(t *testing.T, resolverCfg string) *keeld {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to mount snapshots")
	}
	block, err := resolverPlugin(json.RawMessage(resolverCfg))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	return e.startWith(t, e.config(t, pullPlugins+block))
}

func plainHTTP(hosts ...string) string {
	var parts []string
	for _, h := range hosts {
		parts = append(parts, fmt.Sprintf("%q: {\"plain_http\": true}", h))
	}
	return `{"retries": 0, "stall_timeout": "5m", "host": {` + strings.Join(parts, ", ") + `}}`
}

// checkRootfs mounts a view of chain in snapshotter sn and checks that
// each of files exists in it.
func checkRootfs(t *testing.T, k *keeld, c *client.Client, sn string, chain digest.Digest, files ...string) {
	t.Helper()
	ctx, release := leased(t, c)
	defer release()
	s := c.SnapshotService(sn)
	key := "check-" + chain.Encoded()[:12]
	mounts, err := s.View(ctx, key, chain.String())
	if err != nil {
		t.Fatalf("view of %s in %s: %v", chain, sn, err)
	}
	defer s.Remove(context.WithoutCancel(ctx), key)
	dir := mountDir(t, k.env, sn+"-"+chain.Encoded()[:12])
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer unmount(t, dir)
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s snapshot %s: %v", sn, chain, err)
		}
	}
}

// chainOf is the top chain id of img.
func chainOf(t *testing.T, img *registry.Image) digest.Digest {
	t.Helper()
	var cfg ocispec.Image
	if err := json.Unmarshal(img.Config.Data, &cfg); err != nil {
		t.Fatal(err)
	}
	return identity.ChainID(cfg.RootFS.DiffIDs)
}

// TestPull pulls a single-platform image onto native with the CLI and a
// two-platform index onto overlay with the client; checks the records,
// the gc.ref labels, the unpacked rootfs, a second pull that fetches and
// unpacks nothing, and --no-unpack --all-platforms.
func TestPull(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	arch := runtime.GOARCH
	single, err := registry.BuildImage(registry.ImageOptions{Arch: arch})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "e2e/busybox", "v1", single); err != nil {
		t.Fatal(err)
	}
	other := "arm64"
	if arch == "arm64" {
		other = "amd64"
	}
	mine, err := registry.BuildImage(registry.ImageOptions{Arch: arch, Zstd: true, Extra: []byte("mine\n")})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := registry.BuildImage(registry.ImageOptions{Arch: other, Extra: []byte("theirs\n")})
	if err != nil {
		t.Fatal(err)
	}
	index, err := registry.BuildIndex(false, theirs, mine)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushIndex(t.Context(), "e2e/multi", "v1", index, theirs, mine); err != nil {
		t.Fatal(err)
	}
	k := startPullKeeld(t, plainHTTP(reg.Host))
	ctx := t.Context()
	c := k.client(t, "default")

	// Single platform onto native, with the CLI (no TTY: lines).
	ref := reg.Host + "/e2e/busybox:v1"
	out := k.ok("image", "pull", ref)
	for _, l := range single.Layers {
		if !strings.Contains(out, l.Desc.Digest.Encoded()[:12]+" layer 0 unpacked: native snapshot") {
			t.Errorf("keel image pull: no unpacked line for %s:\n%s", l.Desc.Digest, out)
		}
	}
	if !strings.Contains(out, "pulled "+ref+" "+single.Manifest.Desc.Digest.String()) {
		t.Errorf("keel image pull: no final line:\n%s", out)
	}
	img, err := c.GetImage(ctx, ref)
	if err != nil || img.Target.Digest != single.Manifest.Desc.Digest {
		t.Fatalf("image record: %+v, %v", img, err)
	}
	checkRootfs(t, k, c, "native", chainOf(t, single), "bin/busybox", "bin/sh")
	cs := c.ContentStore()
	info, err := cs.Info(ctx, single.Manifest.Desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels[refContent+".config"] != single.Config.Desc.Digest.String() || info.Labels[refContent+".l.0"] != single.Layers[0].Desc.Digest.String() {
		t.Errorf("manifest labels: %v", info.Labels)
	}
	if info, err := cs.Info(ctx, single.Config.Desc.Digest); err != nil || info.Labels[refSnapshot+"native"] != chainOf(t, single).String() {
		t.Errorf("config labels: %+v, %v", info, err)
	}
	// No pull lease is left behind.
	if ls, err := c.ListLeases(ctx); err != nil || len(ls) != 0 {
		t.Errorf("leases after a pull: %+v, %v", ls, err)
	}

	// Again: nothing fetched, nothing unpacked; -q prints the digest.
	out = k.ok("image", "pull", ref)
	if strings.Contains(out, "downloading") || strings.Contains(out, " unpacked:") || !strings.Contains(out, " present ") {
		t.Errorf("second pull fetched or unpacked:\n%s", out)
	}
	if q := k.ok("image", "pull", "-q", ref); q != single.Manifest.Desc.Digest.String()+"\n" {
		t.Errorf("keel image pull -q: %q", q)
	}

	// The index onto overlay, through the client, for this host: the
	// matching manifest only, its zstd layers unpacked.
	if !overlayUsable(t, k.env.root) {
		return
	}
	mref := reg.Host + "/e2e/multi:v1"
	var events []client.PullProgress
	mimg, err := c.Pull(ctx, mref, client.WithPullUnpack, client.WithPullSnapshotter("overlay"),
		client.WithPullProgress(func(p client.PullProgress) { events = append(events, p) }))
	if err != nil {
		t.Fatal(err)
	}
	if mimg.Target.Digest != index.Desc.Digest {
		t.Fatalf("index image target %s, want %s", mimg.Target.Digest, index.Desc.Digest)
	}
	var unpacked []digest.Digest
	for _, e := range events {
		if e.Layer != nil {
			unpacked = append(unpacked, e.Layer.ChainID)
			if e.Layer.Snapshotter != "overlay" {
				t.Errorf("layer unpacked into %q", e.Layer.Snapshotter)
			}
		}
		if e.Blob != nil && e.Blob.Desc.Digest == theirs.Manifest.Desc.Digest {
			t.Errorf("the other platform's manifest was fetched")
		}
	}
	if len(unpacked) != 2 || unpacked[1] != chainOf(t, mine) {
		t.Errorf("layers unpacked %v, want 2 ending in %s", unpacked, chainOf(t, mine))
	}
	checkRootfs(t, k, c, "overlay", chainOf(t, mine), "bin/busybox", "extra")
	if _, err := cs.Info(ctx, theirs.Manifest.Desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("other platform's manifest stored: %v", err)
	}

	// The other platform by --platform, content only, every platform.
	c2 := k.client(t, "all")
	if _, err := c2.Pull(ctx, mref, client.WithAllPlatforms); err != nil {
		t.Fatal(err)
	}
	cs2 := c2.ContentStore()
	for _, im := range []*registry.Image{mine, theirs} {
		for _, b := range append(im.Blobs(), im.Manifest) {
			if _, err := cs2.Info(ctx, b.Desc.Digest); err != nil {
				t.Errorf("--all-platforms: %s: %v", b.Desc.Digest, err)
			}
		}
	}
	n := 0
	c2.SnapshotService("native").Walk(ctx, func(context.Context, snapshot.Info) error { n++; return nil })
	if n != 0 {
		t.Errorf("pull without unpack made %d snapshots", n)
	}
	line := oneLineError(t, k.keel("-n", "all", "image", "pull", "--platform", "linux/s390x", mref))
	if !strings.Contains(line, "no manifest for the platform") || !strings.Contains(line, "not found") {
		t.Errorf("pull of a missing platform: %q", line)
	}
	out = k.ok("-n", "all", "image", "pull", "--platform", "linux/"+other, mref)
	if !strings.Contains(out, "layer 1 unpacked") {
		t.Errorf("pull --platform linux/%s:\n%s", other, out)
	}
	checkRootfs(t, k, c2, "native", chainOf(t, theirs), "bin/busybox", "extra")
}

// overlayUsable tells whether dir can host overlay upper dirs, skipping
// (failing, strict) the rest of the test when not.
func overlayUsable(t *testing.T, dir string) bool {
	t.Helper()
	if err := mount.CheckOverlay(dir); err != nil {
		testkit.SkipOrFail(t, "overlay unusable on %s: %v", dir, err)
		return false
	}
	return true
}

// tarEntry is one entry of a crafted layer.
type tarEntry struct {
	name, link string
	typ        byte
	data       []byte
}

// layerOf makes a gzip layer of entries and returns it with its diff id.
func layerOf(t *testing.T, entries ...tarEntry) (registry.Blob, digest.Digest) {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), ModTime: time.Unix(0, 0)}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(raw.Bytes())
	zw.Close()
	return registry.NewBlob(ocispec.MediaTypeImageLayerGzip, gz.Bytes()), digest.FromBytes(raw.Bytes())
}

// pushLayers pushes an image of layers with diffIDs (which may lie) as
// repo:tag and returns its manifest.
func pushLayers(t *testing.T, reg *registry.Registry, repo string, layers []registry.Blob, diffIDs []digest.Digest) registry.Blob {
	t.Helper()
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cb := registry.NewBlob(ocispec.MediaTypeImageConfig, cfg)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cb.Desc}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.Desc)
	}
	mb, _ := json.Marshal(m)
	man := registry.NewBlob(ocispec.MediaTypeImageManifest, mb)
	for _, b := range append([]registry.Blob{cb}, layers...) {
		if err := reg.PutBlob(t.Context(), repo, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.PutManifest(t.Context(), repo, "v1", man); err != nil {
		t.Fatal(err)
	}
	return man
}

// lyingProxy forwards to a registry, flipping a byte of any response
// whose path ends in one of the digests it was told to spoil.
func lyingProxy(t *testing.T, upstream string, spoil ...digest.Digest) string {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodGet || !slices.ContainsFunc(spoil, func(d digest.Digest) bool {
			return strings.HasSuffix(resp.Request.URL.Path, d.String())
		}) {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestPullRefusesBadImages: layers with an escaping entry, a diff id the
// config does not list, a layer and a manifest a lying registry spoils.
// Each pull fails naming the problem, leaves no image record and no
// committed snapshot for the bad layer (the good one below it may stay
// until GC), and a collection then frees everything.
func TestPullRefusesBadImages(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	good, goodDiff := layerOf(t, tarEntry{name: "ok/", typ: tar.TypeDir}, tarEntry{name: "ok/file", typ: tar.TypeReg, data: []byte("fine\n")})
	escape, escapeDiff := layerOf(t, tarEntry{name: "../../escaped", typ: tar.TypeReg, data: []byte("out\n")})
	linkOut, linkOutDiff := layerOf(t, tarEntry{name: "l", typ: tar.TypeSymlink, link: "/"}, tarEntry{name: "l/tmp/escaped", typ: tar.TypeReg, data: []byte("out\n")})
	hardOut, hardOutDiff := layerOf(t, tarEntry{name: "h", typ: tar.TypeLink, link: "../../../etc/passwd"})
	spoiled, spoiledDiff := layerOf(t, tarEntry{name: "spoiled", typ: tar.TypeReg, data: bytes.Repeat([]byte("x"), 1<<20)})

	type tc struct {
		name   string
		layers []registry.Blob
		diffs  []digest.Digest
		spoil  func(man registry.Blob) []digest.Digest
		want   string // in the error
		bad    int    // index of the refused layer, -1 for none
	}
	cases := []tc{
		{"EscapingPath", []registry.Blob{good, escape}, []digest.Digest{goodDiff, escapeDiff}, nil, "escaped", 1},
		{"SymlinkOut", []registry.Blob{good, linkOut}, []digest.Digest{goodDiff, linkOutDiff}, nil, "l/tmp/escaped", 1},
		{"HardlinkOut", []registry.Blob{good, hardOut}, []digest.Digest{goodDiff, hardOutDiff}, nil, "passwd", 1},
		{"DiffIDMismatch", []registry.Blob{good, spoiled}, []digest.Digest{goodDiff, digest.FromString("not it")}, nil, "diff id", 1},
		{"SpoiledLayer", []registry.Blob{good, spoiled}, []digest.Digest{goodDiff, spoiledDiff},
			func(registry.Blob) []digest.Digest { return []digest.Digest{spoiled.Desc.Digest} }, spoiled.Desc.Digest.String(), 1},
		{"SpoiledManifest", []registry.Blob{good}, []digest.Digest{goodDiff},
			func(man registry.Blob) []digest.Digest { return []digest.Digest{man.Desc.Digest} }, "digest", -1},
	}
	var hosts []string
	proxies := map[string]string{}
	mans := map[string]registry.Blob{}
	for _, c := range cases {
		repo := "e2e/bad-" + strings.ToLower(c.name)
		mans[c.name] = pushLayers(t, reg, repo, c.layers, c.diffs)
		host := reg.Host
		if c.spoil != nil {
			host = lyingProxy(t, reg.URL(), c.spoil(mans[c.name])...)
			hosts = append(hosts, host)
		}
		proxies[c.name] = host
	}
	k := startPullKeeld(t, plainHTTP(append(hosts, reg.Host)...))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := k.with(t)
			ns := strings.ToLower(c.name)
			cl := k.client(t, ns)
			ctx := t.Context()
			ref := proxies[c.name] + "/e2e/bad-" + ns + ":v1"
			line := oneLineError(t, k.keel("-n", ns, "image", "pull", ref))
			if !strings.Contains(line, c.want) {
				t.Errorf("error %q does not name %q", line, c.want)
			}
			t.Logf("%s: %s", c.name, line)
			if imgs, err := cl.ListImages(ctx); err != nil || len(imgs) != 0 {
				t.Errorf("images after a refused pull: %+v, %v", imgs, err)
			}
			sn := cl.SnapshotService("native")
			if c.bad >= 0 {
				chain := identity.ChainID(c.diffs[:c.bad+1])
				if _, err := sn.Stat(ctx, chain.String()); !errdefs.IsNotFound(err) {
					t.Errorf("snapshot of the refused layer: %v", err)
				}
			}
			var active []string
			sn.Walk(ctx, func(_ context.Context, i snapshot.Info) error {
				if i.Kind != snapshot.KindCommitted {
					active = append(active, i.Name)
				}
				return nil
			})
			if len(active) != 0 {
				t.Errorf("snapshots left active: %v", active)
			}
			if _, err := cl.GarbageCollect(ctx); err != nil {
				t.Fatal(err)
			}
			var left []string
			sn.Walk(ctx, func(_ context.Context, i snapshot.Info) error { left = append(left, "snapshot "+i.Name); return nil })
			cl.ContentStore().Walk(ctx, func(i content.Info) error { left = append(left, "blob "+i.Digest.String()); return nil })
			if len(left) != 0 {
				t.Errorf("left after GC: %v", left)
			}
		})
	}
}

// stalledBigLayer pushes repo:v1, one 24 MiB random layer, to a registry
// and returns the layer, its diff id and a proxy to the registry that
// stalls after 10 MiB of blobs, until released.
func stalledBigLayer(t *testing.T, repo string) (registry.Blob, digest.Digest, *stallProxy, string) {
	t.Helper()
	reg := startRegistry(t)
	big, bigDiff := layerOf(t, tarEntry{name: "big", typ: tar.TypeReg, data: randomBytes(t, 24<<20)})
	pushLayers(t, reg, repo, []registry.Blob{big}, []digest.Digest{bigDiff})
	proxy, host := newStallProxy(t, reg.URL(), 10<<20)
	return big, bigDiff, proxy, host
}

// TestPullResumesAfterPluginKill pulls a one-layer image whose 24 MiB
// layer the registry holds mid-blob, SIGKILLs the resolver plugin, and
// pulls again once keeld has restarted it: the layer is asked for only
// from where the partial ingest stopped, then unpacked from the store.
func TestPullResumesAfterPluginKill(t *testing.T) {
	t.Parallel()
	big, bigDiff, proxy, proxyHost := stalledBigLayer(t, "e2e/bigpull")
	k := startPullKeeld(t, `{"parallel": 2, "part_size": 4194304, "stall_timeout": "5m", "host": {"`+proxyHost+`": {"plain_http": true}}}`)
	c := k.client(t, "default")
	// A lease of the test's own keeps what the first pull stored.
	l, err := c.CreateLease(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx := client.WithLease(t.Context(), l.ID)
	ref := proxyHost + "/e2e/bigpull:v1"

	pulled := make(chan error, 1)
	go func() {
		_, err := c.Pull(ctx, ref, client.WithPullUnpack)
		pulled <- err
	}()
	select {
	case <-proxy.stalled:
	case err := <-pulled:
		t.Fatalf("first pull ended before the stall: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the registry proxy never stalled")
	}
	pid := k.plugins()["resolver.docker"].Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pulled:
		if err == nil {
			t.Fatal("the first pull succeeded though its plugin was killed mid-layer")
		}
		t.Logf("first pull: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first pull did not end after its plugin was killed")
	}
	cs := c.ContentStore()
	st, err := cs.Status(ctx, ingestRef(big.Desc))
	if err != nil || st.Offset <= 0 || st.Offset >= big.Desc.Size {
		t.Fatalf("partial ingest: %+v, %v", st, err)
	}
	if _, err := c.SnapshotService("").Stat(ctx, bigDiff.String()); !errdefs.IsNotFound(err) {
		t.Fatalf("layer snapshot after a killed pull: %v", err)
	}
	eventually(t, 30*time.Second, "resolver plugin restarted", func() error {
		p := k.plugins()["resolver.docker"]
		if p.Pid == pid || p.State != "running" {
			return fmt.Errorf("pid %d, state %s", p.Pid, p.State)
		}
		return nil
	})
	proxy.Release()
	var resumed int64
	img, err := c.Pull(ctx, ref, client.WithPullUnpack, client.WithPullProgress(func(p client.PullProgress) {
		if p.Blob != nil && p.Blob.Desc.Digest == big.Desc.Digest && p.Blob.ResumedFrom > 0 {
			resumed = p.Blob.ResumedFrom
		}
	}))
	if err != nil {
		t.Fatalf("second pull: %v", err)
	}
	if resumed != st.Offset {
		t.Errorf("second pull resumed the layer from %d, want %d", resumed, st.Offset)
	}
	if starts := proxy.startsAfterRelease(); len(starts) == 0 || slices.Min(starts) != st.Offset {
		t.Errorf("second pull asked the registry from %v, want from %d on", starts, st.Offset)
	}
	if img.Name != ref {
		t.Errorf("image %q, want %q", img.Name, ref)
	}
	checkRootfs(t, k, c, "native", bigDiff, "big")
}
