package images

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// gatedCommit is a snapshotter whose first Commit waits for release,
// holding keeld's record of it pending meanwhile.
type gatedCommit struct {
	snapshot.Snapshotter
	once             sync.Once
	entered, release chan struct{}
}

func (g *gatedCommit) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Snapshotter.Commit(ctx, name, key, opts...)
}

// TestCommitLayerWaitsForConcurrentCommit: two unpacks of one layer commit
// the same chain at once; the second waits until the first's commit is
// visible (the next layer needs it as a parent), then drops its copy.
func TestCommitLayerWaitsForConcurrentCommit(t *testing.T) {
	db, err := metadata.Open(filepath.Join(t.TempDir(), "meta.db"), metadata.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	backend, err := native.New(t.Context(), sdk.Env{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedCommit{Snapshotter: backend, entered: make(chan struct{}), release: make(chan struct{})}
	sn := metadata.NewSnapshotter(db, "native", g)
	defer sn.Close()
	ctx := scope.WithNamespace(t.Context(), "ns")
	for _, key := range []string{"a", "b"} {
		if _, err := sn.Prepare(ctx, key, ""); err != nil {
			t.Fatal(err)
		}
	}
	first := make(chan error, 1)
	go func() { first <- commitLayer(ctx, sn, "chain", "a") }()
	<-g.entered
	second := make(chan error, 1)
	go func() { second <- commitLayer(ctx, sn, "chain", "b") }()
	select {
	case err := <-second:
		t.Fatalf("second commit returned (%v) while the first is pending", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(g.release)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	if info, err := sn.Stat(ctx, "chain"); err != nil || info.Kind != snapshot.KindCommitted {
		t.Fatalf("chain: %+v, %v", info, err)
	}
	if _, err := sn.Stat(ctx, "b"); err == nil {
		t.Error("the second unpack's snapshot is left")
	}
	if _, err := sn.Prepare(ctx, "next", "chain"); err != nil {
		t.Errorf("prepare on the chain: %v", err)
	}
}
