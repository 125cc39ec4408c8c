package diff

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestApplyRefusesEscapes applies crafted layers onto base/a/b/root and
// checks each is refused with InvalidArgument naming the entry, and that
// nothing changed outside the root: base (which holds a victim file next to
// the root's parents), nor the host's / and /etc.
func TestApplyRefusesEscapes(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	u := fmt.Sprintf("keel-diff-escape-%d", time.Now().UnixNano()) // a name nothing else uses
	for _, tc := range []struct {
		name  string
		ents  func(base string) []ent
		entry string // named in the error
	}{
		{"dotdot", func(string) []ent { return []ent{file("../"+u, "x")} }, "../" + u},
		{"dotdot deep", func(string) []ent { return []ent{dir("a/"), file("a/../../"+u, "x")} }, "a/../../" + u},
		{"dotdot dir", func(string) []ent { return []ent{dir("../../" + u + "/")} }, "../../" + u + "/"},
		{"dotdot device", func(string) []ent {
			return []ent{{name: "../" + u, typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}}
		}, "../" + u},
		{"symlink to / then through it", func(string) []ent {
			return []ent{symlink("l", "/"), file("l/etc/"+u, "x")}
		}, "l/etc/" + u},
		{"symlink to .. then through it", func(string) []ent {
			return []ent{symlink("l", ".."), file("l/"+u, "x")}
		}, "l/" + u},
		{"symlink .. chain", func(string) []ent {
			return []ent{dir("d/"), symlink("d/l1", ".."), symlink("d/l2", "l1/.."), file("d/l2/l1/"+u, "x")}
		}, "d/l2/l1/" + u},
		{"absolute symlink then file under it", func(base string) []ent {
			return []ent{symlink("l", base), file("l/"+u, "x")}
		}, "l/" + u},
		{"absolute symlink then dir under it", func(base string) []ent {
			return []ent{symlink("l", base), dir("l/" + u + "/")}
		}, "l/" + u + "/"},
		{"hardlink to /etc/passwd", func(string) []ent { return []ent{hardlink("h", "/etc/passwd")} }, "h"},
		{"hardlink out with dotdot", func(string) []ent {
			return []ent{hardlink("h", "../../../../../../../../etc/passwd")}
		}, "h"},
		{"hardlink through a symlink", func(string) []ent {
			return []ent{symlink("l", "/etc"), hardlink("h", "l/passwd")}
		}, "h"},
		{"hardlink through a relative symlink out", func(string) []ent {
			return []ent{symlink("l", "../../.."), hardlink("h", "l/victim")}
		}, "h"},
		{"whiteout through a symlink", func(base string) []ent {
			return []ent{symlink("l", base), file("l/.wh.victim", "")}
		}, "l/.wh.victim"},
		{"opaque through a symlink", func(base string) []ent {
			return []ent{symlink("l", base), file("l/.wh..wh..opq", "")}
		}, "l/.wh..wh..opq"},
		{"whiteout of dotdot", func(string) []ent { return []ent{dir("a/"), file("a/.wh...", "")} }, "a/.wh..."},
		{"whiteout with dotdot", func(string) []ent { return []ent{file("../.wh.victim", "")} }, "../.wh.victim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "a", "b", "root")
			os.MkdirAll(root, 0o755)
			os.WriteFile(filepath.Join(base, "victim"), []byte("victim"), 0o644)
			before := tree(t, base)
			etcBefore := tree(t, "/etc")

			blob := gzipped(t, layer(t, tc.ents(base)...))
			_, err := Apply(context.Background(), root, bytes.NewReader(blob))
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.entry)) {
				t.Errorf("error %q does not name entry %q", err, tc.entry)
			}
			t.Log(err)

			outside := func(after string) string {
				var out []string
				for _, l := range strings.Split(after, "\n") {
					if !strings.HasPrefix(l, "/a/b/root/") && !strings.HasPrefix(l, "/a/b/root ") {
						out = append(out, l)
					}
				}
				return strings.Join(out, "\n")
			}
			if got, want := outside(tree(t, base)), outside(before); got != want {
				t.Errorf("outside the root changed:\n%s\nwas:\n%s", got, want)
			}
			if tree(t, "/etc") != etcBefore {
				t.Errorf("/etc changed")
			}
			for _, p := range []string{"/" + u, "/etc/" + u, filepath.Join(base, u), filepath.Join(base, "a", u)} {
				if _, err := os.Lstat(p); err == nil {
					os.RemoveAll(p)
					t.Errorf("%s was written", p)
				}
			}
		})
	}
}

// TestApplySymlinksInside checks symlinks that stay inside the root are
// followed for parents (as containerd does), and a symlink in the last
// component is replaced, never followed.
func TestApplySymlinksInside(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(base, "victim"), []byte("victim"), 0o644)
	blob := layer(t,
		dir("usr/"), dir("usr/lib/"), symlink("lib", "usr/lib"), file("lib/x", "x"),
		dir("d/"), symlink("d/up", "../usr"), file("d/up/y", "y"),
		symlink("v", filepath.Join(base, "victim")), file("v", "replaced"),
		hardlink("h", "lib"), // links the symlink itself
		// a file over a device or fifo replaces the node, never opens it
		ent{name: "n", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}, file("n", "not null"),
		ent{name: "p", typ: tar.TypeFifo, mode: 0o666}, file("p", "not a fifo"),
	)
	if _, err := Apply(context.Background(), root, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"usr/lib/x": "x", "usr/y": "y", "v": "replaced", "n": "not null", "p": "not a fifo"} {
		if b, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(base, "victim")); string(b) != "victim" {
		t.Errorf("victim outside changed: %q", b)
	}
	if l, err := os.Readlink(filepath.Join(root, "h")); err != nil || l != "usr/lib" {
		t.Errorf("h -> %q, %v; want a hardlink of the symlink lib", l, err)
	}
}
