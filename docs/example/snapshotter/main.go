// Command example-snapshotter is a complete keel snapshotter plugin in
// overlay's style: each snapshot is a directory, and a chain of committed
// snapshots is stacked by one overlay mount (layers.go).
package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

func main() { sdk.Serve(snapshot.Plugin("layers", "0.1.0", New)) }

// New opens the snapshotter on env.Root. It takes no config keys and
// refuses a root whose filesystem cannot host overlay upper dirs.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	if err := env.DecodeConfig(&struct{}{}); err != nil {
		return nil, err
	}
	dir := filepath.Join(env.Root, "snapshots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The check works in a scratch dir of env.Root, which one killed
	// mid-check leaves behind: sweep those first.
	if _, err := mount.SweepOverlayChecks(env.Root); err != nil {
		return nil, err
	}
	if err := mount.CheckOverlay(env.Root); err != nil {
		return nil, err
	}
	return backend.Open(ctx, filepath.Join(env.Root, "metadata.db"), layers(dir))
}
