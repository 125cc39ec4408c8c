package backend

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/continuity/fs"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/snapshot"
)

// Helpers for backends that keep one directory (or subvolume) per id.

// ListDir returns the names in dir: the ids of a backend that keeps
// <dir>/<id>. A missing dir holds nothing.
func ListDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// DirUsage is the disk use of the tree at dir, hardlinks counted once.
func DirUsage(ctx context.Context, dir string) (snapshot.Usage, error) {
	du, err := fs.DiskUsage(ctx, dir)
	if err != nil {
		return snapshot.Usage{}, err
	}
	return snapshot.Usage{Size: du.Size, Inodes: du.Inodes}, nil
}

// SyncFS flushes the whole filesystem holding path to disk (syncfs(2)):
// what a Backend's Commit does to make a tree durable.
func SyncFS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}
