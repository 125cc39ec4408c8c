package backend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

// layers is an overlay-style Backend: snapshot id keeps its tree in
// <dir>/<id>/fs (overlay's upper dir while active) and <dir>/<id>/work.
type layers string

func (l layers) fs(id string) string { return filepath.Join(string(l), id, "fs") }

func (l layers) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	if err := os.MkdirAll(l.fs(id), 0o755); err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(string(l), id, "work"), 0o711)
}

// Mounts stacks the parents' trees, nearest first, under the snapshot's
// own; a snapshot with no parent, or a view of one, is a bind mount.
func (l layers) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	if len(parentIDs) == 0 {
		mode := "rw"
		if kind == snapshot.KindView {
			mode = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: l.fs(id), Options: []string{"rbind", mode}}}
	}
	lowers := make([]string, len(parentIDs))
	for i, p := range parentIDs {
		lowers[i] = l.fs(p)
	}
	if kind == snapshot.KindView {
		if len(lowers) == 1 {
			return []mount.Mount{{Type: "bind", Source: lowers[0], Options: []string{"rbind", "ro"}}}
		}
		return []mount.Mount{mount.Overlay(lowers, "", "")}
	}
	return []mount.Mount{mount.Overlay(lowers, l.fs(id), filepath.Join(string(l), id, "work"))}
}

func (l layers) Commit(ctx context.Context, id string) error { return backend.SyncFS(l.fs(id)) }

func (l layers) Remove(ctx context.Context, id string) error {
	return os.RemoveAll(filepath.Join(string(l), id))
}

func (l layers) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, l.fs(id))
}

// List makes the snapshotter a snapshot.Cleaner.
func (l layers) List(ctx context.Context) ([]string, error) { return backend.ListDir(string(l)) }

// Open a snapshotter on a Backend: Open adds the metadata, the lifecycle,
// labels, Walk and Cleanup. Nothing is mounted here: a snapshotter hands
// out mounts, its caller mounts them.
func ExampleOpen() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "layers-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	sn, err := backend.Open(ctx, filepath.Join(root, "metadata.db"), layers(filepath.Join(root, "snapshots")))
	if err != nil {
		panic(err)
	}
	defer sn.Close()
	show := func(ms []mount.Mount) {
		for _, m := range ms {
			fmt.Println(" ", strings.ReplaceAll(fmt.Sprint(m.Type, " ", m.Source, " ", m.Options), root, "$ROOT"))
		}
	}

	// A base layer: prepared, filled (here: left empty), committed.
	ms, err := sn.Prepare(ctx, "extract-base", "")
	if err != nil {
		panic(err)
	}
	fmt.Println("prepare extract-base:")
	show(ms)
	if err := sn.Commit(ctx, "base", "extract-base"); err != nil {
		panic(err)
	}
	// A container's rootfs on top of it, and a read-only view of it.
	if ms, err = sn.Prepare(ctx, "rootfs", "base", snapshot.WithLabels(map[string]string{"app": "web"})); err != nil {
		panic(err)
	}
	fmt.Println("prepare rootfs on base:")
	show(ms)
	if ms, err = sn.View(ctx, "inspect", "base"); err != nil {
		panic(err)
	}
	fmt.Println("view of base:")
	show(ms)

	err = sn.Walk(ctx, func(ctx context.Context, info snapshot.Info) error {
		fmt.Printf("%s: %s, parent %q\n", info.Name, info.Kind, info.Parent)
		return nil
	}, "labels.app==web", "kind==committed")
	if err != nil {
		panic(err)
	}
	// Output:
	// prepare extract-base:
	//   bind $ROOT/snapshots/1/fs [rbind rw]
	// prepare rootfs on base:
	//   overlay overlay [lowerdir=$ROOT/snapshots/1/fs upperdir=$ROOT/snapshots/2/fs workdir=$ROOT/snapshots/2/work]
	// view of base:
	//   bind $ROOT/snapshots/1/fs [rbind ro]
	// base: committed, parent ""
	// rootfs: active, parent "base"
}
