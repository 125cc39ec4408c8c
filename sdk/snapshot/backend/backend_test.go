package backend_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
	"github.com/keel-runtime/keel/sdk/snapshot/storage"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// dirs is a real copy backend keeping <root>/<id>. Its function fields,
// when set, run first and may fail a call: failures a real disk does not
// produce on demand.
type dirs struct {
	root string

	create func(id string, parentIDs []string) error
	commit func(id string) error
	remove func(id string) error

	mu       sync.Mutex
	calls    []string
	cleanups int
	closed   bool
}

var (
	_ backend.Backend  = (*dirs)(nil)
	_ backend.Lister   = (*dirs)(nil)
	_ snapshot.Cleaner = (*dirs)(nil)
)

func (d *dirs) dir(id string) string { return filepath.Join(d.root, id) }

func (d *dirs) record(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, fmt.Sprintf(format, args...))
}

func (d *dirs) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	d.record("create %s %s %v", id, kind, parentIDs)
	if d.create != nil {
		if err := d.create(id, parentIDs); err != nil {
			return err
		}
	}
	if len(parentIDs) == 0 {
		return os.MkdirAll(d.dir(id), 0o755)
	}
	// cp -a keeps what a snapshot copy must (owners, modes, times, xattrs,
	// hardlinks, special files); this test copies with coreutils, native
	// with continuity.
	if out, err := exec.Command("cp", "-a", d.dir(parentIDs[0]), d.dir(id)).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, out)
	}
	return nil
}

func (d *dirs) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	mode := "rw"
	if kind == snapshot.KindView {
		mode = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: d.dir(id), Options: []string{"rbind", mode}}}
}

func (d *dirs) Commit(ctx context.Context, id string) error {
	d.record("commit %s", id)
	if d.commit != nil {
		if err := d.commit(id); err != nil {
			return err
		}
	}
	return backend.SyncFS(d.dir(id))
}

func (d *dirs) Remove(ctx context.Context, id string) error {
	d.record("remove %s", id)
	if d.remove != nil {
		if err := d.remove(id); err != nil {
			return err
		}
	}
	return os.RemoveAll(d.dir(id))
}

func (d *dirs) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, d.dir(id))
}

func (d *dirs) List(ctx context.Context) ([]string, error) { return backend.ListDir(d.root) }

func (d *dirs) Cleanup(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cleanups++
	return nil
}

func (d *dirs) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *dirs) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// noList is a Backend that cannot list: no Cleanup.
type noList struct{ d *dirs }

func (n noList) Create(ctx context.Context, id string, k snapshot.Kind, p []string) error {
	return n.d.Create(ctx, id, k, p)
}
func (n noList) Mounts(id string, k snapshot.Kind, p []string) []mount.Mount {
	return n.d.Mounts(id, k, p)
}
func (n noList) Commit(ctx context.Context, id string) error { return n.d.Commit(ctx, id) }
func (n noList) Remove(ctx context.Context, id string) error { return n.d.Remove(ctx, id) }
func (n noList) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return n.d.Usage(ctx, id)
}

func TestConformance(t *testing.T) {
	snapshottest.Run(conformance.Go(t), snapshottest.InProcess(
		func(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
			return backend.Open(ctx, filepath.Join(env.Root, "metadata.db"), &dirs{root: filepath.Join(env.Root, "snapshots")})
		}))
}

// open opens a snapshotter on root with d keeping its data in root/snapshots.
func open(t *testing.T, root string, d *dirs) snapshot.Snapshotter {
	t.Helper()
	d.root = filepath.Join(root, "snapshots")
	s, err := backend.Open(context.Background(), filepath.Join(root, "metadata.db"), d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestParentChain: the backend sees ids, parents nearest first, in Create
// and Mounts alike, and a commit keeps the id.
func TestParentChain(t *testing.T) {
	ctx := context.Background()
	d := &dirs{}
	s := open(t, t.TempDir(), d)
	parent := ""
	for _, name := range []string{"l1", "l2", "l3"} {
		if _, err := s.Prepare(ctx, name+"-a", parent); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, name, name+"-a"); err != nil {
			t.Fatal(err)
		}
		parent = name
	}
	ms, err := s.View(ctx, "v", "l3")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"create 1 active []", "commit 1",
		"create 2 active [1]", "commit 2",
		"create 3 active [2 1]", "commit 3",
		"create 4 view [3 2 1]",
	}
	if got := d.Calls(); !slices.Equal(got, want) {
		t.Errorf("backend calls:\n got %q\nwant %q", got, want)
	}
	if len(ms) != 1 || ms[0].Source != d.dir("4") || !slices.Equal(ms[0].Options, []string{"rbind", "ro"}) {
		t.Errorf("view mounts = %+v", ms)
	}
	if _, err := s.Mounts(ctx, "l3"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("mounts of a committed snapshot: %v, want FailedPrecondition", err)
	}
}

// TestCreateFails: a failed Create leaves nothing, keeps its error class,
// and the key can be used again.
func TestCreateFails(t *testing.T) {
	ctx := context.Background()
	d := &dirs{}
	s := open(t, t.TempDir(), d)
	d.create = func(id string, _ []string) error {
		os.MkdirAll(filepath.Join(d.dir(id), "half"), 0o755) // what a crash mid-copy leaves
		return fmt.Errorf("disk full: %w", errdefs.ErrResourceExhausted)
	}
	_, err := s.Prepare(ctx, "a", "", snapshot.WithLabels(map[string]string{"x": "y"}))
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("prepare: %v, want the backend's ResourceExhausted", err)
	}
	if _, err := s.Stat(ctx, "a"); !errdefs.IsNotFound(err) {
		t.Errorf("stat after a failed prepare: %v", err)
	}
	if exists(d.dir("1")) {
		t.Errorf("a failed create left its data")
	}
	d.create = nil
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatalf("prepare again: %v", err)
	}
	if info, err := s.Stat(ctx, "a"); err != nil || len(info.Labels) != 0 {
		t.Errorf("stat = %+v, %v", info, err)
	}
}

// TestPendingHidden: while Create runs, the snapshot is nowhere to be seen,
// its key is taken, its parent cannot be removed, and Cleanup waits.
func TestPendingHidden(t *testing.T) {
	ctx := context.Background()
	d := &dirs{}
	s := open(t, t.TempDir(), d)
	if _, err := s.Prepare(ctx, "base-a", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "base", "base-a"); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	d.create = func(string, []string) error {
		close(started)
		<-release
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Prepare(ctx, "slow", "base", snapshot.WithLabels(map[string]string{"k": "v"}))
		done <- err
	}()
	<-started
	if err := s.Remove(ctx, "base"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove of the parent of a pending snapshot: %v, want FailedPrecondition", err)
	}
	if _, err := s.Stat(ctx, "slow"); !errdefs.IsNotFound(err) {
		t.Errorf("stat of a pending snapshot: %v, want NotFound", err)
	}
	if _, err := s.Mounts(ctx, "slow"); !errdefs.IsNotFound(err) {
		t.Errorf("mounts of a pending snapshot: %v, want NotFound", err)
	}
	if _, err := s.Update(ctx, snapshot.Info{Name: "slow"}); !errdefs.IsNotFound(err) {
		t.Errorf("update of a pending snapshot: %v, want NotFound", err)
	}
	if err := s.Remove(ctx, "slow"); !errdefs.IsNotFound(err) {
		t.Errorf("remove of a pending snapshot: %v, want NotFound", err)
	}
	if _, err := s.Prepare(ctx, "slow", ""); !errdefs.IsAlreadyExists(err) {
		t.Errorf("prepare of a pending key: %v, want AlreadyExists", err)
	}
	n := 0
	s.Walk(ctx, func(context.Context, snapshot.Info) error { n++; return nil })
	if n != 1 {
		t.Errorf("walk saw %d snapshots, want the parent only", n)
	}
	cleaned := make(chan error, 1)
	go func() { cleaned <- s.(snapshot.Cleaner).Cleanup(ctx) }()
	select {
	case <-cleaned:
		t.Errorf("cleanup ran while a create was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-cleaned; err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ctx, "slow")
	if err != nil || fmt.Sprint(info.Labels) != "map[k:v]" {
		t.Errorf("stat = %+v, %v; want labels k=v only", info, err)
	}
	if !exists(d.dir("2")) {
		t.Errorf("cleanup took a live snapshot's data")
	}
	if err := s.Remove(ctx, "base"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove of a parent: %v, want FailedPrecondition", err)
	}
}

// TestCrashAfterCreate: data a crash left made but not recorded (the
// backend's Create done, the record not written) is removed when the
// snapshotter opens; recorded snapshots keep theirs.
func TestCrashAfterCreate(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, &dirs{})
	if _, err := s.Prepare(ctx, "kept", ""); err != nil {
		t.Fatal(err)
	}
	s.Close()

	store, err := storage.Open(filepath.Join(root, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := store.NewID(ctx)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(root, "snapshots", id, "partial")
	if err := os.MkdirAll(torn, 0o755); err != nil {
		t.Fatal(err)
	}

	d := &dirs{}
	s = open(t, root, d)
	if exists(torn) {
		t.Errorf("the data of unrecorded id %s survived the open", id)
	}
	if slices.Contains(d.Calls(), "remove 1") || !exists(d.dir("1")) {
		t.Errorf("the open removed the recorded snapshot's data; calls %q", d.Calls())
	}
	if _, err := s.Mounts(ctx, "kept"); err != nil {
		t.Errorf("mounts of the recorded snapshot: %v", err)
	}
	ms, err := s.Prepare(ctx, "new", "")
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Source == d.dir(id) {
		t.Errorf("id %s handed out again", id)
	}
}

// TestCrashWhileCreating: a record left pending by a crash is undone when
// the snapshotter opens: data and record gone, the key free.
func TestCrashWhileCreating(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	store, err := storage.Open(filepath.Join(root, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = store.Update(ctx, func(tx *storage.Tx) error {
		sn, err := tx.Create(snapshot.KindActive, "torn", "", snapshot.WithLabels(map[string]string{backend.LabelPending: "true"}))
		if err != nil {
			return err
		}
		return os.MkdirAll(filepath.Join(root, "snapshots", sn.ID, "partial"), 0o755)
	})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}

	d := &dirs{}
	s := open(t, root, d)
	if got := d.Calls(); !slices.Equal(got, []string{"remove 1"}) {
		t.Errorf("backend calls at open: %q", got)
	}
	if exists(d.dir("1")) {
		t.Errorf("the torn snapshot's data survived the open")
	}
	if _, err := s.Stat(ctx, "torn"); !errdefs.IsNotFound(err) {
		t.Errorf("stat of the torn snapshot: %v", err)
	}
	if _, err := s.Prepare(ctx, "torn", ""); err != nil {
		t.Errorf("prepare of the torn key: %v", err)
	}
}

// TestCommitFails: the snapshot stays active and a retry works.
func TestCommitFails(t *testing.T) {
	ctx := context.Background()
	d := &dirs{}
	s := open(t, t.TempDir(), d)
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	d.commit = func(string) error { return fmt.Errorf("io: %w", errdefs.ErrUnavailable) }
	if err := s.Commit(ctx, "c", "a"); !errdefs.IsUnavailable(err) {
		t.Fatalf("commit: %v, want the backend's Unavailable", err)
	}
	if info, err := s.Stat(ctx, "a"); err != nil || info.Kind != snapshot.KindActive {
		t.Fatalf("stat after a failed commit = %+v, %v", info, err)
	}
	d.commit = nil
	if err := s.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	// Refusals come before the backend is asked to sync anything.
	before := len(d.Calls())
	if _, err := s.Prepare(ctx, "b", "c"); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "c", "b"); !errdefs.IsAlreadyExists(err) {
		t.Errorf("commit onto an existing name: %v", err)
	}
	if got := d.Calls()[before:]; len(got) != 1 {
		t.Errorf("backend calls for a refused commit: %q", got)
	}
}

// TestRemoveFailsThenCleanup: the snapshot is gone even when its data
// could not be removed; Cleanup takes the orphan, and only it.
func TestRemoveFailsThenCleanup(t *testing.T) {
	ctx := context.Background()
	d := &dirs{}
	s := open(t, t.TempDir(), d)
	for _, k := range []string{"keep", "drop"} {
		if _, err := s.Prepare(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	d.remove = func(string) error { return errors.New("device busy") }
	if err := s.Remove(ctx, "drop"); err == nil {
		t.Fatal("remove hid the backend's failure")
	}
	if _, err := s.Stat(ctx, "drop"); !errdefs.IsNotFound(err) {
		t.Errorf("stat after remove: %v", err)
	}
	d.remove = nil
	if err := os.MkdirAll(d.dir("99"), 0o755); err != nil { // an orphan of some crash
		t.Fatal(err)
	}
	if err := s.(snapshot.Cleaner).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	ids, _ := backend.ListDir(d.root)
	if !slices.Equal(ids, []string{"1"}) {
		t.Errorf("after cleanup the backend holds %v, want [1]", ids)
	}
	if d.cleanups != 1 {
		t.Errorf("the backend's own Cleanup ran %d times, want 1", d.cleanups)
	}
}

// TestCleanerOnlyWhenListing: without List (or Cleanup) the snapshotter
// is no Cleaner, so the plugin does not announce the capability.
func TestCleanerOnlyWhenListing(t *testing.T) {
	root := t.TempDir()
	s, err := backend.Open(context.Background(), filepath.Join(root, "metadata.db"), noList{&dirs{root: root}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(snapshot.Cleaner); ok {
		t.Error("a backend without List made a Cleaner")
	}
}

func TestReservedLabel(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), &dirs{})
	if _, err := s.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{backend.LabelPending: "x"}
	cases := []struct {
		name string
		call func() error
	}{
		{"prepare", func() error { _, err := s.Prepare(ctx, "b", "", snapshot.WithLabels(bad)); return err }},
		{"view", func() error { _, err := s.View(ctx, "b", "", snapshot.WithLabels(bad)); return err }},
		{"commit", func() error { return s.Commit(ctx, "c", "a", snapshot.WithLabels(bad)) }},
		{"update one", func() error {
			_, err := s.Update(ctx, snapshot.Info{Name: "a", Labels: bad}, "labels."+backend.LabelPending)
			return err
		}},
		{"update all", func() error { _, err := s.Update(ctx, snapshot.Info{Name: "a", Labels: bad}, "labels"); return err }},
		{"update no path", func() error { _, err := s.Update(ctx, snapshot.Info{Name: "a", Labels: bad}); return err }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
	if info, err := s.Stat(ctx, "a"); err != nil || info.Kind != snapshot.KindActive || len(info.Labels) != 0 {
		t.Errorf("stat after refused calls = %+v, %v", info, err)
	}
}

func TestCloseClosesBackend(t *testing.T) {
	d := &dirs{}
	root := t.TempDir()
	d.root = root
	s, err := backend.Open(context.Background(), filepath.Join(root, "metadata.db"), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil || !d.closed {
		t.Errorf("close = %v, backend closed %v", err, d.closed)
	}
}

// TestOpenFailsClosesStore: a New that fails releases the metastore, so
// the next open does not wait for its lock.
func TestOpenFailsClosesStore(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	store, err := storage.Open(filepath.Join(root, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	store.Update(ctx, func(tx *storage.Tx) error {
		_, err := tx.Create(snapshot.KindActive, "torn", "", snapshot.WithLabels(map[string]string{backend.LabelPending: "true"}))
		return err
	})
	d := &dirs{root: root, remove: func(string) error { return errors.New("stuck") }}
	if _, err := backend.New(ctx, store, d); err == nil {
		t.Fatal("new succeeded though the torn snapshot could not be undone")
	}
	d.remove = nil
	start := time.Now()
	s, err := backend.Open(ctx, filepath.Join(root, "metadata.db"), d)
	if err != nil {
		t.Fatalf("reopen: %v (after %s)", err, time.Since(start))
	}
	s.Close()
}

func TestListDirMissing(t *testing.T) {
	ids, err := backend.ListDir(filepath.Join(t.TempDir(), "none"))
	if err != nil || ids != nil {
		t.Errorf("ListDir of a missing dir = %v, %v", ids, err)
	}
}

// TestCopyDirAttrs: the mode, special bits included, and the owner are
// copied, whatever to had.
func TestCopyDirAttrs(t *testing.T) {
	testkit.RequireRoot(t, "chown")
	from, to := t.TempDir(), t.TempDir()
	if err := os.Chown(from, 1000, 1001); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(from, 0o2750); err != nil {
		t.Fatal(err)
	}
	if err := backend.CopyDirAttrs(from, to); err != nil {
		t.Fatalf("CopyDirAttrs: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(to, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o2750 || st.Uid != 1000 || st.Gid != 1001 {
		t.Errorf("to is mode %04o owner %d:%d, want 2750 1000:1001", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if err := backend.CopyDirAttrs(filepath.Join(from, "none"), to); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CopyDirAttrs from a missing dir: %v, want ErrNotExist", err)
	}
}

// TestDirUsage checks DirUsage against du(1) on a tree with a hardlink,
// a sparse file, a symlink, a fifo and nested dirs: the same bytes (st_blocks)
// and inodes, hardlinks counted once.
func TestDirUsage(t *testing.T) {
	dir := t.TempDir()
	for _, op := range []func() error{
		func() error { return os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755) },
		func() error { return os.WriteFile(filepath.Join(dir, "a", "f"), make([]byte, 10000), 0o644) },
		func() error { return os.Link(filepath.Join(dir, "a", "f"), filepath.Join(dir, "a", "b", "link")) },
		func() error { return os.Symlink("../f", filepath.Join(dir, "a", "b", "sym")) },
		func() error { return unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644) },
		func() error {
			f, err := os.Create(filepath.Join(dir, "sparse"))
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("end"), 64<<20)
			return err
		},
	} {
		if err := op(); err != nil {
			t.Fatal(err)
		}
	}
	u, err := backend.DirUsage(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	du := func(args ...string) int64 {
		out, err := exec.Command("du", append(args, dir)...).Output()
		if err != nil {
			t.Fatalf("du %v: %v", args, err)
		}
		n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	want := snapshot.Usage{Size: du("-s", "-B1"), Inodes: du("-s", "--inodes")}
	if u != want {
		t.Errorf("DirUsage = %+v, du says %+v", u, want)
	}
	if u.Inodes != 7 || u.Size >= 64<<20 {
		t.Errorf("DirUsage = %+v, want 7 inodes (the hardlink once) and the sparse file's holes not counted", u)
	}

	if _, err := backend.DirUsage(t.Context(), filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DirUsage of a missing dir: %v, want ErrNotExist", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := backend.DirUsage(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("DirUsage with a cancelled context: %v", err)
	}
}

// labeled is a copy backend that labels its snapshots and reports a fixed
// usage for committed ones.
type labeled struct{ *dirs }

var (
	_ backend.Labeler    = labeled{}
	_ backend.KindUsager = labeled{}
)

func (l labeled) Labels(id string, kind snapshot.Kind) map[string]string {
	return map[string]string{"test/dir": l.dir(id), "test/kind": kind.String(), "mine": "backend"}
}

func (l labeled) UsageOf(ctx context.Context, id string, kind snapshot.Kind) (snapshot.Usage, error) {
	if kind == snapshot.KindCommitted {
		return snapshot.Usage{Inodes: 42}, nil
	}
	return l.Usage(ctx, id)
}

func TestLabelerKindUsager(t *testing.T) {
	ctx := context.Background()
	d := labeled{&dirs{root: t.TempDir()}}
	sn, err := backend.Open(ctx, filepath.Join(t.TempDir(), "metadata.db"), d)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if _, err := sn.Prepare(ctx, "a", "", snapshot.WithLabels(map[string]string{"mine": "caller"})); err != nil {
		t.Fatal(err)
	}
	info, err := sn.Stat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"test/dir": d.dir("1"), "test/kind": "active", "mine": "caller"}
	if fmt.Sprint(info.Labels) != fmt.Sprint(want) {
		t.Errorf("labels after prepare = %v, want %v", info.Labels, want)
	}
	// The backend's labels and the cleared pending mark are not updates.
	if !info.Updated.Equal(info.Created) {
		t.Errorf("after prepare: created %v, updated %v; want equal", info.Created, info.Updated)
	}
	if u, err := sn.Usage(ctx, "a"); err != nil || u.Inodes == 42 {
		t.Errorf("usage of the active snapshot = %+v, %v: want the backend's Usage", u, err)
	}
	if err := sn.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	if info, err = sn.Stat(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"test/dir": d.dir("1"), "test/kind": "committed", "mine": "backend"}
	if fmt.Sprint(info.Labels) != fmt.Sprint(want) {
		t.Errorf("labels after commit = %v, want %v", info.Labels, want)
	}
	if u, err := sn.Usage(ctx, "c"); err != nil || u.Inodes != 42 {
		t.Errorf("usage of the committed snapshot = %+v, %v: want UsageOf's", u, err)
	}
}

// finishing is a backend with work left after a commit is recorded.
type finishing struct {
	*dirs
	fail error
}

var _ backend.CommitFinisher = finishing{}

func (f finishing) FinishCommit(ctx context.Context, id string) error {
	f.record("finish %s", id)
	return f.fail
}

// TestCommitFinisher: FinishCommit runs after the record, and only for a
// commit that was recorded; its error is returned, the commit stands.
func TestCommitFinisher(t *testing.T) {
	ctx := context.Background()
	d := finishing{dirs: &dirs{root: t.TempDir()}}
	sn, err := backend.Open(ctx, filepath.Join(t.TempDir(), "metadata.db"), d)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	for _, k := range []string{"a", "b"} {
		if _, err := sn.Prepare(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := sn.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	if calls := d.Calls(); calls[len(calls)-2] != "commit 1" || calls[len(calls)-1] != "finish 1" {
		t.Errorf("calls = %q, want commit then finish of 1", calls)
	}
	// Refused by the metastore: no finish.
	before := len(d.Calls())
	if err := sn.Commit(ctx, "c", "b"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("commit onto an existing name: %v", err)
	}
	if got := d.Calls()[before:]; slices.ContainsFunc(got, func(c string) bool { return c == "finish 2" }) {
		t.Errorf("finish called for a refused commit: %q", got)
	}
	d.fail = fmt.Errorf("busy: %w", errdefs.ErrUnavailable)
	sn2, err := backend.Open(ctx, filepath.Join(t.TempDir(), "metadata.db"), d)
	if err != nil {
		t.Fatal(err)
	}
	defer sn2.Close()
	if _, err := sn2.Prepare(ctx, "x", ""); err != nil {
		t.Fatal(err)
	}
	if err := sn2.Commit(ctx, "y", "x"); !errdefs.IsUnavailable(err) {
		t.Fatalf("commit whose finish fails: %v, want the finisher's Unavailable", err)
	}
	if info, err := sn2.Stat(ctx, "y"); err != nil || info.Kind != snapshot.KindCommitted {
		t.Errorf("stat after a failed finish = %+v, %v: want committed", info, err)
	}
}
