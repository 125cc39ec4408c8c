package diff

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestApplyNested applies layer stacks that delete, replace and re-create
// directories below non-root parents, where the applier's cache of parent
// descriptors holds the directories being removed (issue 9, item 1.1).
func TestApplyNested(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	// manyDirs fills the parent cache so a later lookup evicts it while an
	// entry still holds a descriptor from it.
	var manyDirs []ent
	for i := range maxCachedDirs + 8 {
		manyDirs = append(manyDirs, file(fmt.Sprintf("m/d%03d/f", i), "f"))
	}
	for _, tc := range []struct {
		name   string
		layers [][]ent
		want   []string // the tree, one line per entry below the root (see tree)
	}{{
		name: "whiteout of a nested dir with content",
		layers: [][]ent{
			{dir("usr/"), dir("usr/share/"), dir("usr/share/info/"), file("usr/share/info/a", "a"), dir("usr/share/info/b/"), file("usr/share/info/b/c", "c"), file("usr/share/doc", "d")},
			{dir("usr/"), dir("usr/share/"), file("usr/share/.wh.info", "")},
		},
		want: []string{"/usr d", "/usr/share d", "/usr/share/doc f d"},
	}, {
		name: "whiteout of a nested dir, then more in its parent",
		layers: [][]ent{
			{file("usr/share/info/a", "a"), file("usr/share/man/m", "m")},
			{file("usr/share/.wh.info", ""), file("usr/share/new", "n"), file("usr/share/man/.wh.m", ""), file("usr/share/man/n", "n")},
		},
		want: []string{"/usr d", "/usr/share d", "/usr/share/man d", "/usr/share/man/n f n", "/usr/share/new f n"},
	}, {
		name: "whiteout of a cached dir, then the dir again",
		layers: [][]ent{
			{file("a/b/c/old", "old")},
			{file("a/b/c/x", "x"), file("a/b/.wh.c", ""), file("a/b/c/y", "y")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/c d", "/a/b/c/y f y"},
	}, {
		name: "whiteout of an ancestor of cached dirs",
		layers: [][]ent{
			{file("a/b/c/d/e", "e"), file("a/k", "k")},
			{file("a/b/c/d/f", "f"), file("a/.wh.b", ""), file("a/b/c/d/g", "g")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/c d", "/a/b/c/d d", "/a/b/c/d/g f g", "/a/k f k"},
	}, {
		name: "opaque dir under nested parents",
		layers: [][]ent{
			{file("usr/share/info/a", "a"), file("usr/share/info/b/c", "c"), file("usr/share/info/keep/old", "old")},
			{dir("usr/share/info/"), file("usr/share/info/keep/mine", "mine"), file("usr/share/info/.wh..wh..opq", ""), file("usr/share/info/new", "new")},
		},
		want: []string{"/usr d", "/usr/share d", "/usr/share/info d", "/usr/share/info/keep d", "/usr/share/info/keep/mine f mine", "/usr/share/info/new f new"},
	}, {
		name: "opaque dir whose cached children are removed, then written again",
		layers: [][]ent{
			{file("o/p/q/r", "r")},
			{file("o/p/q/s", "s"), file("o/.wh..wh..opq", ""), file("o/p/q/t", "t")},
		},
		// o/p/q was written by this layer (its file s), so it stays, emptied
		// of r only.
		want: []string{"/o d", "/o/p d", "/o/p/q d", "/o/p/q/s f s", "/o/p/q/t f t"},
	}, {
		name: "opaque dir, lower nested dirs gone, then written again",
		layers: [][]ent{
			{file("o/p/q/r", "r")},
			{file("o/x/y", "y"), file("o/.wh..wh..opq", ""), file("o/p/q/t", "t")},
		},
		want: []string{"/o d", "/o/p d", "/o/p/q d", "/o/p/q/t f t", "/o/x d", "/o/x/y f y"},
	}, {
		name: "dir replaced by a file at depth and back",
		layers: [][]ent{
			{file("a/b/c/d/e", "e")},
			{file("a/b/c", "now a file")},
			{dir("a/b/c/"), file("a/b/c/z", "z")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/c d", "/a/b/c/z f z"},
	}, {
		name: "cached dir replaced by a file in the same layer, then a dir again",
		layers: [][]ent{
			{file("a/b/c/d/e", "e")},
			{file("a/b/c/d/f", "f"), file("a/b/c", "file"), dir("a/b/c/"), file("a/b/c/g", "g")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/c d", "/a/b/c/g f g"},
	}, {
		name: "cached dir replaced by a symlink inside the root",
		layers: [][]ent{
			{file("a/b/c/f", "f"), dir("z/")},
			{file("a/b/c/f2", "f2"), symlink("a/b/c", "../../z"), file("a/b/c/g", "g")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/c l ../../z", "/z d", "/z/g f g"},
	}, {
		name: "hardlink replaces a dir holding cached parents",
		layers: [][]ent{
			{file("a/b/d/x/y", "y"), file("a/t", "t")},
			{file("a/b/d/x/z", "z"), hardlink("a/b/d", "a/t"), file("a/b/n", "n")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/d f t", "/a/b/n f n", "/a/t f t"},
	}, {
		name: "hardlink whose target lookup evicts the cache",
		layers: [][]ent{
			{file("t/target", "t")},
			append(append([]ent{}, manyDirs...), hardlink("m/d000/h", "t/target")),
		},
		want: nil, // checked below: m/d000/h is t/target
	}, {
		name: "file replaced by a dir at depth",
		layers: [][]ent{
			{file("a/b/c", "c")},
			{dir("a/b/c/"), file("a/b/c/d/e", "e")},
		},
		want: []string{"/a d", "/a/b d", "/a/b/c d", "/a/b/c/d d", "/a/b/c/d/e f e"},
	}, {
		name: "whiteout in a parent that is not there",
		layers: [][]ent{
			{file("a/f", "f")},
			{file("x/y/.wh.z", "")},
		},
		// as containerd: the whiteout's parents are made
		want: []string{"/a d", "/a/f f f", "/x d", "/x/y d"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			fds := openFDs(t)
			for i, l := range tc.layers {
				if _, err := Apply(context.Background(), root, bytes.NewReader(layer(t, l...))); err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
			}
			// every reference to a dir is released, once
			if n := openFDs(t); n != fds {
				t.Errorf("%d descriptors open after the layers, %d before", n, fds)
			}
			if tc.want == nil {
				if b, err := readFile(root, "m/d000/h"); err != nil || b != "t" {
					t.Errorf("m/d000/h = %q, %v", b, err)
				}
				return
			}
			if got, want := shortTree(t, root), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("tree:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
