// Command example-snapshotter is a complete keel snapshotter plugin: each
// snapshot is a full copy of its parent's tree, handed out as a bind mount.
package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/containerd/continuity/fs"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

func main() { sdk.Serve(snapshot.Plugin("copy", "0.1.0", New)) }

// New opens the snapshotter on env.Root. It takes no config keys.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	if err := env.DecodeConfig(&struct{}{}); err != nil {
		return nil, err
	}
	dir := copier(filepath.Join(env.Root, "snapshots"))
	return backend.Open(ctx, filepath.Join(env.Root, "metadata.db"), dir)
}

// copier keeps the tree of the snapshot with id in <copier>/<id>.
type copier string

func (c copier) dir(id string) string { return filepath.Join(string(c), id) }

func (c copier) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	if len(parentIDs) == 0 {
		return os.MkdirAll(c.dir(id), 0o755)
	}
	return fs.CopyDir(c.dir(id), c.dir(parentIDs[0]))
}

func (c copier) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	mode := "rw"
	if kind == snapshot.KindView {
		mode = "ro"
	}
	return []mount.Mount{{Type: "bind", Source: c.dir(id), Options: []string{"rbind", mode}}}
}

func (c copier) Commit(ctx context.Context, id string) error { return backend.SyncFS(c.dir(id)) }

func (c copier) Remove(ctx context.Context, id string) error { return os.RemoveAll(c.dir(id)) }

func (c copier) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, c.dir(id))
}

// List makes the snapshotter a snapshot.Cleaner: Cleanup removes the trees
// of ids no snapshot owns.
func (c copier) List(ctx context.Context) ([]string, error) { return backend.ListDir(string(c)) }
