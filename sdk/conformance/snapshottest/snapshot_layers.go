package snapshottest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// Cases where a copy, a union and a copy-on-write filesystem can differ:
// what a child changes, what a commit keeps, renames and opaque dirs, big
// trees, concurrent children.

// viewKeys numbers the views wantTree makes.
var viewKeys atomic.Int64

// refTree builds, in a fresh temp dir, the tree layers' ops make in an
// empty dir: what a snapshot of those layers must show.
func refTree(t conformance.T, layers ...[]fsOp) string {
	t.Helper()
	ref := t.TempDir()
	for _, ops := range layers {
		if err := applyOps(ref, ops...); err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				testkit.SkipOrFail(t, "the test's temp dir lacks xattrs or device nodes: %v", err)
			}
			t.Fatalf("build reference tree: %v", err)
		}
	}
	return ref
}

// wantTree checks that a view of the committed snapshot name shows exactly
// the tree layers' ops make in an empty dir, then removes the view.
func wantTree(ctx context.Context, t conformance.T, sn snapshot.Snapshotter, name string, layers ...[]fsOp) {
	t.Helper()
	ref := refTree(t, layers...)
	key := fmt.Sprintf("check-%s-%d", name, viewKeys.Add(1))
	ms, err := sn.View(ctx, key, name)
	if err != nil {
		t.Fatalf("view of %s: %v", name, err)
	}
	dir, unmount := mountTemp(t, ms)
	if err := compareTrees(ref, dir); err != nil {
		t.Errorf("view of %s differs:\n%v", name, err)
	}
	unmount()
	if err := sn.Remove(ctx, key); err != nil {
		t.Errorf("remove %s: %v", key, err)
	}
}

func snapChildChangeLeavesParent(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	t0 := time.Date(2003, 4, 5, 6, 7, 8, 0, time.UTC)
	base := []fsOp{
		fsMkdir("etc", 0o755),
		fsWrite("etc/conf", "original\n", 0o644),
		fsChtimes("etc/conf", t0),
		fsXattr("etc/conf", "user.keel.v", "1"),
		fsWrite("etc/gone", "gone in the child", 0o600),
		fsMkdir("var", 0o755),
		fsWrite("var/log", "line 1\n", 0o640),
		fsChown("var/log", 5, 6),
		fsChtimes("var/log", t0),
	}
	child := []fsOp{
		fsWrite("etc/conf", "changed\n", 0o600),
		fsXattr("etc/conf", "user.keel.v", "2"),
		fsRemove("etc/gone"),
		fsAppend("var/log", "line 2\n"),
		fsChown("var/log", 7, 8),
		fsChmod("var", 0o700),
		fsWrite("new", "child only", 0o644),
	}
	commitLayer(ctx, t, sn, "base", "", base...)
	// An active child, changed and left uncommitted, already must not
	// show through the parent.
	ms, err := sn.Prepare(ctx, "child-active", "base")
	if err != nil {
		t.Fatalf("prepare on base: %v", err)
	}
	dir, unmount := mountTemp(t, ms)
	if err := applyOps(dir, child...); err != nil {
		t.Fatalf("change the child: %v", err)
	}
	wantTree(ctx, t, sn, "base", base)
	unmount()
	if err := sn.Commit(ctx, "child", "child-active"); err != nil {
		t.Fatalf("commit child: %v", err)
	}
	wantTree(ctx, t, sn, "base", base)
	wantTree(ctx, t, sn, "child", base, child)
	// A sibling of the child starts from the parent, not from the child.
	commitLayer(ctx, t, sn, "sibling", "base", fsWrite("sibling", "s", 0o644))
	wantTree(ctx, t, sn, "sibling", base, []fsOp{fsWrite("sibling", "s", 0o644)})
}

func snapMetadataSurvivesCommit(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	t0 := time.Date(2004, 5, 6, 7, 8, 9, 0, time.UTC)
	// Every kind of entry and attribute, made in one layer.
	made := []fsOp{
		fsMkdir("d", 0o2775),
		fsChown("d", 11, 12),
		fsXattr("d", "user.keel.dir", "dir value"),
		fsWrite("d/setuid", "x", 0o4755),
		fsWrite("d/sticky-exec", "y", 0o1711),
		fsWrite("d/owned", "z", 0o640),
		fsChown("d/owned", 1000, 1001),
		fsChtimes("d/owned", t0),
		fsXattr("d/owned", "user.keel.a", "alpha"),
		fsXattr("d/owned", "user.keel.b", strings.Repeat("b", 1000)),
		fsLink("d/owned", "d/owned-link"),
		fsLink("d/owned", "hardlink-elsewhere"),
		fsSymlink("d/owned", "rel-link"),
		fsSymlink("/abs/target", "abs-link"),
		fsChown("abs-link", 3, 4),
		fsMknod("chr", 1, 7),
		fsMkfifo("fifo"),
		fsChown("fifo", 9, 9),
	}
	commitLayer(ctx, t, sn, "made", "", made...)
	wantTree(ctx, t, sn, "made", made)
	// Attribute changes alone on the parent's entries (a union copies them
	// up; a copy must keep the rest). Not on a hardlinked file: overlayfs
	// copies up the one name changed and so breaks the link (layer
	// appliers rewrite every name of a changed inode).
	changed := []fsOp{
		fsChmod("d/sticky-exec", 0o1700),
		fsChown("d/setuid", 2, 2),
		fsChmod("d/setuid", 0o4750), // chown clears setuid: set it again
		fsXattr("d", "user.keel.dir", "changed"),
		fsChtimes("d/sticky-exec", t0),
		fsChown("chr", 20, 21),
	}
	commitLayer(ctx, t, sn, "changed", "made", changed...)
	wantTree(ctx, t, sn, "changed", made, changed)
	wantTree(ctx, t, sn, "made", made)
}

func snapRenameParentDir(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	base := []fsOp{
		fsMkdir("app", 0o750),
		fsChown("app", 100, 101),
		fsWrite("app/main", "main", 0o755),
		fsMkdir("app/lib", 0o755),
		fsWrite("app/lib/one", "1", 0o644),
		fsLink("app/lib/one", "app/lib/one-again"),
		fsSymlink("lib/one", "app/link"),
		fsXattr("app/main", "user.keel.x", "x"),
		fsMkdir("other", 0o755),
	}
	commitLayer(ctx, t, sn, "base", "", base...)
	moved := []fsOp{
		fsRename("app", "srv"),
		fsWrite("srv/lib/two", "2", 0o644),
		fsRename("other", "app"), // the old name, now a different dir
	}
	commitLayer(ctx, t, sn, "moved", "base", moved...)
	wantTree(ctx, t, sn, "moved", base, moved)
	wantTree(ctx, t, sn, "base", base)
	// A grandchild still sees the moved tree and may move it back.
	back := []fsOp{fsRemove("app"), fsRename("srv", "app")}
	commitLayer(ctx, t, sn, "back", "moved", back...)
	wantTree(ctx, t, sn, "back", base, moved, back)
}

func snapOpaqueDir(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	base := []fsOp{
		fsMkdir("d", 0o755),
		fsWrite("d/x", "x", 0o644),
		fsMkdir("d/sub", 0o755),
		fsWrite("d/sub/y", "y", 0o644),
		fsWrite("keep", "k", 0o644),
	}
	// Removed and made again: nothing of the parent's d shows through.
	opaque := []fsOp{
		fsRemove("d"),
		fsMkdir("d", 0o700),
		fsWrite("d/z", "z", 0o644),
	}
	// A layer above adds to the opaque dir and makes a parent's name again.
	above := []fsOp{
		fsWrite("d/w", "w", 0o644),
		fsMkdir("d/sub", 0o755),
	}
	commitLayer(ctx, t, sn, "base", "", base...)
	commitLayer(ctx, t, sn, "opaque", "base", opaque...)
	commitLayer(ctx, t, sn, "above", "opaque", above...)
	wantTree(ctx, t, sn, "opaque", base, opaque)
	wantTree(ctx, t, sn, "above", base, opaque, above)
	wantTree(ctx, t, sn, "base", base)
	// A file replaced by a dir and a dir by a file.
	swap := []fsOp{
		fsRemove("keep"), fsMkdir("keep", 0o755), fsWrite("keep/in", "i", 0o644),
		fsRemove("d"), fsWrite("d", "now a file", 0o644),
	}
	commitLayer(ctx, t, sn, "swap", "above", swap...)
	wantTree(ctx, t, sn, "swap", base, opaque, above, swap)
}

// snapWalkChainTree1000 walks a tree of 1000 committed snapshots (each
// node the parent of the next two, ten levels deep) and wants the walk,
// alone, under a second. The tree is built level by level, each level's
// snapshots at once.
func snapWalkChainTree1000(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	const n = 1000
	name := func(i int) string { return fmt.Sprintf("node-%04d", i) }
	parentOf := func(i int) string {
		if i == 0 {
			return ""
		}
		return name((i - 1) / 2)
	}
	start := time.Now()
	for lo := 0; lo < n; lo = 2*lo + 1 {
		hi := min(2*lo+1, n)
		var wg sync.WaitGroup
		errs := make(chan error, hi-lo)
		sem := make(chan struct{}, 16)
		for i := lo; i < hi; i++ {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				key := name(i) + "-active"
				if _, err := sn.Prepare(ctx, key, parentOf(i)); err != nil {
					errs <- fmt.Errorf("prepare %s: %w", key, err)
					return
				}
				if err := sn.Commit(ctx, name(i), key); err != nil {
					errs <- fmt.Errorf("commit %s: %w", name(i), err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%v", err)
		}
	}
	t.Logf("built the tree of %d snapshots in %s", n, time.Since(start).Round(time.Millisecond))

	seen := map[string]string{}
	start = time.Now()
	err := sn.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		seen[info.Name] = info.Parent
		return nil
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	t.Logf("walked %d snapshots in %s", len(seen), took.Round(time.Microsecond))
	if len(seen) != n {
		t.Fatalf("walk saw %d snapshots, want %d", len(seen), n)
	}
	for i := range n {
		if p, ok := seen[name(i)]; !ok || p != parentOf(i) {
			t.Fatalf("walk: %s has parent %q (seen %v), want %q", name(i), p, ok, parentOf(i))
		}
	}
	if took > time.Second {
		t.Errorf("walking %d snapshots took %s, want under a second", n, took)
	}
}

// snapConcurrentPrepareOneParent prepares many children of one parent at
// once; each sees the parent and only its own writes.
func snapConcurrentPrepareOneParent(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	mounted := os.Geteuid() == 0
	if mounted {
		commitLayer(ctx, t, sn, "base", "", fsMkdir("shared", 0o755), fsWrite("shared/f", "base", 0o644))
	} else {
		commitEmpty(ctx, t, sn, "base", "")
	}
	const n = 16
	mounts := make([][]mount.Mount, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			ms, err := sn.Prepare(ctx, fmt.Sprintf("child-%d", i), "base")
			if err != nil {
				errs <- fmt.Errorf("prepare child-%d: %w", i, err)
				return
			}
			mounts[i] = ms
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v", err)
	}
	if !mounted {
		return
	}
	dirs := make([]string, n)
	for i := range n {
		dir, _ := mountTemp(t, mounts[i])
		dirs[i] = dir
		if err := applyOps(dir, fsWrite(fmt.Sprintf("shared/own-%d", i), "mine", 0o644), fsAppend("shared/f", fmt.Sprint(i))); err != nil {
			t.Fatalf("write in child-%d: %v", i, err)
		}
	}
	for i, dir := range dirs {
		entries, err := os.ReadDir(filepath.Join(dir, "shared"))
		if err != nil || len(entries) != 2 {
			t.Errorf("child-%d shows %v, %v; want f and its own file", i, entries, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "shared", "f")); err != nil || string(b) != fmt.Sprint("base", i) {
			t.Errorf("child-%d's f = %q, %v; want %q", i, b, err, fmt.Sprint("base", i))
		}
	}
	wantTree(ctx, t, sn, "base", []fsOp{fsMkdir("shared", 0o755), fsWrite("shared/f", "base", 0o644)})
}

// deepChainDepth is how many committed layers DeepChain stacks: keel's
// default image limit (max_layers), so a container's rootfs may be an
// active snapshot on a chain this deep.
const deepChainDepth = 128

// deepChainLayers are small layers with changes reaching far down the
// chain: a file every layer adds, one every layer appends to, one
// overwritten (mode too) every seventh layer, files and a dir deleted
// tens of layers above where they were made (whiteouts over a deep lower
// stack), a dir made again (opaque), a deleted name made again.
func deepChainLayers() [][]fsOp {
	layers := make([][]fsOp, deepChainDepth)
	layers[0] = []fsOp{
		fsMkdir("l", 0o755),
		fsWrite("base-only", "from layer 0\n", 0o644),
		fsWrite("shared", "layer 0\n", 0o644),
		fsWrite("log", "0", 0o644),
		fsMkdir("tree", 0o755),
		fsWrite("tree/a", "a", 0o644),
		fsMkdir("tree/sub", 0o700),
		fsWrite("tree/sub/b", "b", 0o600),
	}
	for i := 1; i < deepChainDepth; i++ {
		layers[i] = []fsOp{
			fsWrite(fmt.Sprintf("l/%03d", i), fmt.Sprintf("layer %d\n", i), 0o644),
			fsAppend("log", fmt.Sprintf(" %d", i)),
		}
		if i%7 == 0 {
			layers[i] = append(layers[i], fsWrite("shared", fmt.Sprintf("layer %d\n", i), 0o640+uint32(i%2)))
		}
	}
	more := map[int][]fsOp{
		40:  {fsRemove("l/003")},
		64:  {fsRemove("tree"), fsMkdir("tree", 0o750), fsWrite("tree/c", "c", 0o644)},
		90:  {fsWrite("l/003", "again at 90\n", 0o600)},
		100: {fsRemove("l/010"), fsRemove("l/011")},
		120: {fsRemove("base-only")},
		127: {fsRemove("l/126"), fsWrite("l/001", "top\n", 0o644)},
	}
	for i, ops := range more {
		layers[i] = append(layers[i], ops...)
	}
	return layers
}

// snapDeepChain commits deepChainDepth layers, each written through the
// mounts Prepare returned on the one below, then mounts an active
// snapshot and a view of the top with the plugin's own mounts: both show
// exactly the tree the layers make, and a change in the active snapshot
// (a copy up from the bottom layer, a whiteout over all of them) shows in
// it alone. An overlay plugin meets mount(2)'s one-page limit on its
// options here: it must list the lower dirs so that sdk/mount can mount
// them (see mount.Overlay), not in one lowerdir= string.
func snapDeepChain(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	layers := deepChainLayers()
	start := time.Now()
	parent := ""
	for i, ops := range layers {
		name := fmt.Sprintf("layer-%03d", i)
		commitLayer(ctx, t, sn, name, parent, ops...)
		parent = name
	}
	t.Logf("committed %d layers in %s", len(layers), time.Since(start).Round(time.Millisecond))

	ref := refTree(t, layers...)
	vms, err := sn.View(ctx, "top-view", parent)
	if err != nil {
		t.Fatalf("view of %s: %v", parent, err)
	}
	ams, err := sn.Prepare(ctx, "top-active", parent)
	if err != nil {
		t.Fatalf("prepare on %s: %v", parent, err)
	}
	t.Logf("mounts of the active snapshot on top: %d, options %d bytes (mount(2) takes %d)",
		len(ams), optionBytes(ams), os.Getpagesize())
	view, _ := mountTemp(t, vms)
	active, unmount := mountTemp(t, ams)
	if err := compareTrees(ref, view); err != nil {
		t.Errorf("view of %s differs:\n%v", parent, err)
	}
	if err := compareTrees(ref, active); err != nil {
		t.Errorf("active snapshot on %s differs:\n%v", parent, err)
	}

	change := []fsOp{
		fsAppend("tree/c", "+"),
		fsAppend("l/002", "changed on top\n"),
		fsRemove("l/005"),
		fsWrite("new-on-top", "n", 0o644),
	}
	if err := applyOps(active, change...); err != nil {
		t.Fatalf("change the active snapshot: %v", err)
	}
	if err := compareTrees(refTree(t, append(layers, change)...), active); err != nil {
		t.Errorf("changed active snapshot on %s differs:\n%v", parent, err)
	}
	if err := compareTrees(ref, view); err != nil {
		t.Errorf("view of %s after a change in an active sibling differs:\n%v", parent, err)
	}
	unmount()
	t.Logf("whole case in %s", time.Since(start).Round(time.Millisecond))
}

// optionBytes is the length of ms' options joined as mount(8) would.
func optionBytes(ms []mount.Mount) int {
	n := 0
	for _, m := range ms {
		n += len(strings.Join(m.Options, ","))
	}
	return n
}

// snapRootAttributes: the root dir of a snapshot shows the mode and owner
// the nearest layer that set them gave it, as every other dir does (an
// image's last layer to chmod or chown "/" wins, as in a tar applied layer
// by layer), in an active snapshot and in a view alike. Layers set them
// through the mounts: keel's layer applier, like containerd's, leaves the
// root entry of a layer tar alone. A union is where this goes wrong:
// overlayfs shows its upper dir's own mode and owner at the root of the
// merged tree, not the lower dirs', so an active snapshot's fresh upper
// dir must take its parent's (containerd's overlay snapshotter chowns it;
// keel's takes the mode too). A view of a chain shows its nearest lower
// dir's, which, committed, had them copied the same way. Xattrs of the
// root are not checked: overlayfs keeps its own there.
func snapRootAttributes(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	base := []fsOp{fsChown(".", 1000, 1000), fsChmod(".", 0o750), fsWrite("f", "base", 0o644)}
	mid := []fsOp{fsWrite("g", "mid", 0o644)} // leaves the root alone
	top := []fsOp{fsChown(".", 2000, 2001), fsChmod(".", 0o2705)}
	chain := []struct {
		name   string
		layers [][]fsOp
	}{
		{"base", [][]fsOp{base}},
		{"mid", [][]fsOp{base, mid}},
		{"top", [][]fsOp{base, mid, top}},
	}
	parent := ""
	for _, c := range chain {
		commitLayer(ctx, t, sn, c.name, parent, c.layers[len(c.layers)-1]...)
		parent = c.name
	}
	for _, c := range chain {
		ref := refTree(t, c.layers...)
		want, err := rootAttrs(ref)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for _, kind := range []snapshot.Kind{snapshot.KindActive, snapshot.KindView} {
			key := fmt.Sprintf("%s-%s", kind, c.name)
			var ms []mount.Mount
			if kind == snapshot.KindView {
				ms, err = sn.View(ctx, key, c.name)
			} else {
				ms, err = sn.Prepare(ctx, key, c.name)
			}
			if err != nil {
				t.Fatalf("%s of %s: %v", kind, c.name, err)
			}
			dir, unmount := mountTemp(t, ms)
			if got, err := rootAttrs(dir); err != nil {
				t.Errorf("%v", err)
			} else if got != want {
				t.Errorf("%s of %s: root is %s, want %s", kind, c.name, got, want)
			}
			if err := compareTrees(ref, dir); err != nil {
				t.Errorf("%s of %s differs:\n%v", kind, c.name, err)
			}
			unmount()
		}
	}
}

// rootAttrs is the mode and owner of dir, as "mode 0750 owner 1000:1000".
func rootAttrs(dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("mode %04o owner %d:%d", st.Mode&0o7777, st.Uid, st.Gid), nil
}
