package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/regstub"
)

// refusedWithin bounds how long keeld may take to refuse a hostile input:
// generous, so that only unbounded work (minutes) fails it.
const refusedWithin = 30 * time.Second

// hostileKeeld starts keeld with pullPlugins, a resolver reaching the stub
// over plain HTTP, and extra config (a limits block, or "").
func hostileKeeld(t *testing.T, stub *regstub.Server, extra string) *keeld {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to mount snapshots")
	}
	block, err := resolverPlugin([]byte(plainHTTP(stub.Host)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	return e.startWith(t, e.config(t, pullPlugins+block+extra))
}

// storeState lists what a namespace holds: images, blobs, ingests and
// snapshots (active ones marked).
func storeState(t *testing.T, ctx context.Context, c *client.Client) []string {
	t.Helper()
	var out []string
	imgs, err := c.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range imgs {
		out = append(out, "image "+i.Name)
	}
	cs := c.ContentStore()
	cs.Walk(ctx, func(i content.Info) error { out = append(out, "blob "+i.Digest.String()); return nil })
	sts, err := cs.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		out = append(out, "ingest "+s.Ref)
	}
	c.SnapshotService("native").Walk(ctx, func(_ context.Context, i snapshot.Info) error {
		out = append(out, fmt.Sprintf("snapshot %s (%v)", i.Name, i.Kind))
		return nil
	})
	return out
}

// tinyLayer is a gzip layer of one file holding its name.
func tinyLayer(name string) regstub.Layer {
	return regstub.NewLayer(regstub.Gzip(regstub.Tar(regstub.File(name, []byte(name)))))
}

// randomLayer is a gzip layer of one file of n random bytes (gzip cannot
// shrink it: its uncompressed size is what it says).
func randomLayer(t *testing.T, name string, n int) regstub.Layer {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return regstub.NewLayer(regstub.Gzip(regstub.Tar(regstub.File(name, b))))
}

// TestHostileImages pulls, from the registry stub, images that would make
// keeld do unbounded work: each is refused quickly with the error class and
// the limit's config key, the layers the refusal needs no bytes of are
// never fetched, no ingest or active snapshot is left behind, and after a
// collection the namespace is empty again (issue 10, item 9).
func TestHostileImages(t *testing.T) {
	t.Parallel()
	stub := regstub.Start(t)

	// 2000 layers, each a real blob: none may be fetched.
	var many []regstub.Layer
	for i := range 2000 {
		many = append(many, tinyLayer(fmt.Sprintf("f%d", i)))
	}
	huge := tinyLayer("huge")
	unknown := tinyLayer("unknown")
	foreign := tinyLayer("foreign")
	bomb := regstub.GzipBomb("zeros", 512<<20)
	big := randomLayer(t, "big", 5<<20)
	half1, half2 := randomLayer(t, "half1", 7<<19), randomLayer(t, "half2", 7<<19)
	withLayers := func(layers ...regstub.Layer) regstub.Image { return regstub.Image{Layers: layers} }
	editLayer := func(img regstub.Image, edit func(*ocispec.Descriptor)) regstub.Image {
		img.EditManifest = func(m *ocispec.Manifest) { edit(&m.Layers[0]) }
		return img
	}
	// An index of 1000 platforms (manifests not stored: none is fetched).
	var plats []ocispec.Descriptor
	for i := range 1000 {
		plats = append(plats, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(strconv.Itoa(i)), Size: 100,
			Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64", OSVersion: strconv.Itoa(i)}})
	}
	idx := regstub.Index(plats...)
	stub.Tag("hostile/platforms", "v1", idx)

	def := hostileKeeld(t, stub, "")
	tight := hostileKeeld(t, stub, `
limits {
  max_layer_unpacked_size = "4MiB"
  max_image_unpacked_size = "6MiB"
}
`)
	layerDigests := func(ls ...regstub.Layer) []digest.Digest {
		var out []digest.Digest
		for _, l := range ls {
			out = append(out, l.Blob.Desc.Digest)
		}
		return out
	}
	cases := []struct {
		name      string
		k         *keeld
		ref       string
		is        func(error) bool
		want      string          // in the error
		untouched []digest.Digest // never fetched
	}{
		{"ManyLayers", def, stub.Push("hostile/many", "v1", withLayers(many...).Build()),
			errdefs.IsFailedPrecondition, "max_layers", layerDigests(many...)},
		{"HugeDescriptor", def, stub.Push("hostile/huge", "v1", editLayer(withLayers(huge), func(d *ocispec.Descriptor) { d.Size = 1e15 }).Build()),
			errdefs.IsFailedPrecondition, "max_layer_size", layerDigests(huge)},
		{"UnknownMediaType", def, stub.Push("hostile/unknown", "v1", editLayer(withLayers(unknown), func(d *ocispec.Descriptor) { d.MediaType = "application/x-not-a-layer" }).Build()),
			errdefs.IsInvalidArgument, "application/x-not-a-layer", layerDigests(unknown)},
		{"ForeignLayer", def, stub.Push("hostile/foreign", "v1", editLayer(withLayers(foreign), func(d *ocispec.Descriptor) {
			d.MediaType = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
		}).Build()), errdefs.IsNotImplemented, "foreign", layerDigests(foreign)},
		{"GzipBomb", def, stub.Push("hostile/bomb", "v1", withLayers(bomb).Build()),
			errdefs.IsFailedPrecondition, "max_unpack_ratio", nil},
		{"ManyPlatforms", def, stub.Host + "/hostile/platforms:v1",
			errdefs.IsFailedPrecondition, "max_index_manifests", nil},
		{"LayerUnpackedSize", tight, stub.Push("hostile/big", "v1", withLayers(big).Build()),
			errdefs.IsFailedPrecondition, "max_layer_unpacked_size", nil},
		{"ImageUnpackedSize", tight, stub.Push("hostile/halves", "v1", withLayers(half1, half2).Build()),
			errdefs.IsFailedPrecondition, "max_image_unpacked_size", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := c.k.with(t)
			ns := strings.ToLower(c.name)
			cl := k.client(t, ns)
			ctx := t.Context()
			start := time.Now()
			_, err := cl.Pull(ctx, c.ref, client.WithPullUnpack, client.WithPullSnapshotter("native"))
			took := time.Since(start)
			t.Logf("%s: refused in %s: %v", c.name, took.Round(time.Millisecond), err)
			if err == nil || !c.is(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("pull %s: %v; want another class, naming %q", c.ref, err, c.want)
			}
			if took > refusedWithin {
				t.Errorf("refusing took %s", took)
			}
			for _, d := range c.untouched {
				if n := stub.Gets(d); n != 0 {
					t.Errorf("layer %s fetched %d times before the refusal", d, n)
					break
				}
			}
			// Nothing partial: no ingest to resume, no active snapshot.
			for _, s := range storeState(t, ctx, cl) {
				if strings.HasPrefix(s, "ingest ") || strings.HasPrefix(s, "image ") || strings.Contains(s, "(active)") {
					t.Errorf("left after the refusal: %s", s)
				}
			}
			if _, err := cl.GarbageCollect(ctx); err != nil {
				t.Fatal(err)
			}
			if left := storeState(t, ctx, cl); len(left) != 0 {
				t.Errorf("left after gc: %v", left)
			}
		})
	}
}

// vmHWM is a process's peak resident memory in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestPullPlatformBounded: platform strings that would size a matcher's
// work (a variant of millions, a string of megabytes), and a reference of
// a megabyte, are refused as
// InvalidArgument before anything is resolved, and keeld's peak memory
// barely moves (issue 10, item 5: linux/arm/v3000000 took it to 1 GB).
func TestPullPlatformBounded(t *testing.T) {
	t.Parallel()
	stub := regstub.Start(t)
	img := regstub.Image{Layers: []regstub.Layer{tinyLayer("f")}}.Build()
	ref := stub.Push("plat/img", "v1", img)
	k := hostileKeeld(t, stub, "")
	cl := k.client(t, "platform")
	before := vmHWM(t, k.cmd.Process.Pid)
	for _, p := range []string{
		"linux/arm/v3000000",
		"linux/amd64/v3000000",
		"linux/arm64/v3000000",
		"linux/arm/v" + strings.Repeat("9", 1000),
		"linux/" + strings.Repeat("a", 1<<20),
		"linux(" + strings.Repeat("1", 1<<20) + ")/amd64",
	} {
		start := time.Now()
		_, err := cl.Pull(t.Context(), ref, client.WithPlatform(p), client.WithPullUnpack)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("platform %.40q: %v, want InvalidArgument", p, err)
		}
		if took := time.Since(start); took > refusedWithin {
			t.Errorf("platform %.40q: refused after %s", p, took)
		}
	}
	// A reference of a MiB is refused as plainly.
	if _, err := cl.Pull(t.Context(), stub.Host+"/"+strings.Repeat("a", 1<<20)+":v1"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a reference of 1 MiB: %v, want InvalidArgument", err)
	}
	after := vmHWM(t, k.cmd.Process.Pid)
	t.Logf("keeld VmHWM %d MiB before, %d MiB after", before>>20, after>>20)
	// Each request is at most a few MiB on the wire; 1 GB was the bug.
	if after-before > 200<<20 {
		t.Errorf("keeld's peak memory grew by %d MiB", (after-before)>>20)
	}
	if n := stub.Gets(img.Manifest.Desc.Digest); n != 0 {
		t.Errorf("the manifest was fetched %d times for refused platforms", n)
	}
	if left := storeState(t, t.Context(), cl); len(left) != 0 {
		t.Errorf("left after refused pulls: %v", left)
	}
}

// ociArchive is an OCI layout tar of img (its manifest named name), its
// blobs included unless skip says otherwise.
func ociArchive(t *testing.T, img regstub.Built, name string, skip func(regstub.Blob) bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(path string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: path, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for _, b := range append(img.Blobs(), img.Manifest) {
		if skip == nil || !skip(b) {
			add("blobs/sha256/"+b.Desc.Digest.Encoded(), b.Data)
		}
	}
	md := img.Manifest.Desc
	md.Annotations = map[string]string{ocispec.AnnotationRefName: name}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}})
	add("index.json", idx)
	tw.Close()
	return buf.Bytes()
}

// TestImportHostile: archives keel image import must refuse as a pull
// refuses the same image (the limits are one set), plus an archive of too
// many entries and a file header declaring 1e15 bytes; each quickly, and
// the namespace is empty again after a collection.
func TestImportHostile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to mount snapshots")
	}
	e := newEnv(t)
	k := e.startWith(t, e.config(t, pullPlugins+`
limits {
  max_archive_entries = 1000
}
`))
	var many []regstub.Layer
	for i := range 200 {
		many = append(many, tinyLayer(fmt.Sprintf("f%d", i)))
	}
	var entries bytes.Buffer
	tw := tar.NewWriter(&entries)
	for i := range 2000 {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", i), Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.Close()
	var huge bytes.Buffer
	tw = tar.NewWriter(&huge)
	tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + digest.FromString("x").Encoded(), Typeflag: tar.TypeReg, Mode: 0o644, Size: 1e15})
	unknown := regstub.Image{Layers: []regstub.Layer{tinyLayer("u")}, EditManifest: func(m *ocispec.Manifest) { m.Layers[0].MediaType = "application/x-not-a-layer" }}.Build()
	cases := []struct {
		name    string
		archive []byte
		is      func(error) bool
		want    string
	}{
		// The layers are not in the archive: the count is refused first.
		{"ManyLayers", ociArchive(t, regstub.Image{Layers: many}.Build(), "x/many:1", func(b regstub.Blob) bool { return b.Desc.MediaType == ocispec.MediaTypeImageLayerGzip }),
			errdefs.IsFailedPrecondition, "max_layers"},
		{"UnknownMediaType", ociArchive(t, unknown, "x/unknown:1", nil), errdefs.IsInvalidArgument, "application/x-not-a-layer"},
		{"ManyEntries", entries.Bytes(), errdefs.IsFailedPrecondition, "max_archive_entries"},
		{"HugeFile", huge.Bytes(), errdefs.IsFailedPrecondition, "max_layer_size"},
		{"GzipBombUnpacked", ociArchive(t, regstub.Image{Layers: []regstub.Layer{regstub.GzipBomb("zeros", 256<<20)}}.Build(), "x/bomb:1", nil),
			errdefs.IsFailedPrecondition, "max_unpack_ratio"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := strings.ToLower(c.name)
			cl := k.with(t).client(t, ns)
			ctx := t.Context()
			start := time.Now()
			_, err := cl.Import(ctx, bytes.NewReader(c.archive), client.WithImportUnpack("native"))
			took := time.Since(start)
			t.Logf("%s: refused in %s: %v", c.name, took.Round(time.Millisecond), err)
			if err == nil || !c.is(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("import: %v; want another class, naming %q", err, c.want)
			}
			if took > refusedWithin {
				t.Errorf("refusing took %s", took)
			}
			for _, s := range storeState(t, ctx, cl) {
				if strings.HasPrefix(s, "ingest ") || strings.Contains(s, "(active)") {
					t.Errorf("left after the refusal: %s", s)
				}
			}
			if _, err := cl.GarbageCollect(ctx); err != nil {
				t.Fatal(err)
			}
			// The bomb's image is recorded before its unpack is refused:
			// the record keeps its blobs, nothing else may stay.
			for _, s := range storeState(t, ctx, cl) {
				if c.name != "GzipBombUnpacked" || strings.HasPrefix(s, "snapshot ") {
					t.Errorf("left after gc: %s", s)
				}
			}
		})
	}
}
