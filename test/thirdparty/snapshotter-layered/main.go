// Command keel-snapshotter-layered is a keel snapshotter plugin written by a
// "third party" from docs/writing-a-plugin.md alone: an overlay-style
// snapshotter on sdk/snapshot/backend. Each snapshot's own layer is a
// directory; an active snapshot on a parent is that directory as overlay's
// upper dir over its parents' layers (store.go has the layout).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

const (
	name    = "layered"
	version = "0.1.0"
)

func main() { sdk.Serve(snapshot.Plugin(name, version, New)) }

// New opens the snapshotter on <env.Root>/layered. It takes no config keys
// and refuses, with FailedPrecondition, a root whose filesystem cannot host
// overlay upper dirs.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	if err := env.DecodeConfig(&struct{}{}); err != nil {
		return nil, err
	}
	s := store(filepath.Join(env.Root, name))
	for _, dir := range []string{s.layers(), s.scratch()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("make %s: %w", dir, err)
		}
	}
	// CheckOverlay works in a scratch dir of s, which a process killed
	// mid-check leaves behind.
	if _, err := mount.SweepOverlayChecks(string(s)); err != nil {
		return nil, err
	}
	if err := mount.CheckOverlay(string(s)); err != nil {
		return nil, err
	}
	return backend.Open(ctx, filepath.Join(string(s), "meta.db"), s)
}
