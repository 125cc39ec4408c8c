package snapshottest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCompareTrees checks that the tree comparison the layer checks rely on
// does see each kind of difference.
func TestCompareTrees(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown and device nodes")
	}
	base := chainLayers()[0]
	cases := []struct {
		name string
		op   fsOp
		want string
	}{
		{"Content", fsWrite("etc/hosts", "changed", 0o644), "content"},
		{"Mode", fsWrite("etc/hosts", "127.0.0.1 localhost\n", 0o600), "mode"},
		{"Owner", fsChown("bin/tool", 5, 5), "owner"},
		{"Xattr", fsXattr("bin/tool", "user.keel.test", "other"), "xattrs"},
		{"Symlink", func(dir string) error {
			if err := fsRemove("tool")(dir); err != nil {
				return err
			}
			return fsSymlink("elsewhere", "tool")(dir)
		}, "symlink"},
		{"Hardlink", func(dir string) error {
			if err := fsRemove("bin/tool-link")(dir); err != nil {
				return err
			}
			return exec.Command("cp", "-a", dir+"/bin/tool", dir+"/bin/tool-link").Run()
		}, "links"},
		{"Mtime", fsChtimes("etc/hosts", time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC)), "mtime"},
		{"Missing", fsRemove("run/fifo"), "missing"},
		{"Unexpected", fsWrite("extra", "", 0o644), "unexpected"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, got := t.TempDir(), t.TempDir()
			if err := applyOps(want, base...); err != nil {
				t.Fatal(err)
			}
			if err := applyOps(got, base...); err != nil {
				t.Fatal(err)
			}
			if err := compareTrees(want, got); err != nil {
				t.Fatalf("equal trees differ: %v", err)
			}
			if err := tc.op(got); err != nil {
				t.Fatal(err)
			}
			err := compareTrees(want, got)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a %s difference", err, tc.want)
			}
		})
	}
}
