package metadata

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// ifRunningKey marks the calls a collection makes only if the plugin runs
// (the test's SetIfRunning; keeld's is pluginhost.IfRunning).
type ifRunningKey struct{}

// idleConn stands for keeld's connection to a plugin that stops when idle
// (core/pluginhost): while idle, a call marked ifRunningKey fails at once
// with Unavailable and any other starts the plugin. It counts the starts
// and the calls that reached the plugin, and those of them not marked.
type idleConn struct {
	grpc.ClientConnInterface
	mu                      sync.Mutex
	idle                    bool
	starts, calls, unmarked int
}

func (c *idleConn) reach(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	marked := ctx.Value(ifRunningKey{}) != nil
	if c.idle {
		if marked {
			return fmt.Errorf("plugin is not running: %w", errdefs.ErrUnavailable)
		}
		c.idle = false
		c.starts++
	}
	c.calls++
	if !marked {
		c.unmarked++
	}
	return nil
}

func (c *idleConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if err := c.reach(ctx); err != nil {
		return err
	}
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

func (c *idleConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := c.reach(ctx); err != nil {
		return nil, err
	}
	return c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
}

// set makes the plugin idle or running, and zeroes the counts.
func (c *idleConn) set(idle bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle, c.starts, c.calls, c.unmarked = idle, 0, 0, 0
}

func (c *idleConn) counts() (starts, calls, unmarked int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts, c.calls, c.unmarked
}

// inProcess serves def's plugin over in-memory gRPC behind an idleConn.
func inProcess[P any](t *testing.T, def func(conn grpc.ClientConnInterface) P, open func(conformance.Wrap[P]) conformance.Opener[P]) (P, *idleConn) {
	t.Helper()
	var c *idleConn
	p, err := open(func(conn grpc.ClientConnInterface, _ string, _ func() error) P {
		c = &idleConn{ClientConnInterface: conn}
		return def(c)
	})(t.Context(), conformance.Go(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// TestPeriodicGCLeavesIdlePluginsAlone: a periodic collection calls a
// plugin it swept nothing of only if the plugin runs (and then does its
// orphan work there), and starts one it swept something of; a triggered
// collection calls every plugin, as before.
func TestPeriodicGCLeavesIdlePluginsAlone(t *testing.T) {
	db := newDB(t)
	db.SetIfRunning(func(ctx context.Context) context.Context { return context.WithValue(ctx, ifRunningKey{}, true) })
	cback, cconn := inProcess(t, func(conn grpc.ClientConnInterface) content.Store { return content.NewClient(conn) },
		func(w conformance.Wrap[content.Store]) conformance.Opener[content.Store] {
			return conformance.InProcess(content.Plugin("local", "dev", local.New), w)
		})
	sback, sconn := inProcess(t, func(conn grpc.ClientConnInterface) snapshot.Snapshotter { return snapshot.NewClient(conn) },
		func(w conformance.Wrap[snapshot.Snapshotter]) conformance.Opener[snapshot.Snapshotter] {
			return conformance.InProcess(snapshot.Plugin("native", "dev", native.New), w)
		})
	f := &gcFixture{db: db, cback: cback, cs: NewContentStore(db, cback), sback: sback}
	f.sn = NewSnapshotter(db, "native", sback)
	t.Cleanup(func() { f.cs.Close(); f.sn.Close() })
	ctx := nsCtx(t, "ns")

	// img-a holds one blob; img-b a blob and the snapshot it names.
	a := f.blob(t, ctx, "a", nil)
	f.committed(t, ctx, "s1", "", nil)
	b := f.blob(t, ctx, "b", map[string]string{gc.LabelRefSnapshotPrefix + "native": "s1"})
	for name, d := range map[string]ocispec.Descriptor{"img-a": a, "img-b": b} {
		d.MediaType = ocispec.MediaTypeImageManifest
		if _, err := db.Images().Create(ctx, Image{Name: name, Target: d}); err != nil {
			t.Fatal(err)
		}
	}
	// Orphans: in the backends, named by no metadata.
	orphan := ocispec.Descriptor{Digest: digest.FromString("orphan"), Size: 6}
	if err := content.WriteBlob(t.Context(), cback, "orphan", bytes.NewReader([]byte("orphan")), orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := sback.Prepare(t.Context(), "orphan-snap", ""); err != nil {
		t.Fatal(err)
	}

	collect := func(periodic bool, wantRemoved ...string) {
		t.Helper()
		rep, err := db.GarbageCollect(t.Context(), gc.Options{Periodic: periodic})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Errors) > 0 {
			t.Fatalf("gc errors: %v", rep.Errors)
		}
		if got := names(rep.Removed); !slices.Equal(got, sorted(wantRemoved...)) {
			t.Fatalf("removed %v, want %v", got, sorted(wantRemoved...))
		}
	}
	// want checks a plugin's counts since set: starts, and whether calls
	// reached it and all were marked.
	want := func(what string, c *idleConn, starts int, called, allMarked bool) {
		t.Helper()
		s, calls, unmarked := c.counts()
		if s != starts || (calls > 0) != called || allMarked && unmarked > 0 {
			t.Errorf("%s: %d starts, %d calls (%d unmarked); want %d starts, called %v, all marked %v", what, s, calls, unmarked, starts, called, allMarked)
		}
	}
	setAll := func(idle bool) { cconn.set(idle); sconn.set(idle) }

	t.Run("IdleAndNothingSwept", func(t *testing.T) {
		setAll(true)
		collect(true)
		want("content", cconn, 0, false, true)
		want("snapshotter", sconn, 0, false, true)
		if _, err := cback.Info(t.Context(), orphan.Digest); err != nil {
			t.Errorf("orphan blob: %v, want it left for a collection that finds the plugin running", err)
		}
	})
	t.Run("RunningAndNothingSwept", func(t *testing.T) {
		setAll(false)
		collect(true, ":"+orphan.Digest.String(), ":native/orphan-snap")
		want("content", cconn, 0, true, true)
		want("snapshotter", sconn, 0, true, true)
	})
	t.Run("ContentSwept", func(t *testing.T) {
		setAll(true)
		if err := db.Images().Delete(ctx, "img-a"); err != nil {
			t.Fatal(err)
		}
		collect(true, "ns:"+a.Digest.String())
		want("content", cconn, 1, true, false)
		want("snapshotter", sconn, 0, false, true)
		if _, err := cback.Info(t.Context(), a.Digest); !errdefs.IsNotFound(err) {
			t.Errorf("swept blob in the backend: %v", err)
		}
	})
	t.Run("TriggeredCallsAll", func(t *testing.T) {
		setAll(true)
		collect(false)
		want("content", cconn, 1, true, false)
		want("snapshotter", sconn, 1, true, false)
	})
	t.Run("BothSwept", func(t *testing.T) {
		setAll(true)
		if err := db.Images().Delete(ctx, "img-b"); err != nil {
			t.Fatal(err)
		}
		collect(true, "ns:"+b.Digest.String(), "ns:native/s1")
		want("content", cconn, 1, true, false)
		want("snapshotter", sconn, 1, true, false)
	})
}
