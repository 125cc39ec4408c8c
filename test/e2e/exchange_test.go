package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// readContent reads a whole blob from keeld's content store.
func readContent(t *testing.T, c *client.Client, d digest.Digest) []byte {
	t.Helper()
	ra, err := c.ContentStore().ReaderAt(t.Context(), ocispec.Descriptor{Digest: d})
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	defer ra.Close()
	b := make([]byte, ra.Size())
	if _, err := ra.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

// statusLines counts the push lines of stderr by their first word.
func statusLines(stderr string) map[string]int {
	n := map[string]int{}
	for _, l := range strings.Split(stderr, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			n[f[0]]++
		}
	}
	return n
}

// TestImageExchange drives push, mount, export and import through the CLI
// and the client against a loopback registry: push to another repository
// (then again: everything exists), read-only mount and unmount, export → rm
// → import byte-identical, push → rm → pull back identical, and a `docker
// save` tar built here imported, pushed, pulled and mounted.
func TestImageExchange(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	img, err := registry.BuildImage(registry.ImageOptions{Extra: []byte("exchange\n")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := reg.PushImage(ctx, "e2e/src", "v1", img); err != nil {
		t.Fatal(err)
	}
	k := startPullKeeld(t, plainHTTP(reg.Host))
	c := k.client(t, "default")
	src := reg.Host + "/e2e/src:v1"
	if _, err := c.Pull(ctx, src, client.WithPullUnpack); err != nil {
		t.Fatal(err)
	}

	// Push under another name: three blobs and the manifest go.
	dst := reg.Host + "/e2e/dst:v1"
	r := k.keel("image", "push", dst, src)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	if n := statusLines(r.stderr); n["pushing"] != 4 || n["done"]+n["exists"] != 4 {
		t.Errorf("push lines %v:\n%s", n, r.stderr)
	}
	_, desc, err := c.ResolverService("").Resolve(ctx, dst)
	if err != nil || desc.Digest != img.Manifest.Desc.Digest {
		t.Fatalf("resolve %s after push: %v %v, want %s", dst, desc.Digest, err, img.Manifest.Desc.Digest)
	}
	for _, b := range img.Blobs() {
		got, err := reg.GetBlob(ctx, "e2e/dst", b.Desc.Digest)
		if err != nil || !bytes.Equal(got, b.Data) {
			t.Errorf("registry blob %s: %v", b.Desc.Digest, err)
		}
	}
	// Again: the registry has it all.
	r = k.keel("image", "push", dst, src)
	if n := statusLines(r.stderr); r.code != 0 || n["exists"] != 4 || n["done"] != 0 {
		t.Errorf("second push: %v", r)
	}
	if r := k.keel("image", "push", "-q", dst, src); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("push -q: %v", r)
	}

	// Mount: a read-only rootfs; unmount removes the view.
	dir := mountDir(t, k.env, "image")
	k.ok("image", "mount", src, dir)
	if fi, err := os.Stat(filepath.Join(dir, "bin/busybox")); err != nil || fi.Size() == 0 {
		t.Errorf("mounted image: bin/busybox: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "extra")); string(got) != "exchange\n" {
		t.Errorf("mounted image: extra = %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into the mounted image: %v, want EROFS", err)
	}
	if r := k.keel("image", "mount", src, dir); !strings.Contains(oneLineError(t, r), "already exists") {
		t.Errorf("second mount on %s: %v", dir, r)
	}
	k.ok("image", "unmount", dir)
	if _, err := os.Stat(filepath.Join(dir, "bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after unmount: bin: %v", err)
	}
	if _, err := c.SnapshotService("").Stat(ctx, "keel-image-mount:"+dir); !errdefs.IsNotFound(err) {
		t.Errorf("view after unmount: %v, want NotFound", err)
	}
	if line := oneLineError(t, k.keel("image", "unmount", dir)); !strings.Contains(line, "no image view") {
		t.Errorf("unmount twice: %s", line)
	}

	// Export → rm → import: the same target, the same bytes.
	first := filepath.Join(k.env.dir, "first.tar")
	k.ok("image", "export", first, src)
	if err := c.DeleteImage(ctx, src, client.WithSyncDelete()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ContentStore().Info(ctx, img.Manifest.Desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("manifest after rm: %v, want NotFound", err)
	}
	out := k.ok("image", "import", "--no-unpack", first)
	if !strings.Contains(out, src) || !strings.Contains(out, img.Manifest.Desc.Digest.String()) {
		t.Errorf("import printed:\n%s", out)
	}
	got, err := c.GetImage(ctx, src)
	if err != nil || got.Target.Digest != img.Manifest.Desc.Digest {
		t.Fatalf("imported record: %+v %v", got, err)
	}
	second := filepath.Join(k.env.dir, "second.tar")
	k.ok("image", "export", second, src)
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	if !bytes.Equal(a, b) {
		t.Errorf("export after import differs (%d vs %d bytes)", len(a), len(b))
	}
	var stdout bytes.Buffer
	if err := c.Export(ctx, &stdout, []string{src}); err != nil || !bytes.Equal(stdout.Bytes(), a) {
		t.Errorf("client Export: %v, identical %v", err, bytes.Equal(stdout.Bytes(), a))
	}
	// Not unpacked any more (rm freed the snapshots, import --no-unpack
	// made none): mount refuses until keel image unpack.
	if line := oneLineError(t, k.keel("image", "mount", src, dir)); !strings.Contains(line, "not unpacked on snapshotter native") {
		t.Errorf("mount before unpack: %s", line)
	}
	if out := k.ok("image", "unpack", src); !strings.Contains(out, "2 layers applied, 0 there already") {
		t.Errorf("unpack printed %q", out)
	}
	if out := k.ok("image", "unpack", src); !strings.Contains(out, "0 layers applied, 2 there already") {
		t.Errorf("unpack again printed %q", out)
	}
	k.ok("image", "mount", src, dir)
	k.ok("image", "unmount", dir)

	// Push → rm → pull back: identical.
	if err := c.DeleteImage(ctx, src, client.WithSyncDelete()); err != nil {
		t.Fatal(err)
	}
	back, err := c.Pull(ctx, dst, client.WithPullUnpack)
	if err != nil || back.Target.Digest != img.Manifest.Desc.Digest {
		t.Fatalf("pull back %s: %+v %v", dst, back, err)
	}
	for _, bl := range append(img.Blobs(), img.Manifest) {
		if !bytes.Equal(readContent(t, c, bl.Desc.Digest), bl.Data) {
			t.Errorf("pulled back %s differs", bl.Desc.Digest)
		}
	}

	// A `docker save` tar of the image: imported, then usable (pushed,
	// pulled with unpack, mounted).
	saved := dockerSave(t, img, "e2e/saved:v1")
	imgs, err := c.Import(ctx, bytes.NewReader(saved))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != "docker.io/e2e/saved:v1" || imgs[0].Target.MediaType != registry.MediaTypeDockerManifest {
		t.Fatalf("docker save import: %+v", imgs)
	}
	savedRef := reg.Host + "/e2e/saved:v1"
	if err := c.Push(ctx, savedRef, client.WithPushImage(imgs[0].Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pull(ctx, savedRef, client.WithPullUnpack); err != nil {
		t.Fatal(err)
	}
	dir2 := mountDir(t, k.env, "saved")
	if err := c.MountImage(ctx, savedRef, dir2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "bin/busybox")); err != nil {
		t.Errorf("docker save image: %v", err)
	}
	if err := c.UnmountImage(ctx, dir2); err != nil {
		t.Fatal(err)
	}
}

// dockerSave builds a legacy `docker save` tar of img: manifest.json,
// repositories, <id>/{VERSION,json,layer.tar} (uncompressed) and the
// config as <hex>.json.
func dockerSave(t *testing.T, img *registry.Image, tag string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(name string, data []byte) {
		typ := byte(tar.TypeReg)
		if strings.HasSuffix(name, "/") {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	var layers []string
	var last string
	for _, l := range img.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(l.Data))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		id := digest.FromBytes(append([]byte(last), raw...)).Encoded()
		put(id+"/", nil)
		put(id+"/VERSION", []byte("1.0"))
		put(id+"/json", []byte(`{"id":"`+id+`"}`))
		put(id+"/layer.tar", raw)
		layers = append(layers, id+"/layer.tar")
		last = id
	}
	cfgName := img.Config.Desc.Digest.Encoded() + ".json"
	put(cfgName, img.Config.Data)
	mj, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": layers}})
	put("manifest.json", mj)
	repo, version, _ := strings.Cut(tag, ":")
	rj, _ := json.Marshal(map[string]map[string]string{repo: {version: last}})
	put("repositories", rj)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestImportRefusesBadBlob: an archive whose blob does not match its name
// is refused; no record is made and garbage collection frees what the
// import stored before it.
func TestImportRefusesBadBlob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.start(t)
	c := k.client(t, "bad")
	ctx := t.Context()
	good := []byte("a good blob")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range [][2]string{
		{"oci-layout", `{"imageLayoutVersion":"1.0.0"}`},
		{"blobs/sha256/" + digest.FromBytes(good).Encoded(), string(good)},
		{"blobs/sha256/" + digest.FromString("what it says").Encoded(), "something else"},
		{"index.json", `{"schemaVersion":2,"manifests":[]}`},
	} {
		tw.WriteHeader(&tar.Header{Name: f[0], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f[1]))})
		tw.Write([]byte(f[1]))
	}
	tw.Close()
	path := filepath.Join(e.dir, "bad.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	line := oneLineError(t, k.keel("-n", "bad", "image", "import", path))
	if !strings.Contains(line, "does not match") {
		t.Errorf("import of a bad blob: %s", line)
	}
	if _, err := c.Import(ctx, bytes.NewReader(buf.Bytes())); !errdefs.IsInvalidArgument(err) {
		t.Errorf("client import: %v, want InvalidArgument", err)
	}
	if imgs, err := c.ListImages(ctx); err != nil || len(imgs) != 0 {
		t.Errorf("records after a refused import: %v %v", imgs, err)
	}
	if _, err := c.GarbageCollect(ctx); err != nil {
		t.Fatal(err)
	}
	var left []digest.Digest
	c.ContentStore().Walk(ctx, func(i content.Info) error { left = append(left, i.Digest); return nil })
	if len(left) != 0 {
		t.Errorf("content after gc: %v", left)
	}
	if sts, _ := c.ContentStore().ListStatuses(ctx); len(sts) != 0 {
		t.Errorf("ingests after a refused import: %v", sts)
	}
}
