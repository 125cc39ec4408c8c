package backend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

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

// DirUsage is the disk use of the tree at dir, dir included: the inodes
// in it and the bytes allocated to them (st_blocks, so a sparse file's
// holes count for nothing), hardlinks counted once, as du(1) counts.
func DirUsage(ctx context.Context, dir string) (snapshot.Usage, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]struct{}{}
	var size int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		k := inode{dev: uint64(st.Dev), ino: uint64(st.Ino)} // uint32 on some ports
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			size += st.Blocks * 512 // st_blocks is in 512-byte units, whatever the block size
		}
		return nil
	})
	if err != nil {
		return snapshot.Usage{}, err
	}
	return snapshot.Usage{Size: size, Inodes: int64(len(seen))}, nil
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

// CopyDirAttrs gives the dir to the mode (setuid, setgid and sticky bits
// included) and owner of the dir from. An overlay snapshotter's Create
// calls it on an active snapshot's fresh upper dir with the nearest
// parent's layer: overlayfs shows the upper dir's own mode and owner at the
// root of the tree, not the lower dirs'.
func CopyDirAttrs(from, to string) error {
	var st unix.Stat_t
	if err := unix.Stat(from, &st); err != nil {
		return fmt.Errorf("stat %s: %w", from, err)
	}
	if err := unix.Chown(to, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", to, err)
	}
	// After chown, which clears setuid and setgid.
	if err := unix.Chmod(to, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", to, err)
	}
	return nil
}
