package check

// These tests run the checks over the real content-local and native
// snapshotter plugin packages, in process (test code only: core/check
// imports no plugin), and plant one fault each behind keeld's back.

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// fixture is a keeld's data over real plugin packages: the namespaced
// views keeld serves and the plugins behind them.
type fixture struct {
	c           *Checker
	db          *metadata.DB
	content     content.Store // keeld's view
	contentRoot string
	blobs       content.Store // the plugin
	snaps       snapshot.Snapshotter
	backend     snapshot.Snapshotter
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	db, err := metadata.Open(filepath.Join(dir, "root", "meta.db"), metadata.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, contentRoot: filepath.Join(dir, "content")}
	if f.blobs, err = local.New(t.Context(), sdk.Env{Root: f.contentRoot}); err != nil {
		t.Fatal(err)
	}
	f.content = metadata.NewContentStore(db, f.blobs)
	if f.backend, err = native.New(t.Context(), sdk.Env{Root: filepath.Join(dir, "native")}); err != nil {
		t.Fatal(err)
	}
	f.snaps = metadata.NewSnapshotter(db, "native", f.backend)
	t.Cleanup(func() { f.content.Close(); f.snaps.Close() })
	f.c = &Checker{DB: db, Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		API: filepath.Join(dir, "k.sock"), Offline: true}
	return f
}

func ctxNS(t *testing.T) context.Context { return scope.WithNamespace(t.Context(), "default") }

func (f *fixture) writeBlob(t *testing.T, data []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctxNS(t), f.content, "ref-"+desc.Digest.Encoded()[:8], bytes.NewReader(data), desc); err != nil {
		t.Fatal(err)
	}
	return desc
}

// backendKey is the plugin key of the record key.
func (f *fixture) backendKey(t *testing.T, key string) string {
	t.Helper()
	recs, err := f.db.SnapshotRecords("native")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Key == key {
			return r.ID
		}
	}
	t.Fatalf("no record of snapshot %q", key)
	return ""
}

// problem is the part of a Problem the tests compare.
type problem struct {
	kind, object, contains string
	safe                   bool
}

// expect runs the check and compares the problems found with want, then,
// with repair, checks that each safe one was repaired and that a second
// check finds only the unsafe ones.
func (f *fixture) expect(t *testing.T, want ...problem) {
	t.Helper()
	rep := f.c.Run(t.Context(), false)
	f.compare(t, rep, want)
	rep = f.c.Run(t.Context(), true)
	var left []problem
	for _, p := range rep.Problems {
		if p.Safe != p.Repaired {
			t.Errorf("%s %s: safe %v, repaired %v (%s)", p.Kind, p.Object, p.Safe, p.Repaired, p.RepairError)
		}
		if !p.Repaired {
			left = append(left, problem{p.Kind, p.Object, p.Problem, p.Safe})
		}
	}
	f.compare(t, f.c.Run(t.Context(), false), left)
}

func (f *fixture) compare(t *testing.T, rep Report, want []problem) {
	t.Helper()
	if len(rep.Errors) > 0 {
		t.Errorf("check errors: %v", rep.Errors)
	}
	if len(rep.Problems) != len(want) {
		t.Fatalf("found %d problems, want %d: %+v", len(rep.Problems), len(want), rep.Problems)
	}
	for i, w := range want {
		p := rep.Problems[i]
		if p.Kind != w.kind || p.Object != w.object || !strings.Contains(p.Problem, w.contains) || p.Safe != w.safe {
			t.Errorf("problem %d: %+v, want %+v", i, p, w)
		}
		if p.Fix == "" {
			t.Errorf("problem %d has no fix: %+v", i, p)
		}
	}
}

func TestCheckClean(t *testing.T) {
	f := newFixture(t)
	f.writeBlob(t, []byte("a blob"))
	ctx := ctxNS(t)
	if _, err := f.snaps.Prepare(ctx, "a-active", ""); err != nil {
		t.Fatal(err)
	}
	if err := f.snaps.Commit(ctx, "a", "a-active"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.snaps.Prepare(ctx, "b", "a"); err != nil {
		t.Fatal(err)
	}
	f.expect(t)
}

func TestCheckBlobs(t *testing.T) {
	t.Run("CorruptBlob", func(t *testing.T) {
		f := newFixture(t)
		desc := f.writeBlob(t, []byte("the right bytes"))
		path := filepath.Join(f.contentRoot, "blobs", "sha256", desc.Digest.Encoded())
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("the wrong bytes"), 0o644); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindBlob, desc.Digest.String(), "hash to", true})
		if _, err := f.blobs.Info(t.Context(), desc.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("corrupt blob after repair: %v", err)
		}
		if _, err := f.content.Info(ctxNS(t), desc.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("corrupt blob's record after repair: %v", err)
		}
	})
	t.Run("MissingInPlugin", func(t *testing.T) {
		f := newFixture(t)
		desc := f.writeBlob(t, []byte("lost"))
		if err := f.blobs.Delete(t.Context(), desc.Digest); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindBlob, desc.Digest.String(), "missing in the content plugin", true})
	})
	t.Run("Orphan", func(t *testing.T) {
		f := newFixture(t)
		data := []byte("nobody's")
		desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(t.Context(), f.blobs, "orphan", bytes.NewReader(data), desc); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindBlob, desc.Digest.String(), "no namespace records it", true})
		if _, err := f.blobs.Info(t.Context(), desc.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("orphan blob after repair: %v", err)
		}
	})
}

func TestCheckSnapshots(t *testing.T) {
	t.Run("RemovedBehindKeeld", func(t *testing.T) {
		f := newFixture(t)
		ctx := ctxNS(t)
		if _, err := f.snaps.Prepare(ctx, "gone", ""); err != nil {
			t.Fatal(err)
		}
		if err := f.backend.Remove(t.Context(), f.backendKey(t, "gone")); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindSnapshot, "default/native/gone", "missing in the plugin", true})
		if _, err := f.snaps.Stat(ctx, "gone"); !errdefs.IsNotFound(err) {
			t.Errorf("record after repair: %v", err)
		}
	})
	t.Run("RemovedUnderContainer", func(t *testing.T) {
		f := newFixture(t)
		ctx := ctxNS(t)
		if _, err := f.snaps.Prepare(ctx, "c1-rootfs", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := f.db.Containers().Create(ctx, metadata.Container{ID: "c1", Snapshotter: "native", SnapshotKey: "c1-rootfs", Spec: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		if err := f.backend.Remove(t.Context(), f.backendKey(t, "c1-rootfs")); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindSnapshot, "default/native/c1-rootfs", "missing in the plugin", false})
		// And the record stays even when asked directly.
		if err := f.db.DropSnapshotRecord("default", "native", "c1-rootfs"); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("drop of a record a container uses: %v", err)
		}
	})
	t.Run("RemovedWithChild", func(t *testing.T) {
		f := newFixture(t)
		ctx := ctxNS(t)
		if _, err := f.snaps.Prepare(ctx, "p-active", ""); err != nil {
			t.Fatal(err)
		}
		if err := f.snaps.Commit(ctx, "p", "p-active"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.snaps.Prepare(ctx, "child", "p"); err != nil {
			t.Fatal(err)
		}
		// The plugin keeps a parent with children: remove the child's tree
		// first, then the parent's, and record only the parent as lost.
		child := f.backendKey(t, "child")
		if err := f.backend.Remove(t.Context(), child); err != nil {
			t.Fatal(err)
		}
		if err := f.backend.Remove(t.Context(), f.backendKey(t, "p")); err != nil {
			t.Fatal(err)
		}
		if _, err := f.backend.Prepare(t.Context(), child, ""); err != nil {
			t.Fatal(err)
		}
		f.expect(t,
			problem{KindSnapshot, "default/native/child", "plugin's parent", false},
			problem{KindSnapshot, "default/native/p", "missing in the plugin", false},
		)
	})
	t.Run("OrphanInPlugin", func(t *testing.T) {
		f := newFixture(t)
		if _, err := f.backend.Prepare(t.Context(), "orphan", ""); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindSnapshot, "native/orphan", "no record refers to it", true})
		if _, err := f.backend.Stat(t.Context(), "orphan"); !errdefs.IsNotFound(err) {
			t.Errorf("orphan after repair: %v", err)
		}
	})
}

func TestCheckIngests(t *testing.T) {
	// abandon writes part of an ingest through keeld's view and leaves it.
	abandon := func(t *testing.T, f *fixture, ctx context.Context, ref string) {
		t.Helper()
		w, err := f.content.Writer(ctx, content.WithRef(ref))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("part of a blob")); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	t.Run("Abandoned", func(t *testing.T) {
		f := newFixture(t)
		abandon(t, f, ctxNS(t), "pull-1")
		f.expect(t, problem{KindIngest, "default/pull-1", "no lease holds", true})
		if sts, _ := f.blobs.ListStatuses(t.Context()); len(sts) != 0 {
			t.Errorf("ingests after repair: %+v", sts)
		}
	})
	t.Run("AbandonedOnline", func(t *testing.T) {
		f := newFixture(t)
		f.c.Offline = false
		abandon(t, f, ctxNS(t), "pull-1")
		f.expect(t, problem{KindIngest, "default/pull-1", "no lease holds", false})
	})
	t.Run("Leased", func(t *testing.T) {
		f := newFixture(t)
		ctx := ctxNS(t)
		l, err := f.db.Leases().Create(ctx, metadata.Lease{})
		if err != nil {
			t.Fatal(err)
		}
		abandon(t, f, scope.WithLease(ctx, l.ID), "pull-1")
		f.expect(t)
	})
	t.Run("NoRecord", func(t *testing.T) {
		f := newFixture(t)
		w, err := f.blobs.Writer(t.Context(), content.WithRef("stray"))
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("x"))
		w.Close()
		f.expect(t, problem{KindIngest, "stray", "no namespace records", true})
	})
	t.Run("RecordOutlivedIngest", func(t *testing.T) {
		f := newFixture(t)
		abandon(t, f, ctxNS(t), "pull-1")
		if err := f.blobs.Abort(t.Context(), "default/pull-1"); err != nil {
			t.Fatal(err)
		}
		f.expect(t, problem{KindIngest, "default/pull-1", "has no such ingest", true})
	})
}

func TestCheckLeftovers(t *testing.T) {
	testkit.RequireRoot(t, "mount tmpfs")
	f := newFixture(t)
	mountAt := func(dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("none", dir, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	}
	state := f.c.State
	// A killed keeld's layer mount, and an older keeld's (before the
	// per-process dirs).
	layer := filepath.Join(state, "pull", "4242", "layer-1")
	old := filepath.Join(state, "pull", "layer-2")
	mountAt(layer)
	mountAt(old)
	// A killed keeld's plugin socket dir.
	sock := filepath.Join(state, "sockets", "4242", "plugin-dir1", "plugin1")
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	staleSocket(t, sock)
	staleSocket(t, f.c.API)
	// Not keeld's temporary paths, or this process's own: untouched.
	keep := []string{
		filepath.Join(state, "plugins", "runtime.runc", "tasks", "t1", "bundle", "rootfs"),
		filepath.Join(PullDir(state), "layer-3"),
	}
	for _, dir := range keep {
		mountAt(dir)
	}

	f.expect(t,
		problem{KindLeftover, layer, "mount", true},
		problem{KindLeftover, old, "mount", true},
		problem{KindLeftover, filepath.Dir(layer), "temporary dir", true},
		problem{KindLeftover, old, "temporary dir", true},
		problem{KindLeftover, filepath.Dir(filepath.Dir(sock)), "temporary dir", true},
		problem{KindLeftover, f.c.API, "socket nobody serves", true},
	)
	for _, p := range []string{layer, old, filepath.Dir(layer), filepath.Dir(filepath.Dir(sock)), f.c.API} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s after repair: %v", p, err)
		}
	}
	for _, dir := range keep {
		if !mounted(t, dir) {
			t.Errorf("%s was unmounted", dir)
		}
	}

	// Online, the API socket is keeld's own.
	f.c.Offline = false
	staleSocket(t, f.c.API)
	f.expect(t)
}

// staleSocket leaves a unix socket at path that nobody serves.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(b, []byte(" "+dir+" "))
}
