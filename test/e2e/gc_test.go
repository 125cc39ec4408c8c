package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// gc.ref labels (containerd's names), as a pull writes them.
const (
	refContent  = "containerd.io/gc.ref.content"
	refSnapshot = "containerd.io/gc.ref.snapshot."
)

// testImage is a tiny OCI image written to a content store: index ->
// manifest -> config + one layer, tied by gc.ref labels.
type testImage struct {
	index, manifest, config, layer ocispec.Descriptor
}

func writeBlob(t *testing.T, ctx context.Context, cs content.Store, mt string, data []byte, labels map[string]string) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}
	err := content.WriteBlob(ctx, cs, "w-"+desc.Digest.Encoded()[:12], bytes.NewReader(data), desc, content.WithLabels(labels))
	if err != nil && !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return desc
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildImage writes layer, then config (naming snapshot chain in
// snapshotter native when chain is set), manifest and index.
func buildImage(t *testing.T, ctx context.Context, cs content.Store, layer []byte, chain string) testImage {
	t.Helper()
	var im testImage
	im.layer = writeBlob(t, ctx, cs, ocispec.MediaTypeImageLayer, layer, nil)
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{im.layer.Digest}}}
	var cfgLabels map[string]string
	if chain != "" {
		cfgLabels = map[string]string{refSnapshot + "native": chain}
	}
	im.config = writeBlob(t, ctx, cs, ocispec.MediaTypeImageConfig, mustJSON(t, cfg), cfgLabels)
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: im.config, Layers: []ocispec.Descriptor{im.layer}}
	man.SchemaVersion = 2
	im.manifest = writeBlob(t, ctx, cs, ocispec.MediaTypeImageManifest, mustJSON(t, man), map[string]string{
		refContent + ".config": im.config.Digest.String(), refContent + ".l.0": im.layer.Digest.String()})
	md := im.manifest
	md.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion = 2
	im.index = writeBlob(t, ctx, cs, ocispec.MediaTypeImageIndex, mustJSON(t, idx), map[string]string{
		refContent + ".m.0": im.manifest.Digest.String()})
	return im
}

// commitSnapshot prepares and commits key in the default snapshotter.
func commitSnapshot(t *testing.T, ctx context.Context, c *client.Client, key string) {
	t.Helper()
	sn := c.SnapshotService("")
	if _, err := sn.Prepare(ctx, key+"-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := sn.Commit(ctx, key, key+"-a"); err != nil {
		t.Fatal(err)
	}
}

func gcNames(objs []client.GCObject) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Kind+" "+o.Namespace+":"+o.Name)
	}
	slices.Sort(out)
	return out
}

func sortedStrings(s ...string) []string { slices.Sort(s); return s }

// TestGC: image records, leases and two namespaces through keeld; keel gc
// frees exactly what is unreferenced and explains itself on a dry run.
func TestGC(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	ctx := context.Background()
	a, b := k.client(t, "a"), k.client(t, "b")
	csA, csB := a.ContentStore(), b.ContentStore()

	layer := randomBytes(t, 64<<10)
	commitSnapshot(t, ctx, a, "chain1")
	img := buildImage(t, ctx, csA, layer, "chain1")
	if _, err := a.CreateImage(ctx, client.Image{Name: "img:1", Target: img.index}); err != nil {
		t.Fatal(err)
	}
	loose := writeBlob(t, ctx, csA, "", []byte("loose"), nil)
	commitSnapshot(t, ctx, a, "loose")
	// b holds the same layer under a lease made with the CLI.
	if id := strings.TrimSpace(k.ok("-n", "b", "lease", "create", "--id", "hold")); id != "hold" {
		t.Fatalf("lease create printed %q", id)
	}
	writeBlob(t, client.WithLease(ctx, "hold"), csB, "", layer, nil)
	leased := writeBlob(t, client.WithLease(ctx, "hold"), csB, "", []byte("leased"), nil)

	var rows []struct {
		Name      string   `json:"Name"`
		Size      int64    `json:"size"`
		Platforms []string `json:"platforms"`
	}
	k.okJSON(&rows, "-n", "a", "image", "ls")
	wantSize := img.index.Size + img.manifest.Size + img.config.Size + img.layer.Size
	if len(rows) != 1 || rows[0].Name != "img:1" || rows[0].Size != wantSize || !slices.Equal(rows[0].Platforms, []string{"linux/amd64"}) {
		t.Errorf("image ls: %+v, want size %d linux/amd64", rows, wantSize)
	}
	var insp struct {
		Manifests []struct {
			Config json.RawMessage      `json:"config"`
			Layers []ocispec.Descriptor `json:"layers"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal([]byte(k.ok("-n", "a", "image", "inspect", "img:1")), &insp); err != nil {
		t.Fatal(err)
	}
	if len(insp.Manifests) != 1 || len(insp.Manifests[0].Layers) != 1 || insp.Manifests[0].Layers[0].Digest != img.layer.Digest ||
		!bytes.Contains(insp.Manifests[0].Config, []byte(img.layer.Digest)) {
		t.Errorf("image inspect: %+v", insp)
	}

	wantFreed := sortedStrings("content a:"+loose.Digest.String(), "snapshot a:native/loose")
	var dry client.GCReport
	k.okJSON(&dry, "gc", "--dry-run")
	if got := gcNames(dry.Removed); !slices.Equal(got, wantFreed) {
		t.Errorf("dry run removes %v, want %v", got, wantFreed)
	}
	roots := map[string]string{}
	for _, o := range dry.Kept {
		roots[o.Namespace+":"+o.Name] = o.Root
	}
	for name, root := range map[string]string{
		"a:" + img.layer.Digest.String(): "image img:1", "a:native/chain1": "image img:1",
		"b:" + img.layer.Digest.String(): "lease hold", "b:" + leased.Digest.String(): "lease hold",
	} {
		if roots[name] != root {
			t.Errorf("%s kept by %q, want %q", name, roots[name], root)
		}
	}
	if out := k.ok("gc", "--dry-run"); !strings.Contains(out, "kept by image img:1") || !strings.Contains(out, "would remove 2 objects") {
		t.Errorf("dry run table:\n%s", out)
	}

	var rep client.GCReport
	k.okJSON(&rep, "gc")
	if got := gcNames(rep.Removed); !slices.Equal(got, wantFreed) {
		t.Errorf("gc removed %v, want %v", got, wantFreed)
	}
	if _, err := csA.Info(ctx, loose.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("loose blob: %v", err)
	}
	if _, err := a.SnapshotService("").Stat(ctx, "chain1"); err != nil {
		t.Errorf("image's snapshot: %v", err)
	}

	// A tag keeps the graph when the first name goes.
	k.ok("-n", "a", "image", "tag", "img:1", "img:2")
	k.ok("-n", "a", "image", "rm", "--sync", "img:1")
	if _, err := csA.Info(ctx, img.layer.Digest); err != nil {
		t.Errorf("layer after rm of one tag: %v", err)
	}
	k.ok("-n", "a", "image", "rm", "--sync", "img:2")
	for _, d := range []ocispec.Descriptor{img.index, img.manifest, img.config, img.layer} {
		if _, err := csA.Info(ctx, d.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("a's %s after rm: %v", d.MediaType, err)
		}
	}
	// b's copy of the layer is kept in the content store.
	ra, err := csB.ReaderAt(ctx, img.layer)
	if err != nil {
		t.Fatalf("b's layer after a's image went: %v", err)
	}
	ra.Close()

	// An expired lease is deleted by the next collection, with what only
	// it held.
	k.ok("-n", "b", "lease", "create", "--id", "short", "--expire", "1s")
	short := writeBlob(t, client.WithLease(ctx, "short"), csB, "", []byte("short-lived"), nil)
	var res []client.LeaseResource
	k.okJSON(&res, "-n", "b", "lease", "resources", "short")
	if !slices.ContainsFunc(res, func(r client.LeaseResource) bool { return r.Type == "content" && r.ID == short.Digest.String() }) {
		t.Errorf("lease resources: %+v", res)
	}
	time.Sleep(1100 * time.Millisecond)
	k.okJSON(&rep, "gc")
	if got, want := gcNames(rep.Removed), sortedStrings("content b:"+short.Digest.String(), "lease b:short"); !slices.Equal(got, want) {
		t.Errorf("gc after expiry removed %v, want %v", got, want)
	}
	if ids := strings.Fields(k.ok("-n", "b", "lease", "ls", "-q")); !slices.Equal(ids, []string{"hold"}) {
		t.Errorf("leases: %v", ids)
	}
	k.ok("-n", "b", "lease", "rm", "--sync", "hold")
	if _, err := csB.Info(ctx, img.layer.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("b's layer after its lease went: %v", err)
	}
	var after client.GCReport
	k.okJSON(&after, "gc", "--dry-run")
	if len(after.Removed) != 0 || len(after.Kept) != 0 {
		t.Errorf("left after everything went: %+v", after)
	}
}

// TestGCCrash: keeld killed between the metadata sweep and the plugin
// deletes loses nothing referenced; what it left is an orphan the next
// collection lists and removes.
func TestGCCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path := e.config(t, defaultPlugins)
	k := spawnEnv(t, e, path, "KEEL_TEST_GC_CRASH=after-sweep")
	k.waitReady()
	ctx := context.Background()
	c := k.client(t, "a")
	commitSnapshot(t, ctx, c, "chain1")
	img := buildImage(t, ctx, c.ContentStore(), randomBytes(t, 4096), "chain1")
	if _, err := c.CreateImage(ctx, client.Image{Name: "img", Target: img.index}); err != nil {
		t.Fatal(err)
	}
	loose := writeBlob(t, ctx, c.ContentStore(), "", []byte("loose"), nil)
	commitSnapshot(t, ctx, c, "loose")

	if r := k.keel("gc"); r.code == 0 {
		t.Fatalf("gc survived the crash hook: %v", r)
	}
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
		t.Fatal("keeld did not die in the middle of gc")
	}

	k = e.startWith(t, path)
	c = k.client(t, "a")
	for _, d := range []ocispec.Descriptor{img.index, img.manifest, img.config, img.layer} {
		ra, err := c.ContentStore().ReaderAt(ctx, d)
		if err != nil {
			t.Fatalf("referenced %s after the crash: %v", d.MediaType, err)
		}
		ra.Close()
	}
	if _, err := c.SnapshotService("").Stat(ctx, "chain1"); err != nil {
		t.Fatalf("referenced snapshot after the crash: %v", err)
	}
	if _, err := c.ContentStore().Info(ctx, loose.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("swept blob's record: %v", err)
	}
	var dry client.GCReport
	k.okJSON(&dry, "gc", "--dry-run")
	var orphans []string
	for _, o := range dry.Removed {
		if o.Namespace != "" || !strings.HasPrefix(o.Reason, "orphan") {
			t.Errorf("not an orphan: %+v", o)
		}
		orphans = append(orphans, o.Kind)
	}
	slices.Sort(orphans)
	if !slices.Equal(orphans, []string{"content", "snapshot"}) {
		t.Errorf("orphans %+v, want the swept blob and snapshot", dry.Removed)
	}
	var rep client.GCReport
	k.okJSON(&rep, "gc")
	if len(rep.Removed) != 2 {
		t.Errorf("gc removed %+v, want the two orphans", rep.Removed)
	}
	k.okJSON(&dry, "gc", "--dry-run")
	if len(dry.Removed) != 0 {
		t.Errorf("orphans left: %+v", dry.Removed)
	}
}

// spawnEnv is env.spawn with extra environment variables for keeld.
func spawnEnv(t *testing.T, e *env, path string, extra ...string) *keeld {
	t.Helper()
	log := strings.TrimSuffix(path, ".hcl") + "-env.log"
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(filepath.Join(binDir, "keeld"), "--config", path)
	cmd.Env = append(os.Environ(), extra...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k := &keeld{t: t, env: e, proc: &proc{cmd: cmd, log: log, done: make(chan struct{})}}
	go func() {
		k.waitErr = cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(func() {
		k.stop(10 * time.Second)
		if t.Failed() {
			k.dumpLog()
		}
	})
	return k
}
