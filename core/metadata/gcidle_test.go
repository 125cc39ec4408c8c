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
	name                    string
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
func inProcess[P any](t *testing.T, name string, def func(conn grpc.ClientConnInterface) P, open func(conformance.Wrap[P]) conformance.Opener[P]) (P, *idleConn) {
	t.Helper()
	var c *idleConn
	p, err := open(func(conn grpc.ClientConnInterface, _ string, _ func() error) P {
		c = &idleConn{ClientConnInterface: conn, name: name}
		return def(c)
	})(t.Context(), conformance.Go(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

// TestBackgroundGCLeavesIdlePluginsAlone: a background collection (the
// scheduler's tick or trigger) calls a plugin it swept nothing of only if
// the plugin runs (and then does its orphan work there), and starts one it
// swept something of; an on-demand collection calls every plugin.
func TestBackgroundGCLeavesIdlePluginsAlone(t *testing.T) {
	db := newDB(t)
	db.SetIfRunning(func(ctx context.Context) context.Context { return context.WithValue(ctx, ifRunningKey{}, true) })
	cback, cconn := inProcess(t, "content", func(conn grpc.ClientConnInterface) content.Store { return content.NewClient(conn) },
		func(w conformance.Wrap[content.Store]) conformance.Opener[content.Store] {
			return conformance.InProcess(content.Plugin("local", "dev", local.New), w)
		})
	sback, sconn := inProcess(t, "snapshotter", func(conn grpc.ClientConnInterface) snapshot.Snapshotter { return snapshot.NewClient(conn) },
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

	// plugin is what a case expects of one plugin: its starts, and
	// whether calls reached it, all made only if it runs.
	type plugin struct {
		starts    int
		called    bool
		allMarked bool
	}
	left := plugin{0, false, true} // left alone
	for _, c := range []struct {
		name       string
		idle       bool   // both plugins stopped for idleness
		background bool   // the scheduler's collection, not keel gc's
		rmImage    string // removed before the collection
		removed    []string
		content    plugin
		snap       plugin
	}{
		{"IdleAndNothingSwept", true, true, "", nil, left, left},
		// Orphans go when the plugins run anyway, through marked calls.
		{"RunningAndNothingSwept", false, true, "", []string{":" + orphan.Digest.String(), ":native/orphan-snap"},
			plugin{0, true, true}, plugin{0, true, true}},
		{"ContentSwept", true, true, "img-a", []string{"ns:" + a.Digest.String()}, plugin{1, true, false}, left},
		{"OnDemandCallsAll", true, false, "", nil, plugin{1, true, false}, plugin{1, true, false}},
		{"BothSwept", true, true, "img-b", []string{"ns:" + b.Digest.String(), "ns:native/s1"},
			plugin{1, true, false}, plugin{1, true, false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cconn.set(c.idle)
			sconn.set(c.idle)
			if c.rmImage != "" {
				if err := db.Images().Delete(ctx, c.rmImage); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := db.GarbageCollect(t.Context(), gc.Options{Background: c.background})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Errors) > 0 {
				t.Fatalf("gc errors: %v", rep.Errors)
			}
			if got, want := names(rep.Removed), sorted(c.removed...); !slices.Equal(got, want) {
				t.Fatalf("removed %v, want %v", got, want)
			}
			for what, w := range map[*idleConn]plugin{cconn: c.content, sconn: c.snap} {
				starts, calls, unmarked := what.counts()
				if starts != w.starts || (calls > 0) != w.called || w.allMarked && unmarked > 0 {
					t.Errorf("%s: %d starts, %d calls (%d unmarked); want %+v", what.name, starts, calls, unmarked, w)
				}
			}
		})
	}
	// Whatever the collections removed left the backends too.
	for _, d := range []digest.Digest{a.Digest, b.Digest, orphan.Digest} {
		if _, err := cback.Info(t.Context(), d); !errdefs.IsNotFound(err) {
			t.Errorf("blob %s in the backend: %v", d, err)
		}
	}
}
