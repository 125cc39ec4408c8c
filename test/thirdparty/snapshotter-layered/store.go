package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

// store is the Backend, keeping the data of snapshot id under its dir:
//
//	<dir>/meta.db        the metastore (backend.Open)
//	<dir>/layers/<id>/   id's own layer: overlay's upper dir while active,
//	                     a lower dir once committed
//	<dir>/scratch/<id>/  overlay's work dir, for an active snapshot on a
//	                     parent only; dropped once its commit is recorded
type store string

func (s store) layers() string           { return filepath.Join(string(s), "layers") }
func (s store) scratch() string          { return filepath.Join(string(s), "scratch") }
func (s store) layer(id string) string   { return filepath.Join(s.layers(), id) }
func (s store) workDir(id string) string { return filepath.Join(s.scratch(), id) }

// The optional interfaces store implements.
var (
	_ backend.Lister         = store("")
	_ backend.CommitFinisher = store("")
)

// Create makes id's layer dir and, for an active snapshot on a parent,
// overlay's work dir. Overlay shows the upper dir's own mode and owner at
// the root of the tree, so that upper dir takes its parent's.
func (s store) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	if err := os.Mkdir(s.layer(id), 0o755); err != nil {
		return err
	}
	if kind != snapshot.KindActive || len(parentIDs) == 0 {
		return nil
	}
	if err := os.Mkdir(s.workDir(id), 0o700); err != nil {
		return err
	}
	return backend.CopyDirAttrs(s.layer(parentIDs[0]), s.layer(id))
}

// Mounts follows overlay's rule: it needs an upper dir or two lower dirs.
// With neither, a bind mount does.
func (s store) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	ro := kind == snapshot.KindView
	switch {
	case len(parentIDs) == 0:
		return []mount.Mount{bind(s.layer(id), ro)}
	case ro && len(parentIDs) == 1:
		return []mount.Mount{bind(s.layer(parentIDs[0]), true)}
	}
	lowers := make([]string, len(parentIDs))
	for i, p := range parentIDs {
		lowers[i] = s.layer(p)
	}
	if ro {
		return []mount.Mount{mount.Overlay(lowers, "", "")}
	}
	return []mount.Mount{mount.Overlay(lowers, s.layer(id), s.workDir(id))}
}

func bind(dir string, ro bool) mount.Mount {
	mode := "rw"
	if ro {
		mode = "ro"
	}
	return mount.Mount{Type: "bind", Source: dir, Options: []string{"rbind", mode}}
}

// Commit makes the layer durable; the work dir stays until the commit is
// recorded, so the snapshot is still a usable active one should that fail.
func (s store) Commit(ctx context.Context, id string) error { return backend.SyncFS(s.layer(id)) }

// FinishCommit drops the work dir, which only an active snapshot uses.
func (s store) FinishCommit(ctx context.Context, id string) error {
	return os.RemoveAll(s.workDir(id))
}

func (s store) Remove(ctx context.Context, id string) error {
	return errors.Join(os.RemoveAll(s.workDir(id)), os.RemoveAll(s.layer(id)))
}

func (s store) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, s.layer(id))
}

// List names every id holding a layer or a work dir, so that Cleanup finds
// both kinds of orphan.
func (s store) List(ctx context.Context) ([]string, error) {
	layers, err := backend.ListDir(s.layers())
	if err != nil {
		return nil, err
	}
	work, err := backend.ListDir(s.scratch())
	if err != nil {
		return nil, err
	}
	ids := append(layers, work...)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
