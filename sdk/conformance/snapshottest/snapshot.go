package snapshottest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// Binary opens the snapshotter plugin executable at path as
// keeld does (see conformance.Binary).
func Binary(path string, opts ...conformance.Option) conformance.Opener[snapshot.Snapshotter] {
	return conformance.Binary(path, sdk.KindSnapshotter, wrapSnapshotter, opts...)
}

// InProcess opens the snapshotter factory builds inside the test
// process, across gRPC (see conformance.InProcess).
func InProcess(factory snapshot.Factory, opts ...conformance.Option) conformance.Opener[snapshot.Snapshotter] {
	return conformance.InProcess(snapshot.Plugin("conformance", "dev", factory), wrapSnapshotter, opts...)
}

func wrapSnapshotter(conn grpc.ClientConnInterface, _ string, stop func() error) snapshot.Snapshotter {
	return &stoppingSnapshotter{Snapshotter: snapshot.NewClient(conn), stop: stop}
}

// stoppingSnapshotter is the sdk client whose Close ends the plugin.
type stoppingSnapshotter struct {
	snapshot.Snapshotter
	stop func() error
}

var (
	_ snapshot.Snapshotter = (*stoppingSnapshotter)(nil)
	_ snapshot.Cleaner     = (*stoppingSnapshotter)(nil)
)

func (s *stoppingSnapshotter) Cleanup(ctx context.Context) error {
	return s.Snapshotter.(snapshot.Cleaner).Cleanup(ctx)
}

func (s *stoppingSnapshotter) Close() error {
	err := s.Snapshotter.Close()
	if serr := s.stop(); err == nil {
		err = serr
	}
	return err
}

// Run runs the snapshotter suite against the plugins open opens.
func Run(t conformance.T, open conformance.Opener[snapshot.Snapshotter], opts ...conformance.Option) {
	t.Helper()
	conformance.RunCases(t, snapshotCases(), open, conformance.NewOptions(opts))
}

type snapCase = conformance.Case[snapshot.Snapshotter]
type snapEnv = conformance.Env[snapshot.Snapshotter]

func snapshotCases() []snapCase {
	return []snapCase{
		{Name: "Lifecycle", Body: snapLifecycle},
		{Name: "LayerChain", Body: snapLayerChain},
		{Name: "DeepChain", Body: snapDeepChain},
		{Name: "ViewIsReadOnly", Body: snapViewIsReadOnly},
		{Name: "StatUpdate", Body: snapStatUpdate},
		{Name: "EmptyLabelValueDeletes", Body: snapEmptyLabelValueDeletes},
		{Name: "NewSnapshotCreatedEqualsUpdated", Body: snapCreatedEqualsUpdated},
		{Name: "Walk", Body: snapWalk},
		{Name: "Usage", Body: snapUsage},
		{Name: "PrepareReusedKey", Body: snapPrepareReusedKey},
		{Name: "NotFound", Body: snapNotFound},
		{Name: "PrepareOnUncommittedParent", Body: snapPrepareOnUncommittedParent},
		{Name: "RemoveParentWithChildren", Body: snapRemoveParentWithChildren},
		{Name: "CommitViewRefused", Body: snapCommitViewRefused},
		{Name: "CommitOntoExistingName", Body: snapCommitOntoExistingName},
		{Name: "ConcurrentPrepareCommit", Body: snapConcurrentPrepareCommit},
		{Name: "Restart", Body: snapRestart},
		{Name: "Cleanup", Needs: []string{snapshot.CapabilityCleanup}, Body: snapCleanup},
		{Name: "WalkStreamsLargeSets", Body: snapWalkStreams},
		{Name: "ChildChangeLeavesParent", Body: snapChildChangeLeavesParent},
		{Name: "MetadataSurvivesCommit", Body: snapMetadataSurvivesCommit},
		{Name: "RenameParentDir", Body: snapRenameParentDir},
		{Name: "OpaqueDir", Body: snapOpaqueDir},
		{Name: "RootAttributes", Body: snapRootAttributes},
		{Name: "WalkChainTree1000", Body: snapWalkChainTree1000},
		{Name: "ConcurrentPrepareOneParent", Body: snapConcurrentPrepareOneParent},
	}
}

// commitEmpty makes the committed snapshot name on parent, with no change.
func commitEmpty(ctx context.Context, t conformance.T, sn snapshot.Snapshotter, name, parent string, opts ...snapshot.Opt) {
	t.Helper()
	if _, err := sn.Prepare(ctx, name+"-active", parent, opts...); err != nil {
		t.Fatalf("prepare %s-active on %q: %v", name, parent, err)
	}
	if err := sn.Commit(ctx, name, name+"-active", opts...); err != nil {
		t.Fatalf("commit %s: %v", name, err)
	}
}

// commitLayer makes the committed snapshot name on parent holding ops'
// changes, written through the mounts.
func commitLayer(ctx context.Context, t conformance.T, sn snapshot.Snapshotter, name, parent string, ops ...fsOp) {
	t.Helper()
	ms, err := sn.Prepare(ctx, name+"-active", parent)
	if err != nil {
		t.Fatalf("prepare %s-active on %q: %v", name, parent, err)
	}
	dir, unmount := mountTemp(t, ms)
	if err := applyOps(dir, ops...); err != nil {
		t.Fatalf("write layer %s: %v", name, err)
	}
	unmount()
	if err := sn.Commit(ctx, name, name+"-active"); err != nil {
		t.Fatalf("commit %s: %v", name, err)
	}
}

func wantKind(t conformance.T, sn snapshot.Snapshotter, ctx context.Context, key string, kind snapshot.Kind, parent string) snapshot.Info {
	t.Helper()
	info, err := sn.Stat(ctx, key)
	if err != nil {
		t.Fatalf("stat %s: %v", key, err)
	}
	if info.Name != key || info.Kind != kind || info.Parent != parent {
		t.Fatalf("stat %s = {name %q kind %s parent %q}, want {%q %s %q}", key, info.Name, info.Kind, info.Parent, key, kind, parent)
	}
	return info
}

func wantErr(t conformance.T, what string, err error, class func(error) bool, className string) {
	t.Helper()
	if !class(err) {
		t.Fatalf("%s: got %v, want a %s error", what, err, className)
	}
}

func snapLifecycle(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	ms, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if len(ms) == 0 {
		t.Fatalf("prepare returned no mounts")
	}
	info := wantKind(t, sn, ctx, "a", snapshot.KindActive, "")
	if info.Created.IsZero() || info.Updated.IsZero() {
		t.Errorf("stat a: times not set: %+v", info)
	}
	again, err := sn.Mounts(ctx, "a")
	if err != nil {
		t.Fatalf("mounts: %v", err)
	}
	if fmt.Sprint(again) != fmt.Sprint(ms) {
		t.Errorf("mounts = %v, prepare gave %v", again, ms)
	}
	if err := sn.Commit(ctx, "base", "a"); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if _, err := sn.Stat(ctx, "a"); !errdefs.IsNotFound(err) {
		t.Errorf("stat of the committed active key: got %v, want NotFound", err)
	}
	wantKind(t, sn, ctx, "base", snapshot.KindCommitted, "")
	vms, err := sn.View(ctx, "v", "base")
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	if len(vms) == 0 {
		t.Fatalf("view returned no mounts")
	}
	wantKind(t, sn, ctx, "v", snapshot.KindView, "base")
	if _, err := sn.Prepare(ctx, "c", "base"); err != nil {
		t.Fatalf("prepare on base: %v", err)
	}
	wantKind(t, sn, ctx, "c", snapshot.KindActive, "base")
	for _, k := range []string{"v", "c", "base"} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
		if _, err := sn.Stat(ctx, k); !errdefs.IsNotFound(err) {
			t.Fatalf("stat of removed %s: got %v, want NotFound", k, err)
		}
	}
	// A removed key can be used again.
	if _, err := sn.Prepare(ctx, "a", ""); err != nil {
		t.Fatalf("prepare of a reused key: %v", err)
	}
}

// chainLayers exercise what a copy or a union must keep: contents, modes
// (setuid too), ownership, symlinks, hardlinks, xattrs, fifos, device
// nodes, mtimes, and deletions of files and directories.
func chainLayers() [][]fsOp {
	t0 := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	return [][]fsOp{
		{
			fsMkdir("etc", 0o755),
			fsWrite("etc/hosts", "127.0.0.1 localhost\n", 0o644),
			fsChtimes("etc/hosts", t0),
			fsMkdir("bin", 0o755),
			fsWrite("bin/tool", "#!/bin/sh\necho tool\n", 0o755),
			fsXattr("bin/tool", "user.keel.test", "one"),
			fsLink("bin/tool", "bin/tool-link"),
			fsSymlink("bin/tool", "tool"),
			fsMkdir("home", 0o755),
			fsMkdir("home/user", 0o700),
			fsChown("home/user", 1000, 1000),
			fsWrite("home/user/secret", "s3cret", 0o600),
			fsChown("home/user/secret", 1000, 1001),
			fsMkdir("dev", 0o755),
			fsMknod("dev/null", 1, 3),
			fsMkdir("run", 0o755),
			fsMkfifo("run/fifo"),
		},
		{
			fsWrite("etc/hosts", "127.0.0.1 localhost\n10.0.0.1 db\n", 0o644),
			fsChtimes("etc/hosts", t0.Add(time.Hour)),
			fsRemove("bin/tool-link"),
			fsWrite("bin/suid", "suid", 0o4755),
			fsSymlink("../etc/hosts", "bin/hosts"),
			fsChtimes("bin/hosts", t0.Add(2*time.Hour)),
		},
		{
			fsRemove("home/user"),
			fsSymlink("/nonexistent/target", "dangling"),
			fsXattr("bin/tool", "user.keel.test", "two"),
			fsXattr("etc", "user.keel.dir", "d"),
		},
		{
			fsLink("etc/hosts", "hosts-hardlink"),
			fsChown("tool", 7, 8),
			fsWrite("big", strings.Repeat("0123456789abcdef", 1<<16), 0o640),
			fsChtimes("big", t0.Add(3*time.Hour)),
		},
		{
			fsRemove("etc/hosts"),
			fsRemove("run"),
			fsWrite("run", "now a file", 0o600),
			fsMkdir("home/other", 0o750),
			fsChown("home/other", 33, 33),
		},
		{
			fsRemove("big"),
			fsRemove("home"),
			fsWrite("etc/hosts", "recreated", 0o600),
			fsRemove("dev/null"),
			fsMknod("dev/zero", 1, 5),
		},
	}
}

func snapLayerChain(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	layers := chainLayers()
	parent := ""
	for i, ops := range layers {
		name := fmt.Sprintf("layer-%d", i)
		commitLayer(ctx, t, sn, name, parent, ops...)
		parent = name
	}
	// Every layer, parents included, shows exactly its own history: a
	// child's changes never leak into its parent.
	for i := range layers {
		ref := refTree(t, layers[:i+1]...)
		for _, kind := range []snapshot.Kind{snapshot.KindView, snapshot.KindActive} {
			key := fmt.Sprintf("check-%s-%d", kind, i)
			var ms []mount.Mount
			var err error
			if kind == snapshot.KindView {
				ms, err = sn.View(ctx, key, fmt.Sprintf("layer-%d", i))
			} else {
				ms, err = sn.Prepare(ctx, key, fmt.Sprintf("layer-%d", i))
			}
			if err != nil {
				t.Fatalf("%s of layer-%d: %v", kind, i, err)
			}
			dir, unmount := mountTemp(t, ms)
			if err := compareTrees(ref, dir); err != nil {
				t.Errorf("%s of layer-%d differs:\n%v", kind, i, err)
			}
			unmount()
		}
	}
}

func snapViewIsReadOnly(ctx context.Context, t conformance.T, e *snapEnv) {
	testkit.RequireRoot(t, "mount")
	sn := e.P
	commitLayer(ctx, t, sn, "base", "", fsWrite("f", "data", 0o644))
	ms, err := sn.View(ctx, "v", "base")
	if err != nil {
		t.Fatalf("view: %v", err)
	}
	dir, _ := mountTemp(t, ms)
	if err := os.WriteFile(filepath.Join(dir, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write in a view: got %v, want EROFS", err)
	}
	if err := os.Remove(filepath.Join(dir, "f")); !errors.Is(err, unix.EROFS) {
		t.Errorf("remove in a view: got %v, want EROFS", err)
	}
}

func snapStatUpdate(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	if _, err := sn.Prepare(ctx, "a", "", snapshot.WithLabels(map[string]string{"x": "1", "y": "2"})); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	info, err := sn.Stat(ctx, "a")
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	if info.Labels["x"] != "1" || info.Labels["y"] != "2" || len(info.Labels) != 2 {
		t.Fatalf("labels at prepare = %v", info.Labels)
	}
	created := info.Created
	time.Sleep(2 * time.Millisecond)

	// One label by path: the others stay.
	got, err := sn.Update(ctx, snapshot.Info{Name: "a", Labels: map[string]string{"x": "10", "z": "ignored"}}, "labels.x")
	if err != nil {
		t.Fatalf("update labels.x: %v", err)
	}
	if fmt.Sprint(got.Labels) != fmt.Sprint(map[string]string{"x": "10", "y": "2"}) {
		t.Errorf("after update labels.x: %v", got.Labels)
	}
	if !got.Updated.After(created) || !got.Created.Equal(created) || got.Kind != snapshot.KindActive {
		t.Errorf("after update: created %s updated %s kind %s, created before %s", got.Created, got.Updated, got.Kind, created)
	}
	// A label path absent from info deletes the label.
	if got, err = sn.Update(ctx, snapshot.Info{Name: "a"}, "labels.y"); err != nil {
		t.Fatalf("update labels.y: %v", err)
	}
	if fmt.Sprint(got.Labels) != fmt.Sprint(map[string]string{"x": "10"}) {
		t.Errorf("after deleting labels.y: %v", got.Labels)
	}
	// "labels" replaces them all; so does no path.
	if got, err = sn.Update(ctx, snapshot.Info{Name: "a", Labels: map[string]string{"n": "1"}}, "labels"); err != nil {
		t.Fatalf("update labels: %v", err)
	}
	if fmt.Sprint(got.Labels) != fmt.Sprint(map[string]string{"n": "1"}) {
		t.Errorf("after update labels: %v", got.Labels)
	}
	if got, err = sn.Update(ctx, snapshot.Info{Name: "a", Labels: map[string]string{"m": "2"}}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if fmt.Sprint(got.Labels) != fmt.Sprint(map[string]string{"m": "2"}) {
		t.Errorf("after update with no path: %v", got.Labels)
	}
	if info, err = sn.Stat(ctx, "a"); err != nil || fmt.Sprint(info.Labels) != fmt.Sprint(got.Labels) {
		t.Errorf("stat after update = %v, %v; update said %v", info.Labels, err, got.Labels)
	}
	if _, err := sn.Update(ctx, snapshot.Info{Name: "missing"}); !errdefs.IsNotFound(err) {
		t.Errorf("update of a missing snapshot: got %v, want NotFound", err)
	}
}

// snapEmptyLabelValueDeletes: containerd's rule, an empty value deletes a
// label and is never stored, at creation as at update.
func snapEmptyLabelValueDeletes(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	if _, err := sn.Prepare(ctx, "a", "", snapshot.WithLabels(map[string]string{"x": "1", "y": "2", "e": ""})); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	commitEmpty(ctx, t, sn, "c", "", snapshot.WithLabels(map[string]string{"k": "v", "e": ""}))
	for key, want := range map[string]map[string]string{"a": {"x": "1", "y": "2"}, "c": {"k": "v"}} {
		if info, err := sn.Stat(ctx, key); err != nil || !labelsEqual(info.Labels, want) {
			t.Errorf("%s: labels at creation = %v, %v; want %v", key, info.Labels, err, want)
		}
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		paths  []string
		want   map[string]string
	}{
		{"OneEmptyDeletes", map[string]string{"x": ""}, []string{"labels.x"}, map[string]string{"y": "2"}},
		{"OneEmptyUnsetStaysUnset", map[string]string{"z": ""}, []string{"labels.z"}, map[string]string{"y": "2"}},
		{"AllDropsEmpty", map[string]string{"m": "1", "n": ""}, []string{"labels"}, map[string]string{"m": "1"}},
		{"NoPathsDropsEmpty", map[string]string{"n": "", "o": "3"}, nil, map[string]string{"o": "3"}},
		{"LastEmptyLeavesNone", map[string]string{"o": ""}, []string{"labels.o"}, nil},
	} {
		got, err := sn.Update(ctx, snapshot.Info{Name: "a", Labels: tc.labels}, tc.paths...)
		if err != nil {
			t.Fatalf("%s: update: %v", tc.name, err)
		}
		if !labelsEqual(got.Labels, tc.want) {
			t.Errorf("%s: update returned %v, want %v", tc.name, got.Labels, tc.want)
		}
		if info, err := sn.Stat(ctx, "a"); err != nil || !labelsEqual(info.Labels, tc.want) {
			t.Errorf("%s: stat = %v, %v; want %v", tc.name, info.Labels, err, tc.want)
		}
	}
}

func labelsEqual(a, b map[string]string) bool {
	return len(a) == len(b) && fmt.Sprint(a) == fmt.Sprint(b)
}

// snapCreatedEqualsUpdated: a snapshot nobody updated has Updated equal
// to Created, exactly, whatever the snapshotter did to make it.
func snapCreatedEqualsUpdated(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "", snapshot.WithLabels(map[string]string{"l": "1"}))
	if _, err := sn.Prepare(ctx, "active", "base", snapshot.WithLabels(map[string]string{"l": "1"})); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if _, err := sn.View(ctx, "view", "base"); err != nil {
		t.Fatalf("view: %v", err)
	}
	if _, err := sn.Prepare(ctx, "root", ""); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	for _, key := range []string{"base", "active", "view", "root"} {
		info, err := sn.Stat(ctx, key)
		if err != nil {
			t.Fatalf("stat %s: %v", key, err)
		}
		if info.Created.IsZero() || !info.Updated.Equal(info.Created) {
			t.Errorf("%s: created %v, updated %v; want equal", key, info.Created, info.Updated)
		}
	}
	err := sn.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		if !info.Updated.Equal(info.Created) {
			t.Errorf("walk %s: created %v, updated %v; want equal", info.Name, info.Created, info.Updated)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
}

func snapWalk(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "", snapshot.WithLabels(map[string]string{"tier": "base", "io.keel/gc.root": "yes"}))
	commitEmpty(ctx, t, sn, "mid", "base", snapshot.WithLabels(map[string]string{"tier": "mid"}))
	if _, err := sn.Prepare(ctx, "work", "mid", snapshot.WithLabels(map[string]string{"tier": "top"})); err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := sn.View(ctx, "look", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	cases := []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"base", "look", "mid", "work"}},
		{[]string{"kind==committed"}, []string{"base", "mid"}},
		{[]string{"kind==active", "kind==view"}, []string{"look", "work"}},
		{[]string{"parent==base"}, []string{"look", "mid"}},
		{[]string{"name==work"}, []string{"work"}},
		{[]string{"name~=^m"}, []string{"mid"}},
		{[]string{"labels.tier==top"}, []string{"work"}},
		{[]string{`labels."io.keel/gc.root"`}, []string{"base"}},
		{[]string{"kind==committed,labels.tier!=base"}, []string{"mid"}},
		// containerd's semantics: a root's parent is the value "", an
		// unset label's value is "" for != and ~=, and "" ors everything.
		{[]string{"parent"}, []string{"base", "look", "mid", "work"}},
		{[]string{`parent!=""`}, []string{"look", "mid", "work"}},
		{[]string{`parent==""`}, []string{"base"}},
		{[]string{`labels.tier!=""`}, []string{"base", "mid", "work"}},
		{[]string{`labels.nope!=""`}, nil},
		{[]string{"labels.tier!=top"}, []string{"base", "look", "mid"}},
		{[]string{"labels.tier~=^$"}, []string{"look"}},
		{[]string{"labels.tier~=/^(base|mid)$/"}, []string{"base", "mid"}},
		{[]string{"labels.io.keel"}, nil},
		{[]string{"name~=(["}, nil},
		{[]string{"name==work", ""}, []string{"base", "look", "mid", "work"}},
		{[]string{"name==work, kind==active"}, []string{"work"}},
	}
	for _, c := range cases {
		var got []string
		err := sn.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
			got = append(got, info.Name)
			return nil
		}, c.filters...)
		slices.Sort(got)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("walk %q = %v, %v; want %v", c.filters, got, err, c.want)
		}
	}
	for _, bad := range []string{"name==", " ", "name==work ", "name ,kind", "labels.io-x", "labels.io.keel/gc.root", "name==/work/", "labels..x"} {
		err := sn.Walk(ctx, func(context.Context, snapshot.Info) error { return nil }, bad)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("walk with the bad filter %q: got %v, want InvalidArgument", bad, err)
		}
	}
	var err error
	// Stopping early returns fn's error.
	stop := errors.New("stop")
	n := 0
	err = sn.Walk(ctx, func(context.Context, snapshot.Info) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("walk stopped by fn: %v after %d calls", err, n)
	}
}

func snapUsage(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	ms, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatalf("%v", err)
	}
	empty, err := sn.Usage(ctx, "a")
	if err != nil {
		t.Fatalf("usage: %v", err)
	}
	testkit.RequireRoot(t, "mount")
	dir, unmount := mountTemp(t, ms)
	const size = 1 << 20
	if err := applyOps(dir, fsWrite("f", strings.Repeat("x", size), 0o644), fsLink("f", "f2")); err != nil {
		t.Fatalf("%v", err)
	}
	unmount()
	u, err := sn.Usage(ctx, "a")
	if err != nil {
		t.Fatalf("usage: %v", err)
	}
	// One more inode, one MiB more: the hardlink counts once.
	if u.Inodes != empty.Inodes+1 || u.Size < empty.Size+size || u.Size >= empty.Size+2*size {
		t.Errorf("usage after writing 1 MiB with two names = %+v (empty: %+v)", u, empty)
	}
	if err := sn.Commit(ctx, "base", "a"); err != nil {
		t.Fatalf("%v", err)
	}
	if c, err := sn.Usage(ctx, "base"); err != nil || c != u {
		t.Errorf("usage of the committed snapshot = %+v, %v; want %+v", c, err, u)
	}
	// A child's own layer does not count its parent's data... for a
	// snapshotter that copies, it does; only a bound is portable.
	if _, err := sn.Prepare(ctx, "b", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	if c, err := sn.Usage(ctx, "b"); err != nil || c.Size > u.Size || c.Inodes > u.Inodes {
		t.Errorf("usage of an untouched child = %+v, %v; want at most the parent's %+v", c, err, u)
	}
}

func snapPrepareReusedKey(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "")
	if _, err := sn.Prepare(ctx, "a", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := sn.View(ctx, "v", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	for _, key := range []string{"a", "v", "base"} {
		_, err := sn.Prepare(ctx, key, "")
		wantErr(t, "prepare of existing "+key, err, errdefs.IsAlreadyExists, "AlreadyExists")
		_, err = sn.View(ctx, key, "base")
		wantErr(t, "view of existing "+key, err, errdefs.IsAlreadyExists, "AlreadyExists")
	}
}

func snapNotFound(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	_, err := sn.Stat(ctx, "missing")
	wantErr(t, "stat", err, errdefs.IsNotFound, "NotFound")
	_, err = sn.Mounts(ctx, "missing")
	wantErr(t, "mounts", err, errdefs.IsNotFound, "NotFound")
	_, err = sn.Usage(ctx, "missing")
	wantErr(t, "usage", err, errdefs.IsNotFound, "NotFound")
	wantErr(t, "remove", sn.Remove(ctx, "missing"), errdefs.IsNotFound, "NotFound")
	wantErr(t, "commit", sn.Commit(ctx, "x", "missing"), errdefs.IsNotFound, "NotFound")
	_, err = sn.Prepare(ctx, "a", "missing")
	wantErr(t, "prepare on a missing parent", err, errdefs.IsNotFound, "NotFound")
	_, err = sn.View(ctx, "v", "missing")
	wantErr(t, "view of a missing parent", err, errdefs.IsNotFound, "NotFound")
	// Nothing was left behind by the failed calls.
	if _, err := sn.Stat(ctx, "a"); !errdefs.IsNotFound(err) {
		t.Errorf("a failed prepare left a snapshot: %v", err)
	}
}

func snapPrepareOnUncommittedParent(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "")
	if _, err := sn.Prepare(ctx, "active", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := sn.View(ctx, "view", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	for _, parent := range []string{"active", "view"} {
		_, err := sn.Prepare(ctx, "x", parent)
		wantErr(t, "prepare on "+parent, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
		_, err = sn.View(ctx, "y", parent)
		wantErr(t, "view of "+parent, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	}
}

func snapRemoveParentWithChildren(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "")
	commitEmpty(ctx, t, sn, "mid", "base")
	if _, err := sn.View(ctx, "v", "mid"); err != nil {
		t.Fatalf("%v", err)
	}
	for _, k := range []string{"base", "mid"} {
		err := sn.Remove(ctx, k)
		wantErr(t, "remove "+k, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
		// The message says what failed.
		if want := fmt.Sprintf("remove %q: snapshot has children", k); err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("remove %s: error %q does not say %q", k, err, want)
		}
	}
	// Children first, then it works.
	for _, k := range []string{"v", "mid", "base"} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
}

func snapCommitViewRefused(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "")
	if _, err := sn.View(ctx, "v", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	wantErr(t, "commit of a view", sn.Commit(ctx, "x", "v"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	wantErr(t, "commit of a committed snapshot", sn.Commit(ctx, "y", "base"), errdefs.IsFailedPrecondition, "FailedPrecondition")
	wantKind(t, sn, ctx, "v", snapshot.KindView, "base")
	if _, err := sn.Stat(ctx, "x"); !errdefs.IsNotFound(err) {
		t.Errorf("a refused commit made a snapshot: %v", err)
	}
}

func snapCommitOntoExistingName(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "")
	if _, err := sn.Prepare(ctx, "a", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := sn.Prepare(ctx, "b", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	wantErr(t, "commit onto a committed name", sn.Commit(ctx, "base", "a"), errdefs.IsAlreadyExists, "AlreadyExists")
	wantErr(t, "commit onto an active key", sn.Commit(ctx, "b", "a"), errdefs.IsAlreadyExists, "AlreadyExists")
	wantKind(t, sn, ctx, "a", snapshot.KindActive, "base")
}

func snapConcurrentPrepareCommit(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "")
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			key, name := fmt.Sprintf("active-%d", i), fmt.Sprintf("layer-%d", i)
			if _, err := sn.Prepare(ctx, key, "base"); err != nil {
				errs <- fmt.Errorf("prepare %s: %w", key, err)
				return
			}
			if err := sn.Commit(ctx, name, key); err != nil {
				errs <- fmt.Errorf("commit %s: %w", name, err)
			}
		})
		// The same key from two callers: exactly one wins.
		wg.Go(func() {
			_, err := sn.Prepare(ctx, "contended", "base")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch {
		case err == nil:
			won++
		case errdefs.IsAlreadyExists(err):
		default:
			t.Errorf("%v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent prepares of one key succeeded, want 1", won)
	}
	count := 0
	err := sn.Walk(ctx, func(context.Context, snapshot.Info) error { count++; return nil }, "kind==committed,parent==base")
	if err != nil || count != n {
		t.Errorf("walk found %d committed children of base (%v), want %d", count, err, n)
	}
}

func snapRestart(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	commitEmpty(ctx, t, sn, "base", "", snapshot.WithLabels(map[string]string{"k": "v"}))
	ms, err := sn.Prepare(ctx, "work", "base")
	if err != nil {
		t.Fatalf("%v", err)
	}
	if _, err := sn.View(ctx, "look", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	mounted := os.Geteuid() == 0
	if mounted {
		dir, unmount := mountTemp(t, ms)
		if err := applyOps(dir, fsWrite("kept", "across restarts", 0o644)); err != nil {
			t.Fatalf("%v", err)
		}
		unmount()
	}

	sn, err = e.Reopen(ctx, t)
	if err != nil {
		t.Fatalf("reopen the same root: %v", err)
	}
	info := wantKind(t, sn, ctx, "base", snapshot.KindCommitted, "")
	if info.Labels["k"] != "v" {
		t.Errorf("labels after restart: %v", info.Labels)
	}
	wantKind(t, sn, ctx, "work", snapshot.KindActive, "base")
	wantKind(t, sn, ctx, "look", snapshot.KindView, "base")
	if mounted {
		ms, err := sn.Mounts(ctx, "work")
		if err != nil {
			t.Fatalf("mounts after restart: %v", err)
		}
		dir, _ := mountTemp(t, ms)
		if b, err := os.ReadFile(filepath.Join(dir, "kept")); err != nil || string(b) != "across restarts" {
			t.Errorf("file written before the restart: %q, %v", b, err)
		}
	}
	// The restarted plugin keeps working.
	if err := sn.Commit(ctx, "top", "work"); err != nil {
		t.Fatalf("commit after restart: %v", err)
	}
	if err := sn.Remove(ctx, "look"); err != nil {
		t.Fatalf("remove after restart: %v", err)
	}
}

// snapCleanup checks what a black box allows: Cleanup keeps every live
// snapshot whole and gives back the space of removed ones. (A plugin's own
// tests plant real orphans.)
func snapCleanup(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	cl, ok := sn.(snapshot.Cleaner)
	if !ok {
		t.Fatalf("plugin announces %q but is no snapshot.Cleaner", snapshot.CapabilityCleanup)
	}
	before := dirUsage(t, e.Root)
	if os.Geteuid() == 0 {
		commitLayer(ctx, t, sn, "base", "", fsWrite("f", "base", 0o644))
	} else {
		commitEmpty(ctx, t, sn, "base", "")
	}
	if _, err := sn.Prepare(ctx, "work", "base"); err != nil {
		t.Fatalf("%v", err)
	}
	for i := range 5 {
		key := fmt.Sprintf("gone-%d", i)
		ms, err := sn.Prepare(ctx, key, "base")
		if err != nil {
			t.Fatalf("%v", err)
		}
		if os.Geteuid() == 0 {
			dir, unmount := mountTemp(t, ms)
			if err := applyOps(dir, fsWrite("junk", strings.Repeat("j", 256<<10), 0o644)); err != nil {
				t.Fatalf("%v", err)
			}
			unmount()
		}
		if err := sn.Remove(ctx, key); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if err := cl.Cleanup(ctx); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	wantKind(t, sn, ctx, "base", snapshot.KindCommitted, "")
	wantKind(t, sn, ctx, "work", snapshot.KindActive, "base")
	if os.Geteuid() == 0 {
		ms, err := sn.Mounts(ctx, "work")
		if err != nil {
			t.Fatalf("%v", err)
		}
		dir, _ := mountTemp(t, ms)
		if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "base" {
			t.Errorf("after cleanup, work's file = %q, %v", b, err)
		}
	}
	if after := dirUsage(t, e.Root); after > before+1<<20 {
		t.Errorf("root grew from %d to %d bytes though the big snapshots were removed and cleaned up", before, after)
	}
	if err := cl.Cleanup(ctx); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

// dirUsage is the apparent size of the files under dir.
func dirUsage(t conformance.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// snapWalkStreams checks that a walk over many snapshots streams: 1,000
// snapshots with 6 KB of labels each (two of 3 KB: keeld, like containerd,
// takes labels of at most 4 KB) are more than one gRPC message may carry
// (4 MiB by default), however the plugin batches them. (Ten times the
// snapshots with a tenth of the labels says the same, ten times slower.)
func snapWalkStreams(ctx context.Context, t conformance.T, e *snapEnv) {
	sn := e.P
	const n = 1000
	pad := strings.Repeat("p", 3000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				_, err := sn.Prepare(ctx, fmt.Sprintf("s%05d", i), "", snapshot.WithLabels(map[string]string{"pad": pad, "pad2": pad, "i": fmt.Sprint(i % 10)}))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("prepare: %v", firstErr)
	}
	t.Logf("prepared %d snapshots in %s", n, time.Since(start).Round(time.Millisecond))
	seen := map[string]bool{}
	err := sn.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		if info.Labels["pad"] != pad || info.Labels["pad2"] != pad {
			return fmt.Errorf("snapshot %s: labels lost in the walk", info.Name)
		}
		seen[info.Name] = true
		return nil
	})
	if err != nil || len(seen) != n {
		t.Fatalf("walk saw %d of %d snapshots: %v", len(seen), n, err)
	}
	count := 0
	err = sn.Walk(ctx, func(context.Context, snapshot.Info) error { count++; return nil }, "labels.i==3")
	if err != nil || count != n/10 {
		t.Errorf("filtered walk saw %d, want %d: %v", count, n/10, err)
	}
}
