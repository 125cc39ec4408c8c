package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

// layers is the Backend: snapshot id keeps its own layer in <layers>/<id>/fs
// (overlay's upper dir while active, a lower dir once committed) and, when
// active, overlay's work dir in <layers>/<id>/work.
type layers string

func (l layers) dir(id string) string { return filepath.Join(string(l), id) }
func (l layers) fs(id string) string  { return filepath.Join(string(l), id, "fs") }

// Create makes the snapshot's dirs. Overlay shows the upper dir's own mode
// and owner at the root of the tree: an active snapshot's takes its parent's.
func (l layers) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	if err := os.MkdirAll(l.fs(id), 0o755); err != nil {
		return err
	}
	if kind != snapshot.KindActive {
		return nil
	}
	if err := os.Mkdir(filepath.Join(l.dir(id), "work"), 0o700); err != nil {
		return err
	}
	if len(parentIDs) == 0 {
		return nil
	}
	return backend.CopyDirAttrs(l.fs(parentIDs[0]), l.fs(id))
}

// Mounts stacks the parents' layers, nearest first, under the snapshot's
// own. Overlay needs an upper dir or two lower dirs: with neither, a bind
// mount does.
func (l layers) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	ro := kind == snapshot.KindView
	switch {
	case len(parentIDs) == 0 && ro:
		return []mount.Mount{{Type: "bind", Source: l.fs(id), Options: []string{"rbind", "ro"}}}
	case len(parentIDs) == 0:
		return []mount.Mount{{Type: "bind", Source: l.fs(id), Options: []string{"rbind", "rw"}}}
	case len(parentIDs) == 1 && ro:
		return []mount.Mount{{Type: "bind", Source: l.fs(parentIDs[0]), Options: []string{"rbind", "ro"}}}
	}
	lowers := make([]string, len(parentIDs))
	for i, p := range parentIDs {
		lowers[i] = l.fs(p)
	}
	if ro {
		return []mount.Mount{mount.Overlay(lowers, "", "")}
	}
	return []mount.Mount{mount.Overlay(lowers, l.fs(id), filepath.Join(l.dir(id), "work"))}
}

// Commit makes the layer durable: it is about to be a lower dir.
func (l layers) Commit(ctx context.Context, id string) error { return backend.SyncFS(l.fs(id)) }

func (l layers) Remove(ctx context.Context, id string) error { return os.RemoveAll(l.dir(id)) }

func (l layers) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, l.fs(id))
}

// List makes the snapshotter a snapshot.Cleaner: Cleanup removes the dirs
// of ids no snapshot owns.
func (l layers) List(ctx context.Context) ([]string, error) { return backend.ListDir(string(l)) }
