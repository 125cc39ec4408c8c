package realimage

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/fstree"
)

// tarEntries lists a layer's entries as "name type" lines, and fails on
// xattrs overlayfs uses for itself.
func tarEntries(t *testing.T, l Layer) []string {
	t.Helper()
	r, err := l.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for k := range h.PAXRecords {
			if strings.Contains(k, "trusted.overlay.") {
				t.Errorf("%s carries %s", h.Name, k)
			}
		}
		if h.Typeflag == tar.TypeChar && h.Devmajor == 0 && h.Devminor == 0 {
			t.Errorf("%s: an overlayfs whiteout device left in the layer", h.Name)
		}
		out = append(out, h.Name+" "+string(h.Typeflag))
	}
}

// TestUpperToLayer makes an overlay upper dir by deleting and replacing
// things through a real overlay mount, and checks the layer made of it.
func TestUpperToLayer(t *testing.T) {
	testkit.RequireRoot(t, "mount overlay")
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, p := range []string{"lower/a/b/c", "lower/d/e", "lower/keep", "upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a/b/c/f", "d/e/g", "keep/h", "gone"} {
		if err := os.WriteFile(filepath.Join(lower, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work+",redirect_dir=off,metacopy=off"); err != nil {
		testkit.SkipOrFail(t, "mount overlay: %v", err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	}()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.RemoveAll(filepath.Join(merged, "a/b"))) // nested dir: a/.wh.b
	must(os.Remove(filepath.Join(merged, "gone")))   // file: .wh.gone
	must(os.RemoveAll(filepath.Join(merged, "d")))   // dir re-made: opaque
	must(os.MkdirAll(filepath.Join(merged, "d/new"), 0o755))
	must(os.WriteFile(filepath.Join(merged, "keep/h"), []byte("changed"), 0o600))
	must(os.Link(filepath.Join(merged, "keep/h"), filepath.Join(merged, "keep/h2")))
	must(unix.Unmount(merged, 0))
	mounted = false

	l, err := writeLayer(upper, filepath.Join(dir, "layer.tar.gz"), true)
	if err != nil {
		t.Fatal(err)
	}
	got := tarEntries(t, l)
	want := []string{
		"a/ 5", "a/.wh.b 0", "d/ 5", "d/.wh..wh..opq 0", "d/new/ 5",
		"keep/ 5", "keep/h 0", "keep/h2 1", ".wh.gone 0",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("layer entries:\n got %q\nwant %q", got, want)
	}
}

// TestImage builds (or takes from the cache) the real image and checks
// its second layer has what makes it a test: a whiteout of a directory
// below a non-root parent, an opaque directory, a removed binary.
func TestImage(t *testing.T) {
	img := Get(t)
	if len(img.Layers) != 2 {
		t.Fatalf("%d layers", len(img.Layers))
	}
	got := tarEntries(t, img.Layers[1])
	for _, want := range []string{"usr/share/.wh.info 0", "usr/share/man/.wh..wh..opq 0", "usr/bin/.wh." + Removed + " 0", "var/lib/apt/lists/.wh.partial 0"} {
		if !slices.Contains(got, want) {
			t.Errorf("layer 2 lacks %q", want)
		}
	}
	ref, err := img.Reference()
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]fstree.Entry{}
	for _, e := range ref {
		paths[e.Path] = e
	}
	if _, ok := paths["usr/share/info"]; ok {
		t.Error("reference tree has usr/share/info")
	}
	if e := paths["etc/alternatives/awk"]; e.Link != "/usr/bin/gawk" {
		t.Errorf("reference etc/alternatives/awk: %+v", e)
	}
	t.Logf("%d entries; layers %+v", len(ref), img.Layers)
}

// TestEnsureOnce: builders racing for one entry build it once, one at a
// time; a failed build leaves no entry; a killed build's scratch dir does
// not leak into the next.
func TestEnsureOnce(t *testing.T) {
	dir := t.TempDir()
	var running, most, builds atomic.Int32
	fake := func(scratch string) error {
		if n := running.Add(1); n > most.Load() {
			most.Store(n)
		}
		defer running.Add(-1)
		builds.Add(1)
		if _, err := os.Stat(filepath.Join(scratch, "leftover")); err == nil {
			return errors.New("a killed build's leftovers are still there")
		}
		time.Sleep(50 * time.Millisecond)
		if err := os.MkdirAll(scratch, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(scratch, "m.json"), []byte("[]"), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(scratch, imageFile), []byte(`{"manifest":"m.json"}`), 0o644)
	}

	if _, _, err := ensure(dir, "failing", func(string) error { return errors.New("no network") }); err == nil {
		t.Fatal("a failed build succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "failing")); err == nil {
		t.Error("a failed build left an entry")
	}

	// A build killed midway left its scratch dir.
	if err := os.MkdirAll(filepath.Join(dir, "k.build"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "k.build", "leftover"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			img, _, err := ensure(dir, "k", fake)
			if err != nil {
				t.Error(err)
				return
			}
			if img.Manifest != filepath.Join(dir, "k", "m.json") {
				t.Errorf("manifest %q", img.Manifest)
			}
		})
	}
	wg.Wait()
	if builds.Load() != 1 || most.Load() != 1 {
		t.Errorf("%d builds, %d at once; want 1 build", builds.Load(), most.Load())
	}
}
