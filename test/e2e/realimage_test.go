package e2e

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/fstree"
	"github.com/keel-runtime/keel/test/realimage"
)

// realImageCheck runs in the Debian image: the package layer 2 installed
// is there, the one it removed is gone, so is the directory its cleanup
// deleted below /usr/share, and awk is the new package's.
const realImageCheck = `set -e
dpkg -s ` + realimage.Installed + ` | grep -qx 'Status: install ok installed'
if dpkg -s ` + realimage.Removed + ` >/dev/null 2>&1; then echo "` + realimage.Removed + ` still installed"; exit 1; fi
if ls /usr/share/info >/dev/null 2>&1; then echo "/usr/share/info is there"; exit 1; fi
readlink /etc/alternatives/awk
awk 'BEGIN { print "awk runs" }'
`

// TestRealImage pulls a Debian image built the way real images are
// (debootstrap, then apt-get install and cleanup on an overlay: nested
// whiteouts, an opaque dir, replaced and removed files) from a loopback
// registry onto native, overlay and btrfs; runs a command from it on each;
// and compares each unpacked tree, entry by entry, with the tree the build
// itself ended with.
func TestRealImage(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root to mount snapshots and run containers")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		testkit.SkipOrFail(t, "runc: %v (apt-get install runc)", err)
	}
	img := realimage.Get(t)
	want, err := img.Reference()
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t)
	pushed, err := img.RegistryImage(runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "e2e/debian", "bookworm", pushed); err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/e2e/debian:bookworm"
	chain := chainOf(t, pushed)
	block, err := resolverPlugin([]byte(plainHTTP(reg.Host)))
	if err != nil {
		t.Fatal(err)
	}

	// native and overlay on the host's disk; btrfs with keeld's root on a
	// loopback btrfs (the plugin refuses any other).
	e := newEnv(t)
	k := e.startWith(t, e.config(t, pullPlugins+block+runtimePlugin(e)))
	eb := newEnv(t)
	eb.root = fixture.LoopbackBtrfs(t)
	kb := eb.startWith(t, eb.config(t, btrfsPlugins+block+runtimePlugin(eb)))
	for _, k := range []*keeld{k, kb} {
		rk := &runKeeld{keeld: k, ref: ref}
		t.Cleanup(rk.cleanup)
	}

	for _, tc := range []struct {
		sn string
		k  *keeld
	}{{"native", k}, {"overlay", k}, {"btrfs", kb}} {
		t.Run(tc.sn, func(t *testing.T) {
			k := tc.k.with(t)
			k.okWithin(10*time.Minute, "image", "pull", "-q", "--snapshotter", tc.sn, ref)
			// A copy of the whole image on native, under load: no short bound.
			r := runKeelWithin(t, k.env.socket, nil, 10*time.Minute, "run", "--rm", "--snapshotter", tc.sn, ref, "debian-"+tc.sn, "sh", "-c", realImageCheck)
			if r.code != 0 || r.stdout != "/usr/bin/"+realimage.Installed+"\nawk runs\n" {
				t.Errorf("command in the image: %v", r)
			}
			got := unpackedTree(t, k, k.client(t, "default"), tc.sn, chain.String())
			diffs := fstree.Compare(want, got, fstree.Options{})
			for i, d := range diffs {
				if i == 30 {
					t.Errorf("… and %d more", len(diffs)-i)
					break
				}
				t.Errorf("unpacked on %s differs from the build: %s", tc.sn, d)
			}
			t.Logf("%s: %d entries compared, %d differences", tc.sn, len(want), len(diffs))
		})
	}
}

// unpackedTree lists the tree of a read-only view of the snapshot parent.
func unpackedTree(t *testing.T, k *keeld, c *client.Client, sn, parent string) []fstree.Entry {
	t.Helper()
	s := c.SnapshotService(sn)
	key := "tree-" + sn
	ctx, release := leased(t, c)
	defer release()
	mounts, err := s.View(ctx, key, parent)
	if err != nil {
		t.Fatalf("view of %s in %s: %v", parent, sn, err)
	}
	defer s.Remove(context.WithoutCancel(t.Context()), key)
	dir := mountDir(t, k.env, "tree-"+sn)
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer unmount(t, dir)
	entries, err := fstree.Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}
