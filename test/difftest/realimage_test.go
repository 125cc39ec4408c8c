package difftest

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/fstree"
	"github.com/keel-runtime/keel/test/realimage"
)

// TestRealImage applies the layers of a Debian image built as real images
// are (debootstrap, then an apt-get layer made on overlay, whose upper dir
// carries real nested whiteouts and opaque dirs; see test/realimage) with
// containerd's applier and with keel's, on a plain dir and through overlay
// mounts as on keel's overlay snapshotter: the trees must agree.
func TestRealImage(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	img := realimage.Get(t)
	var paths []string
	for _, l := range img.Layers {
		paths = append(paths, l.Path)
	}
	// withLayers opens the layer files afresh for one apply.
	withLayers := func(name string, apply func(layers []io.Reader) error) {
		t.Helper()
		layers, closeFiles, err := Files(paths...)
		if err != nil {
			t.Fatal(err)
		}
		defer closeFiles()
		if err := apply(layers); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	ctx := context.Background()
	start := time.Now()
	ref, plain := t.TempDir(), t.TempDir()
	withLayers("containerd", func(l []io.Reader) error { return ApplyReference(ctx, ref, l...) })
	withLayers("keel", func(l []io.Reader) error { return ApplyKeel(ctx, plain, l...) })
	var view string
	withLayers("keel on overlay", func(l []io.Reader) error {
		v, unmount, err := ApplyKeelOverlay(ctx, t.TempDir(), l...)
		if err == nil {
			view = v
			t.Cleanup(func() {
				if err := unmount(); err != nil {
					t.Errorf("unmount %s: %v", v, err)
				}
			})
		}
		return err
	})
	for _, c := range []struct{ name, dir string }{{"keel", plain}, {"keel on overlay", view}} {
		diffs, err := fstree.CompareDirs(ref, c.dir, fstree.Options{Since: start})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for _, d := range diffs {
			t.Errorf("%s differs from containerd: %s", c.name, d)
		}
	}
}
