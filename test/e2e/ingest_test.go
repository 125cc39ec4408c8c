package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// TestConcurrentPulls: ten `keel image pull` of one image at once, all
// unpacking onto the same snapshotter, all succeed (a fetch of a blob
// another fetch is writing waits for it; a layer another pull commits at
// once is taken from it), nothing is left half done, and the image runs.
func TestConcurrentPulls(t *testing.T) {
	t.Parallel()
	rk := newRunKeeld(t, "", "")
	k, e := rk.keeld, rk.env
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH, Extra: []byte("extra\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := rk.reg.PushImage(t.Context(), "e2e/concurrent", "v1", img); err != nil {
		t.Fatal(err)
	}
	ref := rk.reg.Host + "/e2e/concurrent:v1"

	const n = 10
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runKeelWithin(t, e.socket, nil, 5*time.Minute, "image", "pull", ref)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("pull %d of %d: %v", i+1, n, r)
		}
	}
	if t.Failed() {
		return
	}
	if out := k.ok("content", "ingests", "ls", "-q"); out != "" {
		t.Errorf("ingests left after the pulls:\n%s", out)
	}
	c := k.client(t, "default")
	var active []string
	c.SnapshotService("native").Walk(t.Context(), func(_ context.Context, i snapshot.Info) error {
		if i.Kind != snapshot.KindCommitted {
			active = append(active, i.Name)
		}
		return nil
	})
	if len(active) != 0 {
		t.Errorf("snapshots left active: %v", active)
	}
	if r := k.keel("run", "--rm", ref, "concurrent", "/bin/busybox", "cat", "/extra"); r.code != 0 || r.stdout != "extra\n" {
		t.Errorf("the pulled image does not run: %v", r)
	}
}

// blobData is where the registry's filesystem storage keeps dgst's bytes.
func blobData(reg *registry.Registry, dgst digest.Digest) string {
	return filepath.Join(reg.Storage, "docker/registry/v2/blobs", dgst.Algorithm().String(), dgst.Encoded()[:2], dgst.Encoded(), "data")
}

// TestPullHealsAfterBadBytes: a registry serving a layer whose bytes do
// not match its digest fails the pull with a digest mismatch and leaves no
// ingest of them; once the registry serves the right bytes the next pull
// succeeds, with nobody aborting ingests by hand. With and without unpack
// (the layer is applied as it downloads, so its bad bytes first show as a
// layer that does not decode).
func TestPullHealsAfterBadBytes(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	k := startPullKeeld(t, plainHTTP(reg.Host))
	for _, unpack := range []bool{true, false} {
		name := map[bool]string{true: "Unpack", false: "NoUnpack"}[unpack]
		t.Run(name, func(t *testing.T) {
			k := k.with(t)
			layer, diffID := layerOf(t, tarEntry{name: "data", typ: tar.TypeReg, data: randomBytes(t, 2<<20)})
			repo := "e2e/heal-" + strings.ToLower(name)
			pushLayers(t, reg, repo, []registry.Blob{layer}, []digest.Digest{diffID})
			ref := reg.Host + "/" + repo + ":v1"
			ns := strings.ToLower(name)
			args := []string{"-n", ns, "image", "pull"}
			if !unpack {
				args = append(args, "--no-unpack")
			}
			args = append(args, ref)

			path := blobData(reg, layer.Desc.Digest)
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bad := bytes.Clone(good)
			bad[len(bad)/2] ^= 0xff
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			line := oneLineError(t, k.keel(args...))
			if !strings.Contains(line, "digest") || !strings.Contains(line, layer.Desc.Digest.String()) {
				t.Errorf("pull of bad bytes: %q does not name a digest mismatch of %s", line, layer.Desc.Digest)
			}
			if out := k.ok("-n", ns, "content", "ingests", "ls", "-q"); strings.Contains(out, layer.Desc.Digest.Encoded()) {
				t.Errorf("the bad bytes' ingest is kept:\n%s", out)
			}
			k.ok("gc")

			if err := os.WriteFile(path, good, 0o644); err != nil {
				t.Fatal(err)
			}
			k.ok(args...)
			if _, err := k.client(t, ns).ContentStore().Info(t.Context(), layer.Desc.Digest); err != nil {
				t.Errorf("layer after the healed pull: %v", err)
			}
		})
	}
}

// TestContentStaleExpectedSize: an ingest refused for a huge expected size
// does not make the next upload of the ref, which names none, fail.
func TestContentStaleExpectedSize(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	data := randomBytes(t, 1000)
	r := k.keelIn(bytes.NewReader(data), "content", "ingest", "--expected-size", "1000000000000000", "stale")
	if r.code == 0 {
		t.Fatalf("an upload of 1000 bytes passed as 1e15: %v", r)
	}
	if out := k.keelIn(bytes.NewReader(data), "content", "ingest", "stale"); out.code != 0 || strings.TrimSpace(out.stdout) != digest.FromBytes(data).String() {
		t.Errorf("upload after a stale expected size: %v", out)
	}
	other := randomBytes(t, 500)
	if out := k.keelIn(bytes.NewReader(other), "content", "ingest", "--expected-size", "500", "stale"); out.code != 0 {
		t.Errorf("upload with the right size after a stale one: %v", out)
	}
}

// dirBytes is the size of the regular files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// gcReport runs keel gc with args and --format json.
func gcReport(k *keeld, args ...string) client.GCReport {
	k.t.Helper()
	var rep client.GCReport
	k.okJSON(&rep, append([]string{"gc"}, args...)...)
	return rep
}

func findObject(objs []client.GCObject, kind, name string) (client.GCObject, bool) {
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return client.GCObject{}, false
}

// TestGCIngests: a running pull's ingest survives `keel gc --ingests`; once
// the pull is killed, `keel gc --dry-run` lists its partial ingest (kept
// for a retry, or to go with --ingests), `keel gc --ingests` frees its
// bytes, and the pull then succeeds from the start.
func TestGCIngests(t *testing.T) {
	t.Parallel()
	big, _, proxy, proxyHost := stalledBigLayer(t, "e2e/gcingest")
	k := startPullKeeld(t, plainHTTP(proxyHost))
	ref := proxyHost + "/e2e/gcingest:v1"
	iref := ingestRef(big.Desc)
	ingestDir := filepath.Join(k.env.root, "plugins", "content.local", "ingest")
	cs := k.client(t, "default").ContentStore()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pull := exec.CommandContext(ctx, filepath.Join(binDir, "keel"), "--address", k.env.socket, "image", "pull", ref)
	var out bytes.Buffer
	pull.Stdout, pull.Stderr = &out, &out
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pull.Wait() }()
	select {
	case <-proxy.stalled:
	case err := <-exited:
		t.Fatalf("the pull ended before the stall: %v\n%s", err, out.String())
	case <-time.After(settle):
		t.Fatal("the registry proxy never stalled")
	}
	waitOffset(t, cs, iref)

	// Running: held, however the collection is asked.
	rep := gcReport(k, "--ingests")
	if o, ok := findObject(rep.Removed, "ingest", iref); ok {
		t.Fatalf("gc --ingests removed a running pull's ingest: %+v", o)
	}
	rep = gcReport(k, "--dry-run", "--ingests")
	if o, ok := findObject(rep.Kept, "ingest", iref); !ok || (o.Root != "a running writer" && !strings.HasPrefix(o.Root, "lease ")) {
		t.Errorf("dry run: running pull's ingest kept as %+v (found %v), want kept by a running writer or its lease", o, ok)
	}
	st, err := cs.Status(t.Context(), iref)
	if err != nil || st.Offset == 0 {
		t.Fatalf("running pull's ingest after gc --ingests: %+v, %v", st, err)
	}

	// Killed: its lease goes with it; the ingest stays for a retry.
	cancel()
	<-exited
	eventually(t, settle, "the killed pull's ingest no longer held", func() error {
		rep := gcReport(k, "--dry-run")
		o, ok := findObject(rep.Kept, "ingest", iref)
		if !ok || !strings.Contains(o.Root, "ingest_max_age") {
			return fmt.Errorf("kept %v, as %q", ok, o.Root)
		}
		return nil
	})
	rep = gcReport(k, "--dry-run", "--ingests")
	o, ok := findObject(rep.Removed, "ingest", iref)
	if !ok || o.Size <= 0 || o.Namespace != "default" {
		t.Fatalf("gc --dry-run --ingests: %+v (found %v), want the partial ingest with its bytes; report %+v", o, ok, rep)
	}
	before := dirBytes(t, ingestDir)
	if before < o.Size {
		t.Fatalf("ingest dir holds %d bytes, the ingest %d", before, o.Size)
	}
	rep = gcReport(k, "--ingests")
	if _, ok := findObject(rep.Removed, "ingest", iref); !ok {
		t.Fatalf("gc --ingests did not remove the partial ingest: %+v", rep)
	}
	if after := dirBytes(t, ingestDir); before-after < o.Size {
		t.Errorf("gc --ingests freed %d of the ingest's %d bytes", before-after, o.Size)
	}
	if out := k.ok("content", "ingests", "ls", "-q"); out != "" {
		t.Errorf("ingests left:\n%s", out)
	}

	proxy.Release()
	k.ok("image", "pull", ref)
	if _, err := cs.Info(t.Context(), big.Desc.Digest); err != nil {
		t.Errorf("layer after the retried pull: %v", err)
	}
}
